"""HMR iterative regressor: image feature -> body pose (6D), shape and camera.

Starting from the body model's mean parameters, each iteration reads the
feature together with the current estimate and adds a correction (iterative
error feedback, Kanazawa et al. 2018). Layer names and sizes follow SPIN so a
SPIN checkpoint loads into it (lib.models.backbone.load_spin_checkpoint).
SPIN has no non-linearity between fc1 and fc2; we keep that so its weights mean
the same thing here.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import List, Mapping

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

NUM_POSE_6D = 24 * 6  # 24 joint rotations in the 6D representation
NUM_BETAS = 10
NUM_CAM = 3  # weak-perspective (s, tx, ty) in crop coordinates


@dataclass
class RegressorStep:
    """One iteration's estimate, flattened over the batch: pose6d (N, 144),
    betas (N, 10), cam (N, 3)."""

    pose6d: torch.Tensor
    betas: torch.Tensor
    cam: torch.Tensor


class HMRRegressor(nn.Module):
    """HMR/SPIN iterative regressor.

    Args:
        mean_params: the body model's ``mean_params`` with ``pose`` (144,) 6D,
            ``shape`` (10,) and ``cam`` (3,); the starting estimate.
        feature_dim: input feature size (2048 for ResNet-50 features).
        hidden_size: width of fc1 and fc2 (1024 in SPIN).
        num_iters: refinement iterations (3).
        dropout: dropout after fc1 and fc2 (0.5 in SPIN).
    """

    def __init__(
        self,
        mean_params: Mapping[str, np.ndarray],
        feature_dim: int = 2048,
        hidden_size: int = 1024,
        num_iters: int = 3,
        dropout: float = 0.5,
    ):
        super().__init__()
        if num_iters < 1:
            raise ValueError(f"regressor: num_iters must be >= 1, got {num_iters}")
        self.num_iters = num_iters
        self.fc1 = nn.Linear(feature_dim + NUM_POSE_6D + NUM_BETAS + NUM_CAM, hidden_size)
        self.drop1 = nn.Dropout(dropout)
        self.fc2 = nn.Linear(hidden_size, hidden_size)
        self.drop2 = nn.Dropout(dropout)
        self.decpose = nn.Linear(hidden_size, NUM_POSE_6D)
        self.decshape = nn.Linear(hidden_size, NUM_BETAS)
        self.deccam = nn.Linear(hidden_size, NUM_CAM)
        # Small corrections at the start so training begins near the mean body.
        for layer in (self.decpose, self.decshape, self.deccam):
            nn.init.xavier_uniform_(layer.weight, gain=0.01)
        # (1, n) buffers, the shapes SPIN stores; copies, so the body model's arrays stay untouched.
        f32 = lambda k, n: torch.tensor(np.asarray(mean_params[k], np.float32).reshape(1, n))  # noqa: E731
        self.register_buffer("init_pose", f32("pose", NUM_POSE_6D))
        self.register_buffer("init_shape", f32("shape", NUM_BETAS))
        self.register_buffer("init_cam", f32("cam", NUM_CAM))

    def forward(self, features: torch.Tensor) -> List[RegressorStep]:
        """(N, feature_dim) -> one :class:`RegressorStep` per iteration (last = final)."""
        n, f = features.shape
        pose = self.init_pose.expand(n, -1)
        betas = self.init_shape.expand(n, -1)
        cam = self.init_cam.expand(n, -1)
        # fc1 acts on [features, pose, betas, cam]; the features' share is the same in every
        # iteration, so it is computed once (same result, ~40% less work than re-concatenating).
        from_features = F.linear(features, self.fc1.weight[:, :f], self.fc1.bias)  # (N, hidden)
        w_state = self.fc1.weight[:, f:]  # (hidden, 157)
        steps = []
        for _ in range(self.num_iters):
            h = from_features + F.linear(torch.cat([pose, betas, cam], dim=1), w_state)
            h = self.drop2(self.fc2(self.drop1(h)))
            pose = pose + self.decpose(h)
            betas = betas + self.decshape(h)
            cam = cam + self.deccam(h)
            steps.append(RegressorStep(pose6d=pose, betas=betas, cam=cam))
        return steps
