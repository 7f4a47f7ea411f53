"""Evaluate a trained checkpoint per branch (MPJPE, PA-MPJPE, PVE, acceleration error):

    python eval.py --cfg configs/pbn.yaml --checkpoint output/pbn/best.pt [KEY VALUE ...]

The dataset is DATASET.EVAL_SET / DATASET.EVAL_SPLIT (e.g. DATASET.EVAL_SET mpi_inf_3dhp).
Results: a table on stdout and a JSON file (EVAL.OUT_FILE, default
OUTPUT_DIR/EXP_NAME/eval_<set>_<split>.json). Exit code 2 with one "error: ..."
line for a bad config, checkpoint or dataset. See doc/eval.md.
"""
from __future__ import annotations

import argparse

from lib.core.cli import configure_logging, run_main
from lib.core.config import add_config_arguments, config_from_args


def main() -> int:
    p = argparse.ArgumentParser(description="pbn evaluation of a checkpoint on DATASET.EVAL_SET")
    p.add_argument("--checkpoint", required=True, help="trained checkpoint (best.pt / last.pt of a run folder)")
    p.add_argument("--no_progress", action="store_true", help="no progress bars")
    add_config_arguments(p)
    args = p.parse_args()
    cfg = config_from_args(args)
    configure_logging(cfg.LOG_LEVEL)
    from lib.core.evaluator import evaluate_checkpoint, format_table

    results, path = evaluate_checkpoint(cfg, args.checkpoint, progress=not args.no_progress)
    print(format_table(results))
    print(f"results: {path}")
    return 0


if __name__ == "__main__":
    run_main(main)
