#!/usr/bin/env python
"""Write the synthetic datasets (schema of lib/dataset) from the open body model
driven by the DeepMimic clips.

    python scripts/make_synthetic_data.py            # synthetic/{train,test}, synthetic_2d/train
    python scripts/make_synthetic_data.py --motion   # synthetic_amass/train (discriminator motion)

Both finish in well under 5 minutes on a CPU. See doc/data.md.
"""
from __future__ import annotations

import argparse
import logging
import os
import time
from pathlib import Path


import numpy as np  # noqa: E402

from lib.core.cli import configure_logging, run_main  # noqa: E402

logger = logging.getLogger("make_synthetic_data")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out_root", default="data/datasets", help="converted-dataset root (PATHS.DATASET_ROOT)")
    p.add_argument("--motion_dir", default="data/assets/motions", help="folder of humanoid3d_*.txt clips")
    p.add_argument("--body_model", default="open", choices=["open", "smpl"], help="body model kind")
    p.add_argument("--body_model_dir", default=None, help="explicit body-model folder (default data/body_models/<kind>)")
    p.add_argument("--motion", action="store_true", help="write the AMASS-schema motion set instead of people")
    p.add_argument("--name", default=None, help="dataset name (default synthetic / synthetic_amass)")
    p.add_argument("--num_train", type=int, default=400, help="training sequences (people)")
    p.add_argument("--num_test", type=int, default=60, help="test sequences")
    p.add_argument("--num_2d", type=int, default=300, help="sequences of the 2D-only set (0 = none)")
    p.add_argument("--min_len", type=int, default=60, help="shortest sequence, frames")
    p.add_argument("--max_len", type=int, default=240, help="longest sequence, frames (short clips give fewer)")
    p.add_argument("--copies", type=int, default=40, help="--motion: augmented copies of every clip")
    p.add_argument("--fps", type=float, default=30.0, help="frame rate of the written sets")
    p.add_argument("--seed", type=int, default=0, help="random seed")
    args = p.parse_args()
    configure_logging("INFO")
    from lib.data_utils.synthetic import load_clips, make_motion_fields, make_people_fields
    from lib.dataset.schema import write_dataset

    t0 = time.time()
    clips = load_clips(args.motion_dir, fps=args.fps)
    meta = {"fps": args.fps, "clips": [c.name for c in clips], "seed": args.seed, "raw_root": ""}
    if args.motion:
        name = args.name or "synthetic_amass"
        fields = make_motion_fields(clips, args.copies, np.random.default_rng(args.seed), fps=args.fps)
        out = write_dataset(Path(args.out_root) / name / "train", fields,
                            dict(meta, source=name, note="AMASS-schema motion from the DeepMimic clips"))
        print(f"{out}: {len(fields['vid_name'])} frames in {time.time() - t0:.1f} s")
        return 0
    from lib.body_models import load_body_model

    bm = load_body_model(args.body_model, model_dir=args.body_model_dir)
    name = args.name or "synthetic"
    jobs = [(name, "train", args.num_train, 1, True), (name, "test", args.num_test, 2, True)]
    if args.num_2d > 0:
        jobs.append((f"{name}_2d", "train", args.num_2d, 3, False))
    for ds_name, split, num, seed_off, with_3d in jobs:
        rng = np.random.default_rng((args.seed, seed_off))
        fields = make_people_fields(bm, clips, num, rng, min_len=args.min_len, max_len=args.max_len, fps=args.fps,
                                    prefix=f"{split}{'2d' if not with_3d else ''}", with_3d=with_3d)
        out = write_dataset(Path(args.out_root) / ds_name / split, fields,
                            dict(meta, source=ds_name, split=split, body_model=args.body_model,
                                 img_size=[1280, 720], note="synthetic people; features are a fixed random "
                                 "projection of the 6D pose and betas plus noise"))
        print(f"{out}: {len(fields['vid_name'])} frames, {num} sequences ({time.time() - t0:.1f} s)")
    return 0


if __name__ == "__main__":
    os.environ.setdefault("OMP_NUM_THREADS", "2")
    run_main(main)
