"""3DPW -> schema.

Raw layout (the dataset as downloaded and unzipped)::

    <raw_dir>/sequenceFiles/{train,validation,test}/<sequence>.pkl
    <raw_dir>/imageFiles/<sequence>/image_00000.jpg ...

Each sequence pickle (Python 2, latin-1) is a dict; per person ``p`` the lists
hold ``poses[p]`` (N, 72) SMPL axis-angle in the world frame, ``trans[p]``
(N, 3) metres, ``betas[p]`` (10+,), ``poses2d[p]`` (N, 3, 18) 2D keypoints
(x, y, confidence; OpenPose COCO-18 order), ``campose_valid[p]`` (N,); shared:
``cam_poses`` (N, 4, 4) world-to-camera extrinsics, ``cam_intrinsics`` (3, 3),
``img_frame_ids`` (N,), ``sequence`` (name). Read with a numpy-only unpickler.

Output per person track ``<sequence>_<p>``: ``pose`` with the global orientation
turned into the camera frame; ``joints3D`` = the active body model's 49 joints
for (pose, betas, trans) moved into the camera frame (3DPW's own SMPL is
gendered; the neutral/open model stands in, as in VIBE); ``joints2D`` from
``poses2d``; ``bbox`` around the projection of the 3D joints with the
intrinsics (x1.2); ``valid`` = ``campose_valid``.
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Dict, List

import numpy as np
import torch

from lib.data_utils.common import (ConverterError, concat_parts, load_numpy_pickle, require_dir, require_keys,
                                   require_shape, with_validity)
from lib.data_utils.motion_utils import bbox_from_keypoints
from lib.geometry.rotations import axis_angle_to_matrix, matrix_to_axis_angle
from lib.joints.conventions import convert_kps

logger = logging.getLogger(__name__)

SPLITS = {"train": "train", "val": "validation", "validation": "validation", "test": "test"}
KEYS = ("poses", "trans", "betas", "poses2d", "campose_valid", "cam_poses", "cam_intrinsics")


def read_sequence(path: Path) -> Dict:
    data = load_numpy_pickle(path)
    if not isinstance(data, dict):
        raise ConverterError(f"{path}: expected a dict, got {type(data).__name__}")
    require_keys(data, KEYS, str(path))
    return data


def convert_sequence(path: Path, body_model, img_prefix: str) -> Dict[str, List[np.ndarray]]:
    """One 3DPW sequence pickle -> per-person field lists."""
    where = str(path)
    data = read_sequence(path)
    seq = str(data.get("sequence", path.stem))
    cam = require_shape(data["cam_poses"], (None, 4, 4), "cam_poses", where).astype(np.float64)
    n = cam.shape[0]
    K = require_shape(data["cam_intrinsics"], (3, 3), "cam_intrinsics", where).astype(np.float64)
    people = len(data["poses"])
    for key in ("trans", "betas", "poses2d", "campose_valid"):
        if len(data[key]) != people:
            raise ConverterError(f"{where}: {key!r} lists {len(data[key])} people, 'poses' lists {people}")
    parts: Dict[str, List[np.ndarray]] = {k: [] for k in (
        "vid_name", "frame_id", "img_name", "bbox", "joints2D", "joints3D", "pose", "shape", "valid")}
    frame_ids = np.asarray(data.get("img_frame_ids", np.arange(n))).reshape(-1)
    if len(frame_ids) != n:
        frame_ids = np.arange(n)
    from lib.data_utils.synthetic import body_joints

    R, t = cam[:, :3, :3], cam[:, :3, 3]
    for p in range(people):
        pose = require_shape(data["poses"][p], (n, 72), f"poses[{p}]", where).astype(np.float64)
        trans = require_shape(data["trans"][p], (n, 3), f"trans[{p}]", where).astype(np.float32)
        betas = np.asarray(data["betas"][p], np.float32).reshape(-1)
        if betas.size < 10:
            raise ConverterError(f"{where}: 'betas[{p}]' has {betas.size} values, expected >= 10")
        betas = betas[:10]
        kp = require_shape(data["poses2d"][p], (n, 3, 18), f"poses2d[{p}]", where).transpose(0, 2, 1)
        valid = require_shape(np.asarray(data["campose_valid"][p]).reshape(-1), (n,), f"campose_valid[{p}]", where)
        world = body_joints(body_model, pose.astype(np.float32), betas, trans)  # (n, 49, 3) world
        j3d = np.einsum("nij,nkj->nki", R, world) + t[:, None]
        go = axis_angle_to_matrix(torch.from_numpy(pose[:, :3])).numpy()
        pose_c = pose.copy()
        pose_c[:, :3] = matrix_to_axis_angle(torch.from_numpy(R @ go)).numpy()
        proj = j3d @ K.T
        uv = proj[..., :2] / np.clip(proj[..., 2:], 1e-6, None)
        bbox = bbox_from_keypoints(np.concatenate([uv, np.ones(uv.shape[:2] + (1,))], -1), scale=1.2)
        parts["vid_name"].append(np.array([f"{seq}_{p}"] * n))
        parts["frame_id"].append(np.arange(n))
        parts["img_name"].append(np.array([f"{img_prefix}/{seq}/image_{int(i):05d}.jpg" for i in frame_ids]))
        parts["bbox"].append(bbox)
        parts["joints2D"].append(convert_kps(kp.astype(np.float32), "pw3d18", "spin49"))
        parts["joints3D"].append(with_validity(j3d.astype(np.float32), 1.0))
        parts["pose"].append(pose_c.astype(np.float32))
        parts["shape"].append(np.tile(betas, (n, 1)))
        parts["valid"].append((valid > 0).astype(np.uint8))
    return parts


def convert(raw_dir: str, split: str = "test", body_model=None) -> Dict[str, np.ndarray]:
    """All sequences of ``split`` (train / val / test) -> schema fields."""
    if split not in SPLITS:
        raise ConverterError(f"3dpw: unknown split {split!r}; choose train, val or test")
    root = require_dir(raw_dir, "3dpw raw_dir")
    folder = require_dir(root / "sequenceFiles" / SPLITS[split], "3dpw")
    files = sorted(folder.glob("*.pkl"))
    if not files:
        raise ConverterError(f"3dpw: no .pkl sequence files in {folder}")
    if body_model is None:
        from lib.body_models import load_body_model
        body_model = load_body_model("open")
    all_parts: Dict[str, List[np.ndarray]] = {}
    for f in files:
        for k, v in convert_sequence(f, body_model, "imageFiles").items():
            all_parts.setdefault(k, []).extend(v)
    return concat_parts(all_parts)


META = {"source": "3dpw", "fps": 30.0}
