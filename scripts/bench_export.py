"""Benchmark: export of one 300-frame track (target: GLB < 2 s).

    python scripts/bench_export.py                 # open body model, GLB + BVH
    python scripts/bench_export.py --formats glb,bvh,obj,fbx --frames 300

Uses data/body_models/<kind>; when that model is missing it falls back to the
tiny test model (reported as "model": "toy", not comparable). Prints the
figures and ends with one line ``RESULT {json}``.
"""
from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np

from lib.body_models import BodyModelNotFound, load_body_model
from lib.core.cli import configure_logging, run_main
from lib.export import export_results
from lib.export.fbx import fbx_available


def fake_results(path: Path, bm, frames: int, fps: float) -> Path:
    """One walking-ish track: smooth sinusoidal joint motion, root moving away."""
    rng = np.random.default_rng(0)
    t = np.arange(frames)[:, None] / fps
    pose = 0.3 * np.sin(2 * np.pi * 0.8 * t + rng.uniform(0, 6, (1, 72)))
    pose[:, :3] = [np.pi, 0.0, 0.0]
    transl = np.c_[0.3 * np.sin(t), np.full_like(t, 0.2), 4.0 + 0.5 * t]
    np.savez(path, **{"0/frame_ids": np.arange(frames), "0/pose": pose, "0/betas": rng.normal(0, 0.5, 10),
                      "0/transl": transl, "fps": fps, "body_model": bm.kind, "num_vertices": bm.num_vertices})
    return path


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--frames", type=int, default=300)
    ap.add_argument("--fps", type=float, default=30.0)
    ap.add_argument("--formats", default="glb,bvh")
    ap.add_argument("--body_model", default="open", choices=["open", "smpl"])
    ap.add_argument("--repeats", type=int, default=3, help="runs per format; the best is reported")
    args = ap.parse_args()
    configure_logging("WARNING")

    try:
        bm = load_body_model(args.body_model)
        model = args.body_model
    except BodyModelNotFound as err:
        from tests.toy_body_model import write_toy_body_model

        print(f"note: {err}; falling back to the toy test model (numbers not comparable)")
        bm = load_body_model("open", model_dir=write_toy_body_model(tempfile.mkdtemp(prefix="pbn_toy_")))
        model = "toy"
    result = {"frames": args.frames, "model": model, "num_vertices": bm.num_vertices}
    with tempfile.TemporaryDirectory(prefix="pbn_bench_export_") as tmp:
        res = fake_results(Path(tmp) / "results.npz", bm, args.frames, args.fps)
        for fmt in [f.strip() for f in args.formats.split(",") if f.strip()]:
            if fmt == "fbx" and not fbx_available():
                print("fbx: skipped (bpy not installed: bash scripts/install_fbx.sh)")
                continue
            times, size = [], 0
            for r in range(args.repeats if fmt != "fbx" else 1):
                t0 = time.perf_counter()
                written = export_results(res, fmt, Path(tmp) / f"out_{fmt}_{r}", body_model=bm)
                times.append(time.perf_counter() - t0)
                p = written[fmt][0]
                size = sum(f.stat().st_size for f in p.rglob("*")) if p.is_dir() else p.stat().st_size
            best = min(times)
            print(f"{fmt}: {best:.3f} s for {args.frames} frames ({size / 1e6:.2f} MB)")
            result[f"{fmt}_s"] = round(best, 4)
            result[f"{fmt}_mb"] = round(size / 1e6, 3)
        if "glb_s" in result and model != "toy":
            # What scripts/export.py pays: loading the body model from disk, then the GLB.
            t0 = time.perf_counter()
            export_results(res, "glb", Path(tmp) / "out_cli", body_model=args.body_model)
            result["glb_with_model_load_s"] = round(time.perf_counter() - t0, 4)
            print(f"glb incl. body model load: {result['glb_with_model_load_s']:.3f} s")
    if "glb_s" in result:
        result["glb_under_2s"] = result["glb_s"] < 2.0
    print("RESULT " + json.dumps(result))
    return 0


if __name__ == "__main__":
    run_main(main)
