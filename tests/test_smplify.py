"""Temporal SMPLify on synthetic keypoints of a known body.

A walking-like sequence of the body model is projected with a known camera; the
fitter sees 2D keypoints in the detector slots (as the BlazePose front-end fills
them) plus noisy 3D landmarks, and must recover the 3D joints.
"""
from __future__ import annotations

import types
from pathlib import Path

import numpy as np
import pytest
import torch

from lib.core.metrics import pa_mpjpe
from lib.geometry.camera import default_focal_length
from lib.geometry.rotations import axis_angle_to_matrix
from lib.joints.conventions import BLAZEPOSE_33, SPIN49_TO_J14, SPIN_49, convert_kps
from lib.smplify.fitter import FIT_JOINTS, TemporalSMPLify, fit_quality

OPEN_DIR = Path("data/body_models/open")
W, H = 768, 576
# Detector slots BlazePose fills (its landmarks that have an op_* name).
OBSERVED = [SPIN_49.index(n) for n in BLAZEPOSE_33 if n.startswith("op_")]


def _open_model():
    if not (OPEN_DIR / "SMPL_NEUTRAL.pkl").is_file():
        pytest.skip("open body model not built (data/body_models/open; run scripts/fetch_assets.sh)")
    from lib.body_models import load_body_model

    return load_body_model("open", model_dir=OPEN_DIR)


@pytest.fixture(params=["toy", "open"])
def body_model(request, toy_body_model):
    return toy_body_model if request.param == "toy" else _open_model()


def make_sequence(bm, n: int = 40, person: int = 0, landmark_noise: float = 0.03, seed: int = 0):
    """A walking-like track: (track namespace for the fitter, ground-truth camera-space joints (n, 49, 3))."""
    rng = np.random.default_rng(seed + person)
    t = torch.linspace(0, 1, n)
    phase = 2 * np.pi * 1.5 * t + person
    body = torch.zeros(n, 23, 3)
    body[:, 0, 0] = 0.4 * torch.sin(phase)  # hips swing
    body[:, 1, 0] = -0.4 * torch.sin(phase)
    body[:, 3, 0] = 0.5 + 0.3 * torch.sin(phase)  # knees bend
    body[:, 4, 0] = 0.5 - 0.3 * torch.sin(phase)
    body[:, 15, 2] = -1.1  # arms down
    body[:, 16, 2] = 1.1
    body[:, 17, 1] = -0.6  # elbows bent
    body[:, 18, 1] = 0.6
    yaw = axis_angle_to_matrix(torch.tensor([0.0, 0.4 + 0.5 * person, 0.0]))
    orient = axis_angle_to_matrix(torch.tensor([np.pi, 0.0, 0.0])) @ yaw
    betas = torch.as_tensor(rng.normal(0, 0.5, (1, 10)), dtype=torch.float32)
    transl = torch.stack([-1.0 + 0.7 * person + 0.6 * t, 0.1 * torch.ones(n), 6.0 + 0.5 * t], dim=-1)
    with torch.no_grad():
        joints = bm(orient.expand(n, 3, 3), axis_angle_to_matrix(body), betas, transl).joints  # (n, 49, 3)
    f = default_focal_length(W, H)
    uv = joints[..., :2] / joints[..., 2:] * f + torch.tensor([W / 2, H / 2])
    conf = torch.zeros(n, 49)
    conf[:, OBSERVED] = 1.0
    kp = torch.cat([uv, conf[..., None]], dim=-1).numpy()
    lo, hi = uv[:, OBSERVED].min(1).values, uv[:, OBSERVED].max(1).values
    boxes = torch.cat([(lo + hi) / 2, (hi - lo) * 1.15], dim=-1).numpy()
    rel = (joints - 0.5 * (joints[:, [SPIN_49.index("op_lhip")]] + joints[:, [SPIN_49.index("op_rhip")]])).numpy()
    world = convert_kps(rel, "spin49", "blazepose33") + rng.normal(0, landmark_noise, (n, 33, 3))
    track = types.SimpleNamespace(frame_ids=np.arange(n), bboxes=boxes, keypoints_2d=kp,
                                  world_landmarks=world.astype(np.float32))
    return track, joints.numpy()


def _j14_error(fit, gt) -> float:
    return float(pa_mpjpe(fit.joints3d[:, SPIN49_TO_J14], gt[:, SPIN49_TO_J14]).mean())


def test_recovers_known_body(body_model):
    tracks, gts = {}, {}
    for p in range(2):
        tracks[p], gts[p] = make_sequence(body_model, person=p)
    fitter = TemporalSMPLify(body_model, (W, H), window=200)
    fits = fitter.fit(tracks)
    for p in range(2):
        err = _j14_error(fits[p], gts[p])
        assert err < 30.0, f"track {p}: PA-MPJPE {err:.1f} mm on clean keypoints"
        # The body lands where the camera saw it: depth within 10 %, 2D within 2 % of box height.
        depth_ratio = fits[p].joints3d[:, :, 2].mean() / gts[p][:, :, 2].mean()
        assert 0.9 < depth_ratio < 1.1
        assert fit_quality(fits[p], tracks[p].keypoints_2d, tracks[p].bboxes) < 0.02
        assert fits[p].pose.shape == (40, 72) and fits[p].betas.shape == (10,)
        assert np.isfinite(fits[p].pose).all()


def test_robust_to_outlier_keypoints(toy_body_model):
    track, gt = make_sequence(toy_body_model)
    clean = TemporalSMPLify(toy_body_model, (W, H)).fit({0: track})[0]
    # Throw a few confident keypoints far off (40 % of the box height) in a third of the frames.
    rng = np.random.default_rng(3)
    kp = track.keypoints_2d.copy()
    bad_frames = rng.choice(len(kp), size=len(kp) // 3, replace=False)
    for f in bad_frames:
        joints = rng.choice(FIT_JOINTS, size=3, replace=False)
        kp[f, joints, :2] += rng.choice([-1, 1], size=(3, 2)) * 0.4 * track.bboxes[f, 3]
        kp[f, joints, 2] = 0.9
    noisy = types.SimpleNamespace(**{**vars(track), "keypoints_2d": kp})
    fit = TemporalSMPLify(toy_body_model, (W, H)).fit({0: noisy})[0]
    err, err_clean = _j14_error(fit, gt), _j14_error(clean, gt)
    assert err < 35.0, f"PA-MPJPE {err:.1f} mm with outliers (clean: {err_clean:.1f} mm)"
    assert err < err_clean + 15.0
    # An L2 fit is dragged towards the outliers (~53 mm, inliers off by ~0.009 box heights here).
    inlier = np.ones(kp.shape[:2], bool)
    inlier[bad_frames] = False
    assert fit_quality(fit, np.where(inlier[..., None], kp, 0.0), track.bboxes) < 0.006


def test_windows_join_smoothly(toy_body_model):
    """Fitting in short windows (warm start across the seams) matches one long window."""
    track, gt = make_sequence(toy_body_model, n=36)
    long = TemporalSMPLify(toy_body_model, (W, H), window=100).fit({0: track})[0]
    short = TemporalSMPLify(toy_body_model, (W, H), window=12).fit({0: track})[0]
    assert _j14_error(short, gt) < 30.0
    # No jump at the seams: frame-to-frame joint motion there is like elsewhere.
    step = np.linalg.norm(np.diff(short.joints3d, axis=0), axis=-1).mean(-1)  # (35,)
    seams = [11, 23]  # steps from frame 11 to 12 and 23 to 24
    assert step[seams].max() < 3.0 * np.median(step) + 0.01
    assert np.abs(short.betas - long.betas).max() < 1.0


def test_initialisation_from_network_output(toy_body_model):
    """Starting from a given (e.g. network) solution keeps a good solution good."""
    track, gt = make_sequence(toy_body_model)
    first = TemporalSMPLify(toy_body_model, (W, H)).fit({0: track})[0]
    init = {0: {"pose": first.pose, "betas": first.betas, "transl": first.transl}}
    again = TemporalSMPLify(toy_body_model, (W, H), num_iters=10, num_camera_iters=0).fit({0: track}, init=init)[0]
    assert _j14_error(again, gt) < _j14_error(first, gt) + 5.0


def test_empty_and_single_frame(toy_body_model):
    fitter = TemporalSMPLify(toy_body_model, (W, H))
    assert fitter.fit({}) == {}
    track, gt = make_sequence(toy_body_model, n=1)
    fit = fitter.fit({7: track})[7]
    assert fit.joints3d.shape == (1, 49, 3) and np.isfinite(fit.joints3d).all()
    assert _j14_error(fit, gt) < 40.0


def test_fast_joints_match_body_layer(body_model):
    """The fitting loop's kinematics give the layer's op_* joints (and gradients flow)."""
    from lib.smplify.kinematics import NUM_OP, FastJoints

    g = torch.Generator().manual_seed(0)
    rot = axis_angle_to_matrix(0.5 * torch.randn(6, 24, 3, generator=g))
    betas = torch.randn(6, 10, generator=g)
    transl = torch.randn(6, 3, generator=g)
    ref = body_model(rot[:, :1], rot[:, 1:], betas, transl, joints_only=True).joints[:, :NUM_OP]
    fast = FastJoints(body_model)(rot, betas, transl)
    assert torch.allclose(fast, ref, atol=1e-5)
    betas.requires_grad_(True)
    FastJoints(body_model)(rot, betas, transl).sum().backward()
    assert betas.grad.abs().sum() > 0


def test_jittery_boxes_give_smooth_depth(toy_body_model):
    """Box heights jittering by +-10 % per frame must not make the fitted depth jitter."""
    track, gt = make_sequence(toy_body_model, n=40)
    rng = np.random.default_rng(5)
    boxes = track.bboxes.copy()
    boxes[:, 3] *= 1.0 + rng.uniform(-0.1, 0.1, len(boxes))
    jittery = types.SimpleNamespace(**{**vars(track), "bboxes": boxes})
    fit = TemporalSMPLify(toy_body_model, (W, H)).fit({0: jittery})[0]
    naive_depth = default_focal_length(W, H) * 1.7 / boxes[:, 3]  # depth read off each box alone
    acc_fit = np.abs(np.diff(fit.transl[:, 2], 2)).mean()
    acc_naive = np.abs(np.diff(naive_depth, 2)).mean()
    assert acc_fit < 0.2 * acc_naive, f"depth acceleration {acc_fit:.3f} m/frame^2 vs {acc_naive:.3f} from boxes"
    assert _j14_error(fit, gt) < 30.0
