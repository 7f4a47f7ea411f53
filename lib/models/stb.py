"""ST branch: a PoseFormer-style spatio-temporal transformer lifting 2D keypoints to 3D.

Per frame, each of the 49 joints (x, y, confidence) is embedded and a spatial
transformer lets the joints of that frame attend to each other; the joint
tokens of a frame are then concatenated into one frame token and a temporal
transformer runs over the T frames. Unlike PoseFormer, which predicts only the
centre frame, a linear head reads every frame token, so the branch is
sequence-to-sequence: (B, T, 49, 3) keypoints -> (B, T, 49, 3) joints.

Missing joints carry confidence 0; their coordinates are zeroed before the
embedding so whatever a detector left there cannot leak in, and the confidence
channel tells the network which joints are absent.
"""
from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F
from torchvision.ops import StochasticDepth

from lib.joints.conventions import SPIN_49

LHIP, RHIP = SPIN_49.index("lhip"), SPIN_49.index("rhip")


class Attention(nn.Module):
    """Multi-head self-attention over (N, L, C) tokens."""

    def __init__(self, dim: int, num_heads: int, dropout: float = 0.0):
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"STB: width {dim} is not divisible by {num_heads} heads")
        self.num_heads = num_heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        self.dropout = dropout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, length, dim = x.shape
        qkv = self.qkv(x).reshape(n, length, 3, self.num_heads, dim // self.num_heads)
        q, k, v = qkv.permute(2, 0, 3, 1, 4)  # each (N, heads, L, C/heads)
        y = F.scaled_dot_product_attention(q, k, v, dropout_p=self.dropout if self.training else 0.0)
        return self.proj(y.transpose(1, 2).reshape(n, length, dim))


class Block(nn.Module):
    """Pre-norm transformer block with stochastic depth on both residual paths."""

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float, dropout: float, drop_path: float):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = Attention(dim, num_heads, dropout)
        self.norm2 = nn.LayerNorm(dim)
        hidden = int(dim * mlp_ratio)
        self.mlp = nn.Sequential(nn.Linear(dim, hidden), nn.GELU(), nn.Dropout(dropout),
                                 nn.Linear(hidden, dim), nn.Dropout(dropout))
        self.drop_path = StochasticDepth(drop_path, mode="row")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.drop_path(self.attn(self.norm1(x)))
        return x + self.drop_path(self.mlp(self.norm2(x)))


class SpatioTemporalTransformer(nn.Module):
    """Args:
        num_joints: joints per frame (49, SPIN_49 order).
        embed_dim: embedding per joint (32).
        temporal_dim: width of the temporal transformer; 0 = num_joints * embed_dim
            (PoseFormer: the concatenated joint embeddings, 1568 for 49 joints), other
            values put a linear projection in between (cheaper: the temporal blocks
            hold ~8 x width^2 parameters each).
        spatial_depth, temporal_depth: blocks of each transformer (4, 4).
        num_heads: attention heads (8).
        mlp_ratio: feed-forward width factor (2).
        dropout: dropout rate (0).
        drop_path: stochastic depth, rising linearly over all blocks to this rate (0.1).
        max_seq_len: frames covered by the temporal positional embedding.

    ``forward(joints2d)``: (B, T, J, 3) crop-normalised x, y in [-1, 1] and
    confidence -> (B, T, J, 3) metres, centred on the midpoint of the hips.
    """

    def __init__(self, num_joints: int = 49, embed_dim: int = 32, spatial_depth: int = 4, temporal_depth: int = 4,
                 num_heads: int = 8, mlp_ratio: float = 2.0, dropout: float = 0.0, drop_path: float = 0.1,
                 max_seq_len: int = 16, temporal_dim: int = 0):
        super().__init__()
        self.num_joints = num_joints
        self.max_seq_len = max_seq_len
        width = temporal_dim or num_joints * embed_dim
        rates = torch.linspace(0, drop_path, spatial_depth + temporal_depth).tolist()

        self.joint_embed = nn.Linear(3, embed_dim)
        self.spatial_pos = nn.Parameter(torch.zeros(1, num_joints, embed_dim))
        self.spatial_blocks = nn.ModuleList(
            Block(embed_dim, num_heads, mlp_ratio, dropout, rates[i]) for i in range(spatial_depth))
        self.spatial_norm = nn.LayerNorm(embed_dim)
        concat = num_joints * embed_dim
        self.to_temporal = nn.Linear(concat, width) if width != concat else nn.Identity()

        self.temporal_pos = nn.Parameter(torch.zeros(1, max_seq_len, width))
        self.temporal_blocks = nn.ModuleList(
            Block(width, num_heads, mlp_ratio, dropout, rates[spatial_depth + i]) for i in range(temporal_depth))
        self.temporal_norm = nn.LayerNorm(width)
        self.head = nn.Linear(width, num_joints * 3)
        self.pos_drop = nn.Dropout(dropout)
        nn.init.trunc_normal_(self.spatial_pos, std=0.02)
        nn.init.trunc_normal_(self.temporal_pos, std=0.02)

    def forward(self, joints2d: torch.Tensor) -> torch.Tensor:
        b, t, j, _ = joints2d.shape
        if t > self.max_seq_len:
            raise ValueError(f"STB: window of {t} frames exceeds MODEL.MAX_SEQ_LEN={self.max_seq_len}")
        conf = joints2d[..., 2:3]
        x = torch.cat([joints2d[..., :2] * (conf > 0), conf], dim=-1)  # missing joints -> (0, 0, 0)
        x = self.joint_embed(x.reshape(b * t, j, 3)) + self.spatial_pos  # (B*T, J, C)
        x = self.pos_drop(x)
        for blk in self.spatial_blocks:
            x = blk(x)
        x = self.to_temporal(self.spatial_norm(x).reshape(b, t, -1))  # (B, T, J*C) -> (B, T, width)
        x = self.pos_drop(x + self.temporal_pos[:, :t])
        for blk in self.temporal_blocks:
            x = blk(x)
        out = self.head(self.temporal_norm(x)).reshape(b, t, j, 3)
        # Root-relative by construction: the losses and the fusion compare pelvis-centred joints.
        pelvis = 0.5 * (out[..., LHIP, :] + out[..., RHIP, :])
        return out - pelvis[..., None, :]
