"""Fast forward kinematics of the detector joints, for fitting loops.

Computes the first 25 joints of ``BodyModelLayer(..., joints_only=True).joints``
(the OpenPose-style ``op_*`` slots of SPIN_49: SMPL joints and 11 keypoint
vertices, everything a keypoint detector sees), restructured for many small
optimiser steps on the CPU:

- the tree is walked level by level (all joints of one depth at once: 8 steps
  instead of 23), so the autograd graph has a few dozen nodes, not hundreds;
- the skinning weights are one matrix product for the whole batch (not B small
  ones), and joints are never selected one at a time (each selection costs a
  full-size zero gradient in the backward pass);
- only the 11 keypoint vertices are skinned (the extra regressors behind the
  ground-truth-style joints are not needed while fitting detections).

Profiling the fitter showed per-joint Python steps, per-joint select-backward
fills and batched small products dominating the loss evaluation. Forward +
backward for 1234 bodies on one CPU thread: 14 ms here against 21 ms for the
layer's ``joints_only=True`` path (tests/test_smplify.py checks they agree).
"""
from __future__ import annotations

from typing import List

import numpy as np
import torch
from torch import nn

NUM_OP = 25  # the op_* (OpenPose BODY_25) slots lead SPIN_49


def _mv3(a: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """(..., 3, 3) @ (..., 3) -> (..., 3)."""
    return (a @ v[..., None])[..., 0]


class FastJoints(nn.Module):
    """Joints-only body model for fitting, built from a :class:`lib.body_models.BodyModelLayer`.

    ``forward(rot, betas, transl)``: rot (B, 24, 3, 3) joint rotations (root first),
    betas (B, 10), transl (B, 3) -> (B, 25, 3) joints, the first 25 (``op_*``) slots
    of SPIN_49, metres.
    Needs a model without pose blend shapes (the open model; SMPL's pose
    correctives change the keypoint vertices, so the fitter then uses the layer).
    """

    def __init__(self, body_model):
        super().__init__()
        if body_model.has_pose_correctives:
            raise ValueError("FastJoints needs a body model without pose blend shapes")
        parents = list(body_model.parents)
        depth = [0] * len(parents)
        for j in range(1, len(parents)):
            depth[j] = depth[parents[j]] + 1
        self.levels: List[torch.Tensor] = []
        self.level_parent_pos: List[torch.Tensor] = []  # index of each joint's parent in the previous level
        order = [0]
        prev = [0]
        for d in range(1, max(depth) + 1):
            js = [j for j in range(len(parents)) if depth[j] == d]
            self.levels.append(torch.as_tensor(js))
            self.level_parent_pos.append(torch.as_tensor([prev.index(parents[j]) for j in js]))
            order += js
            prev = js
        inv = np.argsort(np.asarray(order))  # concatenated level order -> joint order
        self.register_buffer("unorder", torch.as_tensor(inv))
        self.register_buffer("parents_t", torch.as_tensor([max(p, 0) for p in parents]))
        ids = body_model.vertex_ids  # the 11 keypoint vertices
        self.register_buffer("j_template", body_model.j_template.clone())
        self.register_buffer("j_shapedirs", body_model.j_shapedirs.clone())
        self.register_buffer("kp_template", body_model.v_template[ids].clone())
        self.register_buffer("kp_shapedirs", body_model.shapedirs[ids].clone())  # (11, 3, 10)
        self.register_buffer("kp_weights", body_model.weights[ids].clone())  # (11, 24)
        joint_map = body_model.joint_map[:NUM_OP]
        if int(joint_map.max()) >= len(parents) + ids.numel():
            raise ValueError("the op_* joints must come from SMPL joints and keypoint vertices only")
        self.register_buffer("joint_map", joint_map.clone())
        self.num_joints = len(parents)

    def forward(self, rot: torch.Tensor, betas: torch.Tensor, transl: torch.Tensor) -> torch.Tensor:
        b = rot.shape[0]
        rest = self.j_template + torch.einsum("jcb,nb->njc", self.j_shapedirs, betas)  # (B, 24, 3)
        offsets = rest - rest[:, self.parents_t]  # bone vectors in the rest pose (root: 0)
        lvl_rot, lvl_pos = rot[:, :1], rest[:, :1]
        rots, poss = [lvl_rot], [lvl_pos]
        for js, ppos in zip(self.levels, self.level_parent_pos):
            # A joint's parent is always in the previous level.
            p_rot = lvl_rot.index_select(1, ppos)  # (B, n, 3, 3)
            lvl_pos = lvl_pos.index_select(1, ppos) + _mv3(p_rot, offsets[:, js])
            lvl_rot = p_rot @ rot[:, js]
            rots.append(lvl_rot)
            poss.append(lvl_pos)
        glob_rot = torch.cat(rots, dim=1)[:, self.unorder]  # (B, 24, 3, 3) in joint order
        glob_pos = torch.cat(poss, dim=1)[:, self.unorder]  # (B, 24, 3)
        trans = glob_pos - _mv3(glob_rot, rest)  # skinning: x -> R (x - J_rest) + J_posed
        mats = torch.cat([glob_rot.reshape(b, -1, 9), trans], dim=-1)  # (B, 24, 12)
        # One (11, 24) x (24, B * 12) product instead of B small ones.
        blended = (self.kp_weights @ mats.transpose(0, 1).reshape(mats.shape[1], -1)).reshape(-1, b, 12)
        blended = blended.transpose(0, 1)  # (B, 11, 12)
        kp_rest = self.kp_template + torch.einsum("vcb,nb->nvc", self.kp_shapedirs, betas)  # (B, 11, 3)
        kp_verts = _mv3(blended[..., :9].reshape(b, -1, 3, 3), kp_rest) + blended[..., 9:]
        joints = torch.cat([glob_pos, kp_verts], dim=1)[:, self.joint_map]
        return joints + transl[:, None, :]
