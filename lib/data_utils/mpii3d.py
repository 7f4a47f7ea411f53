"""MPI-INF-3DHP -> schema (train and test sets).

Train layout (as downloaded with the dataset's script; frames extracted from
``imageSequence/video_<c>.avi`` into ``imageFrames/video_<c>/frame_%06d.jpg``)::

    <raw_dir>/S<1..8>/Seq<1,2>/annot.mat
    <raw_dir>/S<s>/Seq<q>/imageFrames/video_<c>/frame_000001.jpg ...

``annot.mat`` (MATLAB v5, scipy.io.loadmat): ``annot2`` and ``annot3`` are
(14, 1) cell arrays, one cell per camera, holding (F, 56) 2D pixels and (F, 84)
camera-frame millimetres of the 28 joints (``mpii3d28`` order), ``frames`` (F, 1).

Test layout::

    <raw_dir>/mpi_inf_3dhp_test_set/TS<1..6>/annot_data.mat
    <raw_dir>/mpi_inf_3dhp_test_set/TS<k>/imageSequence/img_000001.jpg ...

``annot_data.mat`` is MATLAB v7.3 (HDF5, read with h5py): ``annot2`` (F, 1, 17, 2),
``annot3`` (F, 1, 17, 3) mm, ``univ_annot3``, ``valid_frame`` (F,) or (F, 1),
17 joints in ``mpii3d17`` order.

Output: one video per (subject, sequence, camera) or test sequence; joints3D
in metres (camera frame) with validity 1 for the joints that map into spin49;
2D confidence 1 for those joints, 0 where outside the image; ``valid`` = all
mapped joints inside the image (train) / ``valid_frame`` (test). No SMPL labels.
"""
from __future__ import annotations

import logging
from typing import Dict, List, Sequence

import numpy as np

from lib.data_utils.common import ConverterError, concat_parts, load_mat, require_dir, require_keys, require_shape
from lib.data_utils.motion_utils import bbox_from_keypoints
from lib.joints.conventions import convert_kps

logger = logging.getLogger(__name__)

TRAIN_CAMERAS = (0, 1, 2, 4, 5, 6, 7, 8)  # the chest-height and overhead-free cameras used by SPIN/VIBE
TEST_IMAGE_SIZE = {5: (1920, 1080), 6: (1920, 1080)}  # TS5/TS6 are outdoor HD; the rest 2048 x 2048


def _pack(j2d: np.ndarray, j3d_mm: np.ndarray, fmt: str, img_wh) -> tuple:
    """(F, J, 2) px + (F, J, 3) mm -> spin49 joints2D (F, 49, 3), joints3D (F, 49, 4), inside mask."""
    f, j = j2d.shape[:2]
    w, h = img_wh
    inside = (j2d[..., 0] >= 0) & (j2d[..., 0] < w) & (j2d[..., 1] >= 0) & (j2d[..., 1] < h)
    kp = np.concatenate([j2d, inside[..., None].astype(np.float32)], -1).astype(np.float32)
    kp[~inside, :2] = 0.0
    j3 = np.concatenate([j3d_mm / 1000.0, np.ones((f, j, 1))], -1).astype(np.float32)
    return convert_kps(kp, fmt, "spin49"), convert_kps(j3, fmt, "spin49"), inside


def _frames_first(arr: np.ndarray, dims: int) -> np.ndarray:
    """h5py shows MATLAB's column-major (dims, 17, 1, F) as (F, 1, 17, dims); accept the
    other order too (a file written without the transposition)."""
    if arr.ndim == 4 and arr.shape[-1] != dims and arr.shape[0] == dims:
        return arr.transpose(3, 2, 1, 0)
    return arr


def convert_train(raw_dir: str, cameras: Sequence[int] = TRAIN_CAMERAS, frame_step: int = 1) -> Dict[str, np.ndarray]:
    root = require_dir(raw_dir, "mpi_inf_3dhp raw_dir")
    files = sorted(root.glob("S*/Seq*/annot.mat"))
    if not files:
        raise ConverterError(f"mpi_inf_3dhp: no S*/Seq*/annot.mat under {root}")
    parts: Dict[str, List[np.ndarray]] = {}
    for f in files:
        where = str(f)
        mat = load_mat(f, "MATLAB v5 annot.mat")
        require_keys(mat, ("annot2", "annot3"), where)
        a2, a3 = np.asarray(mat["annot2"]).reshape(-1), np.asarray(mat["annot3"]).reshape(-1)
        subj, seq = f.parent.parent.name, f.parent.name
        if len(a2) != len(a3):
            raise ConverterError(f"{where}: 'annot2' has {len(a2)} cameras but 'annot3' has {len(a3)}")
        use = [c for c in cameras if c < len(a2)]
        if not use:
            raise ConverterError(f"{where}: 'annot2'/'annot3' have {len(a2)} cameras, none of {list(cameras)}")
        if len(use) < len(cameras):
            logger.warning("%s: only %d cameras; using %s", where, len(a2), use)
        for c in use:
            p2 = require_shape(a2[c], (None, 56), f"annot2[{c}]", where)
            p3 = require_shape(a3[c], (p2.shape[0], 84), f"annot3[{c}]", where)
            idx = np.arange(0, p2.shape[0], frame_step)
            kp, j3, inside = _pack(p2[idx].reshape(-1, 28, 2), p3[idx].reshape(-1, 28, 3), "mpii3d28", (2048, 2048))
            mapped = convert_kps(np.ones((28, 1)), "mpii3d28", "spin49")[:, 0] > 0
            n = len(idx)
            vid = f"{subj}_{seq}_cam{c}_0"
            parts.setdefault("vid_name", []).append(np.array([vid] * n))
            parts.setdefault("frame_id", []).append(idx)
            parts.setdefault("img_name", []).append(np.array(
                [f"{subj}/{seq}/imageFrames/video_{c}/frame_{i + 1:06d}.jpg" for i in idx]))
            parts.setdefault("bbox", []).append(bbox_from_keypoints(kp, scale=1.2))
            parts.setdefault("joints2D", []).append(kp)
            parts.setdefault("joints3D", []).append(j3)
            parts.setdefault("valid", []).append((kp[:, mapped, 2] > 0).all(-1).astype(np.uint8))
    return concat_parts(parts)


def convert_test(raw_dir: str) -> Dict[str, np.ndarray]:
    import h5py

    root = require_dir(raw_dir, "mpi_inf_3dhp raw_dir")
    base = root / "mpi_inf_3dhp_test_set" if (root / "mpi_inf_3dhp_test_set").is_dir() else root
    files = sorted(base.glob("TS*/annot_data.mat"))
    if not files:
        raise ConverterError(f"mpi_inf_3dhp: no TS*/annot_data.mat under {base}")
    parts: Dict[str, List[np.ndarray]] = {}
    for f in files:
        where = str(f)
        try:
            h5 = h5py.File(f, "r")
        except OSError as err:
            raise ConverterError(f"{where}: not an HDF5 (MATLAB v7.3) annot_data.mat ({err})") from None
        with h5:
            require_keys(h5, ("annot2", "annot3", "valid_frame"), where)
            p2 = require_shape(_frames_first(np.array(h5["annot2"]), 2), (None, 1, 17, 2), "annot2", where)[:, 0]
            p3 = require_shape(_frames_first(np.array(h5["annot3"]), 3), (p2.shape[0], 1, 17, 3), "annot3",
                               where)[:, 0]
            valid = np.array(h5["valid_frame"]).reshape(-1)
            if valid.shape[0] != p2.shape[0]:
                raise ConverterError(f"{where}: 'valid_frame' has {valid.shape[0]} frames, 'annot2' {p2.shape[0]}")
        name = f.parent.name
        ts = int(name[2:]) if name[2:].isdigit() else 0
        kp, j3, _ = _pack(p2, p3, "mpii3d17", TEST_IMAGE_SIZE.get(ts, (2048, 2048)))
        n = p2.shape[0]
        rel = f.parent.relative_to(root).as_posix()
        parts.setdefault("vid_name", []).append(np.array([f"{name}_0"] * n))
        parts.setdefault("frame_id", []).append(np.arange(n))
        parts.setdefault("img_name", []).append(np.array([f"{rel}/imageSequence/img_{i + 1:06d}.jpg" for i in range(n)]))
        parts.setdefault("bbox", []).append(bbox_from_keypoints(kp, scale=1.2))
        parts.setdefault("joints2D", []).append(kp)
        parts.setdefault("joints3D", []).append(j3)
        parts.setdefault("valid", []).append((valid > 0).astype(np.uint8))
    return concat_parts(parts)


def convert(raw_dir: str, split: str = "train", frame_step: int = 1) -> Dict[str, np.ndarray]:
    if split == "train":
        return convert_train(raw_dir, frame_step=frame_step)
    if split in ("test", "val"):
        return convert_test(raw_dir)
    raise ConverterError(f"mpi_inf_3dhp: unknown split {split!r}; choose train or test")


META = {"source": "mpi_inf_3dhp", "fps": 25.0}
