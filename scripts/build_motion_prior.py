#!/usr/bin/env python
"""Build the motion pose prior (data/assets/motion_prior.npz) from the DeepMimic clips.

Usage: python scripts/build_motion_prior.py [--motion_dir D] [--out F] [--components K] [--force]
Skips the work when the output is newer than every clip and was built by the current
builder version (use --force to rebuild).
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path


from lib.core.cli import configure_logging, run_main  # noqa: E402
from lib.motion.prior import DEFAULT_MOTION_PRIOR, build_motion_prior, prior_is_up_to_date  # noqa: E402


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--motion_dir", default="data/assets/motions", help="folder with humanoid3d_*.txt")
    parser.add_argument("--out", default=DEFAULT_MOTION_PRIOR, help="output .npz")
    parser.add_argument("--components", type=int, default=8, help="mixture components")
    parser.add_argument("--force", action="store_true", help="rebuild even if the output is up to date")
    args = parser.parse_args(argv)
    configure_logging("INFO")

    out = Path(args.out)
    if not args.force and prior_is_up_to_date(out, args.motion_dir, args.components):
        print(f"{out}: up to date")
        return 0
    start = time.time()
    prior = build_motion_prior(args.motion_dir, out, num_components=args.components)
    print(f"{out}: {prior.num_components} components, built in {time.time() - start:.1f} s")
    return 0


if __name__ == "__main__":
    run_main(main)
