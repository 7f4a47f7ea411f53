"""Temporal filters for per-track signals (keypoints, boxes).

The one-euro filter (Casiez et al., CHI 2012) is a low-pass filter whose
cut-off frequency rises with the signal's speed: still joints are smoothed
hard (jitter goes away), fast ones little (no lag on real motion).
The demo runs offline, so :func:`smooth_keypoints` can average a forward and
a backward pass, which cancels most of the remaining phase lag.
"""
from __future__ import annotations

import math
from typing import Optional

import numpy as np


def _alpha(cutoff: np.ndarray, dt: float) -> np.ndarray:
    tau = 1.0 / (2.0 * math.pi * cutoff)
    return 1.0 / (1.0 + tau / dt)


def one_euro(x: np.ndarray, fps: float, min_cutoff: float = 1.0, beta: float = 0.5, d_cutoff: float = 1.0,
             scale: Optional[np.ndarray] = None) -> np.ndarray:
    """Causal one-euro filter along axis 0.

    Args:
        x: (N, ...) signal, one sample per frame.
        fps: frames per second (sets the time step).
        min_cutoff: cut-off (Hz) when the signal is still; lower = smoother.
        beta: how fast the cut-off rises with speed (per unit of speed / ``scale``).
        d_cutoff: cut-off (Hz) of the speed estimate.
        scale: optional (N,) per-frame scale (e.g. box height in px); speeds are
            divided by it so ``beta`` is independent of the person's size.

    Returns:
        (N, ...) filtered signal (float64).
    """
    x = np.asarray(x, np.float64)
    n = len(x)
    if n == 0:
        return x.copy()
    dt = 1.0 / float(fps if fps and fps > 0 else 30.0)
    out = np.empty_like(x)
    out[0] = x[0]
    dx = np.zeros_like(x[0])
    a_d = _alpha(np.asarray(d_cutoff, np.float64), dt)
    for i in range(1, n):
        raw_dx = (x[i] - out[i - 1]) / dt
        dx = a_d * raw_dx + (1.0 - a_d) * dx
        speed = np.abs(dx)
        if scale is not None:
            speed = speed / max(float(scale[i]), 1e-6)
        a = _alpha(min_cutoff + beta * speed, dt)
        out[i] = a * x[i] + (1.0 - a) * out[i - 1]
    return out


def smooth_keypoints(kps: np.ndarray, fps: float, min_cutoff: float = 1.0, beta: float = 0.5,
                     d_cutoff: float = 1.0, scale: Optional[np.ndarray] = None,
                     bidirectional: bool = True, has_conf: bool = True) -> np.ndarray:
    """One-euro smoothing of a keypoint track.

    Args:
        kps: (N, J, C) frames x joints x (x, y[, ...], conf); the last channel
            (confidence) is passed through unchanged, the others are filtered.
        fps: frame rate.
        min_cutoff, beta, d_cutoff: one-euro parameters (see :func:`one_euro`).
        scale: (N,) per-frame size (e.g. box height, px) normalising speeds.
        bidirectional: average a forward and a backward pass (offline; no lag).
        has_conf: False filters every channel (e.g. 3D landmarks without confidence).

    Returns:
        (N, J, C) float32 with the same confidences.
    """
    kps = np.asarray(kps, np.float32)
    if kps.ndim != 3 or kps.shape[-1] < (2 if has_conf else 1):
        raise ValueError(f"smooth_keypoints: expected (N, J, C), got {kps.shape}")
    out = kps.copy()
    if len(kps) < 2:
        return out
    nc = kps.shape[-1] - 1 if has_conf else kps.shape[-1]
    coords = kps[..., :nc]
    fwd = one_euro(coords, fps, min_cutoff, beta, d_cutoff, scale)
    if bidirectional:
        bwd = one_euro(coords[::-1], fps, min_cutoff, beta, d_cutoff,
                       None if scale is None else np.asarray(scale)[::-1])[::-1]
        fwd = 0.5 * (fwd + bwd)
    out[..., :nc] = fwd
    return out
