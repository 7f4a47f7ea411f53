"""A tiny SMPL-format body model for fast unit tests (a cube around every joint).

It has the real file layout and a plausible 1.7 m T-pose skeleton, so code that
only needs *a* body model runs in milliseconds; properties of the shipped open
model are tested against the real build in test_open_body_model.py.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from lib.body_models.pickle_io import dump_portable_pickle

PARENTS = [-1, 0, 0, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 9, 9, 12, 13, 14, 16, 17, 18, 19, 20, 21]
# T-pose joint positions (metres, y up, facing +z), roughly an adult.
JOINTS = np.array([
    [0.0, 0.92, 0.0], [0.09, 0.83, 0.0], [-0.09, 0.83, 0.0], [0.0, 1.02, -0.01],
    [0.10, 0.47, 0.0], [-0.10, 0.47, 0.0], [0.0, 1.15, 0.0], [0.10, 0.07, -0.02],
    [-0.10, 0.07, -0.02], [0.0, 1.20, 0.01], [0.11, 0.02, 0.10], [-0.11, 0.02, 0.10],
    [0.0, 1.42, -0.01], [0.07, 1.34, 0.0], [-0.07, 1.34, 0.0], [0.0, 1.52, 0.03],
    [0.18, 1.37, -0.01], [-0.18, 1.37, -0.01], [0.44, 1.37, -0.02], [-0.44, 1.37, -0.02],
    [0.70, 1.37, -0.01], [-0.70, 1.37, -0.01], [0.78, 1.37, -0.01], [-0.78, 1.37, -0.01],
])
_CUBE = np.array([[x, y, z] for x in (-1, 1) for y in (-1, 1) for z in (-1, 1)], dtype=float)
_CUBE_FACES = np.array([
    [0, 1, 3], [0, 3, 2], [4, 6, 7], [4, 7, 5], [0, 4, 5], [0, 5, 1],
    [2, 3, 7], [2, 7, 6], [0, 2, 6], [0, 6, 4], [1, 5, 7], [1, 7, 3],
])


def write_toy_body_model(folder: str | Path, seed: int = 0) -> Path:
    """Write a toy model in the SMPL file layout into ``folder``; returns the folder."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    half = 0.03
    verts = (JOINTS[:, None, :] + half * _CUBE[None]).reshape(-1, 3)  # (192, 3)
    nv = verts.shape[0]
    owner = np.repeat(np.arange(24), 8)
    weights = np.zeros((nv, 24))
    weights[np.arange(nv), owner] = 1.0
    jreg = weights.T / 8.0  # each joint = centre of its cube
    # Shape: beta 0 scales height, the rest are small random offsets per joint cube.
    shapedirs = np.zeros((nv, 3, 10))
    shapedirs[:, 1, 0] = 0.05 * verts[:, 1]
    shapedirs[:, :, 1:] = np.repeat(rng.normal(0, 0.004, (24, 3, 9)), 8, axis=0)
    faces = (np.arange(24)[:, None, None] * 8 + _CUBE_FACES[None]).reshape(-1, 3)
    kintree = np.stack([np.array(PARENTS, dtype=np.int64) % 4294967296, np.arange(24)])
    dump_portable_pickle({
        "v_template": verts, "shapedirs": shapedirs, "posedirs": np.zeros((nv, 3, 207)),
        "J_regressor": jreg, "weights": weights, "kintree_table": kintree, "f": faces.astype(np.int64),
    }, folder / "SMPL_NEUTRAL.pkl")

    def rows(*joint_lists):
        out = np.zeros((len(joint_lists), nv))
        for r, js in enumerate(joint_lists):
            for j in js:
                out[r, j * 8:(j + 1) * 8] += 1.0 / (8 * len(js))
        return out

    # rhip, lhip, neck, headtop, pelvis, thorax, spine, jaw, head
    np.save(folder / "J_regressor_extra.npy", rows([2], [1], [12], [15], [0], [9], [6], [15], [15]))
    # pelvis, lhip, lknee, lankle, rhip, rknee, rankle, spine, neck, head, headtop,
    # lshoulder, lelbow, lwrist, rshoulder, relbow, rwrist
    np.save(folder / "J_regressor_h36m.npy", rows(
        [0], [1], [4], [7], [2], [5], [8], [6], [12], [15], [15], [16], [18], [20], [17], [19], [21]))
    ids = {"nose": 15 * 8 + 7, "reye": 15 * 8 + 3, "leye": 15 * 8 + 7, "rear": 15 * 8 + 2, "lear": 15 * 8 + 6,
           "lbigtoe": 10 * 8 + 7, "lsmalltoe": 10 * 8 + 5, "lheel": 7 * 8, "rbigtoe": 11 * 8 + 3,
           "rsmalltoe": 11 * 8 + 1, "rheel": 8 * 8}
    (folder / "vertex_ids.json").write_text(json.dumps(ids))
    pose6d = np.tile(np.array([1.0, 0, 0, 1, 0, 0]), 24)
    np.savez(folder / "smpl_mean_params.npz", pose=pose6d, shape=np.zeros(10), cam=np.array([0.9, 0, 0]))
    return folder
