#!/usr/bin/env python
"""Convert a raw dataset into the pbn schema (see doc/data.md).

    python scripts/prepare_data.py DATASET --raw_dir D --out_dir O [--split S]

DATASET: 3dpw, mpi_inf_3dhp, h36m, insta, penn_action, posetrack, amass, vibe_db.
--raw_dir is the dataset's own root folder as downloaded; the result goes to
O/<dataset>/<split>/ (O defaults to data/datasets). --split all converts every
split. vibe_db imports VIBE's joblib *_db.pt files: that step unpickles, so use
it only on databases you trust (see doc/data.md).
"""
from __future__ import annotations

import argparse
import os


from lib.core.cli import configure_logging, run_main  # noqa: E402
from lib.data_utils.registry import CONVERTERS, prepare  # noqa: E402


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("dataset", choices=sorted(CONVERTERS), help="which raw dataset")
    p.add_argument("--raw_dir", required=True, help="the dataset's root folder as downloaded")
    p.add_argument("--out_dir", default="data/datasets", help="converted-dataset root (PATHS.DATASET_ROOT)")
    p.add_argument("--split", default=None, help="split to convert (default: the dataset's usual one; 'all')")
    p.add_argument("--frame_step", type=int, default=None, help="h36m / mpi_inf_3dhp train: keep every k-th frame")
    p.add_argument("--body_model", default="open", choices=["open", "smpl"], help="3dpw: model for the 3D joints")
    p.add_argument("--body_model_dir", default=None, help="3dpw: explicit body-model folder")
    args = p.parse_args()
    configure_logging("INFO")
    body_model = None
    if args.dataset == "3dpw":
        from lib.body_models import load_body_model

        body_model = load_body_model(args.body_model, model_dir=args.body_model_dir)
    for folder in prepare(args.dataset, args.raw_dir, args.out_dir, args.split, body_model=body_model,
                          frame_step=args.frame_step):
        print(f"wrote {folder}")
    return 0


if __name__ == "__main__":
    os.environ.setdefault("OMP_NUM_THREADS", "2")
    run_main(main)
