#!/usr/bin/env python
"""Benchmark the body layer: forward + backward for a batch of 64 clips x 16 frames on CPU.

Measures the full mesh (vertices + 49 joints) and the joints_only mode used by the fitter.
Inputs are rotation matrices and betas that require gradients; the loss touches every
output so the backward pass covers the whole graph.

    python scripts/bench_body_model.py [--kind open] [--runs 10] [--threads N]

Ends with one line: RESULT {json}
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time


import torch  # noqa: E402

from lib.body_models import load_body_model  # noqa: E402
from lib.errors import UserError  # noqa: E402
from lib.geometry.rotations import axis_angle_to_matrix  # noqa: E402


def _time_step(bm, rot: torch.Tensor, betas: torch.Tensor, joints_only: bool, runs: int, warmup: int = 2):
    """Milliseconds per forward+backward (list of ``runs`` timings)."""
    times = []
    for i in range(warmup + runs):
        r = rot.detach().clone().requires_grad_(True)
        b = betas.detach().clone().requires_grad_(True)
        start = time.perf_counter()
        out = bm(global_orient=r[:, :1], body_pose=r[:, 1:], betas=b, joints_only=joints_only)
        loss = out.joints.square().sum() + out.smpl_joints.square().sum()
        if out.vertices is not None:
            loss = loss + out.vertices.square().sum()
        loss.backward()
        elapsed = (time.perf_counter() - start) * 1000.0
        if i >= warmup:
            times.append(elapsed)
    return times


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--kind", default="open", choices=["open", "smpl"])
    parser.add_argument("--model_dir", default=None)
    parser.add_argument("--batch", type=int, default=64, help="clips")
    parser.add_argument("--seqlen", type=int, default=16, help="frames per clip")
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    opts = parser.parse_args(argv)
    if opts.threads:
        torch.set_num_threads(opts.threads)
    try:
        bm = load_body_model(opts.kind, model_dir=opts.model_dir)
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    n = opts.batch * opts.seqlen
    gen = torch.Generator().manual_seed(0)
    rot = axis_angle_to_matrix(0.3 * torch.randn(n, 24, 3, generator=gen))
    betas = torch.randn(n, 10, generator=gen)
    result = dict(kind=opts.kind, frames=n, vertices=bm.num_vertices, threads=torch.get_num_threads(), runs=opts.runs)
    with torch.no_grad():
        for _ in range(2):
            bm(global_orient=rot[:, :1], body_pose=rot[:, 1:], betas=betas)
        start = time.perf_counter()
        for _ in range(opts.runs):
            bm(global_orient=rot[:, :1], body_pose=rot[:, 1:], betas=betas)
        result["forward_only_ms_mean"] = round((time.perf_counter() - start) * 1000.0 / opts.runs, 1)
    for mode, joints_only in (("full", False), ("joints_only", True)):
        times = _time_step(bm, rot, betas, joints_only, opts.runs)
        result[f"{mode}_fwd_bwd_ms_mean"] = round(statistics.mean(times), 1)
        result[f"{mode}_fwd_bwd_ms_median"] = round(statistics.median(times), 1)
        result[f"{mode}_fwd_bwd_ms_min"] = round(min(times), 1)
        print(f"{mode:12s} forward+backward, {n} frames: mean {statistics.mean(times):.1f} ms, "
              f"median {statistics.median(times):.1f} ms, min {min(times):.1f} ms")
    print(f"full mesh forward only (no grad): {result['forward_only_ms_mean']:.1f} ms")
    print("RESULT " + json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
