"""Properties of the open body model built from anny (data/body_models/open).

The session fixture builds the model if it is missing (about a minute; cached after).
"""
from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

MODEL_DIR = Path("data") / "body_models" / "open"
SMPL_FLIP = [0, 2, 1, 3, 5, 4, 6, 8, 7, 9, 11, 10, 12, 14, 13, 15, 17, 16, 19, 18, 21, 20, 23, 22]
L_SHOULDER, R_SHOULDER, L_ELBOW, R_ELBOW, L_WRIST, R_WRIST = 16, 17, 18, 19, 20, 21
MIRROR = np.array([-1.0, 1.0, 1.0])


@pytest.fixture(scope="session")
def open_model_dir():
    pytest.importorskip("anny", reason="anny missing: cannot run build_open_body_model for body_models/open")
    from lib.body_models.anny_builder import BuildArgs, build_open_body_model, is_up_to_date

    if not is_up_to_date(MODEL_DIR, BuildArgs()):
        build_open_body_model(MODEL_DIR, BuildArgs())
    return MODEL_DIR


@pytest.fixture(scope="session")
def bm(open_model_dir):
    from lib.body_models import load_body_model

    return load_body_model("open", model_dir=open_model_dir)


def _rotmats(rotvec: torch.Tensor) -> torch.Tensor:
    import roma

    return roma.rotvec_to_rotmat(rotvec)


def _forward(bm, rotvec=None, betas=None):
    """rotvec (B, 24, 3) axis-angle, betas (B, 10) -> model output."""
    if rotvec is None:
        rotvec = torch.zeros(1, 24, 3)
    rot = _rotmats(rotvec)
    return bm(global_orient=rot[:, :1], body_pose=rot[:, 1:], betas=betas)


def _winding_numbers(points: np.ndarray, verts: np.ndarray, faces: np.ndarray) -> np.ndarray:
    """Generalised winding number of each point w.r.t. the closed mesh (1 inside, 0 outside)."""
    a, b, c = (verts[faces[:, i]][None] - points[:, None] for i in range(3))
    la, lb, lc = (np.linalg.norm(x, axis=-1) for x in (a, b, c))
    det = np.einsum("pfi,pfi->pf", a, np.cross(b, c))
    dot = lambda x, y: np.einsum("pfi,pfi->pf", x, y)  # noqa: E731
    den = la * lb * lc + dot(a, b) * lc + dot(b, c) * la + dot(c, a) * lb
    return 2.0 * np.arctan2(det, den).sum(1) / (4.0 * math.pi)


def test_zero_pose_and_betas_give_a_tposed_adult(bm):
    out = _forward(bm)
    v = out.vertices[0].numpy()
    j = out.smpl_joints[0].numpy()
    height = v[:, 1].max() - v[:, 1].min()
    assert 1.6 <= height <= 1.8, height
    # T-pose: arms horizontal and straight along x, at shoulder height; head up, feet down.
    for sh, el, wr, sign in ((L_SHOULDER, L_ELBOW, L_WRIST, 1), (R_SHOULDER, R_ELBOW, R_WRIST, -1)):
        assert sign * (j[el, 0] - j[sh, 0]) > 0.2 and sign * (j[wr, 0] - j[el, 0]) > 0.2
        assert abs(j[wr, 1] - j[sh, 1]) < 0.03 and abs(j[wr, 2] - j[sh, 2]) < 0.03
    assert j[15, 1] > j[12, 1] > j[0, 1] > j[4, 1] > j[7, 1]
    # Person faces +z: the nose (keypoint vertex, first of the 11) is in front of the head joint.
    nose = v[bm.vertex_ids[0]]
    assert nose[2] > j[15, 2] + 0.05


def test_mesh_is_closed_and_outward(bm):
    trimesh = pytest.importorskip("trimesh")
    mesh = trimesh.Trimesh(bm.v_template.numpy(), bm.faces, process=False)
    assert mesh.is_watertight and mesh.is_winding_consistent
    assert mesh.volume > 0.03  # outward winding gives a positive volume (m^3)
    assert 6890 <= bm.num_vertices <= 8000


@pytest.mark.parametrize("beta_scale", [0.0, 1.5])
def test_left_right_mirror_symmetric(bm, beta_scale):
    from scipy.spatial import cKDTree

    betas = beta_scale * torch.randn(1, 10, generator=torch.Generator().manual_seed(3))
    out = _forward(bm, betas=betas)
    v = out.vertices[0].numpy()
    dist, _ = cKDTree(v).query(v * MIRROR)
    assert dist.max() < 0.003, dist.max()
    j = out.smpl_joints[0].numpy()
    assert np.abs(j[SMPL_FLIP] * MIRROR - j).max() < 0.003
    j49 = out.joints[0].numpy()
    from lib.joints.conventions import SPIN_49, flip_permutation

    perm = flip_permutation("spin49")
    assert len(perm) == len(SPIN_49)
    assert np.abs(j49[perm] * MIRROR - j49).max() < 0.003


def test_joints_inside_mesh(bm):
    out = _forward(bm, betas=torch.zeros(1, 10))
    v = out.vertices[0].numpy().astype(np.float64)
    inside = lambda p: _winding_numbers(np.asarray(p, dtype=np.float64), v, bm.faces)  # noqa: E731
    assert (inside(out.smpl_joints[0].numpy()) > 0.9).all()
    assert (inside(bm.h36m_joints(out.vertices)[0].numpy()) > 0.9).all()
    extra = np.einsum("jv,vc->jc", bm.j_regressor_extra.numpy(), v)
    assert (inside(extra) > 0.9).all()
    # A bent, reshaped body keeps its joints inside too.
    rotvec = torch.zeros(1, 24, 3)
    rotvec[0, L_ELBOW, 1] = -1.2
    rotvec[0, 4, 0] = 1.0
    betas = torch.tensor([[1.5, -1.0, 0.5, 0, 0, 0, 0, 0, 0, 0]])
    out = _forward(bm, rotvec, betas)
    v = out.vertices[0].numpy().astype(np.float64)
    assert (_winding_numbers(out.smpl_joints[0].numpy().astype(np.float64), v, bm.faces) > 0.9).all()


def test_bending_left_elbow_moves_left_wrist_only(bm):
    rest = _forward(bm)
    rotvec = torch.zeros(1, 24, 3)
    rotvec[0, L_ELBOW, 1] = -math.pi / 2  # flex the left elbow: forearm forward (+z)
    bent = _forward(bm, rotvec)
    j0, j1 = rest.smpl_joints[0], bent.smpl_joints[0]
    moved = (j1 - j0).norm(dim=-1)
    assert moved[L_WRIST] > 0.15
    assert j1[L_WRIST, 2] - j0[L_WRIST, 2] > 0.15  # forward
    assert torch.all(moved[[j for j in range(24) if j not in (L_WRIST, 22)]] < 1e-6)
    v0, v1 = rest.vertices[0], bent.vertices[0]
    right = v0[:, 0] < 0
    assert (v1[right] - v0[right]).abs().max() < 1e-6
    assert (v1 - v0).norm(dim=-1).max() > 0.15


def test_first_beta_changes_height_monotonically(bm):
    betas = torch.zeros(7, 10)
    betas[:, 0] = torch.linspace(-3, 3, 7)
    v = _forward(bm, torch.zeros(7, 24, 3), betas).vertices
    heights = (v[..., 1].max(1).values - v[..., 1].min(1).values).numpy()
    assert np.all(np.diff(heights) > 0.01), heights
    assert heights[-1] - heights[0] > 0.3  # +-3 standard deviations span a wide range of statures


def test_stock_smplx_gives_the_same_vertices(bm, open_model_dir):
    smplx = pytest.importorskip("smplx")
    ref = smplx.SMPL(model_path=str(open_model_dir / "SMPL_NEUTRAL.pkl"))
    gen = torch.Generator().manual_seed(0)
    rotvec = 0.5 * torch.randn(5, 24, 3, generator=gen)
    betas = 1.5 * torch.randn(5, 10, generator=gen)
    transl = 0.3 * torch.randn(5, 3, generator=gen)
    with torch.no_grad():
        theirs = ref(global_orient=rotvec[:, 0], body_pose=rotvec[:, 1:].reshape(5, -1), betas=betas, transl=transl)
        rot = _rotmats(rotvec)
        ours = bm(global_orient=rot[:, :1], body_pose=rot[:, 1:], betas=betas, transl=transl)
    assert (ours.vertices - theirs.vertices).abs().max() < 1e-5
    assert (ours.smpl_joints - theirs.joints[:, :24]).abs().max() < 1e-5


def test_pickle_is_portable_and_restricted_loadable(open_model_dir):
    from lib.body_models.pickle_io import load_smpl_pickle

    raw = (open_model_dir / "SMPL_NEUTRAL.pkl").read_bytes()
    assert b"numpy._core" not in raw
    data = load_smpl_pickle(open_model_dir / "SMPL_NEUTRAL.pkl")
    num_v = data["v_template"].shape[0]
    assert data["v_template"].dtype == np.float64
    assert data["shapedirs"].shape == (num_v, 3, 10)
    assert data["posedirs"].shape == (num_v, 3, 207) and not data["posedirs"].any()
    reg = data["J_regressor"]
    assert reg.shape == (24, num_v) and reg.min() >= 0 and np.allclose(reg.sum(1), 1.0)
    assert (reg > 0).sum(1).max() < 200  # sparse-ish
    assert np.allclose(data["weights"].sum(1), 1.0) and data["weights"].min() >= 0
    kin = data["kintree_table"]
    assert kin.dtype == np.int64 and kin[0, 0] == 4294967295 and (kin[1] == np.arange(24)).all()
    assert list(kin[0, 1:]) == [0, 0, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 9, 9, 12, 13, 14, 16, 17, 18, 19, 20, 21]
    assert data["f"].dtype == np.int64 and data["f"].max() == num_v - 1
    for name, rows in (("J_regressor_extra.npy", 9), ("J_regressor_h36m.npy", 17)):
        arr = np.load(open_model_dir / name)
        assert arr.shape == (rows, num_v) and arr.min() >= 0 and np.allclose(arr.sum(1), 1.0)
    meta = json.loads((open_model_dir / "meta.json").read_text())
    assert meta["num_vertices"] == num_v and 1.6 <= meta["height_zero_betas_m"] <= 1.8


def test_mean_params_stand_facing_the_camera(bm, open_model_dir):
    from lib.geometry.rotations import rot6d_to_matrix

    with np.load(open_model_dir / "smpl_mean_params.npz") as npz:
        pose, shape, cam = npz["pose"], npz["shape"], npz["cam"]
    assert pose.shape == (144,) and shape.shape == (10,) and not shape.any()
    assert np.allclose(cam, [0.9, 0.0, 0.0])
    rot = rot6d_to_matrix(torch.as_tensor(pose, dtype=torch.float32).reshape(24, 6))
    assert torch.allclose(rot[0], torch.diag(torch.tensor([1.0, -1.0, -1.0])), atol=1e-6)  # pi about x
    out = bm(global_orient=torch.eye(3)[None, None], body_pose=rot[None, 1:])
    j = out.smpl_joints[0]
    for sh, wr in ((L_SHOULDER, L_WRIST), (R_SHOULDER, R_WRIST)):
        drop = j[sh, 1] - j[wr, 1]
        reach = (j[wr, 0] - j[sh, 0]).abs()
        angle = math.degrees(math.atan2(drop, reach))
        assert 50 < angle < 80, angle  # arms down 60-70 degrees from the T-pose
    assert torch.allclose(rot[1:], bm.mean_pose_rotmat()[1:], atol=1e-6)


def test_keypoint_vertices_are_where_they_belong(bm, open_model_dir):
    ids = json.loads((open_model_dir / "vertex_ids.json").read_text())
    v = bm.v_template.numpy()
    head_top = v[:, 1].max()
    assert abs(v[ids["nose"], 0]) < 1e-6 and v[ids["nose"], 2] == pytest.approx(v[v[:, 1] > head_top - 0.3, 2].max(), abs=0.03)
    for side, sign in (("l", 1), ("r", -1)):
        assert sign * v[ids[side + "eye"], 0] > 0.01 and sign * v[ids[side + "ear"], 0] > 0.05
        assert v[ids[side + "ear"], 1] > head_top - 0.3 and v[ids[side + "eye"], 1] > head_top - 0.3
        heel, toe = v[ids[side + "heel"]], v[ids[side + "bigtoe"]]
        assert heel[1] < v[:, 1].min() + 0.05 and toe[1] < v[:, 1].min() + 0.06
        assert toe[2] - heel[2] > 0.15  # the foot points forward
        assert sign * v[ids[side + "smalltoe"], 0] > sign * toe[0]  # little toe outside the big toe
    for name in ("eye", "ear", "bigtoe", "smalltoe", "heel"):
        assert np.allclose(v[ids["l" + name]] * MIRROR, v[ids["r" + name]], atol=1e-6)


def test_build_is_cached(open_model_dir):
    import time

    from lib.body_models.anny_builder import BuildArgs, build_open_body_model

    start = time.perf_counter()
    build_open_body_model(open_model_dir, BuildArgs())
    assert time.perf_counter() - start < 1.0
