"""Finding and loading body-model files, with clear messages for missing ones."""
from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Optional

import numpy as np

from lib.body_models.layer import VERTEX_KEYPOINTS, BodyModelLayer
from lib.body_models.pickle_io import load_smpl_pickle
from lib.errors import MissingAssetError, UserError

logger = logging.getLogger(__name__)

BODY_MODEL_KINDS = ("open", "smpl")
DEFAULT_ROOT = Path("data") / "body_models"

# SMPL's own keypoint vertices (nose, eyes, ears, feet), same order as VERTEX_KEYPOINTS.
SMPL_VERTEX_IDS = {
    "nose": 332, "reye": 6260, "leye": 2800, "rear": 4071, "lear": 583,
    "lbigtoe": 3216, "lsmalltoe": 3226, "lheel": 3387,
    "rbigtoe": 6617, "rsmalltoe": 6624, "rheel": 6787,
}

_HOW_TO_GET = {
    "open": "build it with: python scripts/build_open_body_model.py (or bash scripts/fetch_assets.sh)",
    "smpl": (
        "SMPL is licence-gated: register at the SMPL website, download the neutral model "
        "(SMPL_NEUTRAL.pkl, e.g. basicmodel_neutral_lbs_10_207_0_v1.1.0.pkl renamed), and get "
        "J_regressor_extra.npy, J_regressor_h36m.npy and smpl_mean_params.npz from VIBE's data "
        "download; see doc/body_models.md"
    ),
}


class BodyModelNotFound(MissingAssetError):
    """A body-model file is missing; the message says what, where and how to get it."""


def _require(path: Path, kind: str) -> Path:
    if not path.is_file():
        raise BodyModelNotFound(
            f"body model '{kind}': missing file {path.name} in {path.parent}/ -- {_HOW_TO_GET[kind]}"
        )
    return path


def resolve_model_dir(kind: str, model_dir: Optional[str | os.PathLike] = None, root: Optional[str | os.PathLike] = None) -> Path:
    """The folder of body model ``kind``: ``model_dir`` if given, else ``<root>/<kind>``."""
    if kind not in BODY_MODEL_KINDS:
        raise UserError(f"unknown body model kind {kind!r}; choose one of {', '.join(BODY_MODEL_KINDS)}")
    if model_dir is not None:
        return Path(model_dir)
    return Path(root if root is not None else DEFAULT_ROOT) / kind


def load_body_model(
    kind: str = "open",
    model_dir: Optional[str | os.PathLike] = None,
    device: Optional[str] = None,
    root: Optional[str | os.PathLike] = None,
) -> BodyModelLayer:
    """Load body model ``kind`` ("open" or "smpl") as a :class:`BodyModelLayer`.

    Files expected in the folder (the same names for both kinds):
    ``SMPL_NEUTRAL.pkl``, ``J_regressor_extra.npy``, ``J_regressor_h36m.npy``,
    ``smpl_mean_params.npz`` and, for models other than SMPL, ``vertex_ids.json``.

    Raises:
        BodyModelNotFound: a file is missing (the message names it and says how to get it).
    """
    folder = resolve_model_dir(kind, model_dir, root)
    pkl = _require(folder / "SMPL_NEUTRAL.pkl", kind)
    data = load_smpl_pickle(pkl)
    for key in ("v_template", "shapedirs", "posedirs", "J_regressor", "weights", "kintree_table", "f"):
        if key not in data:
            raise UserError(f"{pkl}: not an SMPL-format model file (no key {key!r})")
    extra = np.load(_require(folder / "J_regressor_extra.npy", kind))
    h36m = np.load(_require(folder / "J_regressor_h36m.npy", kind))
    with np.load(_require(folder / "smpl_mean_params.npz", kind)) as npz:
        mean = {k: npz[k] for k in ("pose", "shape", "cam")}
    ids_file = folder / "vertex_ids.json"
    if ids_file.is_file():
        ids_map = json.loads(ids_file.read_text())
    elif kind == "smpl":
        ids_map = SMPL_VERTEX_IDS
    else:
        _require(ids_file, kind)
    vertex_ids = [int(ids_map[name]) for name in VERTEX_KEYPOINTS]
    num_verts = data["v_template"].shape[0]
    for name, arr in (("J_regressor_extra.npy", extra), ("J_regressor_h36m.npy", h36m)):
        if arr.ndim != 2 or arr.shape[1] != num_verts:
            raise UserError(
                f"{folder / name}: shape {arr.shape} does not match the model's {num_verts} vertices "
                "(files from another body model?)"
            )
    layer = BodyModelLayer(
        v_template=data["v_template"],
        shapedirs=data["shapedirs"],
        posedirs=data["posedirs"],
        j_regressor=data["J_regressor"],
        weights=data["weights"],
        parents=np.asarray(data["kintree_table"])[0].astype(np.int64),
        faces=np.asarray(data["f"], dtype=np.int64),
        j_regressor_extra=extra,
        j_regressor_h36m=h36m,
        vertex_ids=vertex_ids,
        mean_params=mean,
        kind=kind,
    )
    logger.debug("loaded body model %s from %s (%d vertices)", kind, folder, num_verts)
    if device is not None:
        layer = layer.to(device)
    return layer
