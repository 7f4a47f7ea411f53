"""DeepMimic clips retargeted to SMPL, the motion pose prior and joint limits."""
from __future__ import annotations

import json
import pickle
import re
from pathlib import Path

import numpy as np
import pytest
import roma
import torch

from lib.errors import UserError
from lib.motion import (
    MotionPosePrior,
    body_transl,
    build_motion_prior,
    joint_limit_penalty,
    load_all_clips,
    load_clip,
    load_pose_prior,
    mirror,
    motion_tensors,
    resample,
)
from lib.motion import deepmimic as dm

MOTIONS = Path("data/assets/motions")
OPEN_MODEL = Path("data/body_models/open/SMPL_NEUTRAL.pkl")
LANKLE, RANKLE, LKNEE, RKNEE, LHIP, RHIP = 7, 8, 4, 5, 1, 2
LSHOULDER, RSHOULDER, LELBOW, RELBOW, LWRIST, RWRIST, HEAD = 16, 17, 18, 19, 20, 21, 15

needs_clips = pytest.mark.skipif(
    not (MOTIONS / "humanoid3d_walk.txt").is_file(),
    reason="DeepMimic clips missing in data/assets/motions (run scripts/fetch_assets.sh)",
)


@pytest.fixture(scope="module")
def body(request):
    """The open body model when it has been built, else the toy model."""
    if OPEN_MODEL.is_file():
        from lib.body_models import load_body_model

        return load_body_model("open")
    return request.getfixturevalue("toy_body_model")


def _perform(body, motion, full_mesh=False):
    """Pose ``body`` with ``motion`` on the ground: (N, 24, 3) joints, (N, V, 3) vertices or None."""
    tensors = motion_tensors(motion)
    with torch.no_grad():
        rest_out = body(torch.eye(3)[None, None], torch.eye(3).expand(1, 23, 3, 3))
        sole = float(rest_out.vertices[0, :, 1].min())
        transl = torch.as_tensor(body_transl(motion, rest_out.rest_joints[0], sole_y=sole))
        out = body(**tensors, transl=transl, joints_only=not full_mesh)
    return out.smpl_joints.numpy(), (None if out.vertices is None else out.vertices.numpy())


@pytest.fixture(scope="module")
def walk():
    if not (MOTIONS / "humanoid3d_walk.txt").is_file():
        pytest.skip("DeepMimic clips missing in data/assets/motions (run scripts/fetch_assets.sh)")
    return load_clip(MOTIONS / "humanoid3d_walk.txt", fps=30.0, cycles=3)


# --------------------------------------------------------------------------- clip format


@needs_clips
def test_frame_layout_matches_urdf():
    """The joint sizes we parse (4 per spherical joint, 1 per hinge) follow the URDF's joint
    list and types, and the dimensions we use are the URDF's scaled by 0.25."""
    urdf = (MOTIONS / "humanoid.urdf").read_text()
    joints = re.findall(r'<joint name="(\w+)" type="(\w+)"', urdf)
    sizes = {"spherical": 4, "revolute": 1, "fixed": 0}
    order = [(n, t) for n, t in joints if t != "fixed"]
    assert [n for n, _ in order] == [
        "chest", "neck", "right_hip", "right_knee", "right_ankle", "right_shoulder", "right_elbow",
        "left_hip", "left_knee", "left_ankle", "left_shoulder", "left_elbow",
    ]
    # duration + root position + root quaternion + every moving joint
    assert 1 + 3 + 4 + sum(sizes[t] for _, t in order) == dm.FRAME_SIZE
    offset = 8
    for name, kind in order:
        short = name.replace("right_", "r").replace("left_", "l")
        table = dm._QUAT_FIELDS if kind == "spherical" else dm._ANGLE_FIELDS
        assert table[short] == offset, name
        offset += sizes[kind]
    # Hinges turn about local z; knees bend with negative angles, elbows with positive ones.
    assert re.search(r'name="right_knee".*?lower="-3.14" upper="0."', urdf, re.S)
    assert re.search(r'name="right_elbow".*?lower="0" upper="3.14"', urdf, re.S)
    knee_origin = re.search(r'name="right_knee" type.*?xyz = "([^"]+)"', urdf, re.S).group(1)
    assert float(knee_origin.split()[1]) * dm.URDF_SCALE == pytest.approx(-dm.DM_THIGH)
    # The root sits about a leg length above the ground in the clips (metres after scaling).
    frames, _ = dm.read_frames(MOTIONS / "humanoid3d_walk.txt")
    assert 0.8 < frames[0, 2] < dm.DM_LEG + dm.DM_ANKLE_HEIGHT + 0.01


@needs_clips
def test_all_clips_load_finite_and_timed():
    clips = load_all_clips(MOTIONS, fps=30.0)
    assert len(clips) == 15
    total = 0.0
    for clip in clips:
        frames, _ = dm.read_frames(MOTIONS / f"humanoid3d_{clip.name}.txt")
        key_duration = frames[:-1, 0].sum()
        assert clip.pose.shape == (clip.num_frames, 72) and clip.pose.dtype == np.float32
        assert clip.transl.shape == (clip.num_frames, 3)
        assert np.isfinite(clip.pose).all() and np.isfinite(clip.transl).all()
        assert np.linalg.norm(clip.pose.reshape(-1, 24, 3), axis=-1).max() <= np.pi + 1e-4
        assert abs(clip.duration - key_duration) < 1.0 / 30.0 + 1e-6, clip.name
        total += key_duration
    assert 30.0 < total < 37.0  # "33.6 s in all"


def test_bad_clip_names_the_file(tmp_path):
    bad = tmp_path / "humanoid3d_bad.txt"
    bad.write_text(json.dumps({"Loop": "none", "Frames": [[0.1] * 40]}))
    with pytest.raises(UserError, match="humanoid3d_bad.txt.*44"):
        load_clip(bad)
    bad.write_text("not json")
    with pytest.raises(UserError, match="humanoid3d_bad.txt"):
        load_clip(bad)


def test_rest_frame_is_smpl_rest_with_arms_down(tmp_path):
    """DeepMimic's rest pose (all identities) becomes SMPL's rest pose except for the arms,
    which are turned from the T-pose down to the sides."""
    row = [0.0333, 0.0, 0.88, 0.0] + [1.0, 0, 0, 0] * 3 + [1.0, 0, 0, 0, 0.0, 1.0, 0, 0, 0, 1.0, 0, 0, 0, 0.0] * 2
    clip = tmp_path / "humanoid3d_rest.txt"
    clip.write_text(json.dumps({"Loop": "none", "Frames": [row, row]}))
    pose = load_clip(clip).pose[0].reshape(24, 3)
    rot = roma.rotvec_to_rotmat(torch.as_tensor(pose, dtype=torch.float64))
    arm_parts = {13, 14, 16, 17}
    for j in range(24):
        if j not in arm_parts:
            assert np.allclose(pose[j], 0.0, atol=1e-6), j
    # global arm direction = collar @ shoulder applied to the T-pose bone: must point down
    for collar, shoulder, bone in ((13, 16, [1.0, 0, 0]), (14, 17, [-1.0, 0, 0])):
        direction = (rot[collar] @ rot[shoulder] @ torch.tensor(bone, dtype=torch.float64)).numpy()
        assert np.allclose(direction, [0, -1, 0], atol=1e-6)


# --------------------------------------------------------------------------- walking


@needs_clips
def test_walk_looks_like_walking(body, walk):
    joints, verts = _perform(body, walk, full_mesh=True)
    root = joints[:, 0]
    travel = root[-1] - root[0]
    speed = np.linalg.norm(travel[[0, 2]]) / walk.duration
    assert 0.6 < speed < 2.0  # a walking pace, m/s
    assert travel[2] > 0.8 * np.linalg.norm(travel[[0, 2]])  # faces and walks towards +z
    fwd = np.array([travel[0], 0.0, travel[2]]) / np.linalg.norm(travel[[0, 2]])

    # Feet alternate: the left-minus-right ankle offset along the walk changes sign each step.
    lead = (joints[:, LANKLE] - joints[:, RANKLE]) @ fwd
    crossings = np.count_nonzero(np.diff(np.sign(lead[np.abs(lead) > 0.05])) != 0)
    assert crossings >= 5  # three gait cycles = six steps
    assert lead.max() > 0.3 and lead.min() < -0.3  # real strides, not shuffling

    # Pelvis at a human height, nothing sinks into the ground, a foot is down most of the time.
    assert 0.7 < joints[:, 0, 1].min() and joints[:, 0, 1].max() < 1.2
    lowest = verts[:, :, 1].min(axis=1)
    assert lowest.min() > -0.05
    assert np.mean(lowest < 0.05) > 0.8

    # Upright: head above pelvis, wrists below shoulders (arms hang, they are not in a T).
    assert (joints[:, HEAD, 1] > joints[:, 0, 1] + 0.4).all()
    assert (joints[:, LWRIST, 1] < joints[:, LSHOULDER, 1] - 0.3).all()
    assert (joints[:, RWRIST, 1] < joints[:, RSHOULDER, 1] - 0.3).all()
    # Arms swing opposite to the legs: left wrist leads when the right foot leads.
    arm_lead = (joints[:, LWRIST] - joints[:, RWRIST]) @ fwd
    assert np.corrcoef(arm_lead, lead)[0, 1] < -0.5


@needs_clips
def test_knees_bend_forwards_only(body, walk):
    pose = walk.pose.reshape(-1, 24, 3)
    for knee in (LKNEE, RKNEE):
        assert pose[:, knee, 0].min() > -0.05  # SMPL knee flexion is +x
        assert pose[:, knee, 0].max() > 0.8  # the swing leg bends a lot
    # No clip bends a knee or an elbow the wrong way (the few raw frames past the URDF's
    # hinge limits are clamped).
    for clip in load_all_clips(MOTIONS):
        assert joint_limit_penalty(torch.as_tensor(clip.body_pose)).max() < 1e-6, clip.name
    # Geometry: when a knee is bent, the ankle lies behind the straight continuation of the thigh.
    joints, _ = _perform(body, walk)
    travel = joints[-1, 0] - joints[0, 0]
    fwd = np.array([travel[0], 0.0, travel[2]]) / np.linalg.norm(travel[[0, 2]])
    for hip, knee, ankle in ((LHIP, LKNEE, LANKLE), (RHIP, RKNEE, RANKLE)):
        bent = pose[:, knee, 0] > 0.5
        thigh = joints[bent, knee] - joints[bent, hip]
        shin_len = np.linalg.norm(joints[bent, ankle] - joints[bent, knee], axis=-1, keepdims=True)
        straight = joints[bent, knee] + thigh / np.linalg.norm(thigh, axis=-1, keepdims=True) * shin_len
        assert ((joints[bent, ankle] - straight) @ fwd < -0.05).all()


@needs_clips
def test_mirror_swaps_feet_and_reflects(body, walk):
    mirrored = mirror(walk)
    assert mirrored.name.endswith("_mirror")
    back = mirror(mirrored)
    assert back.name == walk.name
    np.testing.assert_allclose(back.pose, walk.pose, atol=1e-6)
    joints, _ = _perform(body, walk)
    mjoints, _ = _perform(body, mirrored)
    lead = joints[:, LANKLE, 2] - joints[:, RANKLE, 2]
    mlead = mjoints[:, LANKLE, 2] - mjoints[:, RANKLE, 2]
    np.testing.assert_allclose(mlead, -lead, atol=0.03)
    # The mirrored body is the reflected body with sides swapped (bodies are near symmetric).
    from lib.joints.conventions import flip_permutation

    reflected = joints[:, flip_permutation("smpl24")] * np.array([-1.0, 1.0, 1.0])
    assert np.abs(mjoints - reflected).max() < 0.03


@needs_clips
def test_resample_keeps_duration_and_motion(walk):
    for fps in (24.0, 25.0, 60.0):
        out = resample(walk, fps)
        assert out.fps == fps
        assert abs(out.duration - walk.duration) <= 1.0 / fps + 1e-6
        assert np.isfinite(out.pose).all()
    same = resample(walk, walk.fps)
    np.testing.assert_allclose(same.pose, walk.pose, atol=1e-4)
    # 30 -> 60 -> 30 fps lands on the original frames.
    round_trip = resample(resample(walk, 60.0), 30.0)
    n = min(round_trip.num_frames, walk.num_frames)
    rot_a = roma.rotvec_to_rotmat(torch.as_tensor(round_trip.pose[:n]).reshape(-1, 3))
    rot_b = roma.rotvec_to_rotmat(torch.as_tensor(walk.pose[:n]).reshape(-1, 3))
    assert roma.rotmat_geodesic_distance(rot_a, rot_b).max() < 1e-3
    np.testing.assert_allclose(round_trip.transl[:n], walk.transl[:n], atol=1e-4)


@needs_clips
def test_cycles_join_smoothly(walk):
    single = load_clip(MOTIONS / "humanoid3d_walk.txt", fps=30.0)
    assert walk.num_frames > 2.9 * single.num_frames
    rot = roma.rotvec_to_rotmat(torch.as_tensor(walk.pose).reshape(-1, 24, 3))
    step = roma.rotmat_geodesic_distance(rot[1:], rot[:-1]).numpy()  # (N-1, 24) per joint
    # At each seam no joint moves much faster than it does just before and after it
    # (the raw clip's right shoulder jumps 0.24 rad there).
    for seam in (single.num_frames - 1, 2 * (single.num_frames - 1)):
        at = step[seam - 1:seam + 2].max(axis=0)
        around = np.maximum(step[seam - 5:seam - 2].max(axis=0), step[seam + 2:seam + 5].max(axis=0))
        assert (at <= 2.0 * around + 0.02).all(), seam
    assert np.abs(np.diff(walk.transl, axis=0)).max() < 0.1


# --------------------------------------------------------------------------- prior


@pytest.fixture(scope="module")
def prior(tmp_path_factory):
    if not (MOTIONS / "humanoid3d_walk.txt").is_file():
        pytest.skip("DeepMimic clips missing in data/assets/motions (run scripts/fetch_assets.sh)")
    path = tmp_path_factory.mktemp("prior") / "motion_prior.npz"
    built = build_motion_prior(MOTIONS, path)
    return built, path


def test_prior_prefers_clip_poses(prior):
    built, path = prior
    loaded = load_pose_prior("motion", path)
    clips = load_all_clips(MOTIONS)
    poses = torch.as_tensor(np.concatenate([c.body_pose for c in clips]))
    gen = torch.Generator().manual_seed(0)
    random = torch.randn(500, 69, generator=gen) * 0.4
    clip_pen, rand_pen = loaded(poses), loaded(random)
    assert clip_pen.shape == (len(poses),)
    assert torch.quantile(clip_pen, 0.95) < torch.quantile(rand_pen, 0.05)
    # A mirrored walk (seen in training as mirror copies) scores like the walk.
    walk = [c for c in clips if c.name == "walk"][0]
    assert loaded(torch.as_tensor(mirror(walk).body_pose)).median() < rand_pen.median() / 5
    # Save/load keeps the numbers.
    torch.testing.assert_close(built(poses[:50]), loaded(poses[:50]))


@needs_clips
def test_prior_generalises_to_an_unseen_clip():
    """Fitted without the walk, the mixture still scores walking far better than noise."""
    from lib.motion.prior import fit_gmm

    clips = load_all_clips(MOTIONS)
    train = np.concatenate([m.body_pose for c in clips if c.name != "walk" for m in (c, mirror(c))])
    means, covars, weights, _ = fit_gmm(train, num_components=8)
    held_out = MotionPosePrior(means, covars, weights)
    walk = torch.as_tensor([c for c in clips if c.name == "walk"][0].body_pose)
    noise = torch.randn(500, 69, generator=torch.Generator().manual_seed(2)) * 0.2
    assert torch.quantile(held_out(walk), 0.9) < torch.quantile(held_out(noise), 0.1)


def test_prior_is_differentiable_and_descends(prior):
    built, _ = prior
    gen = torch.Generator().manual_seed(1)
    pose = (torch.randn(4, 69, generator=gen) * 0.3).requires_grad_(True)
    start = built(pose).detach()
    opt = torch.optim.SGD([pose], lr=1e-3)
    for _ in range(20):
        opt.zero_grad()
        loss = built(pose).sum()
        loss.backward()
        assert torch.isfinite(pose.grad).all() and pose.grad.abs().sum() > 0
        opt.step()
    assert (built(pose).detach() < start).all()


def test_smplify_gmm_pickle_loads_restricted(tmp_path):
    rng = np.random.default_rng(0)
    a = rng.normal(size=(3, 69, 69)) * 0.05
    gmm = {"means": rng.normal(size=(3, 69)) * 0.1, "covars": a @ a.transpose(0, 2, 1) + 0.01 * np.eye(69),
           "weights": np.array([0.5, 0.3, 0.2])}
    path = tmp_path / "gmm_08.pkl"
    path.write_bytes(pickle.dumps(gmm, protocol=2))
    loaded = load_pose_prior("smplify_gmm", path)
    direct = MotionPosePrior(gmm["means"], gmm["covars"], gmm["weights"])
    x = torch.as_tensor(rng.normal(size=(5, 69)) * 0.2, dtype=torch.float32)
    torch.testing.assert_close(loaded(x), direct(x))
    # The best mode of the heaviest, tightest component scores lowest.
    assert loaded(torch.as_tensor(gmm["means"], dtype=torch.float32)).min() >= 0
    # A pickle that would run code is refused with a one-line error naming the file.
    evil = tmp_path / "evil.pkl"
    evil.write_bytes(b"cos\nsystem\n(S'echo pwned'\ntR.")
    with pytest.raises(UserError, match="evil.pkl"):
        load_pose_prior("smplify_gmm", evil)
    with pytest.raises(UserError, match="gmm_missing.pkl"):
        load_pose_prior("smplify_gmm", tmp_path / "gmm_missing.pkl")
    with pytest.raises(UserError, match="unknown pose prior"):
        load_pose_prior("nope")


# --------------------------------------------------------------------------- joint limits


def test_joint_limit_signs_match_geometry(toy_body_model):
    """The penalised direction is the anatomically wrong one on the body itself."""
    eye = torch.eye(3)

    def joints_with(joint, rotvec):
        body_pose = torch.zeros(1, 23, 3)
        body_pose[0, joint - 1] = torch.tensor(rotvec)
        rot = roma.rotvec_to_rotmat(body_pose)
        out = toy_body_model(eye[None, None], rot, joints_only=True)
        return out.smpl_joints[0].numpy(), body_pose.reshape(1, 69)

    for knee, ankle in ((LKNEE, LANKLE), (RKNEE, RANKLE)):
        j_fwd, p_fwd = joints_with(knee, [0.8, 0.0, 0.0])
        j_back, p_back = joints_with(knee, [-0.8, 0.0, 0.0])
        assert j_fwd[ankle, 2] < j_fwd[knee, 2] - 0.1  # natural: the shin swings back
        assert j_back[ankle, 2] > j_back[knee, 2] + 0.1
        assert joint_limit_penalty(p_fwd).item() == 0.0
        assert joint_limit_penalty(p_back).item() > 0.5
    for elbow, wrist, natural in ((LELBOW, LWRIST, -1.0), (RELBOW, RWRIST, 1.0)):
        j_ok, p_ok = joints_with(elbow, [0.0, 0.8 * natural, 0.0])
        j_bad, p_bad = joints_with(elbow, [0.0, -0.8 * natural, 0.0])
        assert j_ok[wrist, 2] > j_ok[elbow, 2] + 0.1  # natural: the forearm swings forward
        assert j_bad[wrist, 2] < j_bad[elbow, 2] - 0.1
        assert joint_limit_penalty(p_ok).item() == 0.0
        assert joint_limit_penalty(p_bad).item() > 0.5
    # Differentiable, pushing a hyperextended knee back towards straight.
    pose = torch.zeros(1, 69)
    pose[0, 3 * (LKNEE - 1)] = -0.5
    pose.requires_grad_(True)
    joint_limit_penalty(pose).sum().backward()
    assert pose.grad[0, 3 * (LKNEE - 1)] < 0
    assert joint_limit_penalty(torch.zeros(2, 23, 3)).abs().max() == 0
