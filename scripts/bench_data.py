#!/usr/bin/env python
"""Data-loading benchmark: a 1,000,000-frame dataset with float16 features (~6 GB
on disk) opened memory-mapped; reports resident memory and windows per second.

    python scripts/bench_data.py [--frames 1000000] [--windows 20000] [--keep DIR]

The dataset is filled with random-looking data in a temporary folder (a child
process writes it, so the writer's memory does not count). The last line is
``RESULT {json}``.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path


import numpy as np  # noqa: E402


def rss_mb(field: str = "VmRSS") -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024.0
    return float("nan")


def generate(folder: Path, frames: int, seed: int = 0) -> None:
    """Write a schema dataset of ``frames`` frames chunk by chunk (videos of 100-400 frames)."""
    from lib.dataset.schema import SCHEMA_VERSION

    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    lengths = rng.integers(100, 401, frames // 100 + 1)
    ends = np.cumsum(lengths)
    lengths = lengths[: np.searchsorted(ends, frames) + 1]
    lengths[-1] -= lengths.sum() - frames
    vid = np.repeat(np.arange(len(lengths)), lengths)
    np.save(folder / "vid_name.npy", np.char.add(np.char.add("vid", np.char.zfill(vid.astype(str), 6)), "_0"))
    starts = np.r_[0, np.cumsum(lengths)[:-1]]
    np.save(folder / "frame_id.npy", (np.arange(frames) - np.repeat(starts, lengths)).astype(np.int32))
    specs = {"bbox": ((4,), np.float32), "joints2D": ((49, 3), np.float32), "joints3D": ((49, 4), np.float32),
             "pose": ((72,), np.float32), "shape": ((10,), np.float32), "features": ((2048,), np.float16),
             "valid": ((), np.uint8)}
    chunk = 8192
    for name, (shape, dtype) in specs.items():
        arr = np.lib.format.open_memmap(folder / f"{name}.npy", mode="w+", dtype=dtype, shape=(frames,) + shape)
        block = rng.standard_normal((chunk,) + shape).astype(dtype) if dtype != np.uint8 else np.ones(chunk, dtype)
        if name == "bbox":
            block = np.abs(block) * 50 + 100
        for lo in range(0, frames, chunk):
            hi = min(lo + chunk, frames)
            arr[lo:hi] = np.roll(block, lo // chunk, axis=0)[: hi - lo]
        arr.flush()
        del arr
    meta = {"source": "bench", "fps": 30.0, "schema_version": SCHEMA_VERSION, "joint_format": "spin49",
            "num_frames": frames, "num_videos": int(len(lengths)), "labelled": sorted(specs)}
    (folder / "meta.json").write_text(json.dumps(meta))


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--frames", type=int, default=1_000_000)
    p.add_argument("--windows", type=int, default=20000, help="random windows to read")
    p.add_argument("--seq_len", type=int, default=16)
    p.add_argument("--batch_size", type=int, default=32)
    p.add_argument("--keep", default=None, help="use/keep the dataset in this folder instead of a temp dir")
    p.add_argument("--generate_only", default=None, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.generate_only:
        generate(Path(args.generate_only), args.frames)
        return 0
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    import torch

    from lib.dataset import SequenceDataset

    folder = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="pbn_bench_data_")) / "bench"
    try:
        t0 = time.time()
        if not (folder / "meta.json").is_file():
            subprocess.run([sys.executable, __file__, "--frames", str(args.frames), "--generate_only", str(folder)],
                           check=True)
        gen_s = time.time() - t0
        disk_gb = sum(f.stat().st_size for f in folder.glob("*.npy")) / 1e9
        print(f"dataset: {args.frames} frames, {disk_gb:.2f} GB on disk (made in {gen_s:.1f} s)")
        rss0 = rss_mb()
        t1 = time.time()
        ds = SequenceDataset(folder, seq_len=args.seq_len, stride=args.seq_len // 2)
        open_s = time.time() - t1
        rss_open = rss_mb()
        print(f"opened in {open_s:.2f} s: {len(ds)} windows, {ds.data.num_videos} videos, RSS {rss_open:.0f} MB")
        rng = np.random.default_rng(0)
        idx = rng.integers(0, len(ds), args.windows)
        peak = rss_open
        t2 = time.time()
        for lo in range(0, len(idx), args.batch_size):
            batch = torch.utils.data.default_collate([ds[int(i)] for i in idx[lo:lo + args.batch_size]])
            if (lo // args.batch_size) % 50 == 0:
                peak = max(peak, rss_mb())
        random_s = time.time() - t2
        peak = max(peak, rss_mb())
        wps = len(idx) / random_s
        print(f"random windows: {wps:.0f} windows/s ({wps * args.seq_len:.0f} frames/s), "
              f"batch features {tuple(batch['features'].shape)}, peak RSS while reading {peak:.0f} MB")
        t3 = time.time()
        seq = min(len(ds), args.windows)
        for i in range(seq):
            ds[i]
        seq_wps = seq / (time.time() - t3)
        peak = max(peak, rss_mb())
        print(f"sequential windows: {seq_wps:.0f} windows/s; peak RSS {peak:.0f} MB (limit 2048 MB)")
        result = {"frames": args.frames, "disk_gb": round(disk_gb, 2), "open_s": round(open_s, 2),
                  "rss_start_mb": round(rss0), "rss_open_mb": round(rss_open), "peak_rss_mb": round(peak),
                  "random_windows_per_s": round(wps, 1), "sequential_windows_per_s": round(seq_wps, 1),
                  "seq_len": args.seq_len, "rss_ok": bool(peak < 2048)}
        print("RESULT " + json.dumps(result))
    finally:
        if not args.keep:
            shutil.rmtree(folder.parent, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
