"""Evaluation metrics: pure numpy functions, ``(pred, gt)`` order.

Inputs are in metres, outputs are per sample in millimetres. Centre the joints
(e.g. with :func:`centre_on_pelvis`) before calling :func:`mpjpe` when the
protocol asks for root-relative error; :func:`pa_mpjpe` aligns by itself.
"""
from __future__ import annotations

from typing import Optional

import numpy as np

from lib.geometry.alignment import similarity_procrustes
from lib.joints.conventions import pelvis_from_hips

M_TO_MM = 1000.0


def _check(pred: np.ndarray, gt: np.ndarray, name: str) -> None:
    if pred.shape != gt.shape or pred.ndim != 3 or pred.shape[-1] != 3:
        raise ValueError(f"{name}: pred {pred.shape} and gt {gt.shape} must both be (N, J, 3)")


def centre_on_pelvis(joints: np.ndarray, fmt: str = "common14") -> np.ndarray:
    """(N, J, 3) -> (N, J, 3) minus the pelvis (midpoint of the hips of ``fmt``)."""
    return joints - pelvis_from_hips(joints, fmt)[..., None, :]


def mpjpe(pred: np.ndarray, gt: np.ndarray) -> np.ndarray:
    """Mean per-joint position error, no alignment: (N, J, 3) x2 metres -> (N,) mm."""
    pred, gt = np.asarray(pred, np.float64), np.asarray(gt, np.float64)
    _check(pred, gt, "mpjpe")
    return np.linalg.norm(pred - gt, axis=-1).mean(axis=-1) * M_TO_MM


def pa_mpjpe(pred: np.ndarray, gt: np.ndarray) -> np.ndarray:
    """MPJPE after per-sample similarity Procrustes of pred onto gt: (N, J, 3) x2 metres -> (N,) mm."""
    pred, gt = np.asarray(pred, np.float64), np.asarray(gt, np.float64)
    _check(pred, gt, "pa_mpjpe")
    return mpjpe(similarity_procrustes(pred, gt), gt)


def pve(pred_verts: np.ndarray, gt_verts: np.ndarray) -> np.ndarray:
    """Per-vertex error, no alignment: (N, V, 3) x2 metres -> (N,) mm."""
    return mpjpe(pred_verts, gt_verts)


def accel_error(pred: np.ndarray, gt: np.ndarray, valid: Optional[np.ndarray] = None) -> np.ndarray:
    """Acceleration error from second differences of a frame sequence.

    Args:
        pred, gt: (N, J, 3) metres, consecutive frames of one sequence.
        valid: optional (N,) bool; an acceleration that touches an invalid frame is NaN.
    Returns:
        (N-2,) mm per frame^2: mean over joints of ||a_pred - a_gt||.
    """
    pred, gt = np.asarray(pred, np.float64), np.asarray(gt, np.float64)
    _check(pred, gt, "accel_error")
    acc_p = pred[:-2] - 2 * pred[1:-1] + pred[2:]
    acc_g = gt[:-2] - 2 * gt[1:-1] + gt[2:]
    err = np.linalg.norm(acc_p - acc_g, axis=-1).mean(axis=-1) * M_TO_MM
    if valid is not None:
        valid = np.asarray(valid, bool)
        ok = valid[:-2] & valid[1:-1] & valid[2:]
        err = np.where(ok, err, np.nan)
    return err
