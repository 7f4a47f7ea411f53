"""Rigid and similarity alignment (Procrustes) of point sets, numpy and torch."""
from __future__ import annotations

import numpy as np
import torch


def similarity_procrustes(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """Align ``src`` to ``dst`` with the best scale, rotation and translation.

    Args:
        src, dst: (N, J, 3) or (J, 3) point sets (same units).
    Returns:
        ``src`` aligned, same shape: argmin over (s, R, t) of ||s R src + t - dst||^2
        with det(R) = +1 (Umeyama 1991).
    """
    single = src.ndim == 2
    if single:
        src, dst = src[None], dst[None]
    src = np.asarray(src, dtype=np.float64)
    dst = np.asarray(dst, dtype=np.float64)
    mu_s = src.mean(axis=1, keepdims=True)
    mu_d = dst.mean(axis=1, keepdims=True)
    xs, xd = src - mu_s, dst - mu_d
    var_s = (xs ** 2).sum(axis=(1, 2))
    cov = np.einsum("nji,njk->nik", xd, xs)  # (N, 3, 3) = sum_j xd_j xs_j^T
    u, sig, vt = np.linalg.svd(cov)
    d = np.sign(np.linalg.det(u @ vt))
    fix = np.ones_like(sig)
    fix[:, -1] = d
    rot = u @ (fix[:, :, None] * vt)
    scale = (sig * fix).sum(axis=1) / np.maximum(var_s, 1e-12)
    aligned = scale[:, None, None] * np.einsum("nik,njk->nji", rot, xs) + mu_d
    return aligned[0] if single else aligned


def similarity_procrustes_torch(src: torch.Tensor, dst: torch.Tensor) -> torch.Tensor:
    """Torch twin of :func:`similarity_procrustes` for (B, J, 3) tensors (differentiable)."""
    mu_s = src.mean(dim=1, keepdim=True)
    mu_d = dst.mean(dim=1, keepdim=True)
    xs, xd = src - mu_s, dst - mu_d
    var_s = (xs ** 2).sum(dim=(1, 2))
    cov = xd.transpose(1, 2) @ xs
    u, sig, vt = torch.linalg.svd(cov)
    d = torch.sign(torch.linalg.det(u @ vt))
    fix = torch.ones_like(sig)
    fix[:, -1] = d
    rot = u @ (fix[:, :, None] * vt)
    scale = (sig * fix).sum(dim=1) / var_s.clamp(min=1e-12)
    return scale[:, None, None] * xs @ rot.transpose(1, 2) + mu_d
