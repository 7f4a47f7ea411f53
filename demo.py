"""3D people from a video: python demo.py --vid_file VIDEO --output_folder OUT

Outputs in OUT/<video stem>/: results.npz, <stem>_overlay.mp4 (unless --no_render),
optional exports. Exit codes: 0 success (also for a video without people: empty
results and a warning), 2 bad input / missing file or asset / bad option
(one "error: ..." line), 130 interrupted, 1 unexpected failure (a bug: traceback).
See doc/demo.md.
"""
from __future__ import annotations

import argparse

from lib.core.cli import configure_logging, run_main
from lib.core.config import add_config_arguments, config_from_args


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description="pbn demo: detection, tracking, keypoints, 3D bodies, overlay video")
    p.add_argument("--vid_file", required=True, help="input video file (any format OpenCV/PyAV reads) or image folder")
    p.add_argument("--output_folder", default="output/demo", help="outputs go to OUTPUT_FOLDER/<video stem>/")
    p.add_argument("--start_frame", type=int, default=0, help="first frame to process (0-based)")
    p.add_argument("--max_frames", type=int, default=None, help="process at most this many frames")
    p.add_argument("--tracks", default=None, help="comma-separated track ids to keep (default: all)")
    p.add_argument("--estimator", choices=["fit", "pbn"], default=None,
                   help="fit = Temporal SMPLify on keypoints (default); pbn = the network (needs --checkpoint)")
    p.add_argument("--checkpoint", default=None, help="trained pbn checkpoint (implies --estimator pbn)")
    p.add_argument("--run_smplify", action="store_true", help="refine the network output with Temporal SMPLify")
    p.add_argument("--body_model", choices=["open", "smpl"], default=None, help="body model (default: open)")
    p.add_argument("--device", default=None, help="cpu, cuda, cuda:1 (default: CUDA when available)")
    p.add_argument("--detector", default=None, help="person detector: ssdlite (default) or hog")
    p.add_argument("--keypoint_model", default=None,
                   help="2D keypoint model: blazepose (default) or blazepose_lite (~30%% faster, a little less precise)")
    p.add_argument("--batch_size", type=int, default=None, help="crops per network batch (pbn estimator)")
    p.add_argument("--no_render", action="store_true", help="skip the overlay video")
    p.add_argument("--side_view", action="store_true", help="add a side view next to the overlay")
    p.add_argument("--export", default=None, help="exports, comma-separated: glb,fbx,obj,bvh, or none (default: DEMO.EXPORT = glb)")
    p.add_argument("--no_progress", action="store_true", help="no progress bars")
    add_config_arguments(p)
    return p.parse_args(argv)


def main() -> int:
    args = parse_args()
    cfg = config_from_args(args)
    configure_logging(cfg.LOG_LEVEL)
    from lib.demo.pipeline import options_from_args, run_demo

    summary = run_demo(cfg, options_from_args(cfg, args))
    print(summary.format())
    return 0


if __name__ == "__main__":
    run_main(main)
