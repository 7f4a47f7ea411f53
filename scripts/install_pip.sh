#!/usr/bin/env bash
# Create/refresh the Python environment in .venv/ and the system libraries pbn needs.
# Idempotent: when requirements.txt is unchanged and the system packages are present,
# a second run takes a few seconds.
#
#   bash scripts/install_pip.sh
#   PYTHON_BIN=/path/to/python3.11 bash scripts/install_pip.sh
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
VENV="$ROOT/.venv"

log() { echo "[install] $*"; }
die() { echo "[install] error: $*" >&2; exit 1; }

# --- system libraries: EGL/Mesa for offscreen rendering on CPU (pyrender).
APT_PACKAGES=(libegl1 libgl1-mesa-dri libegl-mesa0)
missing=()
for pkg in "${APT_PACKAGES[@]}"; do
    dpkg -s "$pkg" >/dev/null 2>&1 || missing+=("$pkg")
done
if (( ${#missing[@]} )); then
    if command -v apt-get >/dev/null 2>&1; then
        SUDO=""
        [[ $(id -u) -eq 0 ]] || SUDO="sudo"
        log "installing system packages: ${missing[*]}"
        # Package lists may be absent on a fresh machine: refresh only if the install fails.
        $SUDO apt-get install -y -qq "${missing[@]}" >/dev/null 2>&1 \
            || { $SUDO apt-get update -qq >/dev/null && $SUDO apt-get install -y -qq "${missing[@]}" >/dev/null; } \
            || die "could not install ${missing[*]} (needed for rendering); install them with your package manager"
    else
        log "warning: not a Debian/Ubuntu system; make sure EGL + Mesa are installed for rendering (${missing[*]})"
    fi
fi

# --- Python 3.11 (torch wheels and the pinned packages target it).
pick_python() {
    for cand in "${PYTHON_BIN:-}" python3.11 python3; do
        [[ -n "$cand" ]] || continue
        command -v "$cand" >/dev/null 2>&1 || continue
        if "$cand" -c 'import sys; sys.exit(0 if sys.version_info[:2] >= (3, 10) else 1)'; then
            echo "$cand"; return 0
        fi
    done
    return 1
}

if [[ ! -x "$VENV/bin/python" ]]; then
    PY="$(pick_python)" || die "Python >= 3.10 not found (3.11 recommended); set PYTHON_BIN"
    log "creating $VENV with $("$PY" --version)"
    "$PY" -m venv "$VENV"
fi

STAMP="$VENV/.requirements.sha256"
want="$(sha256sum requirements.txt | cut -d' ' -f1)"
if [[ -f "$STAMP" && "$(cat "$STAMP")" == "$want" ]]; then
    log "python environment up to date ($VENV)"
else
    log "installing requirements into $VENV (first run: a few minutes)"
    "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check -r requirements.txt 2>&1 \
        | grep -v "is ignored: it is neither a file nor a directory" || true
    # pip's exit code is hidden by the pipe: check that the key packages import.
    "$VENV/bin/python" -c "import torch, torchvision, numpy, scipy, yacs, roma, cv2, av, trimesh, pygltflib" \
        || die "requirements did not install; rerun to see pip's errors: $VENV/bin/pip install -r requirements.txt"
    echo "$want" > "$STAMP"
fi

# Make the repository importable (`import lib...`) from scripts/ and any working
# directory, the way an editable install does: a .pth file naming the repo root.
SITE="$("$VENV/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')"
if [[ "$(cat "$SITE/pbn.pth" 2>/dev/null)" != "$ROOT" ]]; then
    echo "$ROOT" > "$SITE/pbn.pth"
fi
