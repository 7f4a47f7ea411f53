"""Demo people finding: group boxes, tile schedule, clutter, stitching, box scoring, and
recall against the hand-labelled frames of vtest.avi."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from lib.errors import UserError

ASSETS = Path("data/assets")
VTEST = ASSETS / "videos/vtest.avi"
PB = ASSETS / "detector/ssdlite_person.pb"
LABELS = Path("tests/data/vtest_person_boxes.json")


def _need(*paths: Path):
    for p in paths:
        if not p.is_file():
            pytest.skip(f"{p} missing (asset under data/assets; run bash scripts/fetch_assets.sh)")


# ---------------------------------------------------------------- group boxes

def test_group_boxes_flags_boxes_across_two_people():
    from lib.demo.detection import group_boxes, merge_detections

    left, right = [100, 100, 130, 190], [134, 102, 162, 188]  # two people side by side
    wide = [98, 98, 164, 192]  # one box around both
    mid = [116, 100, 146, 190]  # one box between them
    assert group_boxes(np.array([left, right, wide], float)).tolist() == [False, False, True]
    assert group_boxes(np.array([left, right, mid], float)).tolist() == [False, False, True]
    dets = np.array([left + [0.8], right + [0.7], mid + [0.95]], np.float32)
    kept = merge_detections(dets)
    assert len(kept) == 2 and np.allclose(sorted(kept[:, 4]), [0.7, 0.8])


def test_group_boxes_keeps_single_people():
    from lib.demo.detection import group_boxes

    person = [100, 100, 140, 200]
    head, legs = [110, 100, 130, 125], [105, 150, 138, 200]  # parts: too short to count
    assert not group_boxes(np.array([person, head, legs], float)).any()
    behind = [104, 98, 142, 196]  # a person right behind: the pair overlaps too much
    other = [150, 100, 190, 200]
    assert not group_boxes(np.array([person, behind, other], float))[[0, 2]].any()
    # a box matching one of two neighbours is that neighbour's box
    a, b = [100, 100, 130, 190], [128, 100, 158, 190]
    assert not group_boxes(np.array([a, b, [101, 100, 131, 190]], float)).any()
    assert group_boxes(np.zeros((0, 4))).shape == (0,)


def test_tracker_ignores_a_box_across_two_tracked_people():
    from lib.demo.tracking import Tracker

    tr = Tracker(n_init=2, max_age=10)

    def pair(f):
        x = 100 + 2 * f
        return np.array([[x, 100, x + 30, 190, 0.9], [x + 38, 100, x + 68, 190, 0.9]], np.float32)

    for f in range(6):
        tr.update(pair(f), f)
    merged = pair(6)
    both = np.array([[merged[0, 0], 100, merged[1, 2], 190, 0.95]], np.float32)
    states = tr.update(both, 6)  # the detector sees the two as one on this frame
    assert len(states) == 2 and not any(s.detected for s in states)  # both coast...
    centres = sorted(float(s.box[0]) for s in states)
    true = sorted(((merged[:, 0] + merged[:, 2]) / 2).tolist())
    assert np.allclose(centres, true, atol=2)  # ...on their own paths, not pulled into the middle
    states = tr.update(pair(7), 7)
    assert len({s.track_id for s in states if s.detected}) == 2
    assert len([t for t in tr.all_tracks() if t.confirmed]) == 2
    seen = pair(7)
    assert np.allclose(sorted(float(s.box[0]) for s in states), sorted((seen[:, 0] + seen[:, 2]) / 2), atol=2)


def test_tracker_keeps_a_tracked_person_squeezed_between_two_others():
    from lib.demo.tracking import Tracker

    tr = Tracker(n_init=2, max_age=10)
    for f in range(8):
        x = 100 + 2 * f  # three people in a tight row; the middle one is 80% covered by the others
        row = np.array([[x, 100, x + 32, 190, 0.9], [x + 20, 100, x + 50, 190, 0.8],
                        [x + 38, 100, x + 70, 190, 0.9]], np.float32)
        states = tr.update(row, f)
    assert len(states) == 3 and all(s.detected and s.confirmed for s in states)
    assert len(tr.all_tracks()) == 3


# ---------------------------------------------------------------- tiles

def test_tile_schedule_staggers_tiles():
    from lib.demo.frontend import tiles_for_frame

    for every in (1, 2, 3, 4, 5, 7):
        plan = [tiles_for_frame(n, every, 4) for n in range(every * 6)]
        for k in range(4):
            frames = [n for n, ks in enumerate(plan) if k in ks]
            assert np.all(np.diff(frames) == every) and frames[0] < every  # each tile every `every` frames
        per_frame = [len(ks) for ks in plan]
        assert max(per_frame) <= -(-4 // every)  # spread out: at most ceil(4 / every) tiles a frame
    assert tiles_for_frame(3, 0, 4) == [] and tiles_for_frame(0, 4, 0) == []


def test_tile_boxes_cut_by_an_inner_edge_are_dropped():
    from lib.demo.detection import _cut_by_window

    # two tiles of a 200x100 frame: left (0, 0, 120, 100) and right (80, 0, 120, 100)
    wins = np.array([[0, 0, 120, 100], [80, 0, 120, 100], [0, 0, 120, 100], [80, 0, 120, 100]], np.float32)
    boxes = np.array([[0.5, 0.1, 1.0, 0.9],    # left tile, touches its right (inner) edge: cut
                      [0.0, 0.1, 0.3, 0.9],    # right tile, touches its left (inner) edge: cut
                      [0.0, 0.1, 0.3, 0.9],    # left tile, touches the frame's left edge: whole
                      [0.5, 0.0, 1.0, 1.0]],   # right tile at the frame's right/top/bottom: whole
                     np.float32)
    assert _cut_by_window(boxes, wins, 200, 100).tolist() == [True, True, False, False]


def test_ssdlite_tiles_subset():
    _need(VTEST, PB)
    from lib.demo.detection import build_detector
    from lib.demo.video import open_video

    frame = next(f for i, f in open_video(VTEST).iter_frames(120, 1))
    det = build_detector("ssdlite", asset_root=str(ASSETS), score_threshold=0.3)
    assert det.num_tiles == 4
    full, one, every = det.detect(frame), det.detect(frame, tiled=[3]), det.detect(frame, tiled=True)
    for d in (full, one, every):
        assert d.shape[1] == 5 and np.all(d[:, 3] - d[:, 1] >= det.min_box_height)
    assert len(every) >= len(full)
    assert np.array_equal(det.detect(frame, tiled=[]), full)


# ---------------------------------------------------------------- clutter and stitching

def _track_from(boxes_by_frame, scores=0.9, tid=1):
    """A Track holding detections {frame: (cx, cy, w, h)}."""
    from lib.demo.tracking import BoxKalman, Track

    frames = sorted(boxes_by_frame)
    t = Track(tid, BoxKalman(np.asarray(boxes_by_frame[frames[0]], float)), frames[0], confirmed=True)
    for f in frames:
        b = np.asarray(boxes_by_frame[f], np.float64)
        t.raw[f] = b.astype(np.float32)
        t.history[f] = (b, float(scores))
    return t


def test_static_clutter():
    from lib.demo.tracking import is_static_clutter

    still = {f: (700.0 + 0.5 * (f % 2), 180.0, 20.0, 70.0) for f in range(30)}
    assert is_static_clutter(_track_from(still, scores=0.25))  # a sign post: weak and motionless
    assert not is_static_clutter(_track_from(still, scores=0.8))  # a person standing, seen clearly
    walking = {f: (100.0 + 3 * f, 180.0, 20.0, 70.0) for f in range(30)}
    assert not is_static_clutter(_track_from(walking, scores=0.25))  # weak but walking
    short = {f: still[f] for f in range(5)}
    assert not is_static_clutter(_track_from(short, scores=0.25))  # too little evidence


def test_stitch_links_one_person_across_an_occlusion():
    from lib.demo.tracking import finalize_boxes, merge_tracks, stitch_tracks

    walk = lambda f: (100.0 + 4 * f, 200.0, 30.0, 90.0)  # noqa: E731
    before = _track_from({f: walk(f) for f in range(0, 20)}, tid=1)
    after = _track_from({f: walk(f) for f in range(34, 60)}, tid=2)  # hidden for 14 frames
    stranger = _track_from({f: (500.0 - 2 * f, 300.0, 40.0, 120.0) for f in range(25, 60)}, tid=3)
    chains = stitch_tracks([after, stranger, before], max_gap=20)
    ids = sorted([t.track_id for t in c] for c in chains)
    assert ids == [[1, 2], [3]]
    merged = merge_tracks(next(c for c in chains if len(c) == 2))
    frames, boxes, detected = finalize_boxes(merged, min_len=5, smooth_sigma=0.0)
    assert frames.tolist() == list(range(60)) and detected.sum() == 46
    assert np.allclose(boxes[27, 0], walk(27)[0], atol=1)  # the gap is filled on the walking path
    # too long a gap, or a jump away from the walking path: no link
    assert len(stitch_tracks([before, after], max_gap=10)) == 2
    away = _track_from({f: (100.0 + 4 * f, 400.0, 30.0, 90.0) for f in range(34, 60)}, tid=4)
    assert len(stitch_tracks([before, away], max_gap=20)) == 2
    bigger = _track_from({f: (100.0 + 4 * f, 200.0, 45.0, 135.0) for f in range(34, 60)}, tid=5)
    assert len(stitch_tracks([before, bigger], max_gap=20)) == 2


def test_stitch_refuses_a_gap_someone_else_fills():
    from lib.demo.tracking import stitch_tracks

    walk = lambda f: (100.0 + 4 * f, 200.0, 30.0, 90.0)  # noqa: E731
    before = _track_from({f: walk(f) for f in range(0, 20)}, tid=1)
    after = _track_from({f: walk(f) for f in range(34, 60)}, tid=2)
    other = _track_from({f: walk(f) for f in range(18, 36)}, tid=3)  # the gap is someone's track
    chains = stitch_tracks([before, after, other], max_gap=20)
    assert not any({1, 2} <= {t.track_id for t in c} for c in chains)


def test_fill_gaps_interpolates_with_low_confidence():
    from lib.demo.frontend import _fill_gaps

    kp = np.zeros((6, 2, 3), np.float32)
    kp[0] = [[0, 0, 0.9], [10, 10, 0.8]]
    kp[5] = [[50, 0, 0.9], [60, 10, 0.8]]
    have = np.array([1, 0, 0, 0, 0, 1], bool)
    out = _fill_gaps(kp, have, conf_scale=0.2)
    assert np.allclose(out[2, 0, :2], [20, 0]) and np.allclose(out[3, 1, :2], [40, 10])
    assert np.allclose(out[1:5, :, 2], [[0.18, 0.16]] * 4)
    assert np.array_equal(out[[0, 5]], kp[[0, 5]])


# ---------------------------------------------------------------- scoring against labels

def test_score_boxes_counts_hits_misses_and_false_boxes(tmp_path):
    from lib.demo.boxeval import load_box_labels, score_boxes, track_boxes_by_frame

    path = tmp_path / "labels.json"
    path.write_text(json.dumps({"frames": {"3": [{"box": [0, 0, 10, 30]}, {"box": [50, 0, 60, 30]},
                                                 {"box": [90, 0, 100, 30], "ignore": True}],
                                           "7": [{"box": [0, 0, 10, 30]}]}}))
    labels = load_box_labels(path)
    perfect = {3: np.array([[0, 0, 10, 30], [50, 0, 60, 30]]), 7: np.array([[0, 0, 10, 30]])}
    s = score_boxes(perfect, labels)
    assert (s.hits, s.people, s.false_boxes, s.recall) == (3, 3, 0, 1.0)
    # a shifted box (IoU 0.2), a box on the ignored person, a box on nobody
    pred = {3: np.array([[6, 0, 16, 30], [90, 0, 100, 30], [200, 0, 210, 30]]), 7: np.zeros((0, 4))}
    s = score_boxes(pred, labels)
    assert (s.hits, s.people, s.false_boxes) == (0, 3, 2) and s.per_frame[3] == (0, 2, 2)
    assert s.missed[7] == [[0.0, 0.0, 10.0, 30.0]]
    tracks = {1: {"frame_ids": np.array([3, 7]), "bboxes": np.array([[5, 15, 10, 30], [5, 15, 10, 30]])}}
    assert score_boxes(track_boxes_by_frame(tracks), labels).hits == 2
    path.write_text("{}")
    with pytest.raises(UserError, match="not a box label file"):
        load_box_labels(path)
    with pytest.raises(UserError, match="not found"):
        load_box_labels(tmp_path / "missing.json")


def test_labels_file_is_well_formed():
    from lib.demo.boxeval import load_box_labels

    labels = load_box_labels(LABELS)
    assert len(labels) >= 6 and sum(len(p) for p in labels.values()) >= 40
    for people in labels.values():
        for p in people:
            x1, y1, x2, y2 = p["box"]
            assert 0 <= x1 < x2 <= 768 and 0 <= y1 < y2 <= 576


def test_people_found_in_labelled_vtest_frames():
    """Detection + tracking on the first 300 frames of vtest.avi against the hand-drawn boxes
    (the full video is scored by scripts/bench_detection.py)."""
    _need(VTEST, PB)
    from lib.demo.boxeval import load_box_labels, score_boxes, track_boxes_by_frame
    from lib.demo.frontend import run_frontend
    from lib.demo.video import open_video

    labels = {f: p for f, p in load_box_labels(LABELS).items() if f < 300}
    assert len(labels) >= 4
    res = run_frontend(open_video(VTEST), asset_root=str(ASSETS), max_frames=300, keypoint_model=None,
                       progress=False)
    score = score_boxes(track_boxes_by_frame(res.tracks), labels)
    assert score.recall >= 0.85, score.missed
    assert score.false_boxes <= 2, score.false
