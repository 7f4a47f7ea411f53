"""Benchmark the demo front-end on vtest.avi: per-stage ms/frame and detection stats.

    python scripts/bench_frontend.py [--frames 200] [--threads 2] [--tile_every 3]

Prints per-stage numbers and ends with one line ``RESULT {json}``.

Wall times on a shared machine vary with its load (printed); the CPU times
(of the stage's own thread, 1 library thread each) are what a stage costs on
an idle core. Stats without ground truth: ``full_vs_tiled`` is the share of tiled-detection
boxes (score >= 0.5, the denser detector) that the full-frame pass alone also
finds (IoU >= 0.3) on sampled frames; ``track_coverage`` is the share of those
tiled boxes that a final track covers (IoU >= 0.3) on the same frames.
"""
from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path


import numpy as np  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--video", default="data/assets/videos/vtest.avi")
    ap.add_argument("--asset_root", default="data/assets")
    ap.add_argument("--frames", type=int, default=200, help="frames for the front-end run")
    ap.add_argument("--sample_every", type=int, default=20, help="frame step of the detection comparison")
    ap.add_argument("--threads", type=int, default=1,
                    help="OpenCV/TFLite threads per stage (1: stages run side by side on 2 cores, and the "
                         "per-stage CPU times are exact)")
    ap.add_argument("--tile_every", type=int, default=3, help="tiles every N frames (as DEMO.TILE_EVERY)")
    args = ap.parse_args()

    import cv2

    from lib.demo.detection import box_iou, build_detector, cxcywh_to_xyxy
    from lib.demo.frontend import run_frontend
    from lib.demo.video import open_video

    cv2.setNumThreads(args.threads)
    os.environ.setdefault("OMP_NUM_THREADS", str(args.threads))
    reader = open_video(args.video)
    n = min(args.frames, reader.num_frames)
    result: dict = {"video": Path(args.video).name, "frames": n, "threads": args.threads,
                    "tile_every": args.tile_every, "load_avg_1min": round(os.getloadavg()[0], 2)}

    t0 = time.perf_counter()
    frames = {}
    for idx, frame in reader.iter_frames(0, n):
        # offset so that sampled frames are not the ones the front-end tiles (every 5th/10th)
        if idx % args.sample_every == 7:
            frames[idx] = frame
    result["decode_ms"] = round(1000 * (time.perf_counter() - t0) / n, 2)

    det = build_detector("ssdlite", asset_root=args.asset_root, score_threshold=0.5)
    det.detect(next(iter(frames.values())))  # warm-up
    full, tiled, t_full, t_tiled, c_full, c_tiled = {}, {}, 0.0, 0.0, 0.0, 0.0
    for idx, frame in frames.items():
        t, c = time.perf_counter(), time.thread_time()
        full[idx] = det.detect(frame)
        t_full += time.perf_counter() - t
        c_full += time.thread_time() - c
        t, c = time.perf_counter(), time.thread_time()
        tiled[idx] = det.detect(frame, tiled=True)
        t_tiled += time.perf_counter() - t
        c_tiled += time.thread_time() - c
    k = len(frames)
    n_full = sum(len(v) for v in full.values())
    n_tiled = sum(len(v) for v in tiled.values())
    found = sum(int((box_iou(tiled[i][:, :4], full[i][:, :4]).max(axis=1) >= 0.3).sum())
                if len(full[i]) and len(tiled[i]) else 0 for i in frames)
    result.update(detect_full_ms=round(1000 * t_full / k, 1), detect_tiled_ms=round(1000 * t_tiled / k, 1),
                  detect_full_cpu_ms=round(1000 * c_full / k, 1), detect_tiled_cpu_ms=round(1000 * c_tiled / k, 1),
                  sampled_frames=k, boxes_full=n_full, boxes_tiled=n_tiled,
                  full_vs_tiled=round(found / max(n_tiled, 1), 3))

    c = time.process_time()
    t = time.perf_counter()
    res = run_frontend(reader, asset_root=args.asset_root, max_frames=n, tile_every=args.tile_every,
                       num_threads=args.threads, progress=False)
    total = time.perf_counter() - t
    cpu_total = time.process_time() - c
    per = {f"{k_}_ms": round(1000 * v / res.num_frames, 1) for k_, v in res.timings.items()}
    per.update({f"{k_}_ms": round(1000 * v / res.num_frames, 1) for k_, v in res.stats.items()
                if k_.startswith("cpu_")})
    crops = res.stats["person_crops"]
    covered = 0
    for i in frames:
        if not len(tiled[i]):
            continue
        boxes = [tr.bboxes[tr.frame_ids == i] for tr in res.tracks.values() if i in tr.frame_ids]
        if boxes:
            iou = box_iou(tiled[i][:, :4], cxcywh_to_xyxy(np.concatenate(boxes)))
            covered += int((iou.max(axis=1) >= 0.3).sum())
    result.update(per, frontend_ms=round(1000 * total / res.num_frames, 1),
                  frontend_fps=round(res.num_frames / total, 2), tracks=len(res.tracks),
                  person_crops_per_frame=round(crops / res.num_frames, 2),
                  frontend_cpu_ms=round(1000 * cpu_total / res.num_frames, 1),
                  keypoints_cpu_ms_per_person=round(1000 * res.stats["cpu_keypoints"] / max(crops, 1), 2),
                  track_coverage=round(covered / max(n_tiled, 1), 3))

    print(f"video {result['video']}: {n} frames, {args.threads} threads, load avg {result['load_avg_1min']}")
    print(f"decode            {result['decode_ms']:7.1f} ms/frame")
    print(f"detect full       {result['detect_full_ms']:7.1f} ms/frame ({result['detect_full_cpu_ms']:.1f} CPU)   "
          f"({n_full} boxes on {k} frames)")
    print(f"detect tiled      {result['detect_tiled_ms']:7.1f} ms/frame ({result['detect_tiled_cpu_ms']:.1f} CPU)   "
          f"({n_tiled} boxes; full frame finds "
          f"{100 * result['full_vs_tiled']:.0f}% of them)")
    print("front-end stage   wall ms/frame  CPU ms/frame (stages overlap when pipelined)")
    for key in ("decode", "detect", "track", "keypoints", "post"):
        print(f"  {key:15s}{per.get(key + '_ms', 0):9.1f}{per.get('cpu_' + key + '_ms', float('nan')):14.1f}")
    print(f"front-end total   {result['frontend_ms']:7.1f} ms/frame = {result['frontend_fps']:.1f} fps wall; "
          f"{result['frontend_cpu_ms']:.1f} CPU ms/frame (all threads)")
    print(f"{result['tracks']} tracks, {result['person_crops_per_frame']} keypoint crops/frame, "
          f"{result['keypoints_cpu_ms_per_person']} CPU ms per crop; tracks cover "
          f"{100 * result['track_coverage']:.0f}% of tiled boxes")
    print("RESULT " + json.dumps(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
