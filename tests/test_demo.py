"""End-to-end demo on the sample video, plus every bad-input case.

Runs demo.py as a subprocess (that is what users run, and it checks exit codes).
Needs the fetched assets and the open body model; skips with a reason otherwise.
"""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from lib.joints.conventions import SPIN_49

ROOT = Path(__file__).resolve().parents[1]
VTEST = ROOT / "data/assets/videos/vtest.avi"
OPEN_MODEL = ROOT / "data/body_models/open/SMPL_NEUTRAL.pkl"
ASSETS = [VTEST, ROOT / "data/assets/detector", ROOT / "data/assets/keypoints"]
FIT_SLOTS = [i for i, n in enumerate(SPIN_49) if n.startswith("op_") and n not in ("op_lhip", "op_rhip")]


def _need_assets():
    missing = [str(p.relative_to(ROOT)) for p in ASSETS if not p.exists()]
    if missing:
        pytest.skip(f"missing {', '.join(missing)} (data/assets; run scripts/fetch_assets.sh)")
    if not OPEN_MODEL.is_file():
        pytest.skip("open body model not built (data/body_models/open; run scripts/fetch_assets.sh)")


def run_demo(*args, timeout: int = 300) -> subprocess.CompletedProcess:
    env = dict(os.environ, OMP_NUM_THREADS=os.environ.get("OMP_NUM_THREADS", "2"), PYOPENGL_PLATFORM="egl")
    cmd = [sys.executable, str(ROOT / "demo.py"), "--no_progress", *map(str, args)]
    return subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)


def _write_clip(path: Path, frames, fps: float = 25.0, color: bool = True) -> Path:
    """Write frames (BGR or gray uint8) as an MJPG .avi (any size, no codec constraints)."""
    import cv2

    path.parent.mkdir(parents=True, exist_ok=True)
    h, w = frames[0].shape[:2]
    vw = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), fps, (w, h), isColor=color)
    for f in frames:
        vw.write(f)
    vw.release()
    return path


def _write_gray_ffv1(path: Path, frames, fps: int = 25) -> Path:
    """Write gray uint8 frames losslessly (FFV1, pix_fmt gray) in .mkv: any size, a truly gray stream."""
    import av

    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), "w") as c:
        s = c.add_stream("ffv1", rate=fps)
        s.width, s.height, s.pix_fmt = frames[0].shape[1], frames[0].shape[0], "gray"
        for f in frames:
            for pkt in s.encode(av.VideoFrame.from_ndarray(f, format="gray")):
                c.mux(pkt)
        for pkt in s.encode():
            c.mux(pkt)
    return path


def _vtest_frames(n: int, start: int = 0):
    import cv2

    cap = cv2.VideoCapture(str(VTEST))
    cap.set(cv2.CAP_PROP_POS_FRAMES, start)
    frames = []
    for _ in range(n):
        ok, f = cap.read()
        if not ok:
            break
        frames.append(f)
    cap.release()
    return frames


@pytest.fixture(scope="module")
def vtest_run(tmp_path_factory):
    """demo.py on the first 20 frames of vtest.avi without rendering."""
    _need_assets()
    out = tmp_path_factory.mktemp("demo_out")
    proc = run_demo("--vid_file", VTEST, "--output_folder", out, "--max_frames", 20, "--no_render")
    return proc, out / "vtest"


def test_vtest_results(vtest_run):
    proc, folder = vtest_run
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "fps" in proc.stdout and "tracks" in proc.stdout  # the console summary
    assert not (folder / "vtest_overlay.mp4").exists()
    with np.load(folder / "results.npz", allow_pickle=False) as npz:
        data = {k: npz[k] for k in npz.files}
    assert float(data["fps"]) > 0 and str(data["body_model"]) == "open"
    assert tuple(data["image_size"]) == (768, 576) and float(data["focal_length"]) > 0
    assert int(data["num_vertices"]) > 0
    assert data["detections"].ndim == 2 and data["detections"].shape[1] == 6 and len(data["detections"]) > 20
    tids = sorted({k.split("/")[0] for k in data if "/" in k})
    assert len(tids) >= 4, f"expected several people tracked in vtest.avi, got {tids}"
    errors = []
    for t in tids:
        n = data[f"{t}/frame_ids"].shape[0]
        assert np.all(np.diff(data[f"{t}/frame_ids"]) > 0) and data[f"{t}/frame_ids"].max() < 20
        shapes = {"bboxes": (n, 4), "keypoints_2d": (n, 49, 3), "pose": (n, 72), "betas": (10,), "cam": (n, 3),
                  "transl": (n, 3), "joints3d": (n, 49, 3), "joints2d": (n, 49, 2)}
        for key, shape in shapes.items():
            arr = data[f"{t}/{key}"]
            assert arr.shape == shape, f"{t}/{key}: {arr.shape} != {shape}"
            assert np.isfinite(arr).all(), f"{t}/{key} has NaN/inf"
        assert (data[f"{t}/transl"][:, 2] > 1.0).all(), "people stand metres in front of the camera"
        # joints2d is the perspective projection of joints3d with the stored camera.
        j3, f = data[f"{t}/joints3d"], float(data["focal_length"])
        proj = j3[..., :2] / j3[..., 2:] * f + np.array([768, 576]) / 2.0
        assert np.allclose(proj, data[f"{t}/joints2d"], atol=0.5)
        kp = data[f"{t}/keypoints_2d"]
        conf = kp[:, FIT_SLOTS, 2] > 0.5
        err = np.linalg.norm(data[f"{t}/joints2d"][:, FIT_SLOTS] - kp[:, FIT_SLOTS, :2], axis=-1)
        errors.append((err / data[f"{t}/bboxes"][:, 3:4])[conf])
    median = float(np.median(np.concatenate(errors)))
    assert median < 0.10, f"projected joints are {median:.3f} box heights from the keypoints (median)"


def test_render_overlay(tmp_path):
    _need_assets()
    pytest.importorskip("pyrender")
    clip = _write_clip(tmp_path / "clip.avi", _vtest_frames(6, start=100))
    proc = run_demo("--vid_file", clip, "--output_folder", tmp_path / "out", "--side_view", "--tracks", "1,2")
    assert proc.returncode == 0, proc.stderr[-2000:]
    video = tmp_path / "out/clip/clip_overlay.mp4"
    import av

    with av.open(str(video)) as c:
        frames = [f.to_ndarray(format="rgb24") for f in c.decode(video=0)]
    assert len(frames) == 6 and frames[0].shape[:2] == (576, 2 * 768)
    # Bodies were drawn: the overlay half differs from the input where people are, the
    # side panel is not blank.
    with np.load(tmp_path / "out/clip/results.npz", allow_pickle=False) as npz:
        tids = {k.split("/")[0] for k in npz.files if k.endswith("/pose")}
    assert tids and tids <= {"1", "2"}, f"--tracks 1,2 kept {tids}"
    side = frames[0][:, 768:]
    assert (side < 200).any(axis=-1).mean() > 0.001


def test_missing_file(tmp_path):
    proc = run_demo("--vid_file", tmp_path / "nope.mp4", "--output_folder", tmp_path / "out")
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines()[-1].startswith("error:") and "nope.mp4" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_corrupt_video(tmp_path):
    bad = tmp_path / "broken.mp4"
    bad.write_bytes(b"\x00\x00\x00\x18ftypmp42" + os.urandom(4000))
    proc = run_demo("--vid_file", bad, "--output_folder", tmp_path / "out")
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "broken.mp4" in proc.stderr and "Traceback" not in proc.stderr
    assert not (tmp_path / "out/broken/results.npz").exists()


def test_zero_frame_video(tmp_path):
    import av

    empty = tmp_path / "empty.mp4"
    with av.open(str(empty), "w") as c:
        s = c.add_stream("mpeg4", rate=25)
        s.width, s.height = 64, 64
    proc = run_demo("--vid_file", empty, "--output_folder", tmp_path / "out")
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "empty.mp4" in proc.stderr and "Traceback" not in proc.stderr
    assert not (tmp_path / "out/empty/results.npz").exists()


def test_bad_options(tmp_path):
    proc = run_demo("--vid_file", tmp_path / "x.mp4", "--export", "png")
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    proc = run_demo("--vid_file", tmp_path / "x.mp4", "SMPLIFY.NO_SUCH_KEY", "1")
    assert proc.returncode == 2 and "NO_SUCH_KEY" in proc.stderr


def test_start_frame_past_end(tmp_path):
    _need_assets()
    clip = _write_clip(tmp_path / "short.avi", _vtest_frames(3))
    proc = run_demo("--vid_file", clip, "--output_folder", tmp_path / "out", "--start_frame", 10)
    assert proc.returncode == 2 and "start_frame" in proc.stderr and "Traceback" not in proc.stderr


def test_no_person(tmp_path):
    """A video without people: exit 0, a warning, and valid results with no tracks."""
    _need_assets()
    rng = np.random.default_rng(0)
    base = np.tile(np.linspace(40, 200, 320, dtype=np.uint8)[None, :, None], (240, 1, 3))
    frames = [np.clip(base.astype(int) + rng.integers(-5, 6, base.shape), 0, 255).astype(np.uint8) for _ in range(8)]
    clip = _write_clip(tmp_path / "nobody.avi", frames)
    proc = run_demo("--vid_file", clip, "--output_folder", tmp_path / "out", "--no_render")
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "no person" in proc.stderr
    from lib.demo.results import load_results

    res = load_results(tmp_path / "out/nobody/results.npz")
    assert res.tracks == {} and res.image_size == (320, 240)


def test_one_frame_grayscale_odd_size_unicode_path(tmp_path):
    """A 1-frame, grayscale, odd-sized clip under a path with spaces and non-ASCII characters."""
    _need_assets()
    import cv2

    frame = cv2.cvtColor(_vtest_frames(1, start=200)[0], cv2.COLOR_BGR2GRAY)[:575, :767]
    clip = _write_gray_ffv1(tmp_path / "vidéo été" / "one frame ü.mkv", [np.ascontiguousarray(frame)])
    out = tmp_path / "sortie à plat"
    proc = run_demo("--vid_file", clip, "--output_folder", out)
    assert proc.returncode == 0, proc.stderr[-2000:]
    folder = out / "one frame ü"
    from lib.demo.results import load_results

    res = load_results(folder / "results.npz")
    assert res.image_size == (767, 575)
    for tr in res.tracks.values():
        assert tr.num_frames == 1 and np.isfinite(tr.joints3d).all()
    assert (folder / "one frame ü_overlay.mp4").stat().st_size > 0


def test_results_round_trip(tmp_path):
    """results.npz: written atomically without pickles, read back identical; bad shapes are refused."""
    from lib.demo.results import DemoResults, TrackResult, load_results, save_results

    rng = np.random.default_rng(0)
    n = 5
    tr = TrackResult(frame_ids=np.arange(3, 3 + n), bboxes=rng.random((n, 4)), keypoints_2d=rng.random((n, 49, 3)),
                     pose=rng.random((n, 72)), betas=rng.random(10), cam=rng.random((n, 3)),
                     transl=rng.random((n, 3)), joints3d=rng.random((n, 49, 3)), joints2d=rng.random((n, 49, 2)))
    res = DemoResults({4: tr}, rng.random((7, 6)), 25.0, "open", 7002, (768, 576), 960.0)
    path = save_results(tmp_path / "results.npz", res)
    assert [p.name for p in tmp_path.iterdir()] == ["results.npz"]  # no temp file left behind
    back = load_results(path)
    assert back.fps == 25.0 and back.body_model == "open" and back.num_vertices == 7002
    assert back.image_size == (768, 576) and back.focal_length == 960.0
    for name in ("frame_ids", "bboxes", "keypoints_2d", "pose", "betas", "cam", "transl", "joints3d", "joints2d"):
        assert np.allclose(getattr(back.tracks[4], name), getattr(tr, name), atol=1e-6), name
    assert np.allclose(back.detections, res.detections, atol=1e-6)
    bad = TrackResult(**{**vars(tr), "pose": rng.random((n, 69))})
    with pytest.raises(ValueError, match="pose"):
        save_results(tmp_path / "bad.npz", DemoResults({1: bad}, np.zeros((0, 6)), 25.0, "open", 1, (2, 2), 1.0))
    assert not (tmp_path / "bad.npz").exists()
