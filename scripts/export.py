"""Export demo results (results.npz) to GLB, FBX, OBJ sequences or BVH.

    python scripts/export.py output/vtest/results.npz --format glb,fbx --out output/vtest/export
    python scripts/export.py RESULTS.npz --format glb --tracks 1 4 --combined

Run from the repository root (or PYTHONPATH=. python scripts/export.py ...).
FBX needs Blender's bpy in its own environment: bash scripts/install_fbx.sh.
Exit codes: 0 ok, 2 bad input (message on one line), 130 interrupted.
See doc/export.md.
"""
from __future__ import annotations

import argparse
from pathlib import Path

from lib.core.cli import configure_logging, run_main
from lib.export import EXPORT_FORMATS, export_results


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("results", help="results.npz written by the demo")
    ap.add_argument("--format", default="glb", help=f"comma list of {', '.join(EXPORT_FORMATS)} (default glb)")
    ap.add_argument("--tracks", nargs="+", default=None, help="track ids to export (default: all)")
    ap.add_argument("--out", default=None, help="output folder (default: <results folder>/export)")
    ap.add_argument("--body_model", default=None, choices=["open", "smpl"],
                    help="body model kind (default: the one named in the results file)")
    ap.add_argument("--model_dir", default=None, help="explicit body-model folder")
    ap.add_argument("--combined", action="store_true", help="GLB: all tracks in one scene on the video time line")
    ap.add_argument("--preview", action="store_true", help="GLB: also render <name>.png (4 frames, offscreen)")
    ap.add_argument("--log_level", default="INFO")
    args = ap.parse_args()
    configure_logging(args.log_level)
    tracks = [t for arg in args.tracks for t in arg.split(",") if t] if args.tracks else None
    out = Path(args.out) if args.out else Path(args.results).parent / "export"
    written = export_results(args.results, args.format, out, tracks=tracks, body_model=args.body_model,
                             model_dir=args.model_dir, combined=args.combined)
    if args.preview:
        from lib.export.preview import render_glb_preview

        written["png"] = [render_glb_preview(p, p.with_suffix(".png")) for p in written.get("glb", [])]
    for fmt, paths in written.items():
        for p in paths:
            print(f"{fmt}: {p}")
    return 0


if __name__ == "__main__":
    run_main(main)
