import numpy as np
import pytest
import torch

from lib.joints import conventions as jc


def test_every_format_has_unique_names_and_flip_is_an_involution():
    for fmt, names in jc.JOINT_FORMATS.items():
        assert len(set(names)) == len(names), fmt
        perm = jc.flip_permutation(fmt)
        assert sorted(perm.tolist()) == list(range(len(names))), fmt
        np.testing.assert_array_equal(perm[perm], np.arange(len(names)))


def test_flip_swaps_sides():
    names = jc.joint_names("spin49")
    perm = jc.flip_permutation("spin49")
    assert names[perm[names.index("op_lwrist")]] == "op_rwrist"
    assert names[perm[names.index("lankle")]] == "rankle"
    assert names[perm[names.index("headtop")]] == "headtop"


def test_spin49_layout_matches_vibe_order():
    assert len(jc.SPIN_49) == 49
    assert jc.SPIN_49[:25] == jc.OPENPOSE_25
    assert jc.SPIN_49[25:39] == jc.COMMON_14
    assert jc.SPIN49_TO_J14 == list(range(25, 39))
    # H36M_TO_J14 picks the same 14 named joints out of the H36M regressor.
    assert [jc.H36M_17[i] for i in jc.H36M_TO_J14] == jc.COMMON_14
    assert jc.H36M_TO_J14 == [6, 5, 4, 1, 2, 3, 16, 15, 14, 11, 12, 13, 8, 10]


@pytest.mark.parametrize("src", sorted(jc.JOINT_FORMATS))
def test_round_trip_through_spin49_keeps_shared_joints(src):
    rng = np.random.default_rng(0)
    kps = rng.normal(size=(2, 3, len(jc.joint_names(src)), 3)).astype(np.float32)
    there = jc.convert_kps(kps, src, "spin49")
    back = jc.convert_kps(there, "spin49", src)
    shared = jc.conversion_indices(src, "spin49")
    in_spin = np.isin(np.arange(kps.shape[-2]), shared[shared >= 0])
    np.testing.assert_array_equal(back[..., in_spin, :], kps[..., in_spin, :])
    assert not back[..., ~in_spin, :].any()


def test_missing_joints_get_zero_confidence_and_torch_matches_numpy():
    kps = np.random.default_rng(1).uniform(0.1, 1, size=(5, 17, 3)).astype(np.float32)
    out = jc.convert_kps(kps, "coco17", "spin49")
    names = jc.joint_names("spin49")
    assert out[:, names.index("op_nose")].sum() == 0  # detector slots stay empty
    np.testing.assert_array_equal(out[:, names.index("lwrist")], kps[:, jc.COCO_17.index("lwrist")])
    out_t = jc.convert_kps(torch.from_numpy(kps), "coco17", "spin49")
    np.testing.assert_array_equal(out_t.numpy(), out)


def test_blazepose_fills_detector_slots():
    bp = np.zeros((1, 33, 3), np.float32)
    bp[0, 11] = (1, 2, 0.9)  # left shoulder
    out = jc.convert_kps(bp, "blazepose33", "spin49")
    assert tuple(out[0, jc.SPIN_49.index("op_lshoulder")]) == (1, 2, np.float32(0.9))


def test_errors_name_the_problem():
    with pytest.raises(KeyError, match="unknown joint format 'nope'"):
        jc.convert_kps(np.zeros((14, 3)), "nope", "spin49")
    with pytest.raises(ValueError, match="has 14"):
        jc.convert_kps(np.zeros((13, 3)), "common14", "spin49")


def test_pelvis_is_midpoint_of_hips():
    j = np.zeros((14, 3))
    j[2] = (1, 0, 0)
    j[3] = (3, 2, 0)
    np.testing.assert_allclose(jc.pelvis_from_hips(j), (2, 1, 0))
