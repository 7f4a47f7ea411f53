"""PennAction -> schema (2D only).

Raw layout (``Penn_Action.tar.gz`` unpacked)::

    <raw_dir>/labels/0001.mat ... 2326.mat
    <raw_dir>/frames/0001/000001.jpg ...

Each label file (MATLAB v5) holds ``x``, ``y`` (F, 13) pixels and
``visibility`` (F, 13) of the 13 joints (``penn_action13``: head, shoulders,
elbows, wrists, hips, knees, ankles; left before right), ``bbox`` (F', 4)
x1, y1, x2, y2 (a few files have fewer rows than frames), ``nframes``,
``dimensions`` (height, width, frames), ``action``, ``train`` (1 train, -1 test).
Split ``all`` keeps every video (VIBE trains on all of them).
"""
from __future__ import annotations

import logging
from typing import Dict, List

import numpy as np

from lib.data_utils.common import ConverterError, concat_parts, load_mat, require_dir, require_keys, require_shape
from lib.data_utils.motion_utils import bbox_from_keypoints
from lib.joints.conventions import convert_kps

logger = logging.getLogger(__name__)


def convert(raw_dir: str, split: str = "all") -> Dict[str, np.ndarray]:
    if split not in ("all", "train", "test"):
        raise ConverterError(f"penn_action: unknown split {split!r}; choose all, train or test")
    root = require_dir(raw_dir, "penn_action raw_dir")
    files = sorted(require_dir(root / "labels", "penn_action").glob("*.mat"))
    if not files:
        raise ConverterError(f"penn_action: no .mat files in {root / 'labels'}")
    parts: Dict[str, List[np.ndarray]] = {}
    for f in files:
        where = str(f)
        mat = load_mat(f, "MATLAB label file")
        require_keys(mat, ("x", "y", "visibility"), where)
        if split != "all" and "train" in mat:
            flag = int(np.asarray(mat["train"]).reshape(-1)[0])
            if (flag == 1) != (split == "train"):
                continue
        x = require_shape(mat["x"], (None, 13), "x", where)
        n = x.shape[0]
        y = require_shape(mat["y"], (n, 13), "y", where)
        vis = require_shape(mat["visibility"], (n, 13), "visibility", where)
        kp = np.stack([x, y, (vis > 0).astype(np.float64)], -1).astype(np.float32)
        kp[kp[..., 2] == 0, :2] = 0.0
        kp49 = convert_kps(kp, "penn_action13", "spin49")
        bbox = bbox_from_keypoints(kp49, scale=1.2)
        if "bbox" in mat:
            b = np.asarray(mat["bbox"], np.float64).reshape(-1, 4)
            m = min(len(b), n)
            annotated = np.stack([(b[:m, 0] + b[:m, 2]) / 2, (b[:m, 1] + b[:m, 3]) / 2,
                                  b[:m, 2] - b[:m, 0], b[:m, 3] - b[:m, 1]], -1)
            good = (annotated[:, 2] > 1) & (annotated[:, 3] > 1)
            bbox[:m][good] = annotated[good]
        vid = f.stem
        parts.setdefault("vid_name", []).append(np.array([f"{vid}_0"] * n))
        parts.setdefault("frame_id", []).append(np.arange(n))
        parts.setdefault("img_name", []).append(np.array([f"frames/{vid}/{i + 1:06d}.jpg" for i in range(n)]))
        parts.setdefault("bbox", []).append(bbox.astype(np.float32))
        parts.setdefault("joints2D", []).append(kp49)
        parts.setdefault("valid", []).append(((kp[..., 2] > 0).sum(-1) >= 4).astype(np.uint8))
    if not parts:
        raise ConverterError(f"penn_action: no video in {root / 'labels'} belongs to split {split}")
    return concat_parts(parts)


META = {"source": "penn_action", "fps": 30.0}
