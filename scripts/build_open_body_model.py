#!/usr/bin/env python
"""Build the free "open" body model (SMPL file format) from the anny package.

Cached: if --out_dir already holds a model built by the same builder version with the
same arguments, this exits at once (use --force to rebuild).

    python scripts/build_open_body_model.py [--out_dir data/body_models/open] [--force]
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import re
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

DEFAULTS = dict(n_shapes=1000, target_vertices=7000, seed=0, min_age=20.0, max_age=65.0)


def _cached(out_dir: str, args: dict) -> bool:
    """Fast up-to-date check without importing torch (importing lib.body_models does):
    meta.json must record this builder version and these arguments."""
    text = (REPO / "lib" / "body_models" / "anny_builder.py").read_text()
    version = re.search(r'^BUILDER_VERSION = "([^"]+)"', text, re.M)
    folder = Path(out_dir)
    names = ("SMPL_NEUTRAL.pkl", "J_regressor_extra.npy", "J_regressor_h36m.npy", "vertex_ids.json",
             "smpl_mean_params.npz", "meta.json")
    if version is None or not all((folder / n).is_file() for n in names):
        return False
    try:
        meta = json.loads((folder / "meta.json").read_text())
    except (OSError, ValueError):
        return False
    return meta.get("builder_version") == version.group(1) and meta.get("args") == args


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out_dir", default=os.path.join("data", "body_models", "open"))
    parser.add_argument("--force", action="store_true", help="rebuild even if an up-to-date model is there")
    parser.add_argument("--n_shapes", type=int, default=DEFAULTS["n_shapes"], help="sampled adult shapes for the PCA")
    parser.add_argument("--target_vertices", type=int, default=DEFAULTS["target_vertices"],
                        help="vertices of the decimated mesh (>= 6890)")
    parser.add_argument("--seed", type=int, default=DEFAULTS["seed"])
    opts = parser.parse_args(argv)
    wanted = dict(DEFAULTS, n_shapes=opts.n_shapes, target_vertices=opts.target_vertices, seed=opts.seed)
    if not opts.force and _cached(opts.out_dir, wanted):
        print(f"open body model in {opts.out_dir} is up to date (use --force to rebuild)")
        return 0
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    from lib.body_models.anny_builder import BuildArgs, build_open_body_model

    args = BuildArgs(**wanted)
    if args.as_dict() != wanted:  # keeps DEFAULTS above in step with BuildArgs
        print("error: build_open_body_model.py DEFAULTS disagree with BuildArgs", file=sys.stderr)
        return 2
    start = time.perf_counter()
    try:
        build_open_body_model(opts.out_dir, args, force=True)
    except (ValueError, RuntimeError, ImportError) as exc:
        print(f"error: building the open body model failed: {exc}", file=sys.stderr)
        return 2
    print(f"built the open body model in {opts.out_dir} in {time.perf_counter() - start:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
