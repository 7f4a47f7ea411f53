"""Human3.6M -> schema (the common split: S1, S5, S6, S7, S8 train; S9, S11 test).

Raw layout (the dataset's own per-subject archives, unpacked)::

    <raw_dir>/S<k>/MyPoseFeatures/D3_Positions_mono/<Action>.<camera>.cdf
    <raw_dir>/S<k>/MyPoseFeatures/D2_Positions/<Action>.<camera>.cdf
    <raw_dir>/images/S<k>_<Action>.<camera>_%06d.jpg   (frames extracted from S<k>/Videos/*.mp4)

Each CDF file holds a variable ``Pose`` of shape (1, F, 96) (3D: 32 joints x
xyz, camera frame, millimetres) or (1, F, 64) (2D: 32 joints x uv, pixels),
read with ``cdflib``. Of the 32 joints we keep the 17 of the usual H36M-17
skeleton (same names as the H36M regressor rows). ``frame_step`` subsamples
(VIBE and SPIN keep every 5th frame for training). Images are 1000 x 1002.
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Dict, List, Optional, Sequence

import numpy as np

from lib.data_utils.common import ConverterError, concat_parts, names_to_spin49, require_dir
from lib.data_utils.motion_utils import bbox_from_keypoints

logger = logging.getLogger(__name__)

SUBJECTS = {"train": (1, 5, 6, 7, 8), "test": (9, 11)}
# Raw 32-joint index -> spin49 name (the 17 joints of the H36M-17 skeleton).
RAW32_NAMES: Dict[int, str] = {
    0: "pelvis", 1: "rhip", 2: "rknee", 3: "rankle", 6: "lhip", 7: "lknee", 8: "lankle",
    12: "spine_h36m", 13: "neck", 14: "head_h36m", 15: "headtop",
    17: "lshoulder", 18: "lelbow", 19: "lwrist", 25: "rshoulder", 26: "relbow", 27: "rwrist",
}
NAMES32: List[Optional[str]] = [RAW32_NAMES.get(i) for i in range(32)]


def read_cdf_pose(path: Path, dims: int) -> np.ndarray:
    """(F, 32, dims) from a H36M ``Pose`` CDF variable."""
    import cdflib

    try:
        cdf = cdflib.CDF(str(path))
        var = np.asarray(cdf.varget("Pose"))
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise ConverterError(f"{path}: cannot read variable 'Pose' from the CDF file ({err})") from None
    if var.size % (32 * dims) or var.shape[-1] != 32 * dims:
        raise ConverterError(f"{path}: 'Pose' has shape {var.shape}, expected (1, F, {32 * dims})")
    return var.reshape(-1, 32, dims).astype(np.float64)


def convert(raw_dir: str, split: str = "train", frame_step: int = 5,
            subjects: Optional[Sequence[int]] = None) -> Dict[str, np.ndarray]:
    if split not in SUBJECTS:
        raise ConverterError(f"h36m: unknown split {split!r}; choose train or test")
    root = require_dir(raw_dir, "h36m raw_dir")
    parts: Dict[str, List[np.ndarray]] = {}
    for s in subjects or SUBJECTS[split]:
        folder = root / f"S{s}" / "MyPoseFeatures" / "D3_Positions_mono"
        if not folder.is_dir():
            logger.warning("h36m: subject S%d has no %s; skipped", s, folder)
            continue
        for f3 in sorted(folder.glob("*.cdf")):
            action, camera = f3.stem.rsplit(".", 1) if "." in f3.stem else (f3.stem, "")
            if action.startswith("_ALL"):
                continue
            f2 = root / f"S{s}" / "MyPoseFeatures" / "D2_Positions" / f3.name
            if not f2.is_file():
                raise ConverterError(f"h36m: missing 2D file {f2}")
            p3, p2 = read_cdf_pose(f3, 3), read_cdf_pose(f2, 2)
            if len(p2) != len(p3):
                raise ConverterError(f"{f2}: {len(p2)} frames but {f3.name} has {len(p3)}")
            idx = np.arange(0, len(p3), frame_step)
            n = len(idx)
            mapped = np.array([nm is not None for nm in NAMES32], np.float32)
            kp = names_to_spin49(np.concatenate([p2[idx], np.broadcast_to(mapped[None, :, None], (n, 32, 1))], -1),
                                 NAMES32)
            j3 = names_to_spin49(np.concatenate([p3[idx] / 1000.0, np.broadcast_to(mapped[None, :, None], (n, 32, 1))],
                                                -1), NAMES32)
            act = action.replace(" ", "_")
            parts.setdefault("vid_name", []).append(np.array([f"S{s}_{act}.{camera}_0"] * n))
            parts.setdefault("frame_id", []).append(idx)
            parts.setdefault("img_name", []).append(np.array([f"images/S{s}_{act}.{camera}_{i + 1:06d}.jpg" for i in idx]))
            parts.setdefault("bbox", []).append(bbox_from_keypoints(kp, scale=1.2))
            parts.setdefault("joints2D", []).append(kp)
            parts.setdefault("joints3D", []).append(j3)
            parts.setdefault("valid", []).append(np.ones(n, np.uint8))
    if not parts:
        names = ", ".join(f"S{s}" for s in subjects or SUBJECTS[split])
        raise ConverterError(f"h36m: none of {names} (split {split}) has MyPoseFeatures/D3_Positions_mono/*.cdf "
                             f"under {root}")
    return concat_parts(parts)


META = {"source": "h36m", "fps": 50.0}
