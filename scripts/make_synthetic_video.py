#!/usr/bin/env python
"""Render a synthetic multi-person video with ground truth (see doc/data.md).

    python scripts/make_synthetic_video.py --out_dir data/synthetic_video [--people 3] [--frames 90]
        [--background image.jpg] [--preview doc/images/data_synthetic_frame.png]

Writes <out_dir>/video.mp4 and <out_dir>/gt.npz (tracks, boxes, 2D/3D joints,
SMPL parameters, vertices). Needs offscreen OpenGL (EGL): see lib/demo/render.py.
"""
from __future__ import annotations

import argparse
import os
import time
from pathlib import Path


import numpy as np  # noqa: E402

from lib.core.cli import configure_logging, run_main  # noqa: E402


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out_dir", default="data/synthetic_video", help="output folder")
    p.add_argument("--people", type=int, default=3, help="people in the scene")
    p.add_argument("--frames", type=int, default=90, help="frames")
    p.add_argument("--fps", type=float, default=30.0)
    p.add_argument("--width", type=int, default=640)
    p.add_argument("--height", type=int, default=480)
    p.add_argument("--background", default=None, help="background image (default: plain sky/floor)")
    p.add_argument("--motion_dir", default="data/assets/motions")
    p.add_argument("--body_model", default="open", choices=["open", "smpl"])
    p.add_argument("--body_model_dir", default=None)
    p.add_argument("--preview", default=None, help="also write this PNG: one frame with its GT joints")
    p.add_argument("--preview_frame", type=int, default=30)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    configure_logging("INFO")
    import cv2

    from lib.body_models import load_body_model
    from lib.atomic_io import atomic_write_bytes
    from lib.data_utils.synthetic import load_clips
    from lib.data_utils.synthetic_video import make_scene, render_video
    from lib.errors import UserError

    t0 = time.time()
    bm = load_body_model(args.body_model, model_dir=args.body_model_dir)
    clips = load_clips(args.motion_dir, fps=args.fps)
    bg = None
    if args.background:
        bg = cv2.imread(args.background, cv2.IMREAD_COLOR)
        if bg is None:
            raise UserError(f"cannot read background image {args.background}")
        bg = bg[..., ::-1]
    gt = make_scene(bm, clips, np.random.default_rng(args.seed), num_people=args.people, num_frames=args.frames,
                    fps=args.fps, img_size=(args.width, args.height))
    out = Path(args.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    render_video(gt, out / "video.mp4", bg, preview_png=args.preview,
                 preview_frame=min(args.preview_frame, args.frames - 1))
    import io
    buf = io.BytesIO()
    np.savez_compressed(buf, **gt)
    atomic_write_bytes(out / "gt.npz", buf.getvalue())
    print(f"wrote {out / 'video.mp4'} and {out / 'gt.npz'}: {args.people} people, {args.frames} frames, "
          f"clips {', '.join(gt['clips'])} ({time.time() - t0:.1f} s)")
    return 0


if __name__ == "__main__":
    os.environ.setdefault("OMP_NUM_THREADS", "2")
    run_main(main)
