#!/usr/bin/env python
"""Run the HMR backbone over the person crops of a converted dataset and store features.npy.

    python scripts/extract_features.py data/datasets/3dpw/test --raw_dir /data/3DPW \
        --checkpoint data/spin_model_checkpoint.pth.tar [--batch_size 64] [--float32]

Resumable (re-run the same command after an interruption), batched, with a progress bar.
Without --checkpoint the backbone is random: only useful to test the pipeline.
"""
from __future__ import annotations

import argparse
import logging
import os


from lib.core.cli import configure_logging, run_main  # noqa: E402

logger = logging.getLogger("extract_features")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("dataset_dir", help="a converted split folder (<root>/<name>/<split>)")
    p.add_argument("--raw_dir", default=None, help="raw dataset root img_name is relative to (default: meta.json raw_root)")
    p.add_argument("--checkpoint", default="", help="SPIN checkpoint for the backbone (spin_model_checkpoint.pth.tar)")
    p.add_argument("--batch_size", type=int, default=64, help="crops per forward pass")
    p.add_argument("--float32", action="store_true", help="store float32 (default float16)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1 ...")
    p.add_argument("--max_batches", type=int, default=None, help="stop after this many batches (resume later)")
    args = p.parse_args()
    configure_logging("INFO")
    import torch

    from lib.core.config import resolve_device
    from lib.data_utils.features import extract_dataset_features
    from lib.models.backbone import ResNetBackbone, load_spin_checkpoint

    torch.set_num_threads(max(1, int(os.environ.get("OMP_NUM_THREADS", "2"))))
    backbone = ResNetBackbone()
    if args.checkpoint:
        load_spin_checkpoint(args.checkpoint, backbone)
    else:
        logger.warning("no --checkpoint: features come from a randomly initialised backbone")
    out = extract_dataset_features(args.dataset_dir, backbone, raw_root=args.raw_dir, batch_size=args.batch_size,
                                   float16=not args.float32, device=resolve_device(args.device),
                                   max_batches=args.max_batches)
    print(f"wrote {out}" if out else "stopped early; run the same command again to resume")
    return 0


if __name__ == "__main__":
    run_main(main)
