"""Person recall of detection + tracking against hand-labelled frames of vtest.avi.

    python scripts/bench_detection.py                       # run detection + tracking (no keypoints)
    python scripts/bench_detection.py --results OUT/vtest/results.npz   # score a finished demo run
    python scripts/bench_detection.py DEMO.TILE_EVERY 3     # config overrides

Scores the final tracks' boxes (what results.npz holds) on every labelled frame:
a labelled person is found when a track box overlaps it with IoU >= 0.3
(one-to-one matching); every other track box is a false box. The raw per-frame
detections are scored too, at the score that starts a track. Prints per-frame
counts, the misses and false boxes, and ends with one line ``RESULT {json}``.

Labels: ``tests/data/vtest_person_boxes.json`` (drawn by hand for this project,
see ``lib/demo/boxeval.py`` for the format).
"""
from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import numpy as np


def main() -> int:
    from lib.core.config import load_config
    from lib.demo.boxeval import load_box_labels, score_boxes, track_boxes_by_frame
    from lib.demo.frontend import frontend_kwargs, run_frontend
    from lib.demo.video import open_video

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--video", default="data/assets/videos/vtest.avi")
    ap.add_argument("--labels", default="tests/data/vtest_person_boxes.json")
    ap.add_argument("--asset_root", default="data/assets")
    ap.add_argument("--results", default=None, help="score this results.npz instead of running the front-end")
    ap.add_argument("--progress", action="store_true", help="show the front-end's progress bar")
    ap.add_argument("--cfg", default=None, help="config file (DEMO section)")
    ap.add_argument("opts", nargs="*", help="config overrides KEY VALUE ...")
    args = ap.parse_args()

    labels = load_box_labels(args.labels)
    cfg = load_config(args.cfg, args.opts)
    result: dict = {"labels": Path(args.labels).name, "frames_labelled": len(labels),
                    "load_avg_1min": round(os.getloadavg()[0], 2)}
    if args.results:
        from lib.demo.results import load_results

        res = load_results(args.results)
        tracks, detections = res.tracks, res.detections
        result["source"] = str(args.results)
    else:
        kw = frontend_kwargs(cfg)
        kw.update(keypoint_model=None, asset_root=args.asset_root, progress=args.progress)
        reader = open_video(args.video)
        t0 = time.perf_counter()
        front = run_frontend(reader, **kw)
        result.update(source="front-end", frames=front.num_frames,
                      ms_per_frame=round(1000 * (time.perf_counter() - t0) / max(front.num_frames, 1), 1),
                      **{k: v for k, v in kw.items() if k in ("tile_every", "detect_threshold", "new_track_threshold")})
        tracks, detections = front.tracks, front.detections

    score = score_boxes(track_boxes_by_frame(tracks), labels)
    thr = float(cfg.DEMO.NEW_TRACK_THRESHOLD)
    per_frame_dets = {}
    for row in np.asarray(detections).reshape(-1, 6):
        if row[5] >= thr:
            per_frame_dets.setdefault(int(row[0]), []).append(row[1:5])
    det_score = score_boxes({f: np.stack(b) for f, b in per_frame_dets.items()}, labels)

    print(f"{'frame':>6} {'found':>7} {'false':>6}")
    for f, (hits, n, false) in score.per_frame.items():
        print(f"{f:>6} {hits:>3}/{n:<3} {false:>6}")
        for box in score.missed.get(f, []):
            print(f"         missed {box}")
        for box in score.false.get(f, []):
            print(f"         false  {box}")
    print(f"tracks: recall {score.recall:.3f} ({score.hits}/{score.people}), {score.false_boxes} false boxes, "
          f"{len(tracks)} tracks")
    print(f"raw detections (score >= {thr:g}): recall {det_score.recall:.3f} "
          f"({det_score.hits}/{det_score.people}), {det_score.false_boxes} false boxes")
    result.update(tracks=len(tracks), recall=round(score.recall, 4), found=score.hits, people=score.people,
                  false_boxes=score.false_boxes, detections_recall=round(det_score.recall, 4),
                  detections_false_boxes=det_score.false_boxes, detections_min_score=thr)
    print("RESULT " + json.dumps(result))
    return 0


if __name__ == "__main__":
    from lib.core.cli import run_main

    run_main(main)
