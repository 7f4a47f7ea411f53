"""Import VIBE's preprocessed databases (``vibe_db/*_db.pt``) into the schema.

VIBE stores each dataset split as a joblib pickle ``<dataset>_<split>_db.pt``
(a dict of frame-aligned arrays: ``vid_name``, ``frame_id``, ``img_name``,
``joints2D`` (N, 49, 3), ``joints3D`` (N, 49, 3) or (N, 14, 3) for 3DPW test,
``pose`` (N, 72), ``shape`` (N, 10), ``bbox`` (N, 4) cx, cy, w, h, ``features``
(N, 2048), ``valid``), the AMASS db as ``theta`` (N, 85) = camera (3) + pose
(72) + betas (10), and InstaVariety as HDF5 ``insta_train_db.h5``.

**This is the one place pbn unpickles**: joblib files can only be read by
unpickling, which can run code from the file. Import only databases you made
yourself or got from VIBE's authors, as an explicit step
(``python scripts/prepare_data.py vibe_db --raw_dir data/vibe_db``); the
result is plain ``.npy`` arrays that load without pickle. The HDF5 file is read
with h5py (no pickle).

3D validity: VIBE marks unlabelled 3D joints by zeros, so a joint is valid
where its coordinates are not all zero. Datasets whose ``pose`` is all zero
(MPI-INF-3DHP, H36M without fits) get ``has_smpl`` 0.
"""
from __future__ import annotations

import logging
import re
from pathlib import Path
from typing import Dict, List, Tuple

import numpy as np

from lib.data_utils.common import ConverterError, require_dir, require_keys, require_shape
from lib.joints.conventions import convert_kps

logger = logging.getLogger(__name__)

DB_PATTERN = re.compile(r"^(?P<name>.+?)_(?P<split>train|val|test)_db\.(pt|h5)$")
# VIBE dataset names -> ours.
NAMES = {"3dpw": "3dpw", "mpii3d": "mpi_inf_3dhp", "h36m": "h36m", "insta": "insta", "pennaction": "penn_action",
         "posetrack": "posetrack", "amass": "amass"}
FPS = {"3dpw": 30.0, "mpi_inf_3dhp": 25.0, "h36m": 10.0, "insta": 30.0, "penn_action": 30.0, "posetrack": 30.0,
       "amass": 30.0}


def _strings(arr) -> np.ndarray:
    arr = np.asarray(arr)
    if arr.dtype.kind == "S" or arr.dtype.kind == "O":
        return np.array([a.decode("utf-8") if isinstance(a, bytes) else str(a) for a in arr.reshape(-1)])
    return arr.astype(str).reshape(-1)


def load_db(path: Path) -> Dict[str, np.ndarray]:
    """Read one VIBE db file (joblib pickle -- see the module warning -- or HDF5)."""
    if path.suffix == ".h5":
        import h5py

        with h5py.File(path, "r") as h5:
            return {k: np.array(h5[k]) for k in h5.keys()}
    try:
        import joblib
    except ImportError:
        raise ConverterError("vibe_db: reading VIBE's *_db.pt files needs joblib (pip install joblib)") from None
    try:
        data = joblib.load(path)  # unpickles: only for trusted VIBE databases (explicit import step)
    except Exception as err:  # joblib raises many kinds
        raise ConverterError(f"{path}: not a joblib database ({type(err).__name__}: {err})") from None
    if not isinstance(data, dict):
        raise ConverterError(f"{path}: expected a dict of arrays, got {type(data).__name__}")
    return data


def convert_db(db: Dict[str, np.ndarray], where: str) -> Dict[str, np.ndarray]:
    """One VIBE db dict -> schema fields."""
    require_keys(db, ("vid_name",), where)
    vid = _strings(db["vid_name"])
    n = len(vid)
    out: Dict[str, np.ndarray] = {"vid_name": vid}
    out["frame_id"] = (require_shape(db["frame_id"], (n,), "frame_id", where).astype(np.int64)
                       if "frame_id" in db else _frame_ids(vid))
    if "theta" in db:  # AMASS: cam (3) + pose (72) + betas (10)
        theta = require_shape(db["theta"], (n, 85), "theta", where)
        out["pose"], out["shape"] = theta[:, 3:75], theta[:, 75:]
        return out
    if "img_name" in db:
        out["img_name"] = _strings(db["img_name"])
    if "bbox" in db:
        out["bbox"] = require_shape(db["bbox"], (n, 4), "bbox", where)
    if "joints2D" in db:
        out["joints2D"] = joints2d_to_spin49(np.asarray(db["joints2D"], np.float32), n, where)
    if "joints3D" in db:
        j3 = np.asarray(db["joints3D"], np.float32)
        if j3.shape == (n, 14, 3):
            j3 = convert_kps(j3, "common14", "spin49")
        require_shape(j3, (n, 49, 3), "joints3D", where)
        valid = (np.abs(j3).sum(-1) > 0).astype(np.float32)
        out["joints3D"] = np.concatenate([j3, valid[..., None]], -1)
    if "pose" in db and "shape" in db:
        out["pose"] = require_shape(db["pose"], (n, 72), "pose", where)
        out["shape"] = require_shape(db["shape"], (n, 10), "shape", where)
        out["has_smpl"] = (np.abs(out["pose"]).sum(-1) > 0).astype(np.uint8)
    if "features" in db:
        out["features"] = require_shape(db["features"], (n, 2048), "features", where)
    if "valid" in db:
        out["valid"] = require_shape(np.asarray(db["valid"]).reshape(-1), (n,), "valid", where)
    return out


def joints2d_to_spin49(j2d: np.ndarray, n: int, where: str) -> np.ndarray:
    """VIBE keeps some datasets' 2D joints in their own layout and converts them when
    loading: 3DPW in common-14, PennAction in its 13 joints, InstaVariety in its 25
    (LSP 14 + face 5 + feet 6; the same order as lib.data_utils.insta.INSTA_NAMES)."""
    from lib.data_utils.common import names_to_spin49
    from lib.data_utils.insta import INSTA_NAMES

    if j2d.ndim != 3 or j2d.shape[0] != n or j2d.shape[2] != 3:
        raise ConverterError(f"{where}: 'joints2D' has shape {j2d.shape}, expected (N, J, 3)")
    j = j2d.shape[1]
    if j == 49:
        return j2d
    if j == 14:
        return convert_kps(j2d, "common14", "spin49")
    if j == 13:
        return convert_kps(j2d, "penn_action13", "spin49")
    if j == 25:
        return names_to_spin49(j2d, INSTA_NAMES)
    raise ConverterError(f"{where}: 'joints2D' has {j} joints; expected 49 (spin), 14 (common), 13 (PennAction) "
                         "or 25 (InstaVariety)")


def _frame_ids(vid: np.ndarray) -> np.ndarray:
    """0, 1, 2, ... within each run of equal names."""
    change = np.r_[True, vid[1:] != vid[:-1]]
    starts = np.maximum.accumulate(np.where(change, np.arange(len(vid)), 0))
    return (np.arange(len(vid)) - starts).astype(np.int64)


def find_dbs(raw_dir: str, split: str = "all") -> List[Tuple[Path, str, str]]:
    """(path, our dataset name, split) of every db file in ``raw_dir``."""
    root = require_dir(raw_dir, "vibe_db raw_dir")
    found = []
    for f in sorted(root.iterdir()):
        m = DB_PATTERN.match(f.name)
        if not m:
            continue
        if split != "all" and m["split"] != split:
            continue
        found.append((f, NAMES.get(m["name"], m["name"]), m["split"]))
    if not found:
        raise ConverterError(f"vibe_db: no <dataset>_<split>_db.pt / .h5 files in {root}")
    return found
