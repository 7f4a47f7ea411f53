"""Temporal encoders of the SMPL branch: per-frame features -> temporally informed features.

Both keep the feature size, so the HMR regressor (and SPIN weights) can read
their output directly:

- :class:`TransformerTemporalEncoder` (PBN): a learned positional embedding is
  added to the T input vectors, then a post-norm transformer encoder runs over
  them; the input is added back (residual).
- :class:`GRUTemporalEncoder` (VIBE): a GRU over the frames, optionally ReLU +
  linear back to the feature size, then the residual.
"""
from __future__ import annotations

import torch
from torch import nn


class TransformerTemporalEncoder(nn.Module):
    """Args:
        d_model: feature size (2048), also the transformer width.
        num_heads, num_layers, ff_size, dropout: transformer settings (4, 2, 2048, 0.2).
        max_seq_len: number of learned positions; windows may be shorter.
        residual: add the input to the output.
    """

    def __init__(self, d_model: int = 2048, num_heads: int = 4, num_layers: int = 2, ff_size: int = 2048,
                 dropout: float = 0.2, max_seq_len: int = 16, residual: bool = True):
        super().__init__()
        if d_model % num_heads:
            raise ValueError(f"transformer encoder: d_model {d_model} is not divisible by {num_heads} heads")
        self.max_seq_len = max_seq_len
        self.residual = residual
        self.pos_embed = nn.Parameter(torch.zeros(1, max_seq_len, d_model))
        nn.init.trunc_normal_(self.pos_embed, std=0.02)
        layer = nn.TransformerEncoderLayer(d_model, num_heads, dim_feedforward=ff_size, dropout=dropout,
                                           activation="relu", batch_first=True)
        self.encoder = nn.TransformerEncoder(layer, num_layers, enable_nested_tensor=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, T, F) -> (B, T, F)."""
        t = x.shape[1]
        if t > self.max_seq_len:
            raise ValueError(f"transformer encoder: window of {t} frames exceeds MODEL.MAX_SEQ_LEN={self.max_seq_len}")
        y = self.encoder(x + self.pos_embed[:, :t])
        return y + x if self.residual else y


class GRUTemporalEncoder(nn.Module):
    """VIBE's temporal encoder.

    Args:
        d_model: feature size (2048).
        hidden_size, num_layers, bidirectional: GRU settings (VIBE: 1024, 2, False).
        add_linear: ReLU + linear from the GRU width back to ``d_model``
            (always on when bidirectional, as in VIBE).
        residual: add the input when the output has the input's size.
    """

    def __init__(self, d_model: int = 2048, hidden_size: int = 1024, num_layers: int = 2,
                 bidirectional: bool = False, add_linear: bool = True, residual: bool = True):
        super().__init__()
        self.gru = nn.GRU(d_model, hidden_size, num_layers=num_layers, bidirectional=bidirectional, batch_first=True)
        out = hidden_size * (2 if bidirectional else 1)
        self.linear = nn.Linear(out, d_model) if (bidirectional or add_linear) else None
        self.residual = residual and (self.linear is not None or out == d_model)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, T, F) -> (B, T, F) (or (B, T, hidden) without the linear layer)."""
        y, _ = self.gru(x)
        if self.linear is not None:
            y = self.linear(torch.relu(y))
        return y + x if self.residual else y


def build_temporal_encoder(kind: str, d_model: int, *, num_layers: int, num_heads: int, ff_size: int,
                           dropout: float, hidden_size: int, bidirectional: bool, add_linear: bool,
                           residual: bool, max_seq_len: int) -> nn.Module:
    """The encoder named ``kind``: "transformer", "gru" or "none" (identity)."""
    if kind == "transformer":
        return TransformerTemporalEncoder(d_model, num_heads, num_layers, ff_size, dropout, max_seq_len, residual)
    if kind == "gru":
        enc = GRUTemporalEncoder(d_model, hidden_size, num_layers, bidirectional, add_linear, residual)
        if enc.linear is None and hidden_size != d_model:
            raise ValueError(f"GRU encoder without the linear layer needs HIDDEN_SIZE == FEATURE_DIM ({d_model})")
        return enc
    if kind == "none":
        return nn.Identity()
    raise ValueError(f"unknown MODEL.ENCODER.TYPE {kind!r}; choose transformer, gru or none")
