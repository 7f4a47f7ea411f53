"""Reading and checking a demo ``results.npz``, and turning tracks into motion.

Every exporter starts here: :func:`load_results` validates the file (one clear
error naming the file and key), :func:`track_motion` poses the body model once
per track and hands back everything the writers need, in one frame:

**Export frame** = glTF's y-up frame. The demo stores bodies in OpenCV camera
space (x right, y down, z forward); a rotation of pi about x turns that into
x right, y up, z towards the viewer, so a person in front of the camera ends up
in front of a default glTF/Blender camera looking down -z.
"""
from __future__ import annotations

import logging
import os
import re
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, Iterable, List, Optional, Sequence

import numpy as np
import torch

from lib.body_models.layer import NUM_JOINTS, BodyModelLayer
from lib.errors import UserError
from lib.geometry.rotations import axis_angle_to_matrix
from lib.joints.conventions import SMPL_24

logger = logging.getLogger(__name__)

EXPORT_FORMATS = ("glb", "fbx", "obj", "bvh")
DEFAULT_FPS = 30.0
# Joint names in the exported skeletons: SMPL_24 without the "smpl_" prefix.
JOINT_NAMES: List[str] = [n[len("smpl_"):] if n.startswith("smpl_") else n for n in SMPL_24]
# Camera space (OpenCV) -> export frame (y up): rotation of pi about x.
CAM_TO_EXPORT = np.diag([1.0, -1.0, -1.0])
TRACK_KEYS = ("frame_ids", "pose", "betas", "transl")


@dataclass
class Track:
    """One person's track as stored in results.npz (camera space, metres).

    frame_ids: (N,) int video frame index of each sample, strictly increasing.
    pose: (N, 72) axis-angle, SMPL order (root first).
    betas: (10,) shape.
    transl: (N, 3) metres, OpenCV camera space.
    """

    track_id: str
    frame_ids: np.ndarray
    pose: np.ndarray
    betas: np.ndarray
    transl: np.ndarray

    @property
    def num_frames(self) -> int:
        return int(self.frame_ids.shape[0])


@dataclass
class Results:
    """A validated results.npz: tracks plus the metadata exporters need."""

    path: Path
    fps: float
    body_model: Optional[str]
    num_vertices: Optional[int]
    tracks: Dict[str, Track]
    image_size: Optional[tuple] = None  # (width, height) pixels
    focal_length: Optional[float] = None  # pixels

    def camera(self) -> Optional[Dict[str, float]]:
        """Vertical field of view (radians) and aspect ratio of the video camera, if known."""
        if self.image_size is None or not self.focal_length or self.focal_length <= 0:
            return None
        width, height = self.image_size
        if width <= 0 or height <= 0:
            return None
        return {"yfov": float(2 * np.arctan(0.5 * height / self.focal_length)), "aspect": float(width / height)}


@dataclass
class TrackMotion:
    """A track posed with the body model, in the export frame (y up, metres).

    rest_vertices: (V, 3) shaped T-pose vertices in the model frame (the bind pose).
    rest_joints: (24, 3) shaped T-pose joints in the model frame.
    local_rot: (N, 24, 3, 3) joint rotations relative to the parent; the root's
        includes the camera -> export-frame flip.
    root_pos: (N, 3) world position of the root joint per frame.
    frame_ids: (N,) video frame index per sample.
    """

    track_id: str
    rest_vertices: np.ndarray
    rest_joints: np.ndarray
    local_rot: np.ndarray
    root_pos: np.ndarray
    frame_ids: np.ndarray
    fps: float

    @property
    def num_frames(self) -> int:
        return int(self.frame_ids.shape[0])


def _sort_key(tid: str):
    return (0, int(tid), "") if tid.isdigit() else (1, 0, tid)


def load_results(path: str | os.PathLike) -> Results:
    """Read and validate a demo ``results.npz``.

    Expected keys: per track id ``T``: ``T/frame_ids`` (N,), ``T/pose`` (N, 72),
    ``T/betas`` (10,), ``T/transl`` (N, 3); top level ``fps`` (scalar),
    ``body_model`` (string) and ``num_vertices`` (int). Missing metadata is
    tolerated with a warning (fps falls back to 30); missing or mis-shaped track
    arrays raise :class:`UserError` naming the file and key.
    """
    path = Path(path)
    if not path.is_file():
        raise UserError(f"results file not found: {path}")
    try:
        npz = np.load(path, allow_pickle=False)
    except (OSError, ValueError, zipfile.BadZipFile) as err:
        raise UserError(f"{path}: not a readable results .npz ({err})") from None
    with npz:
        keys = set(npz.files)
        try:
            data = {k: npz[k] for k in keys}
        except ValueError as err:  # object arrays need pickles, which we never load
            raise UserError(f"{path}: contains pickled objects, refusing to load ({err})") from None

    track_ids = sorted({m.group(1) for k in keys if (m := re.fullmatch(r"([^/]+)/pose", k))}, key=_sort_key)
    demo_file = "detections" in keys or "track_ids" in keys
    if not track_ids and demo_file and not any("/" in k for k in keys):
        # A valid demo result for a video without people: nothing to export.
        logger.warning("%s holds no tracks (no person found in the video)", path)
    elif not track_ids:
        prefixed = sorted({k.split("/", 1)[0] for k in keys if "/" in k})
        if prefixed:
            raise UserError(f"{path}: track(s) {', '.join(prefixed)} have no '<id>/pose' key")
        raise UserError(f"{path}: no tracks found (expected keys like '0/pose', '0/betas', '0/transl', '0/frame_ids')")

    fps = DEFAULT_FPS
    if "fps" in keys:
        fps = float(np.asarray(data["fps"]).reshape(-1)[0]) if np.asarray(data["fps"]).size else 0.0
        if not np.isfinite(fps) or fps <= 0:
            raise UserError(f"{path}: key 'fps' must be a positive number, got {data['fps']!r}")
    else:
        logger.warning("%s has no 'fps' key; assuming %.0f fps", path, DEFAULT_FPS)
    body_model = num_vertices = None
    try:
        if "body_model" in keys:
            body_model = str(np.asarray(data["body_model"]).reshape(()))
        if "num_vertices" in keys:
            num_vertices = int(np.asarray(data["num_vertices"]).reshape(()))
    except (TypeError, ValueError):
        raise UserError(f"{path}: keys 'body_model'/'num_vertices' must be a string and an integer") from None
    image_size = focal_length = None
    if "image_size" in keys and np.asarray(data["image_size"]).size == 2:
        image_size = tuple(int(x) for x in np.asarray(data["image_size"]).reshape(2))
    if "focal_length" in keys and np.asarray(data["focal_length"]).size == 1:
        focal_length = float(np.asarray(data["focal_length"]).reshape(()))

    tracks: Dict[str, Track] = {}
    for tid in track_ids:
        for name in TRACK_KEYS:
            if f"{tid}/{name}" not in keys:
                raise UserError(f"{path}: track {tid} is missing key '{tid}/{name}'")
        frame_ids = np.asarray(data[f"{tid}/frame_ids"]).astype(np.int64).reshape(-1)
        pose = np.asarray(data[f"{tid}/pose"], dtype=np.float64)
        betas = np.asarray(data[f"{tid}/betas"], dtype=np.float64)
        transl = np.asarray(data[f"{tid}/transl"], dtype=np.float64)
        n = frame_ids.shape[0]
        if betas.ndim == 2:  # per-frame betas: one shape per track is what a rig can hold
            betas = betas.mean(0)
        checks = [
            ("pose", pose, (n, NUM_JOINTS * 3)),
            ("betas", betas, (10,)),
            ("transl", transl, (n, 3)),
        ]
        for name, arr, shape in checks:
            if arr.shape != shape:
                raise UserError(f"{path}: key '{tid}/{name}' has shape {arr.shape}, expected {shape}")
            if not np.all(np.isfinite(arr)):
                raise UserError(f"{path}: key '{tid}/{name}' holds NaN or inf values")
        if n == 0:
            logger.warning("%s: track %s has no frames; skipped", path, tid)
            continue
        if np.any(np.diff(frame_ids) <= 0):
            raise UserError(f"{path}: key '{tid}/frame_ids' must be strictly increasing")
        tracks[tid] = Track(tid, frame_ids, pose, betas, transl)
    return Results(path=path, fps=fps, body_model=body_model, num_vertices=num_vertices, tracks=tracks,
                   image_size=image_size, focal_length=focal_length)


def check_body_model(results: Results, bm: BodyModelLayer) -> None:
    """Raise :class:`UserError` when ``results`` were made with another body model."""
    if results.body_model is not None and results.body_model != bm.kind:
        raise UserError(
            f"{results.path}: made with body model '{results.body_model}', but the '{bm.kind}' model "
            f"was loaded; export with --body_model {results.body_model}"
        )
    if results.num_vertices is not None and results.num_vertices != bm.num_vertices:
        raise UserError(
            f"{results.path}: made with a body model of {results.num_vertices} vertices, but the loaded "
            f"'{bm.kind}' model has {bm.num_vertices} (results from another body model or another build?)"
        )
    if results.body_model is None and results.num_vertices is None:
        logger.warning("%s does not say which body model made it; assuming '%s'", results.path, bm.kind)


def select_tracks(results: Results, tracks: Optional[Iterable] = None) -> List[Track]:
    """The tracks to export, in file order; ``tracks`` lists ids (unknown ids are an error)."""
    if tracks is None:
        return list(results.tracks.values())
    wanted = [str(t) for t in tracks]
    unknown = [t for t in wanted if t not in results.tracks]
    if unknown:
        raise UserError(
            f"{results.path}: no track(s) {', '.join(unknown)}; available: {', '.join(results.tracks) or 'none'}"
        )
    return [results.tracks[t] for t in wanted]


@torch.no_grad()
def track_motion(bm: BodyModelLayer, track: Track, fps: float) -> TrackMotion:
    """Pose-independent rig data and per-frame joint motion of one track (export frame)."""
    device = bm.v_template.device
    rot = axis_angle_to_matrix(torch.as_tensor(track.pose, dtype=torch.float64).reshape(-1, NUM_JOINTS, 3))
    betas = torch.as_tensor(track.betas, dtype=torch.float32, device=device)[None]
    rest_joints = (bm.j_template + torch.einsum("jcb,nb->njc", bm.j_shapedirs, betas))[0]
    rest_vertices = bm.v_template + torch.einsum("vcb,nb->nvc", bm.shapedirs, betas)[0]
    rest_joints = rest_joints.double().cpu().numpy()
    local_rot = rot.numpy().copy()
    # The layer rotates the root about the rest root joint, then adds transl.
    local_rot[:, 0] = CAM_TO_EXPORT @ local_rot[:, 0]
    root_pos = (rest_joints[0][None] + track.transl) @ CAM_TO_EXPORT.T
    return TrackMotion(
        track_id=track.track_id,
        rest_vertices=rest_vertices.double().cpu().numpy(),
        rest_joints=rest_joints,
        local_rot=local_rot,
        root_pos=root_pos,
        frame_ids=track.frame_ids.copy(),
        fps=fps,
    )


@torch.no_grad()
def track_vertices(bm: BodyModelLayer, track: Track, batch_size: int = 256) -> np.ndarray:
    """(N, V, 3) posed vertices in the export frame, straight from the body model
    (including pose correctives, which skinned formats cannot carry)."""
    device = bm.v_template.device
    out = []
    for s in range(0, track.num_frames, batch_size):
        pose = torch.as_tensor(track.pose[s:s + batch_size], dtype=torch.float32, device=device)
        rot = axis_angle_to_matrix(pose.reshape(-1, NUM_JOINTS, 3))
        betas = torch.as_tensor(track.betas, dtype=torch.float32, device=device)[None]
        transl = torch.as_tensor(track.transl[s:s + batch_size], dtype=torch.float32, device=device)
        verts = bm(global_orient=rot[:, :1], body_pose=rot[:, 1:], betas=betas, transl=transl).vertices
        out.append(verts.double().cpu().numpy() @ CAM_TO_EXPORT.T)
    return np.concatenate(out, 0)


def fill_gaps(motion: TrackMotion) -> TrackMotion:
    """Resample a track with missing frames onto every frame from first to last.

    Formats with a fixed frame rate (BVH, FBX) need one sample per frame; rotations
    are slerped and the root position is interpolated linearly across each gap.
    """
    ids = motion.frame_ids
    full = np.arange(ids[0], ids[-1] + 1)
    if full.shape[0] == ids.shape[0]:
        return motion
    import roma

    pos = np.searchsorted(ids, full, side="right") - 1  # sample at or before each frame
    pos = np.clip(pos, 0, len(ids) - 2)
    alpha = (full - ids[pos]) / (ids[pos + 1] - ids[pos])
    q = roma.rotmat_to_unitquat(torch.as_tensor(motion.local_rot))
    q0, q1 = q[pos], q[pos + 1]
    steps = torch.as_tensor(alpha)[:, None].expand(-1, NUM_JOINTS).reshape(-1)
    qi = _slerp(q0.reshape(-1, 4), q1.reshape(-1, 4), steps).reshape(-1, NUM_JOINTS, 4)
    local_rot = roma.unitquat_to_rotmat(qi).numpy()
    root = motion.root_pos[pos] * (1 - alpha[:, None]) + motion.root_pos[pos + 1] * alpha[:, None]
    logger.info("track %s: filled %d missing frames", motion.track_id, full.shape[0] - ids.shape[0])
    return TrackMotion(motion.track_id, motion.rest_vertices, motion.rest_joints, local_rot, root, full, motion.fps)


def _slerp(q0: torch.Tensor, q1: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """(M, 4) x (M, 4) x (M,) -> (M, 4) shortest-path slerp (x, y, z, w)."""
    dot = (q0 * q1).sum(-1)
    q1 = torch.where(dot[:, None] < 0, -q1, q1)
    dot = dot.abs().clamp(max=1.0)
    theta = torch.acos(dot)
    sin = torch.sin(theta)
    small = sin < 1e-6
    w0 = torch.where(small, 1 - t, torch.sin((1 - t) * theta) / torch.where(small, 1.0, sin))
    w1 = torch.where(small, t, torch.sin(t * theta) / torch.where(small, 1.0, sin))
    q = w0[:, None] * q0 + w1[:, None] * q1
    return q / q.norm(dim=-1, keepdim=True)


def continuous_quaternions(quat: np.ndarray) -> np.ndarray:
    """(N, J, 4) quaternions with signs flipped so consecutive samples of a joint
    have a non-negative dot product (q and -q are the same rotation, but players
    interpolate the 4-vectors, so a sign flip would spin the joint the long way)."""
    quat = np.asarray(quat).copy()
    if quat.shape[0] < 2:
        return quat
    dots = (quat[1:] * quat[:-1]).sum(-1)  # (N-1, J)
    flips = np.where(dots < 0, -1.0, 1.0)
    signs = np.concatenate([np.ones((1,) + flips.shape[1:]), np.cumprod(flips, axis=0)], 0)
    return quat * signs[..., None]


def track_stem(results: Results, track_id: str) -> str:
    """File stem for one track's export: ``<results stem>_track<T>``."""
    return f"{results.path.parent.name or results.path.stem}_track{track_id}"


def parse_formats(formats: str | Sequence[str]) -> List[str]:
    """"glb,fbx" or ["glb", "fbx"] -> validated, de-duplicated list."""
    if isinstance(formats, str):
        formats = formats.split(",")
    out = []
    for f in formats:
        f = f.strip().lower().lstrip(".")
        if not f:
            continue
        if f not in EXPORT_FORMATS:
            raise UserError(f"unknown export format {f!r}; choose from {', '.join(EXPORT_FORMATS)}")
        if f not in out:
            out.append(f)
    if not out:
        raise UserError(f"no export format given; choose from {', '.join(EXPORT_FORMATS)}")
    return out
