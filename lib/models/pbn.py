"""The Parallel-Branch Network: one class, optional parts.

::

    crops (B,T,3,224,224) --[ResNet-50, optional]--> features (B,T,2048)
    features --[temporal encoder]--[HMR regressor x3]--> pose 6D, betas, cam
             --[body model]--> vertices, joints3d_smpl (49) --[weak persp.]--> joints2d
    joints2d input (B,T,49,3) --[ST branch]--> joints3d_stb (49, pelvis-centred)
    joints3d_stb + joints3d_smpl --[fusion, optional]--> joints3d_fused

The VIBE baseline is this class with a GRU encoder and no ST branch; SPIN-like
per-frame regression is ``encoder="none"``.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import List, Optional

import torch
from torch import nn

from lib.body_models.layer import BodyModelLayer
from lib.errors import UserError
from lib.geometry.camera import weak_perspective_projection
from lib.geometry.rotations import matrix_to_axis_angle, rot6d_to_matrix
from lib.joints.conventions import SPIN_49
from lib.models.backbone import CROP_SIZE, ResNetBackbone, load_spin_checkpoint
from lib.models.fusion import build_fusion
from lib.models.regressor import HMRRegressor
from lib.models.smpl_branch import build_temporal_encoder
from lib.models.stb import SpatioTemporalTransformer

logger = logging.getLogger(__name__)

NUM_JOINTS = len(SPIN_49)  # 49


class ModelInputError(UserError, ValueError):
    """A model input has the wrong shape or holds NaN/inf; the message names the tensor."""


@dataclass
class PBNOutput:
    """Network output, identical in training and evaluation. Metres unless stated.

    pred_global_orient: (B, T, 3, 3) root rotation (model frame -> camera frame, y down).
    pred_body_pose: (B, T, 23, 3, 3) joint rotations relative to the parent.
    pred_betas: (B, T, 10).
    pred_cam: (B, T, 3) weak-perspective (s, tx, ty) in crop coordinates.
    vertices: (B, T, V, 3), or None with ``return_vertices=False``.
    joints3d_smpl: (B, T, 49, 3) SMPL-branch joints (SPIN_49), body-model frame rotated
        by the global orientation, not centred.
    joints3d_stb: (B, T, 49, 3) ST-branch joints, centred on the hips' midpoint; None without the STB.
    joints3d_fused: (B, T, 49, 3) fused joints, centred on the hips' midpoint; None without fusion.
    joints2d: (B, T, 49, 2) SMPL-branch joints projected into the crop, [-1, 1] units.
    thetas: per regressor iteration (last = final), (B, T, 72) axis-angle pose
        (global orientation first), for the motion discriminator.
    """

    pred_global_orient: torch.Tensor
    pred_body_pose: torch.Tensor
    pred_betas: torch.Tensor
    pred_cam: torch.Tensor
    vertices: Optional[torch.Tensor]
    joints3d_smpl: torch.Tensor
    joints3d_stb: Optional[torch.Tensor]
    joints3d_fused: Optional[torch.Tensor]
    joints2d: torch.Tensor
    thetas: List[torch.Tensor] = field(default_factory=list)


def _check_tensor(name: str, x: torch.Tensor, shape: tuple, what: str) -> None:
    """``shape`` uses None for free sizes; raises :class:`ModelInputError` naming ``name``."""
    if not torch.is_tensor(x):
        raise ModelInputError(f"{name}: expected a tensor {what}, got {type(x).__name__}")
    if x.dim() != len(shape) or any(s is not None and s != d for s, d in zip(shape, x.shape)):
        raise ModelInputError(f"{name}: expected shape {what}, got {tuple(x.shape)}")
    if not x.is_floating_point():
        raise ModelInputError(f"{name}: expected floating point values, got {x.dtype}")
    if not bool(torch.isfinite(x).all()):
        raise ModelInputError(f"{name}: shape {tuple(x.shape)} contains NaN or inf values")


class ParallelBranchNet(nn.Module):
    """SMPL branch + optional ST branch, fusion and image backbone.

    Args:
        body_model: the active body model layer (its mean parameters start the
            regressor). Held by reference, not part of the state dict, so a
            checkpoint does not carry body-model files; ``.to()`` moves it along.
        feature_dim: per-frame feature size (2048).
        encoder: "transformer", "gru" or "none"; remaining ``encoder_*`` args as
            in :func:`lib.models.smpl_branch.build_temporal_encoder`.
        regressor_iters, regressor_hidden, regressor_dropout: HMR regressor settings.
        use_stb: build the ST branch; ``stb_*`` args as in
            :class:`lib.models.stb.SpatioTemporalTransformer`.
        fusion: "none" or "gate" (needs the STB).
        use_backbone: build the ResNet-50 so ``forward`` also takes crops.
        max_seq_len: longest window (frames).
    """

    def __init__(
        self,
        body_model: BodyModelLayer,
        feature_dim: int = 2048,
        encoder: str = "transformer",
        encoder_layers: int = 2,
        encoder_heads: int = 4,
        encoder_ff_size: int = 2048,
        encoder_dropout: float = 0.2,
        encoder_hidden_size: int = 1024,
        encoder_bidirectional: bool = False,
        encoder_add_linear: bool = True,
        encoder_residual: bool = True,
        regressor_iters: int = 3,
        regressor_hidden: int = 1024,
        regressor_dropout: float = 0.5,
        use_stb: bool = True,
        stb_embed_dim: int = 32,
        stb_spatial_depth: int = 4,
        stb_temporal_depth: int = 4,
        stb_heads: int = 8,
        stb_mlp_ratio: float = 2.0,
        stb_dropout: float = 0.0,
        stb_drop_path: float = 0.1,
        stb_temporal_dim: int = 0,
        fusion: str = "none",
        use_backbone: bool = False,
        max_seq_len: int = 16,
    ):
        super().__init__()
        if fusion != "none" and not use_stb:
            raise ValueError(f"MODEL.FUSION {fusion!r} needs the ST branch (MODEL.STB.ENABLED)")
        if use_backbone and feature_dim != 2048:
            raise ValueError(f"the ResNet-50 backbone gives 2048-d features, but MODEL.FEATURE_DIM is {feature_dim}")
        object.__setattr__(self, "body_model", body_model)  # not a submodule: keeps it out of state_dict
        self.feature_dim = feature_dim
        self.max_seq_len = max_seq_len
        self.backbone = ResNetBackbone() if use_backbone else None
        self.encoder = build_temporal_encoder(
            encoder, feature_dim, num_layers=encoder_layers, num_heads=encoder_heads, ff_size=encoder_ff_size,
            dropout=encoder_dropout, hidden_size=encoder_hidden_size, bidirectional=encoder_bidirectional,
            add_linear=encoder_add_linear, residual=encoder_residual, max_seq_len=max_seq_len)
        self.regressor = HMRRegressor(body_model.mean_params, feature_dim, regressor_hidden, regressor_iters,
                                      regressor_dropout)
        self.stb = SpatioTemporalTransformer(
            NUM_JOINTS, stb_embed_dim, stb_spatial_depth, stb_temporal_depth, stb_heads, stb_mlp_ratio,
            stb_dropout, stb_drop_path, max_seq_len, stb_temporal_dim) if use_stb else None
        self.fusion = build_fusion(fusion, NUM_JOINTS)

    def _apply(self, fn, *args, **kwargs):
        # .to()/.cuda()/.double() reach the body model although it is not a submodule.
        super()._apply(fn, *args, **kwargs)
        self.body_model._apply(fn)
        return self

    @classmethod
    def from_config(cls, cfg, body_model: BodyModelLayer, load_pretrained: bool = True) -> "ParallelBranchNet":
        """Build from ``cfg.MODEL``; with ``load_pretrained`` and ``PATHS.SPIN_CHECKPOINT`` set,
        initialise the backbone/regressor from that SPIN checkpoint."""
        m = cfg.MODEL
        model = cls(
            body_model,
            feature_dim=m.FEATURE_DIM,
            encoder=m.ENCODER.TYPE,
            encoder_layers=m.ENCODER.NUM_LAYERS,
            encoder_heads=m.ENCODER.NUM_HEADS,
            encoder_ff_size=m.ENCODER.FF_SIZE,
            encoder_dropout=m.ENCODER.DROPOUT,
            encoder_hidden_size=m.ENCODER.HIDDEN_SIZE,
            encoder_bidirectional=m.ENCODER.BIDIRECTIONAL,
            encoder_add_linear=m.ENCODER.ADD_LINEAR,
            encoder_residual=m.ENCODER.RESIDUAL,
            regressor_iters=m.REGRESSOR.NUM_ITERS,
            regressor_hidden=m.REGRESSOR.HIDDEN_SIZE,
            regressor_dropout=m.REGRESSOR.DROPOUT,
            use_stb=m.STB.ENABLED,
            stb_embed_dim=m.STB.EMBED_DIM,
            stb_spatial_depth=m.STB.SPATIAL_DEPTH,
            stb_temporal_depth=m.STB.TEMPORAL_DEPTH,
            stb_heads=m.STB.NUM_HEADS,
            stb_mlp_ratio=m.STB.MLP_RATIO,
            stb_dropout=m.STB.DROPOUT,
            stb_drop_path=m.STB.DROP_PATH,
            stb_temporal_dim=m.STB.TEMPORAL_DIM,
            fusion=m.FUSION,
            use_backbone=m.USE_BACKBONE,
            max_seq_len=m.MAX_SEQ_LEN,
        )
        if load_pretrained and cfg.PATHS.SPIN_CHECKPOINT:
            load_spin_checkpoint(cfg.PATHS.SPIN_CHECKPOINT, model)
        return model

    def forward(
        self,
        features: Optional[torch.Tensor] = None,
        joints2d: Optional[torch.Tensor] = None,
        images: Optional[torch.Tensor] = None,
        return_vertices: bool = True,
    ) -> PBNOutput:
        """Run the network on windows of T frames.

        Args:
            features: (B, T, feature_dim) float image features; or
            images: (B, T, 3, 224, 224) ImageNet-normalised crops (needs the backbone).
            joints2d: (B, T, 49, 3) keypoints in SPIN_49 order, x and y
                crop-normalised to [-1, 1], then confidence (0 = missing).
                Required when the ST branch is built.
            return_vertices: skin the full mesh (False: ``vertices`` is None,
                everything else is unchanged and cheaper).
        Returns:
            :class:`PBNOutput`.
        Raises:
            ModelInputError: a wrong shape, missing input, or NaN/inf values.
        """
        if (features is None) == (images is None):
            raise ModelInputError("give exactly one of features (B, T, F) and images (B, T, 3, 224, 224)")
        if images is not None:
            if self.backbone is None:
                raise ModelInputError("images given but the model has no backbone (MODEL.USE_BACKBONE False)")
            _check_tensor("images", images, (None, None, 3, CROP_SIZE, CROP_SIZE), f"(B, T, 3, {CROP_SIZE}, {CROP_SIZE})")
            b, t = images.shape[:2]
            features = self.backbone(images.reshape(b * t, 3, CROP_SIZE, CROP_SIZE)).reshape(b, t, -1)
        else:
            _check_tensor("features", features, (None, None, self.feature_dim), f"(B, T, {self.feature_dim})")
        b, t = features.shape[:2]
        if t > self.max_seq_len:
            raise ModelInputError(f"features: window of {t} frames (shape {tuple(features.shape)}) exceeds "
                                  f"MODEL.MAX_SEQ_LEN={self.max_seq_len}")
        if joints2d is not None:
            _check_tensor("joints2d", joints2d, (b, t, NUM_JOINTS, 3), f"(B={b}, T={t}, {NUM_JOINTS}, 3)")
        elif self.stb is not None:
            raise ModelInputError(f"joints2d (B, T, {NUM_JOINTS}, 3) is required: the model has an ST branch")
        dtype = self.regressor.init_pose.dtype
        features = features.to(dtype)

        # ---- SMPL branch
        encoded = self.encoder(features)  # (B, T, F)
        steps = self.regressor(encoded.reshape(b * t, -1))
        thetas = []
        for step in steps:
            rotmat = rot6d_to_matrix(step.pose6d.reshape(b * t, 24, 6))  # (B*T, 24, 3, 3)
            thetas.append(matrix_to_axis_angle(rotmat).reshape(b, t, 72))
        final = steps[-1]  # ``rotmat`` now holds the final iteration's rotations
        body = self.body_model(global_orient=rotmat[:, :1], body_pose=rotmat[:, 1:], betas=final.betas,
                               joints_only=not return_vertices)
        joints3d = body.joints.reshape(b, t, NUM_JOINTS, 3)
        cam = final.cam.reshape(b, t, 3)
        joints2d_pred = weak_perspective_projection(joints3d, cam)  # (B, T, 49, 2)
        vertices = body.vertices.reshape(b, t, -1, 3) if body.vertices is not None else None

        # ---- ST branch and fusion
        joints3d_stb = self.stb(joints2d.to(dtype)) if self.stb is not None else None
        joints3d_fused = self.fusion(joints3d_stb, joints3d) if self.fusion is not None else None

        rotmat = rotmat.reshape(b, t, 24, 3, 3)
        return PBNOutput(
            pred_global_orient=rotmat[:, :, 0],
            pred_body_pose=rotmat[:, :, 1:],
            pred_betas=final.betas.reshape(b, t, -1),
            pred_cam=cam,
            vertices=vertices,
            joints3d_smpl=joints3d,
            joints3d_stb=joints3d_stb,
            joints3d_fused=joints3d_fused,
            joints2d=joints2d_pred,
            thetas=thetas,
        )
