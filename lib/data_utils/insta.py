"""InstaVariety -> schema (2D only), reading the tfrecords without TensorFlow.

Raw layout (the released tfrecords)::

    <raw_dir>/{train,test}/*.tfrecord

Every record is one video clip, a ``tf.train.Example`` (see
:mod:`lib.data_utils.tfrecord`) with, for N frames:

- ``meta/N`` int64 [N];
- ``image/encoded`` N JPEG-encoded frames (already cropped around the person);
- ``image/xys`` float (N, 2, 14): x row then y row of the 14 LSP joints
  (common14 order), OpenPose detections, pixels of the encoded frame;
- ``image/visibilities`` int64 (N, 14);
- ``image/face_pts`` float (N, 3, 5): x, y, visibility of nose, left eye,
  right eye, left ear, right ear;
- ``image/toe_pts`` float (N, 3, 6): left big toe, right big toe, left small
  toe, right small toe, left heel, right heel (may be empty);
- optional ``image/phis``: when present the key points are in [-1, 1] of a
  224-pixel crop and are mapped back to pixels.

The key points are detections, so they go to the OpenPose slots of spin49
(the head top, which OpenPose lacks, to the annotated slot). ``img_name`` is
``<split>/<file>.tfrecord:<record>:<frame>``; feature extraction decodes the
frame from the record.
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Dict, List

import numpy as np

from lib.data_utils.common import ConverterError, concat_parts, names_to_spin49, require_dir, require_keys
from lib.data_utils.motion_utils import bbox_from_keypoints
from lib.data_utils.tfrecord import parse_example, read_tfrecord

logger = logging.getLogger(__name__)

BODY_NAMES = ["op_rankle", "op_rknee", "op_rhip", "op_lhip", "op_lknee", "op_lankle", "op_rwrist", "op_relbow",
              "op_rshoulder", "op_lshoulder", "op_lelbow", "op_lwrist", "op_neck", "headtop"]
FACE_NAMES = ["op_nose", "op_leye", "op_reye", "op_lear", "op_rear"]
TOE_NAMES = ["op_lbigtoe", "op_rbigtoe", "op_lsmalltoe", "op_rsmalltoe", "op_lheel", "op_rheel"]
INSTA_NAMES = BODY_NAMES + FACE_NAMES + TOE_NAMES  # 25, the order of :func:`example_keypoints`
CROP = 224


def _reshape(feat, shape, key: str, where: str) -> np.ndarray:
    arr = np.asarray(feat, dtype=np.float64)
    total = int(np.prod(shape))
    if arr.size != total:
        raise ConverterError(f"{where}: {key!r} has {arr.size} values, expected {total} ({'x'.join(map(str, shape))})")
    return arr.reshape(shape)


def example_keypoints(ex: Dict, where: str) -> np.ndarray:
    """(N, 25, 3) key points (x, y px, visibility) of one parsed example, INSTA_NAMES order."""
    require_keys(ex, ("meta/N", "image/xys", "image/visibilities", "image/face_pts"), where)
    n = int(np.asarray(ex["meta/N"]).reshape(-1)[0])
    xys = _reshape(ex["image/xys"], (n, 2, 14), "image/xys", where)
    vis = _reshape(ex["image/visibilities"], (n, 1, 14), "image/visibilities", where)
    face = _reshape(ex["image/face_pts"], (n, 3, 5), "image/face_pts", where)
    toes = ex.get("image/toe_pts")
    toes = np.zeros((n, 3, 6)) if toes is None or len(toes) == 0 else _reshape(toes, (n, 3, 6), "image/toe_pts", where)
    kp = np.concatenate([np.concatenate([xys, vis], 1), face, toes], 2).transpose(0, 2, 1)  # (N, 25, 3)
    if "image/phis" in ex:
        kp[..., :2] = (kp[..., :2] + 1.0) * 0.5 * CROP
    kp[..., 2] = (kp[..., 2] > 0).astype(np.float64)
    kp[kp[..., 2] == 0, :2] = 0.0
    return kp.astype(np.float32)


def convert(raw_dir: str, split: str = "train") -> Dict[str, np.ndarray]:
    root = require_dir(raw_dir, "insta raw_dir")
    folder = require_dir(root / split, "insta")
    files = sorted(folder.glob("*.tfrecord"))
    if not files:
        raise ConverterError(f"insta: no .tfrecord files in {folder}")
    parts: Dict[str, List[np.ndarray]] = {}
    for f in files:
        for r, data in enumerate(read_tfrecord(f)):
            where = f"{f} record {r}"
            try:
                ex = parse_example(data)
            except ConverterError as err:
                raise ConverterError(f"{where}: {err}") from None
            kp = names_to_spin49(example_keypoints(ex, where), INSTA_NAMES)
            n = kp.shape[0]
            parts.setdefault("vid_name", []).append(np.array([f"{f.stem}-{r}_0"] * n))
            parts.setdefault("frame_id", []).append(np.arange(n))
            parts.setdefault("img_name", []).append(np.array([f"{split}/{f.name}:{r}:{i}" for i in range(n)]))
            parts.setdefault("bbox", []).append(bbox_from_keypoints(kp, scale=1.2))
            parts.setdefault("joints2D", []).append(kp)
            parts.setdefault("valid", []).append(((kp[..., 2] > 0).sum(-1) >= 4).astype(np.uint8))
    if not parts:
        raise ConverterError(f"insta: the tfrecords in {folder} hold no records")
    return concat_parts(parts)


def read_frame(raw_dir: str, img_name: str) -> bytes:
    """The encoded JPEG of ``<split>/<file>:<record>:<frame>`` (for feature extraction)."""
    path, rec, frame = img_name.rsplit(":", 2)
    for r, data in enumerate(read_tfrecord(Path(raw_dir) / path)):
        if r == int(rec):
            return parse_example(data)["image/encoded"][int(frame)]
    raise ConverterError(f"insta: {img_name}: record {rec} not found")


META = {"source": "insta", "fps": 30.0}
