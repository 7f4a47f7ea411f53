"""VIBE-style motion discriminator: is this pose sequence real (AMASS) motion?

A GRU reads the body pose of every frame (axis-angle of the 23 body joints; the
global orientation is left out because it depends on the camera), attention
pooling weighs the frames, and a linear layer gives one realness score per
sequence. Trained as a least-squares GAN (lib.core.loss).
"""
from __future__ import annotations

import torch
from torch import nn

POSE_DIM = 72  # 24 joints x axis-angle, global orientation first
BODY_POSE_DIM = 69  # without the global orientation


class AttentionPool(nn.Module):
    """Scores each frame with a small tanh MLP, softmax over time, weighted sum.

    (B, T, C) -> (B, C).
    """

    def __init__(self, dim: int, hidden: int = 1024, num_layers: int = 3, dropout: float = 0.2):
        super().__init__()
        layers = []
        width = dim
        for _ in range(num_layers - 1):
            layers += [nn.Linear(width, hidden), nn.Tanh(), nn.Dropout(dropout)]
            width = hidden
        layers += [nn.Linear(width, 1), nn.Tanh()]
        self.scorer = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        weights = torch.softmax(self.scorer(x)[..., 0], dim=1)  # (B, T)
        return (weights[..., None] * x).sum(dim=1)


class MotionDiscriminator(nn.Module):
    """Args:
        hidden_size, num_layers: GRU settings (1024, 2).
        feature_pool: "attention" (VIBE) or "mean".
        att_size, att_layers, att_dropout: attention scorer settings (1024, 3, 0.2).

    ``forward(pose)``: (B, T, 72) axis-angle (global orientation first) or
    (B, T, 69) body pose -> (B,) realness score.
    """

    def __init__(self, hidden_size: int = 1024, num_layers: int = 2, feature_pool: str = "attention",
                 att_size: int = 1024, att_layers: int = 3, att_dropout: float = 0.2):
        super().__init__()
        self.gru = nn.GRU(BODY_POSE_DIM, hidden_size, num_layers=num_layers, batch_first=True)
        if feature_pool == "attention":
            self.pool = AttentionPool(hidden_size, att_size, att_layers, att_dropout)
        elif feature_pool == "mean":
            self.pool = None
        else:
            raise ValueError(f"unknown MODEL.DISC.FEATURE_POOL {feature_pool!r}; choose attention or mean")
        self.fc = nn.Linear(hidden_size, 1)

    def forward(self, pose: torch.Tensor) -> torch.Tensor:
        if pose.dim() != 3 or pose.shape[-1] not in (POSE_DIM, BODY_POSE_DIM):
            raise ValueError(f"motion discriminator: pose must be (B, T, 72) or (B, T, 69), got {tuple(pose.shape)}")
        body = pose[..., -BODY_POSE_DIM:]  # drop the global orientation
        h, _ = self.gru(body)  # (B, T, H)
        pooled = self.pool(h) if self.pool is not None else h.mean(dim=1)
        return self.fc(pooled)[:, 0]

    @classmethod
    def from_config(cls, cfg) -> "MotionDiscriminator":
        d = cfg.MODEL.DISC
        return cls(d.HIDDEN_SIZE, d.NUM_LAYERS, d.FEATURE_POOL, d.ATT_SIZE, d.ATT_LAYERS, d.ATT_DROPOUT)


def build_discriminator_optimizer(cfg, disc: nn.Module) -> torch.optim.Optimizer:
    """The discriminator's own optimiser from ``MODEL.DISC`` (OPTIM, LR, WD, MOMENTUM)."""
    d = cfg.MODEL.DISC
    kind = d.OPTIM.lower()
    if kind == "adam":
        return torch.optim.Adam(disc.parameters(), lr=d.LR, weight_decay=d.WD)
    if kind == "sgd":
        return torch.optim.SGD(disc.parameters(), lr=d.LR, weight_decay=d.WD, momentum=d.MOMENTUM)
    raise ValueError(f"unknown MODEL.DISC.OPTIM {d.OPTIM!r}; choose adam or sgd")
