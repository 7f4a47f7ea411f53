import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from lib.core import metrics


@pytest.fixture
def joints():
    return np.random.default_rng(0).normal(scale=0.3, size=(8, 14, 3))


def _similar(x, seed=1):
    rng = np.random.default_rng(seed)
    R = Rotation.random(len(x), random_state=seed).as_matrix()
    return rng.uniform(0.5, 2.0, (len(x), 1, 1)) * np.einsum("nij,nkj->nki", R, x) + rng.normal(size=(len(x), 1, 3))


def test_identical_input_gives_zero(joints):
    for fn in (metrics.mpjpe, metrics.pa_mpjpe, metrics.pve):
        np.testing.assert_allclose(fn(joints, joints), 0, atol=1e-9)
    np.testing.assert_allclose(metrics.accel_error(joints, joints), 0, atol=1e-9)


def test_pa_mpjpe_is_similarity_invariant_but_mpjpe_is_not(joints):
    moved = _similar(joints)
    np.testing.assert_allclose(metrics.pa_mpjpe(moved, joints), 0, atol=1e-6)
    assert (metrics.mpjpe(moved, joints) > 10).all()


def test_hand_computed_cases():
    gt = np.zeros((1, 2, 3))
    pred = np.array([[[0.003, 0.004, 0.0], [0.0, 0.0, 0.01]]])  # 5 mm and 10 mm
    np.testing.assert_allclose(metrics.mpjpe(pred, gt), [7.5])
    # Acceleration: a joint at rest vs one at x = t^2 (a = 2 units per frame^2).
    t = np.arange(5, dtype=float)
    pred = np.zeros((5, 1, 3))
    pred[:, 0, 0] = 0.001 * t ** 2
    np.testing.assert_allclose(metrics.accel_error(pred, np.zeros_like(pred)), [2.0, 2.0, 2.0])


def test_pa_mpjpe_matches_an_independent_implementation(joints):
    from scipy.linalg import orthogonal_procrustes

    noisy = joints + np.random.default_rng(5).normal(scale=0.02, size=joints.shape)
    ours = metrics.pa_mpjpe(noisy, joints)
    ref = []
    for p, g in zip(noisy, joints):
        p0, g0 = p - p.mean(0), g - g.mean(0)
        R, s = orthogonal_procrustes(p0, g0)
        scale = s / (p0 ** 2).sum()
        ref.append(np.linalg.norm(scale * p0 @ R - g0, axis=1).mean() * 1000)
    np.testing.assert_allclose(ours, ref, rtol=1e-6)


def test_accel_error_masks_invalid_frames(joints):
    valid = np.ones(len(joints), bool)
    valid[3] = False
    err = metrics.accel_error(joints + 0.01, joints, valid=valid)
    assert np.isnan(err[1:4]).all() and np.isfinite(err[[0, 4, 5]]).all()


def test_centre_on_pelvis(joints):
    c = metrics.centre_on_pelvis(joints)
    np.testing.assert_allclose((c[:, 2] + c[:, 3]) / 2, 0, atol=1e-12)


def test_shape_mismatch_is_a_clear_error(joints):
    with pytest.raises(ValueError, match="must both be"):
        metrics.mpjpe(joints, joints[:, :10])
