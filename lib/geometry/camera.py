"""Cameras and coordinate frames.

Frames and units:
- camera space: metres, x right, y down, z forward (OpenCV), so a body in the
  SMPL frame (y up, facing +z) is turned towards the camera by a rotation of pi
  about x (the mean global orientation).
- image: pixels, origin top-left.
- crop: a square box around the person, coordinates normalised to [-1, 1];
  boxes are (cx, cy, w, h) in pixels and the crop side is max(w, h).
- weak-perspective camera ``cam = (s, tx, ty)`` in crop coordinates:
  ``x_crop = s * (X[:2] + (tx, ty))``.
"""
from __future__ import annotations

from typing import Optional, Union

import torch

Number = Union[float, torch.Tensor]


def bbox_size(bbox: torch.Tensor) -> torch.Tensor:
    """(..., 4) (cx, cy, w, h) -> (...,) side of the square crop, pixels."""
    return torch.maximum(bbox[..., 2], bbox[..., 3])


def crop_to_image(points: torch.Tensor, bbox: torch.Tensor) -> torch.Tensor:
    """(..., N, 2) crop coordinates in [-1, 1] + (..., 4) boxes -> (..., N, 2) pixels."""
    half = 0.5 * bbox_size(bbox)[..., None, None]
    return points * half + bbox[..., None, :2]


def image_to_crop(points: torch.Tensor, bbox: torch.Tensor) -> torch.Tensor:
    """(..., N, 2) pixels + (..., 4) boxes -> (..., N, 2) crop coordinates in [-1, 1]."""
    half = 0.5 * bbox_size(bbox)[..., None, None]
    return (points - bbox[..., None, :2]) / half


def weak_perspective_projection(points: torch.Tensor, cam: torch.Tensor) -> torch.Tensor:
    """(..., N, 3) points + (..., 3) cam (s, tx, ty) -> (..., N, 2) crop coordinates."""
    return cam[..., None, :1] * (points[..., :2] + cam[..., None, 1:])


def perspective_projection(
    points: torch.Tensor,
    transl: torch.Tensor,
    focal_length: Number,
    center: torch.Tensor,
    rotation: Optional[torch.Tensor] = None,
) -> torch.Tensor:
    """Pinhole projection.

    Args:
        points: (B, N, 3) metres.
        transl: (B, 3) metres, added after the optional rotation.
        focal_length: scalar or (B,) or (B, 2), pixels.
        center: (B, 2) principal point, pixels.
        rotation: optional (B, 3, 3).
    Returns:
        (B, N, 2) pixels.
    """
    if rotation is not None:
        points = points @ rotation.transpose(-1, -2)
    points = points + transl[:, None, :]
    f = torch.as_tensor(focal_length, dtype=points.dtype, device=points.device)
    if f.dim() == 1:  # (B,) -> (B, 1, 1)
        f = f[:, None, None]
    elif f.dim() == 2:  # (B, 2) -> (B, 1, 2)
        f = f[:, None, :]
    z = points[..., 2:].clamp(min=1e-6)
    return points[..., :2] / z * f + center[:, None, :]


def weak_perspective_to_translation(cam: torch.Tensor, focal_length: Number, crop_size: Number) -> torch.Tensor:
    """Crop weak-perspective (s, tx, ty) -> camera translation (..., 3) metres for a
    pinhole camera of ``focal_length`` pixels looking at a crop of ``crop_size`` pixels."""
    s, tx, ty = cam[..., 0], cam[..., 1], cam[..., 2]
    tz = 2.0 * focal_length / (torch.as_tensor(crop_size, dtype=cam.dtype) * s.clamp(min=1e-9))
    return torch.stack([tx, ty, tz], dim=-1)


def translation_to_weak_perspective(transl: torch.Tensor, focal_length: Number, crop_size: Number) -> torch.Tensor:
    """Inverse of :func:`weak_perspective_to_translation`: (..., 3) -> (..., 3) (s, tx, ty)."""
    s = 2.0 * focal_length / (torch.as_tensor(crop_size, dtype=transl.dtype) * transl[..., 2])
    return torch.stack([s, transl[..., 0], transl[..., 1]], dim=-1)


def crop_cam_to_full_translation(
    cam: torch.Tensor, bbox: torch.Tensor, img_w: Number, img_h: Number, focal_length: Number
) -> torch.Tensor:
    """Crop weak-perspective camera -> camera-space translation for the full image.

    A pinhole camera with ``focal_length`` pixels and principal point at the image
    centre sees the body where the crop camera put it inside ``bbox``.

    Args:
        cam: (..., 3) (s, tx, ty) in crop coordinates.
        bbox: (..., 4) (cx, cy, w, h) pixels.
    Returns:
        (..., 3) metres.
    """
    b = bbox_size(bbox)
    s = cam[..., 0].clamp(min=1e-9)
    tz = 2.0 * focal_length / (b * s)
    tx = cam[..., 1] + 2.0 * (bbox[..., 0] - 0.5 * img_w) / (b * s)
    ty = cam[..., 2] + 2.0 * (bbox[..., 1] - 0.5 * img_h) / (b * s)
    return torch.stack([tx, ty, tz], dim=-1)


def default_focal_length(img_w: Number, img_h: Number) -> float:
    """A focal length (pixels) for unknown cameras: the image diagonal (~53 deg FOV)."""
    return float((float(img_w) ** 2 + float(img_h) ** 2) ** 0.5)
