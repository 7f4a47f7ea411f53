"""Small motion helpers shared by the converters and the synthetic generator:
time resampling of SMPL pose sequences, left/right mirroring, key-point boxes."""
from __future__ import annotations

from typing import Optional, Tuple

import numpy as np

from lib.joints.conventions import flip_permutation


def resample_motion(pose: np.ndarray, transl: Optional[np.ndarray], src_fps: float, dst_fps: float
                    ) -> Tuple[np.ndarray, Optional[np.ndarray]]:
    """Resample a pose sequence in time.

    Rotations are interpolated as unit quaternions (normalised lerp on the
    shorter arc, close to slerp at mocap rates), translations linearly.

    Args:
        pose: (N, 3 * J) axis-angle per joint, radians.
        transl: (N, 3) metres or None.
        src_fps: frame rate of the input (a speed-up is src_fps > real rate).
        dst_fps: wanted frame rate.
    Returns:
        (M, 3 * J) pose and (M, 3) translation (or None), M = floor((N-1) * dst/src) + 1.
    """
    import torch  # here, so 2D-only converters run without importing torch

    from lib.geometry.rotations import axis_angle_to_quaternion, quaternion_to_axis_angle

    pose = np.asarray(pose, dtype=np.float64)
    n = pose.shape[0]
    if n < 2 or abs(src_fps - dst_fps) < 1e-9:
        return pose.astype(np.float32), None if transl is None else np.asarray(transl, np.float32)
    t = np.arange(0.0, (n - 1) + 1e-9, src_fps / dst_fps)  # sample times in input frames
    i0 = np.minimum(np.floor(t).astype(np.int64), n - 2)
    a = (t - i0)[:, None, None]
    q = axis_angle_to_quaternion(torch.from_numpy(pose.reshape(n, -1, 3))).numpy()
    q0, q1 = q[i0], q[i0 + 1]
    q1 = np.where((q0 * q1).sum(-1, keepdims=True) < 0, -q1, q1)  # shorter arc
    qi = (1 - a) * q0 + a * q1
    out = quaternion_to_axis_angle(torch.from_numpy(qi)).numpy().reshape(len(t), -1)
    tr = None
    if transl is not None:
        transl = np.asarray(transl, dtype=np.float64)
        tr = ((1 - a[:, :, 0]) * transl[i0] + a[:, :, 0] * transl[i0 + 1]).astype(np.float32)
    return out.astype(np.float32), tr


_SMPL_FLIP = flip_permutation("smpl24")


def mirror_smpl(pose: np.ndarray, transl: Optional[np.ndarray] = None) -> Tuple[np.ndarray, Optional[np.ndarray]]:
    """Mirror SMPL motion across the body's sagittal plane (x -> -x).

    Left and right joints swap; an axis-angle (x, y, z) becomes (x, -y, -z)
    (a rotation conjugated by the reflection diag(-1, 1, 1)); translation x flips.
    pose (N, 72), transl (N, 3) -> same shapes.
    """
    p = np.asarray(pose).reshape(len(pose), 24, 3)[:, _SMPL_FLIP].copy()
    p[..., 1:] *= -1
    tr = None
    if transl is not None:
        tr = np.asarray(transl).copy()
        tr[:, 0] *= -1
    return p.reshape(len(pose), 72), tr


def bbox_from_keypoints(kp: np.ndarray, scale: float = 1.2, min_conf: float = 0.0,
                        min_size: float = 1.0) -> np.ndarray:
    """(N, J, 3) pixels + conf -> (N, 4) boxes (cx, cy, w, h) around joints with conf > min_conf,
    enlarged by ``scale``; frames with no such joint get an all-zero box."""
    kp = np.asarray(kp, dtype=np.float64)
    vis = kp[..., 2] > min_conf
    big = 1e12
    x = kp[..., 0]
    y = kp[..., 1]
    x0 = np.where(vis, x, big).min(-1)
    x1 = np.where(vis, x, -big).max(-1)
    y0 = np.where(vis, y, big).min(-1)
    y1 = np.where(vis, y, -big).max(-1)
    any_vis = vis.any(-1)
    out = np.stack([(x0 + x1) / 2, (y0 + y1) / 2, np.maximum((x1 - x0) * scale, min_size),
                    np.maximum((y1 - y0) * scale, min_size)], -1)
    out[~any_vis] = 0.0
    return out.astype(np.float32)
