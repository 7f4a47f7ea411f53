"""Rotation conversions, all through roma (batched, differentiable, any leading shape).

Conventions:
- axis-angle ("rotvec"): (..., 3), angle in radians = norm.
- rotation matrix: (..., 3, 3), column vectors (x' = R x).
- 6D: (..., 6) = the first two columns of R laid out row-major as
  ``R[..., :, :2].reshape(..., 6)`` (the SPIN/HMR layout of ``smpl_mean_params.npz``).
- quaternion: (..., 4) in roma's and glTF's x, y, z, w order.
"""
from __future__ import annotations

import roma
import torch


def axis_angle_to_matrix(rotvec: torch.Tensor) -> torch.Tensor:
    """(..., 3) axis-angle -> (..., 3, 3) rotation matrix."""
    return roma.rotvec_to_rotmat(rotvec)


def matrix_to_axis_angle(rotmat: torch.Tensor) -> torch.Tensor:
    """(..., 3, 3) rotation matrix -> (..., 3) axis-angle with angle in [0, pi]."""
    return roma.rotmat_to_rotvec(rotmat)


def rot6d_to_matrix(rot6d: torch.Tensor) -> torch.Tensor:
    """(..., 6) 6D representation -> (..., 3, 3) via Gram-Schmidt on the two columns."""
    return roma.special_gramschmidt(rot6d.reshape(rot6d.shape[:-1] + (3, 2)))


def matrix_to_rot6d(rotmat: torch.Tensor) -> torch.Tensor:
    """(..., 3, 3) -> (..., 6): the first two columns, row-major."""
    return rotmat[..., :, :2].reshape(rotmat.shape[:-2] + (6,))


def matrix_to_quaternion(rotmat: torch.Tensor) -> torch.Tensor:
    """(..., 3, 3) -> (..., 4) unit quaternion (x, y, z, w)."""
    return roma.rotmat_to_unitquat(rotmat)


def quaternion_to_matrix(quat: torch.Tensor) -> torch.Tensor:
    """(..., 4) quaternion (x, y, z, w), normalised first -> (..., 3, 3)."""
    return roma.unitquat_to_rotmat(quat / quat.norm(dim=-1, keepdim=True))


def axis_angle_to_quaternion(rotvec: torch.Tensor) -> torch.Tensor:
    """(..., 3) axis-angle -> (..., 4) quaternion (x, y, z, w)."""
    return roma.rotvec_to_unitquat(rotvec)


def quaternion_to_axis_angle(quat: torch.Tensor) -> torch.Tensor:
    """(..., 4) quaternion (x, y, z, w) -> (..., 3) axis-angle."""
    return roma.unitquat_to_rotvec(quat / quat.norm(dim=-1, keepdim=True))


def rot6d_to_axis_angle(rot6d: torch.Tensor) -> torch.Tensor:
    """(..., 6) -> (..., 3)."""
    return matrix_to_axis_angle(rot6d_to_matrix(rot6d))


def axis_angle_to_rot6d(rotvec: torch.Tensor) -> torch.Tensor:
    """(..., 3) -> (..., 6)."""
    return matrix_to_rot6d(axis_angle_to_matrix(rotvec))
