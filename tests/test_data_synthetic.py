"""Synthetic data: real-motion walking sanity, camera consistency, learnable features, motion helpers."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from lib.data_utils.motion_utils import mirror_smpl, resample_motion
from lib.data_utils.synthetic import (Clip, body_joints, load_clips, make_motion_fields, make_people_fields,
                                      procedural_walk, rest_joints, root_path_to_transl)
from lib.dataset import MotionWindowDataset, SequenceDataset, write_dataset
from lib.joints.conventions import SPIN_49

MOTIONS = Path("data/assets/motions")


def _walk_clip() -> Clip:
    if (MOTIONS / "humanoid3d_walk.txt").is_file():
        clips = load_clips(MOTIONS, pattern="humanoid3d_walk.txt")
        if clips[0].name == "walk":
            return clips[0]
    return procedural_walk()


@pytest.mark.parametrize("model", ["toy", "open"])
def test_walking_looks_like_walking(toy_body_model, model):
    if model == "open":
        if not Path("data/body_models/open/SMPL_NEUTRAL.pkl").is_file():
            pytest.skip("open body model not built (data/body_models/open; python scripts/build_open_body_model.py)")
        from lib.body_models import load_body_model
        bm = load_body_model("open")
    else:
        bm = toy_body_model
    clip = _walk_clip()
    rest = rest_joints(bm, np.zeros(10))
    transl = root_path_to_transl(clip.pose, clip.transl, rest)
    j = body_joints(bm, clip.pose, np.zeros(10), transl)  # world, y up
    la, ra = j[:, SPIN_49.index("lankle")], j[:, SPIN_49.index("rankle")]
    pelvis = j[:, SPIN_49.index("pelvis")]
    heading = pelvis[-1, [0, 2]] - pelvis[0, [0, 2]]
    assert np.linalg.norm(heading) / (len(j) / clip.fps) > 0.5  # moves forward > 0.5 m/s
    heading /= np.linalg.norm(heading)
    lead = (la[:, [0, 2]] - ra[:, [0, 2]]) @ heading  # > 0: left foot in front
    flips = np.count_nonzero(np.diff(np.sign(lead[np.abs(lead) > 0.05])))
    assert flips >= 3, "feet should alternate"
    floor = min(la[:, 1].min(), ra[:, 1].min())
    height = pelvis[:, 1] - floor
    assert 0.6 < height.min() and height.max() < 1.2  # pelvis in a human range above the feet


def test_people_fields_are_consistent(toy_body_model, tmp_path):
    clips = [procedural_walk()]
    rng = np.random.default_rng(0)
    f = make_people_fields(toy_body_model, clips, 6, rng, min_len=40, max_len=80)
    n = len(f["vid_name"])
    assert f["features"].dtype == np.float16 and f["joints3D"].shape == (n, 49, 4)
    # 3D joints are in the camera frame and in front of it; GT 2D slots are near their projection.
    assert f["joints3D"][..., 2].min() > 1.0
    # the exact projection is not stored; the annotation noise is ~0.4% of the box height
    h = f["bbox"][:, 3] / 1.2
    kp = f["joints2D"][:, 25:]
    vis = kp[..., 2] > 0
    assert vis.mean() > 0.9
    # pose + transl give the stored joints: re-run the body layer with the stored camera-frame pose
    pelvis = f["joints3D"][:, SPIN_49.index("pelvis"), :3]
    j_rel = body_joints(toy_body_model, f["pose"], f["shape"], np.zeros((n, 3), np.float32))
    rel = j_rel - j_rel[:, SPIN_49.index("pelvis")][:, None]
    np.testing.assert_allclose(rel, f["joints3D"][..., :3] - pelvis[:, None], atol=1e-4)
    # the boxes hold the people
    x, y = kp[..., 0], kp[..., 1]
    c = f["bbox"]
    inside = (np.abs(x - c[:, None, 0]) <= c[:, None, 2] / 2 + 0.05 * h[:, None]) & \
             (np.abs(y - c[:, None, 1]) <= c[:, None, 3] / 2 + 0.05 * h[:, None])
    assert inside[vis].mean() > 0.99
    out = write_dataset(tmp_path / "syn" / "train", f, {"source": "synthetic", "fps": 30})
    ds = SequenceDataset(out, seq_len=16, stride=16)
    item = ds[0]
    assert item["has_smpl"].all() and item["has_3d"].all()
    assert np.abs(item["joints2d"][:, 25:, :2]).max() <= 1.0  # GT slots inside the crop
    assert np.abs(item["joints2d"][..., :2]).max() <= 1.6  # detector outliers may leave it a little


def test_features_carry_the_pose(toy_body_model):
    """A ridge regression from features recovers the per-frame 6D pose of unseen people."""
    from lib.geometry.rotations import axis_angle_to_rot6d
    clips = [procedural_walk(seconds=6.0)]
    train = make_people_fields(toy_body_model, clips, 10, np.random.default_rng(1), min_len=120, max_len=150)
    test = make_people_fields(toy_body_model, clips, 3, np.random.default_rng(2), min_len=120, max_len=150)

    def xy(f):
        x = f["features"].astype(np.float64)
        y = axis_angle_to_rot6d(torch.from_numpy(f["pose"].reshape(-1, 24, 3).astype(np.float64))).numpy()
        return x, y.reshape(len(x), -1)

    x, y = xy(train)
    mx, my = x.mean(0), y.mean(0)
    w = np.linalg.solve((x - mx).T @ (x - mx) + 10.0 * np.eye(x.shape[1]), (x - mx).T @ (y - my))
    xt, yt = xy(test)
    pred = (xt - mx) @ w + my
    r2 = 1 - ((pred - yt) ** 2).sum() / ((yt - yt.mean(0)) ** 2).sum()
    assert r2 > 0.8


def test_mirror_and_resample():
    clip = procedural_walk()
    p2, t2 = mirror_smpl(*mirror_smpl(clip.pose, clip.transl))
    np.testing.assert_allclose(p2, clip.pose, atol=1e-6)
    np.testing.assert_allclose(t2, clip.transl, atol=1e-6)
    up, tu = resample_motion(clip.pose, clip.transl, 30.0, 60.0)
    assert len(up) == 2 * len(clip.pose) - 1
    back, tb = resample_motion(up, tu, 60.0, 30.0)
    np.testing.assert_allclose(back, clip.pose, atol=1e-4)
    np.testing.assert_allclose(tb, clip.transl, atol=1e-5)


def test_mirror_reflects_the_body(toy_body_model):
    clip = procedural_walk(seconds=1.0)
    pose = clip.pose.copy()
    pose[:, 3:6] += 0.3  # make it asymmetric
    zeros = np.zeros((len(pose), 3), np.float32)
    j = body_joints(toy_body_model, pose, np.zeros(10), zeros)
    mp, _ = mirror_smpl(pose)
    jm = body_joints(toy_body_model, mp, np.zeros(10), zeros)
    from lib.joints.conventions import flip_permutation
    refl = j[:, flip_permutation("spin49")] * np.array([-1, 1, 1])
    idx = [SPIN_49.index(n) for n in ("lankle", "rankle", "lwrist", "rwrist", "lknee", "rknee")]
    np.testing.assert_allclose(jm[:, idx], refl[:, idx], atol=0.02)  # toy model is only nearly symmetric


def test_motion_set(tmp_path):
    f = make_motion_fields([procedural_walk()], 3, np.random.default_rng(0))
    out = write_dataset(tmp_path / "m" / "train", f, {"source": "synthetic_amass", "fps": 30})
    ds = MotionWindowDataset(out, seq_len=16, stride=8)
    assert len(ds) > 10
    pose = ds[0]["pose"]
    assert pose.shape == (16, 72) and np.abs(np.diff(pose[:, 3:], axis=0)).max() < 0.5  # smooth


def test_generator_script_is_fast(tmp_path, toy_body_model_dir):
    import subprocess
    import sys
    import time
    t = time.time()
    r = subprocess.run([sys.executable, "scripts/make_synthetic_data.py", "--out_root", str(tmp_path),
                        "--body_model_dir", str(toy_body_model_dir), "--num_train", "8", "--num_test", "2",
                        "--num_2d", "3"], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-2000:]
    for sub in ("synthetic/train", "synthetic/test", "synthetic_2d/train"):
        assert (tmp_path / sub / "meta.json").is_file()
    assert time.time() - t < 60
