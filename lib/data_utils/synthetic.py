"""Synthetic people in the dataset schema, from a body model driven by real motion.

Motion: the DeepMimic humanoid clips retargeted to the SMPL tree
(:func:`lib.motion.deepmimic.load_clip`); when that module or the clips are
unavailable a procedural walk stands in (so tests run anywhere).

Every sequence: a clip segment at a random speed (0.8-1.25x), optionally
mirrored, turned to a random heading, with a random body shape, seen by a
random pinhole camera (height, distance, focal length, pitch). Stored per frame:
- ``pose`` (camera-frame global orientation) and ``shape``: exact;
- ``joints3D``: the body model's 49 joints in the camera frame (metres), all valid;
- ``joints2D``: projections with annotation-like noise in the ground-truth
  slots (25-48) and detector-like noise, outliers and dropouts in the OpenPose
  slots (0-24); joints outside the image get confidence 0;
- ``bbox``: a box around the projected joints (x1.2);
- ``features``: a fixed random projection of the 6D pose and the betas plus a
  per-video "appearance" offset and per-frame noise (float16), standing in for
  backbone features so the SMPL branch has something learnable.
"""
from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Sequence

import numpy as np
import torch

from lib.data_utils.motion_utils import bbox_from_keypoints, mirror_smpl, resample_motion
from lib.geometry.rotations import axis_angle_to_matrix, matrix_to_axis_angle, matrix_to_rot6d

logger = logging.getLogger(__name__)

FEATURE_SEED = 20240601  # fixed: train and test sets must share the feature projection
OP_SLOTS = slice(0, 25)  # OpenPose BODY_25 slots of spin49 (detector-like)
GT_SLOTS = slice(25, 49)  # ground-truth style slots


@dataclass
class Clip:
    """A motion clip in the SMPL body frame (y up, facing +z at rest)."""

    name: str
    pose: np.ndarray  # (N, 72) axis-angle
    transl: np.ndarray  # (N, 3) metres: root (hip centre) path, ground at y = 0 (lib.motion.deepmimic.Motion)
    fps: float


def procedural_walk(seconds: float = 4.0, fps: float = 30.0, speed: float = 1.3, name: str = "procwalk") -> Clip:
    """A simple sinusoidal walk along +z (hips, knees, ankles, arms, pelvis bob)."""
    n = int(round(seconds * fps))
    t = np.arange(n) / fps
    ph = 2 * math.pi * 0.9 * t  # ~0.9 strides per second
    pose = np.zeros((n, 24, 3), np.float32)
    # Rotation about +x swings a hanging limb backwards (towards -z); facing +z,
    # a forward swing is negative.
    pose[:, 1, 0] = -0.45 * np.sin(ph)  # left hip
    pose[:, 2, 0] = 0.45 * np.sin(ph)  # right hip
    pose[:, 4, 0] = 0.15 + 0.5 * np.clip(np.sin(ph - 1.2), 0, None)  # left knee
    pose[:, 5, 0] = 0.15 + 0.5 * np.clip(np.sin(ph + math.pi - 1.2), 0, None)  # right knee
    pose[:, 7, 0] = -0.1 * np.sin(ph)
    pose[:, 8, 0] = 0.1 * np.sin(ph)
    pose[:, 16, 2] = -1.25  # arms down from the T-pose
    pose[:, 17, 2] = 1.25
    pose[:, 16, 1] = -0.35 * np.sin(ph)  # arm swing (opposite to the same-side leg)
    pose[:, 17, 1] = -0.35 * np.sin(ph)
    pose[:, 18, 1] = -0.3
    pose[:, 19, 1] = 0.3
    pose[:, 0, 1] = 0.08 * np.sin(ph)  # pelvis yaw
    # Root (hip centre) path with the ground at y = 0, DeepMimic proportions (leg 0.83 m).
    transl = np.stack([np.zeros(n), 0.87 + 0.02 * np.cos(2 * ph), speed * t], -1).astype(np.float32)
    return Clip(name, pose.reshape(n, 72), transl, fps)


def load_clips(motion_dir: Optional[str | Path] = None, pattern: str = "humanoid3d_*.txt",
               fps: float = 30.0, cycles: int = 4) -> List[Clip]:
    """The DeepMimic clips retargeted to SMPL (looping clips chained ``cycles`` times);
    a procedural walk if the clips or the retargeting module are unavailable."""
    clips: List[Clip] = []
    files = sorted(Path(motion_dir).glob(pattern)) if motion_dir else []
    if files:
        try:
            from lib.motion.deepmimic import load_clip
        except ImportError as err:
            logger.warning("lib.motion.deepmimic not available (%s); using a procedural walk", err)
            files = []
        for f in files:
            m = load_clip(f, fps=fps)
            if getattr(m, "loop", False) and cycles > 1:
                m = load_clip(f, fps=fps, cycles=cycles)
            clips.append(Clip(m.name, np.asarray(m.pose, np.float32).reshape(-1, 72),
                              np.asarray(m.transl, np.float32).reshape(-1, 3), float(m.fps)))
    if not clips:
        if motion_dir:
            logger.warning("no motion clips %s in %s; using a procedural walk", pattern, motion_dir)
        clips = [procedural_walk()]
    return clips


def clip_segment(clip: Clip, length: int, rng: np.random.Generator) -> tuple:
    """Up to ``length`` frames of ``clip`` from a random start (the whole clip if shorter)."""
    n = len(clip.pose)
    length = min(length, n)
    s = int(rng.integers(0, n - length + 1))
    return clip.pose[s:s + length], clip.transl[s:s + length]


def root_path_to_transl(pose: np.ndarray, root_path: np.ndarray, rest_joints: np.ndarray) -> np.ndarray:
    """Body-model ``transl`` (N, 3) making a body with ``rest_joints`` (24, 3) follow a root path
    given for DeepMimic's proportions (via :func:`lib.motion.deepmimic.body_transl` when present)."""
    try:
        from lib.motion.deepmimic import Motion, body_transl
    except ImportError:  # scaled hip-centre path, no sole correction
        hip_c = 0.5 * (rest_joints[1] + rest_joints[2])
        scale = (hip_c[1] - 0.5 * (rest_joints[7, 1] + rest_joints[8, 1])) / 0.83
        root_rot = axis_angle_to_matrix(torch.from_numpy(pose[:, :3].astype(np.float64))).numpy()
        return (root_path * scale - rest_joints[0] - root_rot @ (hip_c - rest_joints[0])).astype(np.float32)
    return body_transl(Motion("x", pose, root_path, 30.0), rest_joints)


class FeatureProjector:
    """Pose-carrying stand-in features: W [6D pose (144) | betas (10)] + b, fixed W."""

    def __init__(self, dim: int = 2048, seed: int = FEATURE_SEED):
        g = np.random.default_rng(seed)
        # Scaled so the pose signal (6D entries vary by ~0.1-0.5 within a motion) stands
        # well above the appearance offset and noise added below.
        self.weight = (3.0 * g.normal(size=(154, dim)) / math.sqrt(154)).astype(np.float32)
        self.bias = g.normal(0.0, 0.1, size=dim).astype(np.float32)
        self.dim = dim

    def __call__(self, pose: np.ndarray, betas: np.ndarray, rng: np.random.Generator,
                 appearance: float = 0.2, noise: float = 0.1) -> np.ndarray:
        """(N, 72) axis-angle + (N, 10) betas -> (N, dim) float16."""
        n = len(pose)
        rot6d = matrix_to_rot6d(axis_angle_to_matrix(torch.from_numpy(pose.reshape(n, 24, 3)))).numpy()
        x = np.concatenate([rot6d.reshape(n, 144), betas], 1).astype(np.float32)
        feat = x @ self.weight + self.bias
        feat += appearance * rng.normal(size=(1, self.dim)).astype(np.float32)  # per video
        feat += noise * rng.normal(size=feat.shape).astype(np.float32)
        return feat.astype(np.float16)


def _rot_x(a: float) -> np.ndarray:
    c, s = math.cos(a), math.sin(a)
    return np.array([[1, 0, 0], [0, c, -s], [0, s, c]])


def _rot_y(a: float) -> np.ndarray:
    c, s = math.cos(a), math.sin(a)
    return np.array([[c, 0, s], [0, 1, 0], [-s, 0, c]])


@dataclass
class SyntheticSequence:
    """One synthetic person sequence; world frame y up, camera frame OpenCV."""

    name: str
    pose_world: np.ndarray  # (T, 72)
    transl_world: np.ndarray  # (T, 3) SMPL transl in the world frame
    betas: np.ndarray  # (10,)
    cam_rot: np.ndarray  # (3, 3) world -> camera
    cam_pos: np.ndarray  # (3,) camera centre in the world, metres
    focal: float
    img_size: tuple  # (w, h)

    def camera_params(self, rest_root: np.ndarray):
        """Camera-frame SMPL parameters: pose (T, 72) and transl (T, 3) such that the
        body layer with them gives camera-frame points (``rest_root``: (3,) shaped root joint)."""
        t = len(self.pose_world)
        go = axis_angle_to_matrix(torch.from_numpy(self.pose_world[:, :3].astype(np.float64))).numpy()
        go_c = self.cam_rot[None] @ go
        pose = self.pose_world.copy()
        pose[:, :3] = matrix_to_axis_angle(torch.from_numpy(go_c)).numpy()
        # X_c = R (X_w - C) and X_w = G (x - J0) + J0 + transl  =>  X_c = R G (x - J0) + J0 + transl_c
        transl = (self.transl_world + rest_root - self.cam_pos) @ self.cam_rot.T - rest_root
        return pose.astype(np.float32), transl.reshape(t, 3).astype(np.float32)


def sample_sequence(clips: Sequence[Clip], rng: np.random.Generator, name: str, length: int,
                    rest_joints_fn, fps: float = 30.0, img_size=(1280, 720), mirror_prob: float = 0.5,
                    speed_range=(0.8, 1.25), beta_std: float = 1.0, lateral: float = 0.0) -> SyntheticSequence:
    """Draw motion, shape and camera for one person (see the module docstring).

    ``rest_joints_fn(betas (10,)) -> (24, 3)`` gives the shaped rest joints of the body model.
    """
    clip = clips[int(rng.integers(len(clips)))]
    betas = np.clip(rng.normal(0.0, beta_std, 10), -3 * beta_std, 3 * beta_std).astype(np.float32)
    rest = np.asarray(rest_joints_fn(betas), np.float64)
    speed = float(rng.uniform(*speed_range))
    pose, path = resample_motion(clip.pose, clip.transl, clip.fps * speed, fps)
    pose, path = clip_segment(Clip(clip.name, pose, path, fps), length, rng)
    if rng.random() < mirror_prob:
        pose, path = mirror_smpl(pose, path)
    transl = root_path_to_transl(pose, path, rest).astype(np.float64)
    # Turn the whole motion to a random heading about the world vertical through the origin:
    # X' = Ry X with X = G (x - J0) + J0 + transl  =>  G' = Ry G, transl' = Ry (J0 + transl) - J0.
    ry = _rot_y(float(rng.uniform(0, 2 * math.pi)))
    go = axis_angle_to_matrix(torch.from_numpy(pose[:, :3].astype(np.float64))).numpy()
    pose = pose.copy()
    pose[:, :3] = matrix_to_axis_angle(torch.from_numpy(ry[None] @ go)).numpy()
    root = rest[0]
    transl = (transl + root) @ ry.T - root
    path = transl + root
    centre = path.mean(0)
    height = float(rng.uniform(0.8, 2.0))
    focal = float(rng.uniform(0.8, 1.5)) * max(img_size)
    # Far enough that the whole root path (+ an arm's length) stays inside ~90% of
    # the image width and the body (<= 1.9 m with raised arms) inside ~85% of its
    # height, and at least 2.5 m in front of the nearest point of the path.
    half_width = 0.5 * float(np.ptp(path[:, 0])) + 0.6 + abs(lateral)
    dist = max(float(rng.uniform(4.0, 9.0)), half_width * focal / (0.45 * img_size[0]),
               1.9 * focal / (0.85 * img_size[1]))
    cam_z = min(centre[2] - dist, float(path[:, 2].min()) - 2.5)
    dist = centre[2] - cam_z
    pitch = math.atan2(height - 0.9, dist)  # look down (or up) at the body's middle
    # Camera: x right, y down, z forward; looking along world +z, pitched.
    cam_rot = _rot_x(pitch) @ np.diag([-1.0, -1.0, 1.0])
    cam_pos = np.array([centre[0] + lateral, height, cam_z])
    return SyntheticSequence(name, pose.astype(np.float32), transl.astype(np.float32), betas, cam_rot, cam_pos,
                             focal, tuple(img_size))


def project(points: np.ndarray, focal: float, img_size) -> np.ndarray:
    """(..., 3) camera-frame metres -> (..., 2) pixels (principal point at the image centre)."""
    z = np.clip(points[..., 2:3], 1e-3, None)
    return points[..., :2] / z * focal + np.array([img_size[0] / 2, img_size[1] / 2])


def simulate_keypoints(gt2d: np.ndarray, img_size, rng: np.random.Generator, det_noise: float = 0.015,
                       gt_noise: float = 0.004, outlier_prob: float = 0.02, dropout: float = 0.05,
                       limb_dropout: float = 0.02) -> np.ndarray:
    """(T, 49, 2) exact pixels -> (T, 49, 3) noisy keypoints + confidence.

    Noise scales with the person's height in pixels: GT slots get annotation
    noise ``gt_noise``, OpenPose slots detector noise ``det_noise`` plus
    outliers (a displacement of up to a quarter of the height, low confidence),
    random joint dropouts and whole-frame limb dropouts (occlusions).
    """
    t = gt2d.shape[0]
    h = (gt2d[..., 1].max(-1) - gt2d[..., 1].min(-1)).clip(min=10.0)[:, None, None]  # (T, 1, 1)
    kp = np.zeros(gt2d.shape[:2] + (3,), np.float32)
    kp[:, GT_SLOTS, :2] = gt2d[:, GT_SLOTS] + rng.normal(0, gt_noise, (t, 24, 2)) * h
    kp[:, GT_SLOTS, 2] = 1.0
    err = rng.normal(0, det_noise, (t, 25, 2)) * h
    out = rng.random((t, 25)) < outlier_prob
    err[out] += rng.uniform(-0.25, 0.25, (int(out.sum()), 2)) * np.broadcast_to(h, (t, 25, 1))[out]
    kp[:, OP_SLOTS, :2] = gt2d[:, OP_SLOTS] + err
    e = np.linalg.norm(err, axis=-1) / h[..., 0]
    kp[:, OP_SLOTS, 2] = np.clip(1.0 - 3.0 * e + rng.normal(0, 0.05, (t, 25)), 0.05, 1.0)
    drop = rng.random((t, 25)) < dropout
    # Occluded limb: an arm (op 2-4 or 5-7) or leg (op 9-11 or 12-14) of one frame.
    limbs = [(2, 5), (5, 8), (9, 12), (12, 15)]
    for f in np.nonzero(rng.random(t) < limb_dropout)[0]:
        a, b = limbs[int(rng.integers(4))]
        drop[f, a:b] = True
    kp[:, OP_SLOTS][drop] = 0.0  # basic slicing gives a view, so this writes into kp
    w, hh = img_size
    outside = (kp[..., 0] < 0) | (kp[..., 0] >= w) | (kp[..., 1] < 0) | (kp[..., 1] >= hh)
    kp[outside] = 0.0
    return kp


def body_joints(body_model, pose: np.ndarray, betas: np.ndarray, transl: np.ndarray, batch: int = 2048,
                vertices: bool = False):
    """Run the body layer in batches: (T, 72), (10,) or (T, 10), (T, 3) -> (T, 49, 3) joints
    (and (T, V, 3) vertices when asked) in the frame of ``pose``/``transl``."""
    t = len(pose)
    betas = np.broadcast_to(np.asarray(betas, np.float32), (t, 10))
    joints, verts = [], []
    with torch.no_grad():
        for lo in range(0, t, batch):
            hi = min(lo + batch, t)
            rot = axis_angle_to_matrix(torch.from_numpy(np.array(pose[lo:hi], np.float32)).reshape(-1, 24, 3))
            out = body_model(global_orient=rot[:, :1], body_pose=rot[:, 1:],
                             betas=torch.from_numpy(np.array(betas[lo:hi])),
                             transl=torch.from_numpy(np.array(transl[lo:hi], np.float32)),
                             joints_only=not vertices)
            joints.append(out.joints.numpy())
            if vertices:
                verts.append(out.vertices.numpy())
    j = np.concatenate(joints)
    return (j, np.concatenate(verts)) if vertices else j


def rest_joints(body_model, betas: np.ndarray) -> np.ndarray:
    """(24, 3) shaped rest joints of ``body_model`` for ``betas`` (10,)."""
    b = torch.from_numpy(np.asarray(betas, np.float32)[None])
    with torch.no_grad():
        return (body_model.j_template + torch.einsum("jcb,nb->njc", body_model.j_shapedirs, b)[0]).numpy()


def make_people_fields(body_model, clips: Sequence[Clip], num_sequences: int, rng: np.random.Generator,
                       min_len: int = 60, max_len: int = 240, fps: float = 30.0, img_size=(1280, 720),
                       prefix: str = "syn", projector: Optional[FeatureProjector] = None,
                       with_3d: bool = True) -> Dict[str, np.ndarray]:
    """Frame-aligned schema fields for ``num_sequences`` synthetic people."""
    projector = projector or FeatureProjector()
    parts: Dict[str, List[np.ndarray]] = {k: [] for k in (
        "vid_name", "frame_id", "img_name", "bbox", "joints2D", "joints3D", "pose", "shape", "features", "valid")}
    rj = lambda b: rest_joints(body_model, b)  # noqa: E731
    for i in range(num_sequences):
        seq = sample_sequence(clips, rng, f"{prefix}{i:05d}", int(rng.integers(min_len, max_len + 1)), rj,
                              fps=fps, img_size=img_size)
        length = len(seq.pose_world)
        pose_c, transl_c = seq.camera_params(rj(seq.betas)[0])
        j3d = body_joints(body_model, pose_c, seq.betas, transl_c)
        gt2d = project(j3d, seq.focal, img_size)
        kp = simulate_keypoints(gt2d, img_size, rng)
        bbox = bbox_from_keypoints(np.concatenate([gt2d, np.ones(gt2d.shape[:2] + (1,))], -1), scale=1.2)
        valid = ((kp[:, GT_SLOTS, 2] > 0).sum(-1) >= 6) & (j3d[:, :, 2].min(-1) > 0.3)
        betas = np.tile(seq.betas, (length, 1))
        parts["vid_name"].append(np.array([f"{seq.name}_0"] * length))
        parts["frame_id"].append(np.arange(length))
        parts["img_name"].append(np.array([""] * length))
        parts["bbox"].append(bbox)
        parts["joints2D"].append(kp)
        parts["joints3D"].append(np.concatenate([j3d, np.ones(j3d.shape[:2] + (1,), np.float32)], -1))
        parts["pose"].append(pose_c)
        parts["shape"].append(betas)
        parts["features"].append(projector(pose_c, betas, rng))
        parts["valid"].append(valid.astype(np.uint8))
    fields = {k: np.concatenate(v) for k, v in parts.items()}
    if not with_3d:  # a 2D-only set (like InstaVariety): keypoints + features only
        for k in ("joints3D", "pose", "shape"):
            del fields[k]
    return fields


def make_motion_fields(clips: Sequence[Clip], copies: int, rng: np.random.Generator, fps: float = 30.0,
                       beta_std: float = 1.0) -> Dict[str, np.ndarray]:
    """An AMASS-schema motion set: every clip ``copies`` times at random speeds,
    mirrored half of the time, with random headings; pose in the SMPL body frame."""
    parts: Dict[str, List[np.ndarray]] = {k: [] for k in ("vid_name", "frame_id", "pose", "shape")}
    for clip in clips:
        for c in range(copies):
            pose, _ = resample_motion(clip.pose, None, clip.fps * float(rng.uniform(0.8, 1.25)), fps)
            if rng.random() < 0.5:
                pose, _ = mirror_smpl(pose)
            ry = _rot_y(float(rng.uniform(0, 2 * math.pi)))
            go = axis_angle_to_matrix(torch.from_numpy(pose[:, :3].astype(np.float64))).numpy()
            pose = pose.copy()
            pose[:, :3] = matrix_to_axis_angle(torch.from_numpy(ry[None] @ go)).numpy()
            n = len(pose)
            parts["vid_name"].append(np.array([f"{clip.name}{c:03d}_0"] * n))
            parts["frame_id"].append(np.arange(n))
            parts["pose"].append(pose.astype(np.float32))
            parts["shape"].append(np.tile(rng.normal(0, beta_std, 10).astype(np.float32), (n, 1)))
    return {k: np.concatenate(v) for k, v in parts.items()}
