"""The Parallel-Branch Network: shapes, gradients, SPIN loading, overfitting, bad input.

Small widths stand in for the published sizes wherever the property does not
depend on size; the toy body model keeps every forward pass in milliseconds.
"""
from __future__ import annotations

import logging
from pathlib import Path

import pytest
import torch

from lib.core.config import load_config
from lib.core.loss import PBNLoss, discriminator_loss
from lib.errors import MissingAssetError, UserError
from lib.geometry.camera import weak_perspective_projection
from lib.geometry.rotations import axis_angle_to_matrix
from lib.joints.conventions import SPIN_49
from lib.models.backbone import ResNetBackbone, load_spin_checkpoint
from lib.models.discriminator import MotionDiscriminator
from lib.models.pbn import ModelInputError, ParallelBranchNet
from lib.models.smpl_branch import TransformerTemporalEncoder

ROOT = Path(__file__).resolve().parents[1]
F = 32  # feature size of the small test models
LHIP, RHIP = SPIN_49.index("lhip"), SPIN_49.index("rhip")
SMALL = ["MODEL.FEATURE_DIM", "32", "MODEL.ENCODER.FF_SIZE", "64", "MODEL.ENCODER.HIDDEN_SIZE", "16",
         "MODEL.REGRESSOR.HIDDEN_SIZE", "64", "MODEL.STB.EMBED_DIM", "8", "MODEL.STB.SPATIAL_DEPTH", "1",
         "MODEL.STB.TEMPORAL_DEPTH", "1", "MODEL.STB.NUM_HEADS", "2", "MODEL.DISC.HIDDEN_SIZE", "16",
         "MODEL.DISC.ATT_SIZE", "16"]


def small_model(body_model, **kw) -> ParallelBranchNet:
    args = dict(feature_dim=F, encoder_heads=4, encoder_ff_size=64, encoder_hidden_size=16, regressor_hidden=64,
                stb_embed_dim=8, stb_spatial_depth=1, stb_temporal_depth=1, stb_heads=2)
    args.update(kw)
    return ParallelBranchNet(body_model, **args)


def keypoints(b, t, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.cat([torch.rand(b, t, 49, 2, generator=g) * 2 - 1, torch.rand(b, t, 49, 1, generator=g)], -1)


def synthetic_batch(body_model, b, t, seed=0):
    """Labels made by the body model itself, so a perfect network exists."""
    g = torch.Generator().manual_seed(seed)
    pose = 0.3 * torch.randn(b, t, 72, generator=g)
    betas = 0.5 * torch.randn(b, t, 10, generator=g)
    rot = axis_angle_to_matrix(pose.reshape(-1, 24, 3))
    j3d = body_model(rot[:, :1], rot[:, 1:], betas.reshape(-1, 10), joints_only=True).joints.reshape(b, t, 49, 3)
    j2d = weak_perspective_projection(j3d, torch.tensor([0.9, 0.0, 0.1]))
    ones = torch.ones(b, t, 49, 1)
    return dict(joints2d=torch.cat([j2d, ones], -1), joints3d=torch.cat([j3d, ones], -1), pose=pose, shape=betas,
                has_smpl=torch.ones(b, t), has_3d=torch.ones(b, t), valid=torch.ones(b, t))


# ------------------------------------------------------------------ shapes and output properties
@pytest.mark.parametrize("b", [1, 4])
@pytest.mark.parametrize("t", [1, 8, 16])
def test_output_shapes_and_consistency(toy_body_model, b, t):
    torch.manual_seed(0)
    model = small_model(toy_body_model, fusion="gate").eval()
    with torch.no_grad():
        out = model(torch.randn(b, t, F), keypoints(b, t))
        out_nv = model(torch.randn(b, t, F), keypoints(b, t), return_vertices=False)
    nv = toy_body_model.num_vertices
    assert out.pred_global_orient.shape == (b, t, 3, 3)
    assert out.pred_body_pose.shape == (b, t, 23, 3, 3)
    assert out.pred_betas.shape == (b, t, 10) and out.pred_cam.shape == (b, t, 3)
    assert out.vertices.shape == (b, t, nv, 3) and out_nv.vertices is None
    for joints in (out.joints3d_smpl, out.joints3d_stb, out.joints3d_fused):
        assert joints.shape == (b, t, 49, 3)
    assert out.joints2d.shape == (b, t, 49, 2)
    assert len(out.thetas) == 3 and all(th.shape == (b, t, 72) for th in out.thetas)
    # Properties: proper rotations, 2D = weak-perspective projection of the 3D joints,
    # the last theta is the output pose, STB and fused joints are hip-centred.
    rot = torch.cat([out.pred_global_orient[:, :, None], out.pred_body_pose], 2)
    eye = torch.eye(3).expand_as(rot)
    assert torch.allclose(rot @ rot.transpose(-1, -2), eye, atol=1e-5)
    assert torch.allclose(torch.linalg.det(rot), torch.ones(rot.shape[:-2]), atol=1e-5)
    assert torch.allclose(out.joints2d, weak_perspective_projection(out.joints3d_smpl, out.pred_cam), atol=1e-6)
    assert torch.allclose(axis_angle_to_matrix(out.thetas[-1].reshape(b, t, 24, 3)), rot, atol=1e-4)
    for joints in (out.joints3d_stb, out.joints3d_fused):
        assert torch.allclose(0.5 * (joints[..., LHIP, :] + joints[..., RHIP, :]), torch.zeros(b, t, 3), atol=1e-5)


def test_train_and_eval_outputs_have_the_same_fields(toy_body_model):
    model = small_model(toy_body_model, fusion="gate")
    x, kp = torch.randn(2, 4, F), keypoints(2, 4)
    fields_train = {k: v is None for k, v in vars(model.train()(x, kp)).items()}
    fields_eval = {k: v is None for k, v in vars(model.eval()(x, kp)).items()}
    assert fields_train == fields_eval


def test_configs_build_the_two_settings(toy_body_model):
    pbn = ParallelBranchNet.from_config(load_config(ROOT / "configs/pbn.yaml", SMALL), toy_body_model)
    vibe = ParallelBranchNet.from_config(load_config(ROOT / "configs/vibe_baseline.yaml", SMALL), toy_body_model)
    assert type(pbn.encoder).__name__ == "TransformerTemporalEncoder" and pbn.stb is not None
    assert type(vibe.encoder).__name__ == "GRUTemporalEncoder" and vibe.stb is None and vibe.fusion is None
    out = vibe(torch.randn(2, 8, F))  # no keypoints needed without the ST branch
    assert out.joints3d_stb is None and out.joints3d_fused is None and out.vertices.shape[:2] == (2, 8)
    # The regressor starts from the active body model's mean parameters.
    assert torch.allclose(pbn.regressor.init_pose[0], torch.as_tensor(toy_body_model.mean_params["pose"]).float())


def test_positional_embedding_is_really_added():
    torch.manual_seed(0)
    enc = TransformerTemporalEncoder(d_model=16, num_heads=2, num_layers=2, ff_size=32, dropout=0.0,
                                     max_seq_len=8).eval()
    x = torch.randn(2, 6, 16)
    perm = torch.tensor([1, 0, 2, 3, 4, 5])
    with torch.no_grad():
        enc.pos_embed.normal_()
        swapped = enc(x[:, perm])[:, perm]
        assert not torch.allclose(swapped, enc(x), atol=1e-3)  # frame order matters
        enc.pos_embed.zero_()  # without positions, self-attention is permutation-equivariant
        assert torch.allclose(enc(x[:, perm])[:, perm], enc(x), atol=1e-5)


# ------------------------------------------------------------------ gradients
@pytest.mark.parametrize("encoder", ["transformer", "gru"])
def test_every_parameter_of_each_branch_gets_a_gradient_from_its_loss(toy_body_model, encoder):
    torch.manual_seed(0)
    model = small_model(toy_body_model, encoder=encoder, fusion="gate", regressor_dropout=0.0)
    disc = MotionDiscriminator(hidden_size=16, att_size=16)
    batch = synthetic_batch(toy_body_model, 2, 8)
    loss = PBNLoss()

    def grads_from(names):
        model.zero_grad()
        disc.zero_grad()
        terms = loss(model(torch.randn(2, 8, F), batch["joints2d"]), batch, discriminator=disc)
        sum(terms[n] for n in names).backward()

    def has_grad(module):
        return {n: p.grad is not None and bool(p.grad.abs().sum() > 0) for n, p in module.named_parameters()}

    grads_from(["L_2d", "L_3d_SMPL", "L_smpl"])
    for part in (model.encoder, model.regressor):
        assert all(has_grad(part).values()), [n for n, ok in has_grad(part).items() if not ok]
    assert not any(has_grad(model.stb).values())  # parallel branches: SMPL losses do not reach the STB

    grads_from(["L_3d_STB"])
    assert all(has_grad(model.stb).values()), [n for n, ok in has_grad(model.stb).items() if not ok]
    assert not any(has_grad(model.regressor).values())

    grads_from(["L_fused"])
    assert all(has_grad(model.fusion).values())

    grads_from(["L_adv"])  # the generator side reaches the pose regressor...
    assert has_grad(model.regressor)["decpose.weight"]
    disc.zero_grad()
    fake = torch.randn(4, 8, 72, requires_grad=True)
    discriminator_loss(disc, torch.randn(4, 8, 72), fake)["L_disc"].backward()
    assert all(has_grad(disc).values())  # ...and the discriminator's loss reaches all of it
    assert fake.grad is None  # but not the generator


# ------------------------------------------------------------------ overfitting
def test_overfitting_one_batch_lowers_both_3d_losses_tenfold(toy_body_model):
    torch.manual_seed(0)
    model = small_model(toy_body_model, fusion="gate", encoder_dropout=0.0, regressor_hidden=128,
                        regressor_dropout=0.0, stb_drop_path=0.0)
    batch = synthetic_batch(toy_body_model, 2, 8, seed=1)
    feats = torch.randn(2, 8, F)
    loss = PBNLoss()
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    history = []
    for _ in range(300):
        terms = loss(model(feats, batch["joints2d"], return_vertices=False), batch)
        history.append({k: v.item() for k, v in terms.items()})
        opt.zero_grad()
        sum(terms.values()).backward()
        opt.step()
    for name in ("L_3d_SMPL", "L_3d_STB"):
        start, end = history[0][name], min(h[name] for h in history[-10:])
        assert end < start / 10, f"{name}: {start:.4f} -> {end:.4f}"


# ------------------------------------------------------------------ bad input
def test_bad_inputs_name_the_tensor_and_shape(toy_body_model):
    model = small_model(toy_body_model)
    x, kp = torch.randn(2, 4, F), keypoints(2, 4)
    with pytest.raises(ModelInputError, match=r"features: expected shape \(B, T, 32\), got \(2, 4, 2048\)"):
        model(torch.randn(2, 4, 2048), kp)
    with pytest.raises(ModelInputError, match=r"joints2d: expected shape .*49, 3\), got \(2, 4, 17, 3\)"):
        model(x, torch.zeros(2, 4, 17, 3))
    with pytest.raises(ModelInputError, match=r"joints2d: expected shape .*got \(2, 3, 49, 3\)"):
        model(x, keypoints(2, 3))
    bad = x.clone()
    bad[1, 2, 5] = float("nan")
    with pytest.raises(ModelInputError, match=r"features: shape \(2, 4, 32\) contains NaN"):
        model(bad, kp)
    bad = kp.clone()
    bad[0, 0, 0, 0] = float("nan")
    with pytest.raises(ModelInputError, match=r"joints2d: shape \(2, 4, 49, 3\) contains NaN"):
        model(x, bad)
    with pytest.raises(ModelInputError, match="joints2d .* is required"):
        model(x)
    with pytest.raises(ModelInputError, match="exceeds MODEL.MAX_SEQ_LEN=16"):
        model(torch.randn(1, 20, F), keypoints(1, 20))
    with pytest.raises(ModelInputError, match="no backbone"):
        model(images=torch.zeros(1, 2, 3, 224, 224), joints2d=keypoints(1, 2))
    with pytest.raises(UserError):  # ModelInputError is a UserError: entry scripts print one line
        model(torch.randn(2, 4, 7), kp)
    with pytest.raises(ValueError, match="needs the ST branch"):
        small_model(toy_body_model, use_stb=False, fusion="gate")


def test_missing_joints_cannot_leak_into_the_stb(toy_body_model):
    model = small_model(toy_body_model).eval()
    x, kp = torch.randn(1, 4, F), keypoints(1, 4)
    kp[0, :, 3, 2] = 0.0  # joint 3 missing in every frame
    noisy = kp.clone()
    noisy[0, :, 3, :2] = torch.randn(4, 2) * 5  # whatever the detector left there
    with torch.no_grad():
        assert torch.equal(model(x, kp).joints3d_stb, model(x, noisy).joints3d_stb)


# ------------------------------------------------------------------ SPIN checkpoints
def _spin_layout(model: ParallelBranchNet) -> dict:
    """Our weights under SPIN's HMR key names (no part prefixes)."""
    state = dict(model.backbone.state_dict())
    state.update(model.regressor.state_dict())
    return state


def test_spin_checkpoint_round_trips_through_the_key_mapping(toy_body_model, tmp_path, caplog):
    torch.manual_seed(1)
    src = ParallelBranchNet(toy_body_model, encoder="none", use_stb=False, use_backbone=True)
    with torch.no_grad():
        src.regressor.init_pose.add_(0.1)  # SPIN's mean pose differs from the body model's here
    state = _spin_layout(src)
    state["smpl.betas"] = torch.zeros(1, 10)  # SPIN also stores its SMPL layer's buffers
    path = tmp_path / "spin_model_checkpoint.pth.tar"
    torch.save({"model": state, "epoch": 3, "optimizer": {"state": {}, "param_groups": []}}, path)

    torch.manual_seed(2)
    dst = ParallelBranchNet(toy_body_model, encoder="none", use_stb=False, use_backbone=True)
    assert not torch.equal(dst.backbone.conv1.weight, src.backbone.conv1.weight)
    with caplog.at_level(logging.WARNING, logger="lib.models.backbone"):
        report = load_spin_checkpoint(path, dst)
    assert "smpl.betas" in caplog.text
    assert report.unexpected == ["smpl.betas"] and report.missing == []
    assert sorted(report.skipped) == ["regressor.init_cam", "regressor.init_pose", "regressor.init_shape"]
    for key, value in src.backbone.state_dict().items():
        assert torch.equal(dst.backbone.state_dict()[key], value), key
    for key, value in src.regressor.state_dict().items():
        same = torch.equal(dst.regressor.state_dict()[key], value)
        assert same != (key == "init_pose"), key  # mean pose kept from the active body model
    load_spin_checkpoint(path, dst, load_mean_params=True)
    assert torch.equal(dst.regressor.init_pose, src.regressor.init_pose)
    # Same weights -> same features: the mapping put every tensor in its place.
    img = torch.randn(1, 3, 224, 224)
    with torch.no_grad():
        assert torch.allclose(src.backbone.eval()(img), dst.backbone.eval()(img))

    # A bare backbone (feature extraction) takes only its part; the regressor keys are reported unused.
    bare = ResNetBackbone()
    report = load_spin_checkpoint(path, bare)
    assert torch.equal(bare.layer4[2].conv3.weight, src.backbone.layer4[2].conv3.weight)
    assert "regressor.fc1.weight" in report.unexpected


def test_spin_checkpoint_errors(toy_body_model, tmp_path):
    model = ParallelBranchNet(toy_body_model, encoder="none", use_stb=False, regressor_hidden=512)
    with pytest.raises(MissingAssetError, match="SPIN checkpoint not found"):
        load_spin_checkpoint(tmp_path / "nope.pth.tar", model)
    path = tmp_path / "spin.pth.tar"
    ref = ParallelBranchNet(toy_body_model, encoder="none", use_stb=False)  # SPIN's 1024-wide regressor
    torch.save({"model": dict(ref.regressor.state_dict())}, path)
    with pytest.raises(UserError, match=r"regressor.fc1.weight: checkpoint \(1024, 2205\) vs model \(512, 2205\)"):
        load_spin_checkpoint(path, model)
    (tmp_path / "junk.pth.tar").write_bytes(b"not a checkpoint")
    with pytest.raises(UserError, match="cannot read"):
        load_spin_checkpoint(tmp_path / "junk.pth.tar", model)


def test_stb_temporal_width_option_keeps_the_contract():
    from lib.models.stb import SpatioTemporalTransformer

    wide = SpatioTemporalTransformer(embed_dim=8, spatial_depth=1, temporal_depth=1, num_heads=2)
    narrow = SpatioTemporalTransformer(embed_dim=8, spatial_depth=1, temporal_depth=1, num_heads=2, temporal_dim=32)
    count = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    assert count(narrow) < count(wide) / 4
    out = narrow(keypoints(2, 5))
    assert out.shape == (2, 5, 49, 3)
    assert torch.allclose(0.5 * (out[..., LHIP, :] + out[..., RHIP, :]), torch.zeros(2, 5, 3), atol=1e-5)


def test_regressor_matches_hmr_concatenation(toy_body_model):
    """The regressor splits fc1 to reuse the features' share; it must equal HMR's plain form."""
    from lib.models.regressor import HMRRegressor

    torch.manual_seed(0)
    reg = HMRRegressor(toy_body_model.mean_params, feature_dim=F, hidden_size=64, dropout=0.0)
    with torch.no_grad():
        for layer in (reg.decpose, reg.decshape, reg.deccam):
            layer.weight.normal_(0, 0.1)  # make every iteration move
        x = torch.randn(5, F)
        pose, betas, cam = reg.init_pose.expand(5, -1), reg.init_shape.expand(5, -1), reg.init_cam.expand(5, -1)
        for step in reg(x):
            h = reg.fc2(reg.fc1(torch.cat([x, pose, betas, cam], 1)))
            pose, betas, cam = pose + reg.decpose(h), betas + reg.decshape(h), cam + reg.deccam(h)
            assert torch.allclose(step.pose6d, pose, atol=1e-5) and torch.allclose(step.cam, cam, atol=1e-5)
            assert torch.allclose(step.betas, betas, atol=1e-5)
