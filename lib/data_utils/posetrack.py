"""PoseTrack (2018 json) -> schema (2D only).

Raw layout::

    <raw_dir>/images/{train,val}/<video>/000000.jpg ...
    <raw_dir>/annotations/{train,val}/<video>.json

Each json is COCO-like: ``images`` (``id``, ``file_name``, ``frame_id`` or
position, ``is_labeled``, ``vid_id``), ``annotations`` (``image_id``,
``track_id``, ``keypoints`` = 17 x (x, y, v) flat, ``bbox`` x, y, w, h,
optional), ``categories``. Joints in ``posetrack17`` order (head_bottom is our
neck, head_top our headtop). Each track becomes a video ``<video>_<track>``;
a track with gaps in its labelled frames is split at the gaps (the later runs
named ``<video>.<k>_<track>``) so windows never span unlabelled frames.
"""
from __future__ import annotations

import json
import logging
from typing import Dict, List

import numpy as np

from lib.data_utils.common import ConverterError, concat_parts, require_dir, require_keys, require_shape
from lib.data_utils.motion_utils import bbox_from_keypoints
from lib.joints.conventions import convert_kps

logger = logging.getLogger(__name__)


def _frame_index(img: Dict, position: int) -> int:
    for k in ("frame_id", "frame_index"):
        if k in img and not isinstance(img[k], bool):
            fid = int(img[k])
            # 2018 files store ids like 10000010023 (video * 1e4 + frame); keep the frame part.
            return fid % 10000 if fid >= 10000 else fid
    return position


def convert(raw_dir: str, split: str = "train") -> Dict[str, np.ndarray]:
    root = require_dir(raw_dir, "posetrack raw_dir")
    folder = require_dir(root / "annotations" / split, "posetrack")
    files = sorted(folder.glob("*.json"))
    if not files:
        raise ConverterError(f"posetrack: no .json files in {folder}")
    parts: Dict[str, List[np.ndarray]] = {}
    for f in files:
        where = str(f)
        try:
            data = json.loads(f.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as err:
            raise ConverterError(f"{where}: not valid JSON ({err})") from None
        if not isinstance(data, dict):
            raise ConverterError(f"{where}: expected a JSON object with 'images' and 'annotations'")
        require_keys(data, ("images", "annotations"), where)
        images = {}
        for pos, img in enumerate(data["images"]):
            require_keys(img, ("id", "file_name"), f"{where}: images[{pos}]")
            images[img["id"]] = (_frame_index(img, pos), str(img["file_name"]))
        tracks: Dict[int, List] = {}
        for a_i, ann in enumerate(data["annotations"]):
            w = f"{where}: annotations[{a_i}]"
            require_keys(ann, ("image_id", "track_id", "keypoints"), w)
            if ann["image_id"] not in images:
                raise ConverterError(f"{w}: image_id {ann['image_id']} is not in 'images'")
            if len(ann["keypoints"]) == 0:  # an unannotated person box: nothing to keep
                continue
            kp = require_shape(np.asarray(ann["keypoints"], np.float64).reshape(-1), (51,), "keypoints", w)
            frame, name = images[ann["image_id"]]
            tracks.setdefault(int(ann["track_id"]), []).append((frame, name, kp.reshape(17, 3)))
        video = f.stem
        for track, items in sorted(tracks.items()):
            items.sort(key=lambda it: it[0])
            frames = np.array([it[0] for it in items])
            breaks = np.nonzero(np.diff(frames) != 1)[0] + 1
            for run, (lo, hi) in enumerate(zip(np.r_[0, breaks], np.r_[breaks, len(items)])):
                sel = items[lo:hi]
                kp = np.stack([it[2] for it in sel]).astype(np.float32)
                kp[..., 2] = (kp[..., 2] > 0).astype(np.float32)
                kp[kp[..., 2] == 0, :2] = 0.0
                kp49 = convert_kps(kp, "posetrack17", "spin49")
                n = len(sel)
                seq = video if run == 0 else f"{video}.{run}"
                parts.setdefault("vid_name", []).append(np.array([f"{seq}_{track}"] * n))
                parts.setdefault("frame_id", []).append(np.array([it[0] for it in sel]))
                parts.setdefault("img_name", []).append(np.array([it[1] for it in sel]))
                parts.setdefault("bbox", []).append(bbox_from_keypoints(kp49, scale=1.2))
                parts.setdefault("joints2D", []).append(kp49)
                parts.setdefault("valid", []).append(((kp[..., 2] > 0).sum(-1) >= 4).astype(np.uint8))
    if not parts:
        raise ConverterError(f"posetrack: no annotated tracks in {folder}")
    return concat_parts(parts)


META = {"source": "posetrack", "fps": 30.0}
