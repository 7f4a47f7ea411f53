"""CPU benchmark of the PBN against the VIBE-equivalent configuration of the same class.

Both models take stored features (batch x frames x 2048) plus 2D keypoints and
run in evaluation mode under ``torch.inference_mode``. Reports parameters,
forward time and frames/s with and without skinning the full mesh (evaluation
needs vertices for PVE and the H36M joints, so the "with vertices" figures are
the ones that count; "no vertices" is what a caller needing only joints pays),
a per-part time split and the torch profiler's top operators. A third,
lighter PBN setting (``--light`` overrides) shows what the ST branch's width
costs. The models are timed in turns (pbn, vibe, pbn, ...) and the best of
``--repeats`` runs is reported next to the median, so load from other
processes on a shared CPU hits both alike. Ends with one ``RESULT {json}`` line.

    python scripts/bench_model.py [--batch 32] [--frames 16] [--repeats 7]
    (or PYTHONPATH=. python scripts/bench_model.py; run from the repository root)
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
LIGHT = ["MODEL.STB.TEMPORAL_DIM", "256", "MODEL.ENCODER.FF_SIZE", "1024"]


def _body_model(choice: str):
    from lib.body_models import load_body_model

    open_dir = ROOT / "data" / "body_models" / "open"
    if choice in ("auto", "open") and (open_dir / "SMPL_NEUTRAL.pkl").is_file():
        return load_body_model("open", model_dir=open_dir), "open"
    if choice == "open":
        raise SystemExit(f"no open body model at {open_dir}; build it (scripts/fetch_assets.sh) or use --body-model toy")
    from tests.toy_body_model import write_toy_body_model

    folder = write_toy_body_model(Path(tempfile.mkdtemp(prefix="pbn_toy_bm_")))
    return load_body_model("open", model_dir=folder), "toy"


def _timed_turns(fns: dict, repeats: int) -> dict:
    """Run each callable once to warm up, then ``repeats`` rounds in turn.
    Returns {name: (best_ms, median_ms)}."""
    for fn in fns.values():
        fn()
    times = {k: [] for k in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            start = time.perf_counter()
            fn()
            times[name].append((time.perf_counter() - start) * 1000.0)
    return {k: (min(v), statistics.median(v)) for k, v in times.items()}


def _gflop(model, features, joints2d) -> dict:
    """Matrix-multiply/attention GFLOP of one forward pass, total and per stage: a
    load-independent figure (elementwise work, e.g. skinning's multiply-adds, is not counted)."""
    from torch.utils.flop_counter import FlopCounterMode

    # The fused inference kernel of nn.TransformerEncoder is invisible to the counter.
    fast = torch.backends.mha.get_fastpath_enabled()
    torch.backends.mha.set_fastpath_enabled(False)
    try:
        with FlopCounterMode(display=False) as counter:
            model(features, joints2d)
    finally:
        torch.backends.mha.set_fastpath_enabled(fast)
    by_module = counter.get_flop_counts()
    out = {"total": sum(counter.get_flop_counts().get("Global", {}).values()) / 1e9}
    for part in ("encoder", "regressor", "stb"):
        key = f"ParallelBranchNet.{part}"
        if key in by_module:
            out[part] = sum(by_module[key].values()) / 1e9
    return {k: round(v, 1) for k, v in out.items()}


def _stage_fns(model, features, joints2d):
    """Callables running each stage of the forward pass on its own."""
    from lib.geometry.rotations import rot6d_to_matrix

    b, t = features.shape[:2]
    enc = model.encoder(features).reshape(b * t, -1)
    steps = model.regressor(enc)
    rot = rot6d_to_matrix(steps[-1].pose6d.reshape(b * t, 24, 6))
    fns = {
        "encoder": lambda: model.encoder(features),
        "regressor": lambda: model.regressor(enc),
        "body_model_full_mesh": lambda: model.body_model(rot[:, :1], rot[:, 1:], steps[-1].betas),
        "body_model_joints_only": lambda: model.body_model(rot[:, :1], rot[:, 1:], steps[-1].betas, joints_only=True),
    }
    if model.stb is not None:
        fns["stb"] = lambda: model.stb(joints2d)
    return fns


def main(argv=None) -> int:
    from lib.core.cli import configure_logging
    from lib.core.config import load_config
    from lib.models.pbn import ParallelBranchNet

    configure_logging("WARNING")
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=32, help="windows per batch")
    parser.add_argument("--frames", type=int, default=16, help="frames per window")
    parser.add_argument("--repeats", type=int, default=7, help="timed forward passes per model (best and median)")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads; 0 = torch's default")
    parser.add_argument("--top", type=int, default=8, help="profiler operators to list")
    parser.add_argument("--no-profile", action="store_true", help="skip the torch profiler")
    parser.add_argument("--no-light", action="store_true", help="skip the light PBN setting")
    parser.add_argument("--body-model", choices=("auto", "open", "toy"), default="auto",
                        help="auto = the open model if data/body_models/open exists, else the toy model")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    os.chdir(ROOT)
    body_model, bm_name = _body_model(args.body_model)
    b, t = args.batch, args.frames
    print(f"body model: {bm_name} ({body_model.num_vertices} vertices); torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads; batch {b} x {t} frames, features in; "
          f"malloc tuned: {bool(os.environ.get('MALLOC_MMAP_THRESHOLD_'))}")

    settings = {"pbn": ("configs/pbn.yaml", []), "vibe": ("configs/vibe_baseline.yaml", [])}
    if not args.no_light:
        settings["pbn_light"] = ("configs/pbn.yaml", LIGHT)
    models, results = {}, {}
    torch.manual_seed(0)
    features = torch.randn(b, t, 2048)
    joints2d = torch.cat([torch.rand(b, t, 49, 2) * 2 - 1, torch.ones(b, t, 49, 1)], dim=-1)
    for name, (cfg_file, opts) in settings.items():
        cfg = load_config(ROOT / cfg_file, opts)
        model = ParallelBranchNet.from_config(cfg, body_model, load_pretrained=False).eval()
        models[name] = model
        params = {k: sum(p.numel() for p in getattr(model, k).parameters())
                  for k in ("encoder", "regressor", "stb", "fusion") if getattr(model, k) is not None}
        results[name] = {"config": cfg_file, "overrides": opts, "params_M": round(sum(params.values()) / 1e6, 2),
                         "params_by_part_M": {k: round(v / 1e6, 2) for k, v in params.items()}}

    with torch.inference_mode():
        full = _timed_turns({n: (lambda m=m: m(features, joints2d)) for n, m in models.items()}, args.repeats)
        nover = _timed_turns({n: (lambda m=m: m(features, joints2d, return_vertices=False))
                              for n, m in models.items()}, args.repeats)
        for name, model in models.items():
            best, med = full[name]
            best_nv, med_nv = nover[name]
            results[name]["gflop"] = _gflop(model, features, joints2d)
            parts = _timed_turns(_stage_fns(model, features, joints2d), max(3, args.repeats // 2))
            results[name].update({
                "forward_ms": round(best, 1), "forward_ms_median": round(med, 1),
                "frames_per_s": round(b * t / best * 1000.0, 1),
                "forward_ms_no_vertices": round(best_nv, 1), "forward_ms_no_vertices_median": round(med_nv, 1),
                "frames_per_s_no_vertices": round(b * t / best_nv * 1000.0, 1),
                "parts_ms": {k: round(v[0], 1) for k, v in parts.items()},
            })
            if not args.no_profile:
                from torch.profiler import ProfilerActivity, profile

                with profile(activities=[ProfilerActivity.CPU]) as prof:
                    model(features, joints2d)
                events = sorted(prof.key_averages(), key=lambda e: e.self_cpu_time_total, reverse=True)
                results[name]["top_ops_self_ms"] = [[e.key, round(e.self_cpu_time_total / 1000.0, 1)]
                                                    for e in events[: args.top]]
                print(f"\n[{name}] torch profiler, top {args.top} operators by self CPU time:")
                print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=args.top))

    for name, r in results.items():
        print(f"\n[{name}] {r['config']} {' '.join(r['overrides'])}".rstrip())
        print(f"[{name}] {r['params_M']} M parameters {r['params_by_part_M']}")
        print(f"[{name}] forward {r['forward_ms']} ms (median {r['forward_ms_median']}) = {r['frames_per_s']} frames/s;"
              f" no vertices {r['forward_ms_no_vertices']} ms = {r['frames_per_s_no_vertices']} frames/s")
        print(f"[{name}] best time per stage, measured separately (ms): {r['parts_ms']}")
        print(f"[{name}] GFLOP per batch (matmul/attention): {r['gflop']}")
    ratio = results["pbn"]["frames_per_s"] / results["vibe"]["frames_per_s"]
    ratio_nv = results["pbn"]["frames_per_s_no_vertices"] / results["vibe"]["frames_per_s_no_vertices"]
    flop_ratio = results["vibe"]["gflop"]["total"] / results["pbn"]["gflop"]["total"]
    print(f"\nPBN / VIBE throughput: {ratio:.2f}x with vertices, {ratio_nv:.2f}x without (aim >= 0.8x); "
          f"VIBE / PBN arithmetic: {flop_ratio:.2f}")
    result = {
        "body_model": bm_name, "num_vertices": body_model.num_vertices, "batch": b, "frames": t,
        "threads": torch.get_num_threads(), "malloc_tuned": bool(os.environ.get("MALLOC_MMAP_THRESHOLD_")),
        **results,
        "throughput_ratio": round(ratio, 3), "throughput_ratio_no_vertices": round(ratio_nv, 3),
        "flop_ratio_vibe_over_pbn": round(flop_ratio, 3),
    }
    if "pbn_light" in results:
        result["throughput_ratio_light"] = round(results["pbn_light"]["frames_per_s"] / results["vibe"]["frames_per_s"], 3)
        print(f"PBN light / VIBE throughput: {result['throughput_ratio_light']:.2f}x with vertices")
    print("RESULT " + json.dumps(result))
    return 0


if __name__ == "__main__":
    from lib.core.cli import run_main

    run_main(main)
