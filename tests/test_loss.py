"""PBN losses: zero at the labels, masks, confidence weighting, pelvis centring, weights."""
from __future__ import annotations

import pytest
import torch

from lib.core.config import load_config
from lib.core.loss import BatchError, PBNLoss, discriminator_loss, joints3d_loss, motion_for_discriminator
from lib.geometry.rotations import axis_angle_to_matrix
from lib.joints.conventions import SPIN49_TO_J14
from lib.models.pbn import PBNOutput

B, T = 2, 3


def make_batch(seed=0):
    g = torch.Generator().manual_seed(seed)
    return dict(
        joints2d=torch.cat([torch.rand(B, T, 49, 2, generator=g) * 2 - 1, torch.ones(B, T, 49, 1)], -1),
        joints3d=torch.cat([torch.randn(B, T, 49, 3, generator=g), torch.ones(B, T, 49, 1)], -1),
        pose=0.3 * torch.randn(B, T, 72, generator=g),
        shape=torch.randn(B, T, 10, generator=g),
        has_smpl=torch.ones(B, T), has_3d=torch.ones(B, T), valid=torch.ones(B, T),
    )


def output_from(batch, noise=0.0, seed=1) -> PBNOutput:
    """An output equal to the labels (plus optional noise), every tensor a leaf with gradients."""
    g = torch.Generator().manual_seed(seed)

    def leaf(x):
        return (x + noise * torch.randn(x.shape, generator=g)).clone().requires_grad_(True)

    rot = axis_angle_to_matrix(batch["pose"].reshape(B, T, 24, 3))
    j3d = batch["joints3d"][..., :3]
    return PBNOutput(
        pred_global_orient=leaf(rot[:, :, 0]), pred_body_pose=leaf(rot[:, :, 1:]),
        pred_betas=leaf(batch["shape"]), pred_cam=leaf(torch.tensor([1.0, 0, 0]).expand(B, T, 3)),
        vertices=None, joints3d_smpl=leaf(j3d), joints3d_stb=leaf(j3d), joints3d_fused=leaf(j3d),
        joints2d=leaf(batch["joints2d"][..., :2]), thetas=[leaf(batch["pose"])],
    )


def test_default_weights_are_the_seed_settings():
    cfg = load_config()
    loss = PBNLoss.from_config(cfg)
    assert (loss.kp_2d_w, loss.kp_3d_w, loss.stb_3d_w, loss.shape_w, loss.pose_w, loss.motion_w) == \
        (300.0, 300.0, 300.0, 0.06, 60.0, 0.5)


def test_zero_at_the_labels_and_positive_away_from_them():
    batch = make_batch()
    terms = PBNLoss()(output_from(batch), batch)
    assert set(terms) == {"L_2d", "L_3d_SMPL", "L_3d_STB", "L_fused", "L_smpl"}
    assert all(abs(v.item()) < 1e-9 for v in terms.values()), terms
    terms = PBNLoss()(output_from(batch, noise=0.1), batch)
    assert all(v.item() > 0 for v in terms.values()), terms


def test_3d_terms_are_pelvis_centred_on_the_14_common_joints():
    batch = make_batch()
    out = output_from(batch)
    with torch.no_grad():
        out.joints3d_smpl += torch.tensor([0.3, -2.0, 5.0])  # a global shift is not an error
        out.joints3d_stb[..., 0, :] += 1.0  # joint 0 (OpenPose nose) is not among the 14
    terms = PBNLoss()(out, batch)
    assert terms["L_3d_SMPL"].item() < 1e-9 and terms["L_3d_STB"].item() < 1e-9
    with torch.no_grad():
        out.joints3d_smpl[..., SPIN49_TO_J14[0], 0] += 0.1  # right ankle, 10 cm off in x
    # mean over frames, 14 joints and 3 coordinates of the squared error, times the weight
    expected = 300.0 * 0.01 / (14 * 3)
    assert PBNLoss()(out, batch)["L_3d_SMPL"].item() == pytest.approx(expected, rel=1e-4)


def test_2d_term_is_confidence_weighted():
    batch = make_batch()
    out = output_from(batch)
    with torch.no_grad():
        out.joints2d[..., 5, 0] += 0.2
    full = PBNLoss()(out, batch)["L_2d"].item()
    batch["joints2d"][..., 5, 2] = 0.5
    assert PBNLoss()(out, batch)["L_2d"].item() == pytest.approx(0.5 * full, rel=1e-5)
    batch["joints2d"][..., 5, 2] = 0.0
    assert PBNLoss()(out, batch)["L_2d"].item() == pytest.approx(0.0, abs=1e-12)


def _grad(term, tensor, batch, out, **loss_kw):
    PBNLoss(**loss_kw)(out, batch)[term].backward()
    return tensor.grad


@pytest.mark.parametrize("term,field,label", [
    ("L_3d_SMPL", "joints3d_smpl", "has_3d"),
    ("L_3d_STB", "joints3d_stb", "has_3d"),
    ("L_fused", "joints3d_fused", "has_3d"),
    ("L_smpl", "pred_body_pose", "has_smpl"),
    ("L_smpl", "pred_betas", "has_smpl"),
    ("L_2d", "joints2d", "valid"),
])
def test_masks_remove_the_gradient_of_unlabelled_samples(term, field, label):
    batch = make_batch()
    batch[label][0] = 0.0  # sample 0 has no such label
    batch["valid"][1, 2] = 0.0  # and frame 2 of sample 1 is padding
    out = output_from(batch, noise=0.1)
    grad = _grad(term, getattr(out, field), batch, out)
    assert grad[0].abs().sum() == 0
    assert grad[1, 2].abs().sum() == 0
    assert grad[1, :2].abs().sum() > 0


def test_3d_needs_both_hips_and_respects_joint_validity():
    batch = make_batch()
    out = output_from(batch, noise=0.1)
    batch["joints3d"][0, 0, SPIN49_TO_J14[2], 3] = 0  # right hip unlabelled: no pelvis in that frame
    batch["joints3d"][1, 0, SPIN49_TO_J14[0], 3] = 0  # right ankle unlabelled
    grad = _grad("L_3d_SMPL", out.joints3d_smpl, batch, out)
    assert grad[0, 0].abs().sum() == 0 and grad[0, 1].abs().sum() > 0
    assert grad[1, 0, SPIN49_TO_J14[0]].abs().sum() == 0 and grad[1, 0, SPIN49_TO_J14[1]].abs().sum() > 0


def test_no_labels_give_zero_terms_that_stay_in_the_graph():
    batch = make_batch()
    for key in ("has_3d", "has_smpl", "valid"):
        batch[key].zero_()
    out = output_from(batch, noise=0.1)
    batch["joints3d"][..., :3] = float("nan")  # unlabelled entries may hold anything
    terms = PBNLoss()(out, batch)
    for name, value in terms.items():
        assert value.item() == 0.0 and value.requires_grad, name
    sum(terms.values()).backward()
    assert torch.isfinite(out.joints3d_smpl.grad).all()


def test_weights_scale_their_terms():
    batch = make_batch()
    out = output_from(batch, noise=0.1)
    base = PBNLoss()(out, batch)
    doubled = PBNLoss(kp_3d_w=600.0, stb_3d_w=0.0)(out, batch)
    assert doubled["L_3d_SMPL"].item() == pytest.approx(2 * base["L_3d_SMPL"].item())
    assert doubled["L_3d_STB"].item() == 0.0
    assert doubled["L_2d"].item() == pytest.approx(base["L_2d"].item())


def test_adversarial_terms():
    batch = make_batch()
    out = output_from(batch)

    def disc(pose):  # a fixed "discriminator": score = mean of the pose values
        return pose.mean(dim=(1, 2))

    terms = PBNLoss(motion_w=0.5)(out, batch, discriminator=disc)
    expected = 0.5 * ((disc(out.thetas[-1]) - 1) ** 2).mean()
    assert terms["L_adv"].item() == pytest.approx(expected.item())
    assert "L_adv" not in PBNLoss(motion_w=0.0)(out, batch, discriminator=disc)
    assert motion_for_discriminator([torch.zeros(2, 3, 72)] * 3, "all").shape == (6, 3, 72)
    # Least squares: real scored 1 and fake scored 0 is a perfect discriminator.
    real, fake = torch.ones(4, 5, 72), torch.zeros(4, 5, 72)
    d = discriminator_loss(disc, real, fake, weight=0.5)
    assert d["L_disc"].item() == 0.0
    d = discriminator_loss(disc, fake, real, weight=0.5)  # swapped: the worst case
    assert d["D_real"].item() == pytest.approx(0.5) and d["D_fake"].item() == pytest.approx(0.5)


def test_bad_batch_names_the_entry():
    batch = make_batch()
    out = output_from(batch)
    del batch["has_3d"]
    with pytest.raises(BatchError, match="no 'has_3d' entry"):
        PBNLoss()(out, batch)
    batch = make_batch()
    batch["joints3d"] = batch["joints3d"][..., :3]
    with pytest.raises(BatchError, match=r"batch\['joints3d'\] must have shape \(2, 3, 49, 4\), got \(2, 3, 49, 3\)"):
        PBNLoss()(out, batch)


def test_joints3d_loss_is_invariant_to_translation_only():
    gt = torch.cat([torch.randn(1, 2, 49, 3), torch.ones(1, 2, 49, 1)], -1)
    mask = torch.ones(1, 2)
    assert joints3d_loss(gt[..., :3] + 3.0, gt, mask).item() < 1e-9
    assert joints3d_loss(2.0 * gt[..., :3], gt, mask).item() > 1e-3  # scale is an error
