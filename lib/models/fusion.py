"""Fusion of the two branches' 3D joints into a third estimate.

``gate``: one learned weight per joint, ``g_j = sigmoid(a_j)`` (starting at
0.5), blends the pelvis-centred ST-branch joints with the pelvis-centred
SMPL-branch joints: ``fused = g * stb + (1 - g) * smpl``. The mesh always comes
from the SMPL branch; the fused joints are an extra, usually better, joint set.
"""
from __future__ import annotations

from typing import Optional

import torch
from torch import nn

from lib.joints.conventions import SPIN_49

LHIP, RHIP = SPIN_49.index("lhip"), SPIN_49.index("rhip")
FUSION_KINDS = ("none", "gate")


def centre_on_hips(joints: torch.Tensor) -> torch.Tensor:
    """(..., 49, 3) SPIN_49 joints -> the same minus the midpoint of the hips."""
    return joints - 0.5 * (joints[..., LHIP, :] + joints[..., RHIP, :])[..., None, :]


class JointGate(nn.Module):
    """Learned per-joint gate over 49 joints; see the module docstring."""

    def __init__(self, num_joints: int = 49):
        super().__init__()
        self.logits = nn.Parameter(torch.zeros(num_joints))

    def weights(self) -> torch.Tensor:
        """(J,) weight of the ST branch per joint, in (0, 1)."""
        return torch.sigmoid(self.logits)

    def forward(self, joints_stb: torch.Tensor, joints_smpl: torch.Tensor) -> torch.Tensor:
        """(B, T, J, 3) x2 metres -> (B, T, J, 3) fused, centred on the hips."""
        g = self.weights()[:, None]  # (J, 1)
        return g * centre_on_hips(joints_stb) + (1 - g) * centre_on_hips(joints_smpl)


def build_fusion(kind: str, num_joints: int = 49) -> Optional[nn.Module]:
    """The fusion module named ``kind`` ("none" -> None, "gate" -> :class:`JointGate`)."""
    if kind == "none":
        return None
    if kind == "gate":
        return JointGate(num_joints)
    raise ValueError(f"unknown MODEL.FUSION {kind!r}; choose one of {', '.join(FUSION_KINDS)}")
