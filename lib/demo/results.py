"""The demo's ``results.npz``: writer (atomic, no pickles) and loader.

Layout (all numeric; strings are numpy unicode scalars, so no pickles are needed):

per track id ``T`` (decimal string):

| key | shape | meaning |
| --- | --- | --- |
| ``T/frame_ids`` | (N,) int64 | video frame index of each sample, increasing |
| ``T/bboxes`` | (N, 4) | box cx, cy, w, h, pixels |
| ``T/keypoints_2d`` | (N, 49, 3) | detected keypoints, pixels + confidence (SPIN_49) |
| ``T/pose`` | (N, 72) | axis-angle, global orientation (camera frame) first |
| ``T/betas`` | (10,) | shape, one per track |
| ``T/cam`` | (N, 3) | weak-perspective (s, tx, ty) of the box crop |
| ``T/transl`` | (N, 3) | metres, camera space (OpenCV axes) |
| ``T/joints3d`` | (N, 49, 3) | metres, camera space |
| ``T/joints2d`` | (N, 49, 2) | pixels, projection of the fitted body |

top level: ``detections`` (M, 6: frame, x1, y1, x2, y2, score), ``fps`` (),
``body_model`` () str, ``num_vertices`` () int, ``image_size`` (2,) width,
height, ``focal_length`` () pixels, ``track_ids`` (K,) int64.
"""
from __future__ import annotations

import io
import os
import re
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, Mapping, Optional

import numpy as np

from lib.atomic_io import atomic_write_bytes
from lib.errors import UserError

# Per-track arrays: name -> (trailing shape, dtype); N leads every per-frame array.
TRACK_FIELDS = {
    "frame_ids": ((), np.int64),
    "bboxes": ((4,), np.float32),
    "keypoints_2d": ((49, 3), np.float32),
    "pose": ((72,), np.float32),
    "cam": ((3,), np.float32),
    "transl": ((3,), np.float32),
    "joints3d": ((49, 3), np.float32),
    "joints2d": ((49, 2), np.float32),
}


@dataclass
class TrackResult:
    """One person's outputs (see the module docstring for shapes and units)."""

    frame_ids: np.ndarray
    bboxes: np.ndarray
    keypoints_2d: np.ndarray
    pose: np.ndarray
    betas: np.ndarray
    cam: np.ndarray
    transl: np.ndarray
    joints3d: np.ndarray
    joints2d: np.ndarray

    @property
    def num_frames(self) -> int:
        return int(self.frame_ids.shape[0])


@dataclass
class DemoResults:
    """Everything in a results.npz."""

    tracks: Dict[int, TrackResult]
    detections: np.ndarray  # (M, 6)
    fps: float
    body_model: str
    num_vertices: int
    image_size: tuple  # (width, height)
    focal_length: float
    extra: Dict[str, np.ndarray] = field(default_factory=dict)


def _check_track(tid: int, tr: TrackResult) -> None:
    n = np.asarray(tr.frame_ids).shape[0]
    for name, (tail, _) in TRACK_FIELDS.items():
        shape = np.asarray(getattr(tr, name)).shape
        if shape != (n,) + tail:
            raise ValueError(f"results: track {tid} field {name} has shape {shape}, expected {(n,) + tail}")
    if np.asarray(tr.betas).shape != (10,):
        raise ValueError(f"results: track {tid} betas has shape {np.asarray(tr.betas).shape}, expected (10,)")


def save_results(path: str | os.PathLike, results: DemoResults) -> Path:
    """Write ``results`` to ``path`` atomically (temp file + rename); returns the path."""
    arrays: Dict[str, np.ndarray] = {}
    for tid in sorted(results.tracks):
        tr = results.tracks[tid]
        _check_track(tid, tr)
        for name, (_, dtype) in TRACK_FIELDS.items():
            arrays[f"{tid}/{name}"] = np.ascontiguousarray(getattr(tr, name), dtype=dtype)
        arrays[f"{tid}/betas"] = np.asarray(tr.betas, dtype=np.float32)
    det = np.asarray(results.detections, dtype=np.float32).reshape(-1, 6)
    arrays["detections"] = det
    arrays["track_ids"] = np.array(sorted(results.tracks), dtype=np.int64)
    arrays["fps"] = np.array(float(results.fps), dtype=np.float64)
    arrays["body_model"] = np.array(str(results.body_model))
    arrays["num_vertices"] = np.array(int(results.num_vertices), dtype=np.int64)
    arrays["image_size"] = np.array(results.image_size, dtype=np.int64).reshape(2)
    arrays["focal_length"] = np.array(float(results.focal_length), dtype=np.float64)
    for k, v in results.extra.items():
        arrays[k] = np.asarray(v)
    buf = io.BytesIO()
    np.savez_compressed(buf, **arrays)
    path = Path(path)
    atomic_write_bytes(path, buf.getvalue())
    return path


def load_results(path: str | os.PathLike) -> DemoResults:
    """Read a results.npz written by :func:`save_results` (never unpickles).

    Raises:
        UserError: missing or unreadable file, or a missing/mis-shaped key (named).
    """
    path = Path(path)
    if not path.is_file():
        raise UserError(f"results file not found: {path}")
    try:
        with np.load(path, allow_pickle=False) as npz:
            data = {k: npz[k] for k in npz.files}
    except (OSError, ValueError, zipfile.BadZipFile) as err:
        raise UserError(f"{path}: not a readable results .npz ({err})") from None
    for key in ("detections", "fps", "body_model", "num_vertices", "image_size", "focal_length"):
        if key not in data:
            raise UserError(f"{path}: missing key {key!r}")
    tids = sorted({int(m.group(1)) for k in data if (m := re.fullmatch(r"(\d+)/pose", k))})
    tracks: Dict[int, TrackResult] = {}
    for tid in tids:
        fields = {}
        for name in list(TRACK_FIELDS) + ["betas"]:
            key = f"{tid}/{name}"
            if key not in data:
                raise UserError(f"{path}: track {tid} is missing key {key!r}")
            fields[name] = data[key]
        tr = TrackResult(**fields)
        try:
            _check_track(tid, tr)
        except ValueError as err:
            raise UserError(f"{path}: {err}") from None
        tracks[tid] = tr
    return DemoResults(
        tracks=tracks,
        detections=data["detections"].reshape(-1, 6),
        fps=float(data["fps"]),
        body_model=str(data["body_model"]),
        num_vertices=int(data["num_vertices"]),
        image_size=tuple(int(v) for v in data["image_size"]),
        focal_length=float(data["focal_length"]),
    )


def empty_results(fps: float, body_model: str, num_vertices: int, image_size, focal_length: float,
                  detections: Optional[np.ndarray] = None) -> DemoResults:
    """Valid results with no tracks (a video without people)."""
    det = np.zeros((0, 6), np.float32) if detections is None else detections
    return DemoResults({}, det, fps, body_model, num_vertices, tuple(image_size), focal_length)


def track_result_from_fit(track, fit) -> TrackResult:
    """Combine a front-end track (frame_ids, bboxes, keypoints_2d) with a fit result."""
    return TrackResult(
        frame_ids=np.asarray(track.frame_ids, dtype=np.int64), bboxes=np.asarray(track.bboxes, np.float32),
        keypoints_2d=np.asarray(track.keypoints_2d, np.float32), pose=fit.pose, betas=fit.betas, cam=fit.cam,
        transl=fit.transl, joints3d=fit.joints3d, joints2d=fit.joints2d,
    )


def results_summary(results: Mapping[int, TrackResult]) -> str:
    """'K tracks, F person-frames' for logs."""
    return f"{len(results)} tracks, {sum(t.num_frames for t in results.values())} person-frames"
