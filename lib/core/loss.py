"""Losses of the Parallel-Branch Network.

:class:`PBNLoss` returns a dict of named, already weighted terms; the generator
loss is their sum. Every term is a masked mean, so frames without the label
a term needs contribute neither value nor gradient:

========== =================================================================== =========================
term       supervises                                                          counted where
========== =================================================================== =========================
L_2d       SMPL-branch projected 49 joints vs 2D keypoints, squared error      ``valid``; per joint
           weighted by keypoint confidence (crop units)                        confidence
L_3d_SMPL  SMPL-branch 14 common joints, both sets centred on the midpoint     ``valid & has_3d`` and
           of the hips, squared error (metres)                                 both hips labelled;
                                                                               per-joint validity
L_3d_STB   the same for the ST-branch joints                                   as L_3d_SMPL
L_fused    the same for the fused joints (only when fusion is on)              as L_3d_SMPL
L_smpl     POSE_W x squared error of the 24 rotation matrices +                ``valid & has_smpl``
           SHAPE_W x squared error of the 10 betas
L_adv      generator side of the least-squares GAN: (D(pred motion) - 1)^2     every window
========== =================================================================== =========================

The discriminator's own loss is :func:`discriminator_loss`. Default weights
are the seed code's (VIBE's 3DPW recipe): 2D 300, 3D 300, shape 0.06, pose 60,
motion 0.5, and the ST branch's 3D term 300 like the SMPL branch's.

Batch contract (all per window, (B, T, ...)): ``joints2d`` (B,T,49,3)
crop-normalised x, y + confidence; ``joints3d`` (B,T,49,4) metres + per-joint
validity; ``pose`` (B,T,72) axis-angle; ``shape`` (B,T,10); ``has_smpl``,
``has_3d``, ``valid`` (B,T) 0/1.
"""
from __future__ import annotations

from typing import Dict, List, Mapping, Optional

import torch
from torch import nn

from lib.geometry.rotations import axis_angle_to_matrix
from lib.joints.conventions import COMMON_14, SPIN49_TO_J14

J14_LHIP, J14_RHIP = COMMON_14.index("lhip"), COMMON_14.index("rhip")
ADV_ITERS = ("last", "all")


class BatchError(ValueError):
    """A batch entry the loss needs is missing or has the wrong shape."""


def _entry(batch: Mapping[str, torch.Tensor], key: str, shape: tuple) -> torch.Tensor:
    if key not in batch:
        raise BatchError(f"loss: batch has no {key!r} entry (needs shape {shape})")
    x = batch[key]
    if tuple(x.shape) != shape:
        raise BatchError(f"loss: batch[{key!r}] must have shape {shape}, got {tuple(x.shape)}")
    return x


def _centred_j14(joints: torch.Tensor) -> torch.Tensor:
    """(B, T, 49, C>=3) -> (B, T, 14, 3) common joints minus the midpoint of the hips."""
    j = joints[..., SPIN49_TO_J14, :3]
    return j - 0.5 * (j[..., J14_LHIP, :] + j[..., J14_RHIP, :])[..., None, :]


def joints3d_loss(pred: torch.Tensor, gt: torch.Tensor, frame_mask: torch.Tensor) -> torch.Tensor:
    """Pelvis-centred squared error on the 14 common joints.

    Args:
        pred: (B, T, 49, 3) metres.
        gt: (B, T, 49, 4) metres + per-joint validity.
        frame_mask: (B, T) frames with 3D labels.
    Returns:
        scalar: mean over labelled frames, joints and coordinates (metres^2);
        0 (still attached to the graph) when nothing is labelled. A frame
        counts only if both hips are labelled, since they define the pelvis.
    """
    vis = gt[..., SPIN49_TO_J14, 3]  # (B, T, 14)
    mask = frame_mask * vis[..., J14_LHIP] * vis[..., J14_RHIP]  # (B, T)
    err = ((_centred_j14(pred) - _centred_j14(gt)) ** 2).sum(-1)  # (B, T, 14)
    weight = mask[..., None] * vis
    return (weight * err).sum() / (mask.sum() * len(SPIN49_TO_J14) * 3).clamp(min=1.0)


def motion_for_discriminator(thetas: List[torch.Tensor], iters: str = "last") -> torch.Tensor:
    """Predicted pose sequences the discriminator judges: (B, T, 72) per iteration ->
    (n*B, T, 72) with n = 1 ("last") or every iteration ("all")."""
    if iters not in ADV_ITERS:
        raise ValueError(f"unknown LOSS.ADV_ITERS {iters!r}; choose last or all")
    return thetas[-1] if iters == "last" else torch.cat(thetas, dim=0)


class PBNLoss(nn.Module):
    """Weighted loss terms of the PBN; see the module docstring for what each supervises.

    Args:
        kp_2d_w, kp_3d_w, stb_3d_w, fused_3d_w, pose_w, shape_w, motion_w: term weights.
        adv_iters: "last" or "all" regressor iterations judged by the discriminator.
    """

    def __init__(self, kp_2d_w: float = 300.0, kp_3d_w: float = 300.0, stb_3d_w: float = 300.0,
                 fused_3d_w: float = 300.0, pose_w: float = 60.0, shape_w: float = 0.06, motion_w: float = 0.5,
                 adv_iters: str = "last"):
        super().__init__()
        if adv_iters not in ADV_ITERS:
            raise ValueError(f"unknown LOSS.ADV_ITERS {adv_iters!r}; choose last or all")
        self.kp_2d_w, self.kp_3d_w, self.stb_3d_w, self.fused_3d_w = kp_2d_w, kp_3d_w, stb_3d_w, fused_3d_w
        self.pose_w, self.shape_w, self.motion_w = pose_w, shape_w, motion_w
        self.adv_iters = adv_iters

    @classmethod
    def from_config(cls, cfg) -> "PBNLoss":
        c = cfg.LOSS
        return cls(c.KP_2D_W, c.KP_3D_W, c.STB_3D_W, c.FUSED_3D_W, c.POSE_W, c.SHAPE_W, c.MOTION_W, c.ADV_ITERS)

    def forward(self, out, batch: Mapping[str, torch.Tensor],
                discriminator: Optional[nn.Module] = None) -> Dict[str, torch.Tensor]:
        """Args:
            out: :class:`lib.models.pbn.PBNOutput` for the batch.
            batch: the batch contract of the module docstring.
            discriminator: the motion discriminator; None (or MOTION_W 0) leaves out ``L_adv``.
        Returns:
            {name: weighted scalar}; the generator loss is ``sum(terms.values())``.
        """
        b, t = out.joints2d.shape[:2]
        valid = _entry(batch, "valid", (b, t)).to(out.joints2d.dtype)
        terms: Dict[str, torch.Tensor] = {}

        # 2D reprojection, confidence weighted, every valid frame.
        gt2d = torch.nan_to_num(_entry(batch, "joints2d", (b, t, 49, 3)).to(valid.dtype))
        conf = gt2d[..., 2] * valid[..., None]  # (B, T, 49)
        err2d = ((out.joints2d - gt2d[..., :2]) ** 2).sum(-1)  # (B, T, 49)
        terms["L_2d"] = self.kp_2d_w * (conf * err2d).sum() / (valid.sum() * 49 * 2).clamp(min=1.0)

        # 3D joints of each branch, where 3D labels exist.
        gt3d = torch.nan_to_num(_entry(batch, "joints3d", (b, t, 49, 4)).to(valid.dtype))
        mask3d = valid * _entry(batch, "has_3d", (b, t)).to(valid.dtype)
        terms["L_3d_SMPL"] = self.kp_3d_w * joints3d_loss(out.joints3d_smpl, gt3d, mask3d)
        if out.joints3d_stb is not None:
            terms["L_3d_STB"] = self.stb_3d_w * joints3d_loss(out.joints3d_stb, gt3d, mask3d)
        if out.joints3d_fused is not None:
            terms["L_fused"] = self.fused_3d_w * joints3d_loss(out.joints3d_fused, gt3d, mask3d)

        # SMPL parameters, where SMPL labels exist.
        mask_smpl = valid * _entry(batch, "has_smpl", (b, t)).to(valid.dtype)
        count = mask_smpl.sum().clamp(min=1.0)
        gt_rot = axis_angle_to_matrix(torch.nan_to_num(_entry(batch, "pose", (b, t, 72))).to(valid.dtype)
                                      .reshape(b, t, 24, 3))
        pred_rot = torch.cat([out.pred_global_orient[:, :, None], out.pred_body_pose], dim=2)  # (B, T, 24, 3, 3)
        pose_err = ((pred_rot - gt_rot) ** 2).sum((-1, -2, -3))  # (B, T)
        gt_betas = torch.nan_to_num(_entry(batch, "shape", (b, t, 10)).to(valid.dtype))
        betas_err = ((out.pred_betas - gt_betas) ** 2).sum(-1)  # (B, T)
        terms["L_smpl"] = (self.pose_w * (mask_smpl * pose_err).sum() / (count * 24 * 9)
                           + self.shape_w * (mask_smpl * betas_err).sum() / (count * 10))

        if discriminator is not None and self.motion_w > 0:
            scores = discriminator(motion_for_discriminator(out.thetas, self.adv_iters))
            terms["L_adv"] = self.motion_w * ((scores - 1.0) ** 2).mean()
        return terms


def discriminator_loss(discriminator: nn.Module, real_motion: torch.Tensor, fake_motion: torch.Tensor,
                       weight: float = 0.5) -> Dict[str, torch.Tensor]:
    """Least-squares GAN loss of the motion discriminator.

    Args:
        real_motion: (B, T, 72) axis-angle pose sequences from a motion dataset (AMASS).
        fake_motion: (B', T, 72) predicted sequences (``motion_for_discriminator``); detached here.
        weight: LOSS.MOTION_W.
    Returns:
        ``D_real`` = w * mean((D(real) - 1)^2), ``D_fake`` = w * mean(D(fake)^2) and
        ``L_disc`` = their sum (the term to minimise).
    """
    real = discriminator(real_motion)
    fake = discriminator(fake_motion.detach())
    d_real = weight * ((real - 1.0) ** 2).mean()
    d_fake = weight * (fake ** 2).mean()
    return {"D_real": d_real, "D_fake": d_fake, "L_disc": d_real + d_fake}
