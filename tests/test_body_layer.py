"""The body-model layer on the toy model: agreement with stock smplx, stateless
batching, the joints-only path, and clear errors for missing/unsafe files."""
import json
import pickle
import shutil
import warnings

import numpy as np
import pytest
import torch

from lib.body_models import BodyModelNotFound, load_body_model
from lib.body_models.layer import JOINT_MAP, VERTEX_KEYPOINTS
from lib.geometry.rotations import axis_angle_to_matrix
from lib.joints.conventions import SPIN_49


def _random_inputs(batch, seed=0):
    g = torch.Generator().manual_seed(seed)
    aa = 0.4 * torch.randn(batch, 24, 3, generator=g)
    betas = torch.randn(batch, 10, generator=g)
    transl = torch.randn(batch, 3, generator=g)
    return aa, betas, transl


def test_matches_stock_smplx(toy_body_model, toy_body_model_dir):
    smplx = pytest.importorskip("smplx")
    ids = json.loads((toy_body_model_dir / "vertex_ids.json").read_text())
    vid = {k: ids[k] for k in ("nose", "reye", "leye", "rear", "lear")}
    vid.update(LBigToe=ids["lbigtoe"], LSmallToe=ids["lsmalltoe"], LHeel=ids["lheel"],
               RBigToe=ids["rbigtoe"], RSmallToe=ids["rsmalltoe"], RHeel=ids["rheel"])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ref = smplx.SMPL(model_path=str(toy_body_model_dir / "SMPL_NEUTRAL.pkl"), vertex_ids=vid, use_hands=False)
    aa, betas, transl = _random_inputs(5)
    R = axis_angle_to_matrix(aa)
    ours = toy_body_model(global_orient=R[:, :1], body_pose=R[:, 1:], betas=betas, transl=transl)
    theirs = ref(global_orient=aa[:, 0], body_pose=aa[:, 1:].reshape(5, -1), betas=betas, transl=transl)
    torch.testing.assert_close(ours.vertices, theirs.vertices, atol=1e-5, rtol=0)
    torch.testing.assert_close(ours.smpl_joints, theirs.joints[:, :24], atol=1e-5, rtol=0)
    # smplx appends nose, eyes, ears, feet vertices after the 24 joints.
    for k, name in enumerate(VERTEX_KEYPOINTS):
        slot = SPIN_49.index(name if name in SPIN_49 else "op_" + name)
        torch.testing.assert_close(ours.joints[:, slot], theirs.joints[:, 24 + k], atol=1e-5, rtol=0)


def test_stateless_batching_and_joints_only(toy_body_model):
    aa, betas, transl = _random_inputs(6, seed=1)
    R = axis_angle_to_matrix(aa)
    full = toy_body_model(R[:, :1], R[:, 1:], betas, transl)
    fast = toy_body_model(R[:, :1], R[:, 1:], betas, transl, joints_only=True)
    assert fast.vertices is None
    torch.testing.assert_close(fast.joints, full.joints, atol=1e-6, rtol=0)
    # Each sample is independent of the rest of the batch.
    one = toy_body_model(R[2:3, :1], R[2:3, 1:], betas[2:3], transl[2:3])
    torch.testing.assert_close(one.vertices[0], full.vertices[2], atol=1e-6, rtol=0)
    assert full.joints.shape == (6, 49, 3) and full.smpl_joints.shape == (6, 24, 3)
    # One betas row broadcasts over the batch; (B, 3, 3) global_orient is accepted.
    shared = toy_body_model(R[:, 0], R[:, 1:], betas[:1])
    assert shared.vertices.shape[0] == 6


def test_identity_pose_gives_rest_joints_and_translation_shifts_everything(toy_body_model):
    eye = torch.eye(3).expand(2, 24, 3, 3)
    out = toy_body_model(eye[:, :1], eye[:, 1:])
    torch.testing.assert_close(out.smpl_joints, out.rest_joints)
    moved = toy_body_model(eye[:, :1], eye[:, 1:], transl=torch.tensor([[1.0, 2.0, 3.0]] * 2))
    torch.testing.assert_close(moved.vertices - out.vertices, torch.tensor([1.0, 2.0, 3.0]).expand_as(out.vertices))


def test_gradients_flow_to_pose_and_shape(toy_body_model):
    aa, betas, _ = _random_inputs(2, seed=3)
    aa.requires_grad_(True)
    betas.requires_grad_(True)
    R = axis_angle_to_matrix(aa)
    toy_body_model(R[:, :1], R[:, 1:], betas, joints_only=True).joints.square().sum().backward()
    assert aa.grad.abs().sum() > 0 and betas.grad.abs().sum() > 0


def test_joint_map_covers_49_joints():
    assert JOINT_MAP.shape == (49,)
    assert JOINT_MAP[SPIN_49.index("op_midhip")] == 0  # SMPL pelvis
    assert JOINT_MAP[SPIN_49.index("lknee")] == 4 and JOINT_MAP[SPIN_49.index("op_lknee")] == 4


def test_wrong_rotation_shape_is_a_clear_error(toy_body_model):
    with pytest.raises(ValueError, match=r"\(B, 24, 3, 3\)"):
        toy_body_model(torch.eye(3).expand(1, 1, 3, 3), torch.eye(3).expand(1, 22, 3, 3))


def test_missing_files_name_the_file_and_the_fix(tmp_path, toy_body_model_dir):
    with pytest.raises(BodyModelNotFound, match="SMPL_NEUTRAL.pkl.*licence-gated"):
        load_body_model("smpl", model_dir=tmp_path)
    with pytest.raises(BodyModelNotFound, match="build_open_body_model"):
        load_body_model("open", model_dir=tmp_path)
    partial = tmp_path / "partial"
    shutil.copytree(toy_body_model_dir, partial)
    (partial / "J_regressor_h36m.npy").unlink()
    with pytest.raises(BodyModelNotFound, match="J_regressor_h36m.npy"):
        load_body_model("open", model_dir=partial)


def test_regressor_from_another_model_is_refused(tmp_path, toy_body_model_dir):
    other = tmp_path / "other"
    shutil.copytree(toy_body_model_dir, other)
    np.save(other / "J_regressor_extra.npy", np.zeros((9, 6890)))
    with pytest.raises(Exception, match="does not match the model's 192 vertices"):
        load_body_model("open", model_dir=other)


class _Evil:
    def __reduce__(self):
        return (print, ("this must never run",))


def test_untrusted_pickle_is_refused(tmp_path, toy_body_model_dir):
    bad = tmp_path / "bad"
    shutil.copytree(toy_body_model_dir, bad)
    with open(bad / "SMPL_NEUTRAL.pkl", "wb") as fh:
        pickle.dump({"v_template": _Evil()}, fh)
    with pytest.raises(pickle.UnpicklingError, match="refusing to load builtins.print"):
        load_body_model("open", model_dir=bad)


def test_chumpy_objects_load_through_the_shim(tmp_path):
    """A pickle naming chumpy.ch.Ch (as the official SMPL files do) loads without chumpy."""
    from lib.body_models.pickle_io import load_smpl_pickle

    # Hand-written protocol-2 stream: {'shapedirs': chumpy.ch.Ch() with state {'x': array}}.
    arr = np.arange(6.0).reshape(2, 3)

    class Ch:  # stands in for chumpy.ch.Ch when writing
        pass

    Ch.__module__, Ch.__qualname__ = "chumpy.ch", "Ch"
    obj = Ch()
    obj.x = arr
    import sys
    import types

    pkg, mod = types.ModuleType("chumpy"), types.ModuleType("chumpy.ch")
    mod.Ch = Ch
    pkg.ch = mod
    saved = {k: sys.modules.get(k) for k in ("chumpy", "chumpy.ch")}
    sys.modules.update({"chumpy": pkg, "chumpy.ch": mod})
    try:
        with open(tmp_path / "m.pkl", "wb") as fh:
            pickle.dump({"shapedirs": obj}, fh, protocol=2)
    finally:
        for k, v in saved.items():
            if v is None:
                sys.modules.pop(k, None)
            else:
                sys.modules[k] = v
    data = load_smpl_pickle(tmp_path / "m.pkl")
    np.testing.assert_array_equal(data["shapedirs"], arr)
