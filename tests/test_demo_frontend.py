"""Demo front-end: video io, detection, tracking, keypoints, filters, run_frontend."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from lib.errors import UserError

ASSETS = Path("data/assets")
VTEST = ASSETS / "videos/vtest.avi"
PB = ASSETS / "detector/ssdlite_person.pb"
TFLITE = ASSETS / "keypoints/pose_landmark_full.tflite"
TFLITE_LITE = ASSETS / "keypoints/pose_landmark_lite.tflite"


def _need(*paths: Path):
    for p in paths:
        if not p.is_file():
            pytest.skip(f"{p} missing (asset under data/assets; run bash scripts/fetch_assets.sh)")


def _write_video(path: Path, frames, fps=25, codec="ffv1", pix_fmt="bgr0", fmt=None):
    import av

    with av.open(str(path), mode="w", format=fmt) as c:
        s = c.add_stream(codec, rate=fps)
        s.height, s.width = frames[0].shape[:2]
        s.pix_fmt = pix_fmt
        for f in frames:
            vf = av.VideoFrame.from_ndarray(f, format="gray" if f.ndim == 2 else "rgb24")
            for p in s.encode(vf):
                c.mux(p)
        for p in s.encode():
            c.mux(p)


@pytest.fixture(scope="module")
def vtest_frames():
    _need(VTEST)
    from lib.demo.video import open_video

    r = open_video(VTEST)
    return {i: f for i, f in r.iter_frames(0, 121) if i in (0, 10, 20, 60, 120)}


# ---------------------------------------------------------------- video io

def test_read_video_file():
    _need(VTEST)
    from lib.demo.video import open_video

    r = open_video(VTEST)
    assert (r.width, r.height) == (768, 576) and r.num_frames == 795 and r.fps == pytest.approx(10.0)
    got = list(r.iter_frames(start=5, max_frames=7))
    assert [i for i, _ in got] == list(range(5, 12))
    assert all(f.shape == (576, 768, 3) and f.dtype == np.uint8 for _, f in got)
    # re-iterable and consistent: frame 6 read alone equals frame 6 of the run
    assert np.array_equal(r.read_frame(6), got[1][1])


def test_read_image_folder_with_spaces_and_non_ascii(tmp_path):
    import cv2

    from lib.demo.video import open_video

    folder = tmp_path / "my clips é 人"
    folder.mkdir()
    rng = np.random.default_rng(0)
    frames = [rng.integers(0, 255, (33, 47, 3), dtype=np.uint8) for _ in range(4)]
    for i, f in enumerate(frames):
        ok, buf = cv2.imencode(".png", cv2.cvtColor(f, cv2.COLOR_RGB2BGR))
        buf.tofile(str(folder / f"frame {i:03d}.png"))
    r = open_video(folder, fps=12.5)
    assert (r.num_frames, r.width, r.height, r.fps) == (4, 47, 33, 12.5)
    got = list(r.iter_frames())
    assert len(got) == 4 and all(np.array_equal(a, f) for (_, a), f in zip(got, frames))  # PNG lossless, RGB order


def test_read_grayscale_odd_sized_video_non_ascii_path(tmp_path):
    from lib.demo.video import open_video

    path = tmp_path / "grey clip ü.mkv"
    frames = [np.full((75, 101), 20 * i, np.uint8) for i in range(6)]
    _write_video(path, frames, fps=15, codec="ffv1", pix_fmt="gray")
    r = open_video(path)
    assert (r.width, r.height, r.num_frames) == (101, 75, 6) and r.fps == pytest.approx(15.0)
    got = [f for _, f in r.iter_frames()]
    assert len(got) == 6 and got[3].shape == (75, 101, 3)
    assert np.array_equal(got[3][..., 0], got[3][..., 2]) and abs(int(got[3][0, 0, 0]) - 60) <= 1


def test_bad_videos_raise_user_error(tmp_path):
    from lib.demo.video import open_video

    with pytest.raises(UserError, match="not found"):
        open_video(tmp_path / "missing video.mp4")
    corrupt = tmp_path / "corrupt.mp4"
    corrupt.write_bytes(os.urandom(4096))
    with pytest.raises(UserError, match="corrupt.mp4"):
        open_video(corrupt)
    empty = tmp_path / "empty.avi"
    empty.write_bytes(b"")
    with pytest.raises(UserError, match="empty"):
        open_video(empty)
    import cv2

    zero = tmp_path / "zero frames.avi"  # a valid AVI header without any frame
    w = cv2.VideoWriter(str(zero), cv2.VideoWriter_fourcc(*"MJPG"), 10, (32, 32))
    w.release()
    assert zero.is_file() and zero.stat().st_size > 0
    with pytest.raises(UserError, match="no frames"):
        open_video(zero)
    no_images = tmp_path / "no images"
    no_images.mkdir()
    with pytest.raises(UserError, match="no images"):
        open_video(no_images)


def test_writer_h264_yuv420p_faststart_atomic(tmp_path):
    import av

    from lib.demo.video import VideoWriter, open_video

    path = tmp_path / "out dir ä" / "overlay.mp4"
    rng = np.random.default_rng(1)
    with VideoWriter(path, fps=25, width=65, height=49) as w:
        assert not path.exists()  # only a temp file while writing
        for _ in range(12):
            w.write(rng.integers(0, 255, (49, 65, 3), dtype=np.uint8))
    assert sorted(p.name for p in path.parent.iterdir()) == ["overlay.mp4"]
    with av.open(str(path)) as c:
        s = c.streams.video[0]
        assert s.codec_context.name == "h264" and s.codec_context.pix_fmt == "yuv420p"
        assert (s.width, s.height) == (66, 50)  # padded to even
    r = open_video(path)
    assert r.num_frames == 12 and r.fps == pytest.approx(25.0) and len(list(r.iter_frames())) == 12
    data = path.read_bytes()
    assert data.find(b"moov") < data.find(b"mdat")  # faststart: index before the media data

    bad = tmp_path / "bad.mp4"
    with pytest.raises(RuntimeError):
        with VideoWriter(bad, fps=10, width=32, height=32) as w:
            w.write(np.zeros((32, 32, 3), np.uint8))
            raise RuntimeError("boom")
    assert not bad.exists() and not any(p.name.startswith(".bad") for p in tmp_path.iterdir())


# ---------------------------------------------------------------- detection

def test_text_graph_deterministic_and_anchor_layout():
    _need(PB)
    from lib.demo.ssdlite_graph import SSDSettings, generate_text_graph

    s = SSDSettings()
    assert len(s.layer_box_sizes(0)) == 3 and all(len(s.layer_box_sizes(i)) == 6 for i in range(1, 6))
    w, h = s.layer_box_sizes(1)[1]  # aspect ratio 2 box: w/h = 2
    assert w / h == pytest.approx(2.0)
    a = generate_text_graph(PB, s)
    b = generate_text_graph(PB, s)
    assert a == b
    assert a.count('op: "PriorBox"') == 6 and a.count('op: "DetectionOutput"') == 1
    assert "Postprocessor" not in a and 'op: "Identity"' not in a
    # a different setting changes the graph
    assert generate_text_graph(PB, SSDSettings(min_scale=0.25)) != a


def test_ssdlite_finds_people(vtest_frames):
    _need(PB)
    from lib.demo.detection import build_detector

    det = build_detector("ssdlite", asset_root=str(ASSETS), score_threshold=0.35)
    counts_full, counts_tiled = [], []
    for i in (60, 120):
        full = det.detect(vtest_frames[i])
        tiled = det.detect(vtest_frames[i], tiled=True)
        assert full.dtype == np.float32 and full.shape[1] == 5
        hgt = full[:, 3] - full[:, 1]
        assert np.all((hgt > 20) & (hgt < 300)) and np.all(hgt > full[:, 2] - full[:, 0])  # upright people
        counts_full.append(len(full))
        counts_tiled.append(len(tiled))
    # frames 60 and 120 show 6 and 9 people; full frame finds >= 8 of them, tiling adds more
    assert sum(counts_full) >= 8 and sum(counts_tiled) >= sum(counts_full)


def test_hog_detector_finds_people(vtest_frames):
    """The OpenCV-only fallback (OpenCV 4.x is required) finds people the SSDLite detector finds."""
    _need(PB)
    from lib.demo.detection import build_detector

    frame = vtest_frames[120]
    hog = build_detector("hog").detect(frame)
    ssd = build_detector("ssdlite", asset_root=str(ASSETS), score_threshold=0.5).detect(frame)
    assert hog.dtype == np.float32 and hog.shape[1] == 5 and len(hog) >= 2
    # every HOG box lies over a person: it holds the centre of an SSDLite box (HOG boxes are
    # loose, 64x128 windows with margins, so IoU with a tight box is low)
    cx, cy = (ssd[:, 0] + ssd[:, 2]) / 2, (ssd[:, 1] + ssd[:, 3]) / 2
    inside = ((cx[None] > hog[:, :1]) & (cx[None] < hog[:, 2:3]) & (cy[None] > hog[:, 1:2]) & (cy[None] < hog[:, 3:4]))
    assert inside.any(axis=1).all()
    with pytest.raises(UserError, match="unknown detector"):
        build_detector("yolo")


def test_nms_keeps_best_and_drops_contained():
    from lib.demo.detection import nms

    d = np.array([[0, 0, 10, 20, 0.9], [1, 1, 11, 21, 0.8], [50, 0, 60, 20, 0.7], [0, 0, 10, 8, 0.6]], np.float32)
    assert len(nms(d, 0.5)) == 3  # the near duplicate goes
    kept = nms(d, 0.5, containment_threshold=0.7)  # the top half of the first person goes too
    assert len(kept) == 2 and kept[0, 4] == pytest.approx(0.9) and kept[1, 4] == pytest.approx(0.7)


# ---------------------------------------------------------------- tracking

def _people(frame, hide=()):
    """Three people walking right at different speeds; rows x1,y1,x2,y2,score."""
    rows = []
    for k, (x0, y0, v) in enumerate([(50, 100, 4), (200, 120, -3), (400, 80, 2)]):
        if k in hide:
            continue
        x = x0 + v * frame
        rows.append([x, y0, x + 30, y0 + 90, 0.9])
    return np.array(rows, np.float32).reshape(-1, 5)


def test_tracker_ids_survive_occlusion():
    from lib.demo.tracking import Tracker

    tr = Tracker(n_init=2, max_age=10)
    ids_at = {}
    for f in range(40):
        hide = (1,) if 15 <= f < 22 else ()  # person 1 occluded for 7 frames
        dets = _people(f, hide)[::-1] if f % 2 else _people(f, hide)  # order of detections must not matter
        states = tr.update(dets, f)
        ids_at[f] = {round(float(s.box[0])): s.track_id for s in states if s.detected and s.confirmed}
    confirmed = [t for t in tr.all_tracks() if t.confirmed]
    assert len(confirmed) == 3  # nobody got a new id after the occlusion
    occluded = next(t for t in confirmed if 15 not in t.raw)
    assert min(occluded.raw) <= 1 and max(occluded.raw) == 39  # same id before and after


def test_tracker_matches_hungarian_assignment_and_low_scores():
    from scipy.optimize import linear_sum_assignment

    from lib.demo.detection import box_iou, cxcywh_to_xyxy
    from lib.demo.tracking import Tracker

    tr = Tracker(n_init=1, max_age=5)
    tr.update(_people(0), 0)
    preds = {t.track_id: cxcywh_to_xyxy(t.kf.x[:4] + t.kf.x[4:]) for t in tr.active}
    dets = _people(1)
    dets[:, 4] = [0.9, 0.3, 0.9]  # a partly occluded person scores low but keeps the track
    states = tr.update(dets, 1)
    assert len(states) == 3 and all(s.detected for s in states)
    ids = [t.track_id for t in tr.active]
    iou = box_iou(np.stack([preds[i] for i in ids]), dets[:, :4])
    rows, cols = linear_sum_assignment(-iou)
    by_id = {s.track_id: s for s in states}
    for r, c in zip(rows, cols):
        assert np.allclose(by_id[ids[r]].box[0], (dets[c, 0] + dets[c, 2]) / 2, atol=3)


def test_finalize_fills_gaps_and_drops_short_tracks():
    from lib.demo.tracking import Tracker, finalize_boxes

    tr = Tracker(n_init=2, max_age=10)
    for f in range(20):
        tr.update(_people(f, hide=(0,) if f in (5, 6, 7) else ()), f)
    t = next(t for t in tr.all_tracks() if 5 not in t.raw)
    frames, boxes, detected = finalize_boxes(t, min_len=5, smooth_sigma=0.0)
    assert frames.tolist() == list(range(20)) and detected.sum() == 17
    assert boxes[6, 0] == pytest.approx(50 + 4 * 6 + 15, abs=0.5)  # linear fill on the true path
    assert finalize_boxes(t, min_len=25) is None


# ---------------------------------------------------------------- keypoints and filters

def test_blazepose_to_spin49_mapping():
    from lib.demo.keypoints import blazepose_to_spin49
    from lib.joints.conventions import joint_names

    lm = np.zeros((2, 33, 3), np.float32)
    lm[..., 0] = np.arange(33)
    lm[..., 2] = 0.9
    lm[:, 12, 2] = 0.4  # right shoulder less sure
    out = blazepose_to_spin49(lm)
    spin = joint_names("spin49")
    assert out.shape == (2, 49, 3)
    assert out[0, spin.index("op_lshoulder"), 0] == 11 and out[0, spin.index("op_rshoulder"), 0] == 12
    assert out[0, spin.index("op_lknee"), 0] == 25 and out[0, spin.index("op_rheel"), 0] == 30
    assert out[0, spin.index("op_neck"), 0] == pytest.approx(11.5) and out[0, spin.index("op_neck"), 2] == \
        pytest.approx(0.4)
    assert out[0, spin.index("op_midhip"), 0] == pytest.approx(23.5)
    assert np.all(out[0, 25:, 2] == 0)  # ground-truth-style slots stay empty
    assert np.count_nonzero(out[0, :, 2]) == 23  # all of BODY_25 but the small toes
    assert out[0, spin.index("op_lsmalltoe"), 2] == 0 and out[0, spin.index("op_rsmalltoe"), 2] == 0


def test_crop_transform_round_trip():
    from lib.demo.keypoints import crop_transforms

    boxes = np.array([[100, 200, 40, 120], [300.5, 50, 90, 30]], np.float32)
    m = crop_transforms(boxes, 256, 1.25)
    centre = m[:, :, :2] @ boxes[:, :2, None] + m[:, :, 2:]
    assert np.allclose(centre[..., 0], 128)
    side = 1.25 * np.maximum(boxes[:, 2], boxes[:, 3])
    assert np.allclose(m[:, 0, 0] * side, 256)


@pytest.mark.parametrize("name,path", [("blazepose", TFLITE), ("blazepose_lite", TFLITE_LITE)])
def test_blazepose_on_a_person(vtest_frames, name, path):
    _need(path, PB)
    from lib.demo.detection import build_detector, xyxy_to_cxcywh
    from lib.demo.keypoints import build_keypoint_model
    from lib.joints.conventions import joint_names

    frame = vtest_frames[120]
    dets = build_detector("ssdlite", asset_root=str(ASSETS), score_threshold=0.5).detect(frame)
    boxes = xyxy_to_cxcywh(dets[:, :4])
    boxes = boxes[np.argsort(-boxes[:, 3])][:3]  # the three tallest people
    model = build_keypoint_model(name, asset_root=str(ASSETS))
    out = model.predict(frame, boxes)
    assert out["keypoints"].shape == (3, 49, 3) and out["landmarks"].shape == (3, 33, 3)
    assert out["world"].shape == (3, 33, 3)
    conf = out["keypoints"][..., 2]
    assert conf.min() >= 0 and conf.max() <= 1 and np.all(out["presence"] > 0.5)
    spin = joint_names("spin49")
    for k in range(3):
        kp, (cx, cy, w, h) = out["keypoints"][k], boxes[k]
        sel = conf[k] > 0.5
        assert sel.sum() >= 10
        assert np.all(np.abs(kp[sel, 0] - cx) < 0.75 * h) and np.all(np.abs(kp[sel, 1] - cy) < 0.75 * h)
        assert kp[spin.index("op_nose"), 1] < kp[spin.index("op_midhip"), 1] < kp[spin.index("op_lankle"), 1]
        # world landmarks in metres: shoulder width 0.2-0.6 m
        sw = np.linalg.norm(out["world"][k, 11] - out["world"][k, 12])
        assert 0.15 < sw < 0.6
    assert model.predict(frame, np.zeros((0, 4)))["keypoints"].shape == (0, 49, 3)


def test_one_euro_smooths_noise_and_follows_step():
    from lib.demo.filters import smooth_keypoints

    rng = np.random.default_rng(0)
    n = 120
    kps = np.zeros((n, 2, 3), np.float32)
    kps[:, 0, :2] = 100 + rng.normal(0, 2.0, (n, 2))  # still joint with jitter
    kps[:, 1, 0] = np.where(np.arange(n) < 60, 0.0, 200.0)  # a jump
    kps[..., 2] = 0.7
    out = smooth_keypoints(kps, fps=30.0, scale=np.full(n, 100.0))
    assert np.std(np.diff(out[:, 0, 0])) < 0.35 * np.std(np.diff(kps[:, 0, 0]))
    assert abs(out[:, 0, :2].mean() - 100) < 1.0
    assert np.all(out[:, :, 2] == 0.7)
    assert np.all(np.abs(out[:50, 1, 0]) < 10) and np.all(np.abs(out[70:, 1, 0] - 200) < 10)
    causal = smooth_keypoints(kps, fps=30.0, bidirectional=False)
    assert np.all(np.abs(causal[:60, 1, 0]) < 1e-6)  # causal: no anticipation of the step


# ---------------------------------------------------------------- the whole front-end

def test_run_frontend_on_vtest_clip():
    _need(VTEST, PB, TFLITE)
    from lib.demo.frontend import run_frontend
    from lib.demo.video import open_video

    res = run_frontend(open_video(VTEST), asset_root=str(ASSETS), start_frame=100, max_frames=20,
                       min_track_len=5, progress=False)
    assert res.num_frames == 20 and (res.width, res.height) == (768, 576) and res.fps == pytest.approx(10)
    assert len(res.tracks) >= 4
    assert res.detections.shape[1] == 6 and res.detections[:, 0].min() >= 100 and res.detections[:, 0].max() < 120
    for tid, t in res.tracks.items():
        n = len(t.frame_ids)
        assert n >= 5 and np.all(np.diff(t.frame_ids) == 1) and t.frame_ids[0] >= 100
        assert t.bboxes.shape == (n, 4) and t.keypoints_2d.shape == (n, 49, 3)
        assert t.world_landmarks.shape == (n, 33, 3) and t.landmarks_33.shape == (n, 33, 3)
        assert np.all((t.keypoints_2d[..., 2] >= 0) & (t.keypoints_2d[..., 2] <= 1))
        assert np.all(t.bboxes[:, 0] > 0) and np.all(t.bboxes[:, 0] < 768) and np.all(t.bboxes[:, 3] > 20)
    assert set(res.timings) >= {"decode", "detect", "track", "keypoints"}


def test_run_frontend_no_person(tmp_path):
    _need(PB, TFLITE)
    from lib.demo.frontend import run_frontend
    from lib.demo.video import open_video

    path = tmp_path / "empty scene.mkv"
    _write_video(path, [np.full((120, 160, 3), 128, np.uint8)] * 4, fps=10, codec="ffv1", pix_fmt="bgr0")
    res = run_frontend(open_video(path), asset_root=str(ASSETS), progress=False)
    assert res.tracks == {} and res.num_frames == 4 and res.detections.shape == (0, 6)
