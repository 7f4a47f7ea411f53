"""AMASS -> motion schema (``pose``, ``shape``) for the motion discriminator.

Raw layout (the per-dataset archives unpacked)::

    <raw_dir>/<dataset>/<subject>/<motion>_poses.npz    (or any *.npz / *.pkl)

Each motion file holds ``poses`` (F, 156) SMPL+H (or (F, 165) SMPL-X, or
(F, 72) SMPL) axis-angle, ``trans`` (F, 3), ``betas`` (16,) or (10,) and
``mocap_framerate`` (``mocap_frame_rate`` in newer releases). ``.npz`` files are
read with ``allow_pickle=False``; AMASS-style ``.pkl`` files with the same keys
go through a numpy-only unpickler. Files without ``poses`` (``shape.npz``) are
skipped.

Output: the 22 body joints + zero hand rotations = SMPL's 72 values; the
global orientation turned from AMASS's z-up world into the SMPL y-up frame;
resampled (quaternion interpolation) to ``fps`` (default 30).
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Dict, List

import numpy as np
import torch

from lib.data_utils.common import ConverterError, concat_parts, load_numpy_pickle, require_dir
from lib.data_utils.motion_utils import resample_motion
from lib.geometry.rotations import axis_angle_to_matrix, matrix_to_axis_angle

logger = logging.getLogger(__name__)

# z-up -> y-up: rotate -90 degrees about x (y' = z, z' = -y).
Z_UP_TO_Y_UP = np.array([[1.0, 0.0, 0.0], [0.0, 0.0, 1.0], [0.0, -1.0, 0.0]])


def read_motion(path: Path) -> Dict[str, np.ndarray]:
    """{'poses', 'betas', 'fps'} of one motion file, or {} if it holds no motion."""
    where = str(path)
    if path.suffix == ".pkl":
        data = load_numpy_pickle(path)
        if not isinstance(data, dict):
            raise ConverterError(f"{where}: expected a dict, got {type(data).__name__}")
        get = data.get
        keys = set(data)
    else:
        try:
            npz = np.load(path, allow_pickle=False)
        except (ValueError, OSError) as err:
            raise ConverterError(f"{where}: not a readable .npz ({err})") from None
        keys = set(npz.files)

        def get(k, default=None):
            if k not in keys:
                return default
            try:
                return npz[k]
            except ValueError as err:  # an object array: refuse rather than unpickle
                raise ConverterError(f"{where}: key {k!r} is a pickled object array ({err})") from None
    if "poses" not in keys:
        return {}
    poses = np.asarray(get("poses"), np.float64)
    if poses.ndim != 2 or poses.shape[1] not in (72, 156, 165) or poses.shape[1] % 3:
        raise ConverterError(f"{where}: 'poses' has shape {poses.shape}, expected (F, 156) SMPL+H, "
                             "(F, 165) SMPL-X or (F, 72) SMPL")
    fps = get("mocap_framerate", get("mocap_frame_rate"))
    if fps is None:
        raise ConverterError(f"{where}: missing key 'mocap_framerate' (or 'mocap_frame_rate')")
    betas = np.asarray(get("betas", np.zeros(10)), np.float64).reshape(-1)
    if betas.size < 10:
        betas = np.pad(betas, (0, 10 - betas.size))
    return {"poses": poses, "betas": betas[:10], "fps": float(np.asarray(fps).reshape(-1)[0])}


def to_smpl72(poses: np.ndarray) -> np.ndarray:
    """(F, 3K) SMPL+H / SMPL-X / SMPL axis-angle -> (F, 72): 22 body joints + zero hands, y-up root."""
    out = np.zeros((poses.shape[0], 72))
    out[:, :66] = poses[:, :66]
    if poses.shape[1] == 72:
        out[:, 66:] = poses[:, 66:72]
    go = axis_angle_to_matrix(torch.from_numpy(out[:, :3])).numpy()
    out[:, :3] = matrix_to_axis_angle(torch.from_numpy(Z_UP_TO_Y_UP[None] @ go)).numpy()
    return out


def convert(raw_dir: str, split: str = "train", fps: float = 30.0) -> Dict[str, np.ndarray]:
    root = require_dir(raw_dir, "amass raw_dir")
    files = sorted([*root.rglob("*.npz"), *root.rglob("*.pkl")])
    if not files:
        raise ConverterError(f"amass: no .npz or .pkl motion files under {root}")
    parts: Dict[str, List[np.ndarray]] = {}
    for f in files:
        m = read_motion(f)
        if not m or len(m["poses"]) < 2:
            continue
        pose, _ = resample_motion(to_smpl72(m["poses"]), None, m["fps"], fps)
        n = len(pose)
        name = f.relative_to(root).with_suffix("").as_posix().replace("/", "-").replace("_", "-")
        parts.setdefault("vid_name", []).append(np.array([f"{name}_0"] * n))
        parts.setdefault("frame_id", []).append(np.arange(n))
        parts.setdefault("pose", []).append(pose.astype(np.float32))
        parts.setdefault("shape", []).append(np.tile(m["betas"].astype(np.float32), (n, 1)))
    if not parts:
        raise ConverterError(f"amass: none of the files under {root} holds 'poses'")
    return concat_parts(parts)


META = {"source": "amass", "fps": 30.0, "note": "pose in the SMPL y-up frame"}
