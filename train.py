"""Train the Parallel-Branch Network: python train.py --cfg configs/pbn.yaml [KEY VALUE ...]

Several GPUs: torchrun --nproc_per_node N train.py --cfg configs/pbn.yaml
Resumes automatically from OUTPUT_DIR/EXP_NAME/last.pt (or TRAIN.RESUME).
Exit codes: 0 done, 2 bad config / missing data (one "error: ..." line),
130 interrupted (last.pt written), 1 unexpected failure. See doc/train.md.
"""
from __future__ import annotations

import argparse
import os

from lib.core.cli import configure_logging, run_main
from lib.core.config import add_config_arguments, config_from_args


def main() -> int:
    p = argparse.ArgumentParser(description="pbn training (single process, or one per GPU under torchrun)")
    p.add_argument("--no_progress", action="store_true", help="no progress bars")
    add_config_arguments(p)
    args = p.parse_args()
    cfg = config_from_args(args)
    rank = int(os.environ.get("RANK", "0"))
    log_file = os.path.join(cfg.OUTPUT_DIR, cfg.EXP_NAME, "train.log") if rank == 0 else None
    configure_logging(cfg.LOG_LEVEL if rank == 0 else "WARNING", log_file=log_file)
    from lib.core.trainer import train

    summary = train(cfg, progress=not args.no_progress)
    if rank == 0:
        print(f"done: {summary['step']} steps; best {summary['best_metric_name']} = {summary['best_metric']:.2f}"
              f" -> {os.path.join(cfg.OUTPUT_DIR, cfg.EXP_NAME)}")
    return 0


if __name__ == "__main__":
    run_main(main)
