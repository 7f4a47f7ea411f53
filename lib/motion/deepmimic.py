"""DeepMimic humanoid clips retargeted to the 24-joint SMPL tree.

The clips (``humanoid3d_*.txt``, shipped with pybullet's data) are JSON with
``"Loop"`` ("wrap" or "none") and ``"Frames"``: one row of 44 numbers per key
frame::

    [duration,
     root position (3), root rotation (w, x, y, z),
     chest (wxyz), neck (wxyz),
     right hip (wxyz), right knee (1 angle), right ankle (wxyz),
     right shoulder (wxyz), right elbow (1 angle),
     left hip (wxyz), left knee (1 angle), left ankle (wxyz),
     left shoulder (wxyz), left elbow (1 angle)]

Rotations are local (child relative to parent); ``duration`` is the time to the
next key frame. The humanoid (``humanoid.urdf``, loaded by pybullet with a 0.25
global scale, which puts the clip numbers in metres) is y-up, faces +x and has
its right side at +z; in its rest pose every rotation is the identity, the arms
hang down and the knee/elbow hinges turn about the local z axis (knee angles
<= 0 bend the shin backwards, elbow angles >= 0 bend the forearm forwards).

Retargeting (see doc/motion.md):

- axes: SMPL is y-up, faces +z, left at +x, so a DeepMimic vector ``v`` becomes
  ``M v`` with ``M`` = rotation of -90 degrees about y, and a rotation ``R``
  becomes ``M R M^T``;
- joints: chest -> spine1/2/3 (a third of the rotation each, same axis), neck ->
  neck/head (half each), hips, knees, ankles map one to one; the shoulder's
  orientation goes to SMPL's shoulder, the collar takes a fraction of the arm's
  elevation (a shrug when the arm is raised), feet, wrists and hands stay at rest;
- rest poses: SMPL's arms point sideways (T-pose) where DeepMimic's hang down,
  so the arm chain's global rotations are composed with a fixed rest offset
  ``C`` (``C`` maps the SMPL rest bone onto the DeepMimic one) before locals are
  taken again: ``G_smpl = G_dm C``;
- root: ``Motion.transl`` is the DeepMimic root (hip centre) in metres with the
  ground at y = 0; :func:`body_transl` turns it into the ``transl`` a body model
  needs (scaled to the body's leg length, soles on the ground).
"""
from __future__ import annotations

import json
import logging
import math
import os
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Dict, List, Optional

import numpy as np
import roma
import torch

from lib.errors import MissingAssetError, UserError
from lib.joints.conventions import flip_permutation

logger = logging.getLogger(__name__)

FRAME_SIZE = 44
# Offsets in a frame row (after the duration at 0).
_QUAT_FIELDS = {
    "root": 4, "chest": 8, "neck": 12, "rhip": 16, "rankle": 21, "rshoulder": 25,
    "lhip": 30, "lankle": 35, "lshoulder": 39,
}
_ANGLE_FIELDS = {"rknee": 20, "relbow": 29, "lknee": 34, "lelbow": 43}

# Humanoid dimensions, from humanoid.urdf times pybullet's 0.25 global scale (metres).
URDF_SCALE = 0.25
DM_THIGH = 1.686184 * URDF_SCALE  # hip -> knee
DM_SHIN = 1.639480 * URDF_SCALE  # knee -> ankle
DM_LEG = DM_THIGH + DM_SHIN  # hip centre -> ankle, standing straight (0.831 m)
# Ankle joint above the sole: the foot box is centred 0.09 below the ankle and 0.22 high.
DM_ANKLE_HEIGHT = (0.09 + 0.11) * URDF_SCALE  # 0.05 m

# DeepMimic axes (x forward, y up, z right) -> SMPL axes (x left, y up, z forward).
AXES_DM_TO_SMPL = np.array([[0.0, 0.0, -1.0], [0.0, 1.0, 0.0], [1.0, 0.0, 0.0]])

# SMPL joint indices (lib.joints.conventions.SMPL_24 order).
PELVIS, LHIP, RHIP, SPINE1, LKNEE, RKNEE, SPINE2, LANKLE, RANKLE, SPINE3 = range(10)
LFOOT, RFOOT, NECK, LCOLLAR, RCOLLAR, HEAD, LSHOULDER, RSHOULDER = range(10, 18)
LELBOW, RELBOW, LWRIST, RWRIST, LHAND, RHAND = range(18, 24)

# Collar share of the arm's elevation: a raised arm lifts the shoulder girdle a
# little (about a quarter); a lowered arm drops it much less.
COLLAR_RAISE = 0.25
COLLAR_LOWER = 0.1


@dataclass
class Motion:
    """A motion on the SMPL 24-joint tree.

    name: clip name (file stem, "_mirror" appended by :func:`mirror`).
    pose: (N, 72) float32 axis-angle, radians, SMPL order, global orientation
        first; y-up world (SMPL axes).
    transl: (N, 3) float32, metres: world position of the root (hip centre)
        with the ground at y = 0, for a humanoid with DeepMimic's proportions
        (leg 0.83 m); use :func:`body_transl` to drive a particular body.
    fps: frames per second.
    loop: True if the clip is a cycle (DeepMimic "wrap"): its last frame
        continues into its first, see :func:`repeat`.
    """

    name: str
    pose: np.ndarray
    transl: np.ndarray
    fps: float
    loop: bool = False

    @property
    def num_frames(self) -> int:
        return int(self.pose.shape[0])

    @property
    def duration(self) -> float:
        """Seconds from the first to the last frame."""
        return (self.num_frames - 1) / self.fps

    @property
    def body_pose(self) -> np.ndarray:
        """(N, 69) axis-angle of joints 1..23."""
        return self.pose[:, 3:]


# --------------------------------------------------------------------------- rotations


def _t(x) -> torch.Tensor:
    return torch.as_tensor(np.asarray(x), dtype=torch.float64)


def _rotz(angle: float) -> torch.Tensor:
    return roma.rotvec_to_rotmat(_t([0.0, 0.0, angle]))


def _frac_rot(rotmat: torch.Tensor, frac: float) -> torch.Tensor:
    """R^frac about R's own axis: (..., 3, 3) -> (..., 3, 3)."""
    return roma.rotvec_to_rotmat(roma.rotmat_to_rotvec(rotmat) * frac)


def _interp_rotmats(rot: torch.Tensor, idx: torch.Tensor, frac: torch.Tensor) -> torch.Tensor:
    """Slerp between rot[idx] and rot[idx + 1]; rot (N, J, 3, 3), idx/frac (M,) -> (M, J, 3, 3)."""
    r0, r1 = rot[idx], rot[idx + 1]
    rel = roma.rotmat_to_rotvec(r0.transpose(-1, -2) @ r1)  # (M, J, 3)
    return r0 @ roma.rotvec_to_rotmat(rel * frac[:, None, None])


def _interp_index(times: np.ndarray, query: np.ndarray):
    """Left key index and fraction of each query time in sorted ``times``."""
    idx = np.clip(np.searchsorted(times, query, side="right") - 1, 0, len(times) - 2)
    span = np.maximum(times[idx + 1] - times[idx], 1e-9)
    frac = np.clip((query - times[idx]) / span, 0.0, 1.0)
    return torch.as_tensor(idx), _t(frac)


def _resample_arrays(rot: torch.Tensor, transl: np.ndarray, times: np.ndarray, fps: float):
    """Resample (N, J, 3, 3) rotations and (N, 3) positions keyed at ``times`` (s) to ``fps``."""
    if len(times) < 2:
        return rot, transl
    count = int(math.floor((times[-1] - times[0]) * fps + 1e-6)) + 1
    query = times[0] + np.arange(count) / fps
    idx, frac = _interp_index(times, query)
    rot_out = _interp_rotmats(rot, idx, frac)
    f = frac.numpy()[:, None]
    tr = transl[idx.numpy()] * (1 - f) + transl[idx.numpy() + 1] * f
    return rot_out, tr


def _pose_to_rotmats(pose: np.ndarray) -> torch.Tensor:
    return roma.rotvec_to_rotmat(_t(pose).reshape(pose.shape[0], 24, 3))


def _rotmats_to_pose(rot: torch.Tensor) -> np.ndarray:
    return roma.rotmat_to_rotvec(rot).reshape(rot.shape[0], 72).numpy().astype(np.float32)


# --------------------------------------------------------------------------- parsing


def read_frames(path: str | os.PathLike) -> tuple[np.ndarray, str]:
    """Read a DeepMimic clip: returns (K, 44) float64 key frames and the "Loop" mode."""
    path = Path(path)
    if not path.is_file():
        raise MissingAssetError(f"{path}: motion clip not found (run scripts/fetch_assets.sh)")
    try:
        data = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise UserError(f"{path}: not a DeepMimic motion file (invalid JSON: {exc})") from None
    if not isinstance(data, dict) or "Frames" not in data:
        raise UserError(f"{path}: not a DeepMimic motion file (no key 'Frames')")
    try:
        frames = np.asarray(data["Frames"], dtype=np.float64)
    except (TypeError, ValueError):
        raise UserError(f"{path}: 'Frames' must be rows of {FRAME_SIZE} numbers") from None
    if frames.ndim != 2 or frames.shape[1] != FRAME_SIZE or frames.shape[0] < 1:
        raise UserError(f"{path}: 'Frames' has shape {frames.shape}, expected (K, {FRAME_SIZE})")
    if not np.isfinite(frames).all():
        raise UserError(f"{path}: 'Frames' holds non-finite numbers")
    return frames, str(data.get("Loop", "none"))


def _quat(frames: np.ndarray, field: str) -> torch.Tensor:
    """(K, 4) w, x, y, z at ``field`` -> (K, 3, 3) rotation matrices."""
    start = _QUAT_FIELDS[field]
    wxyz = _t(frames[:, start:start + 4])
    xyzw = wxyz[:, [1, 2, 3, 0]]
    return roma.unitquat_to_rotmat(xyzw / xyzw.norm(dim=-1, keepdim=True).clamp_min(1e-12))


def retarget_frames(frames: np.ndarray) -> tuple[torch.Tensor, np.ndarray]:
    """DeepMimic key frames (K, 44) -> SMPL local rotations (K, 24, 3, 3) float64 and
    root positions (K, 3) metres in SMPL axes (ground at y = 0)."""
    k = frames.shape[0]
    m = _t(AXES_DM_TO_SMPL)

    def conv(rot: torch.Tensor) -> torch.Tensor:  # DeepMimic-axes rotation -> SMPL axes
        return m @ rot @ m.T

    def hinge(field: str) -> torch.Tensor:
        # DeepMimic's hinges turn about its local z, i.e. SMPL's -x. A few clips step up to
        # 0.22 rad past the URDF's limits (knees in [-pi, 0], elbows in [0, pi]): clamp.
        lo, hi = (-math.pi, 0.0) if field.endswith("knee") else (0.0, math.pi)
        angle = _t(frames[:, _ANGLE_FIELDS[field]]).clamp(lo, hi)
        rotvec = torch.zeros(k, 3, dtype=torch.float64)
        rotvec[:, 0] = -angle
        return roma.rotvec_to_rotmat(rotvec)

    rot = {name: conv(_quat(frames, name)) for name in _QUAT_FIELDS}
    eye = torch.eye(3, dtype=torch.float64).expand(k, 3, 3)
    out = eye.clone().unsqueeze(1).repeat(1, 24, 1, 1)
    out[:, PELVIS] = rot["root"]
    third = _frac_rot(rot["chest"], 1.0 / 3.0)
    for j in (SPINE1, SPINE2, SPINE3):
        out[:, j] = third
    half = _frac_rot(rot["neck"], 0.5)
    out[:, NECK] = half
    out[:, HEAD] = half
    for side, hip, knee, ankle in (("l", LHIP, LKNEE, LANKLE), ("r", RHIP, RKNEE, RANKLE)):
        out[:, hip] = rot[side + "hip"]
        out[:, knee] = hinge(side + "knee")
        out[:, ankle] = rot[side + "ankle"]

    down = _t([0.0, -1.0, 0.0])
    for side, sign, collar, shoulder, elbow in (
        ("l", 1.0, LCOLLAR, LSHOULDER, LELBOW), ("r", -1.0, RCOLLAR, RSHOULDER, RELBOW),
    ):
        # Rest offset: SMPL's arm bone (sign * x) onto DeepMimic's (down): a -/+90 degree turn about z.
        c = _rotz(-sign * math.pi / 2)
        r_sh = rot[side + "shoulder"]  # local to the chest (= SMPL spine3's global frame)
        arm_dir = r_sh @ down  # (K, 3) arm direction in the chest frame
        elevation = torch.asin(arm_dir[:, 1].clamp(-1.0, 1.0))
        lift = torch.where(elevation > 0, COLLAR_RAISE * elevation, COLLAR_LOWER * elevation)
        rotvec = torch.zeros(k, 3, dtype=torch.float64)
        rotvec[:, 2] = sign * lift  # about the forward axis: raises the lateral collar bone
        l_col = roma.rotvec_to_rotmat(rotvec)
        out[:, collar] = l_col
        out[:, shoulder] = l_col.transpose(-1, -2) @ r_sh @ c
        out[:, elbow] = c.T @ hinge(side + "elbow") @ c

    root_pos = frames[:, 1:4] @ AXES_DM_TO_SMPL.T
    return out, root_pos


def _heading_yaw(root_rot: torch.Tensor) -> torch.Tensor:
    """Yaw (about y) that turns the root's left axis onto +x: (..., 3, 3) -> (...)."""
    left = root_rot[..., :, 0]
    return torch.atan2(left[..., 2], left[..., 0])


def _roty(angle: torch.Tensor) -> torch.Tensor:
    rotvec = torch.zeros(angle.shape + (3,), dtype=torch.float64)
    rotvec[..., 1] = angle
    return roma.rotvec_to_rotmat(rotvec)


def _canonicalise(rot: torch.Tensor, transl: np.ndarray):
    """Turn about y so that frame 0 faces +z, and move its root above the origin."""
    turn = _roty(_heading_yaw(rot[0, PELVIS]))
    rot = rot.clone()
    rot[:, PELVIS] = turn @ rot[:, PELVIS]
    transl = transl.copy()
    transl[:, [0, 2]] -= transl[0, [0, 2]]
    transl = transl @ turn.numpy().T
    return rot, transl


def load_clip(path: str | os.PathLike, fps: float = 30.0, canonical: bool = True, cycles: int = 1) -> Motion:
    """Load a DeepMimic clip retargeted to SMPL and resampled to ``fps``.

    Args:
        path: ``humanoid3d_*.txt``.
        fps: output frame rate.
        canonical: turn the clip about the vertical so that frame 0 faces +z with the
            root above the origin (False keeps the clip's own heading, mapped to SMPL axes).
    Returns:
        :class:`Motion` (pose (N, 72) axis-angle, transl (N, 3) metres).
    """
    if fps <= 0:
        raise UserError(f"load_clip: fps must be positive, got {fps}")
    frames, loop = read_frames(path)
    rot, transl = retarget_frames(frames)
    times = np.concatenate([[0.0], np.cumsum(frames[:-1, 0])])
    if np.any(np.diff(times) < 0):
        raise UserError(f"{path}: negative frame duration")
    if cycles > 1 and loop == "wrap" and len(times) > 1:
        rot, transl = _chain_cycles(rot, transl, cycles)
        times = np.concatenate([times] + [times[1:] + c * times[-1] for c in range(1, cycles)])
    rot, transl = _resample_arrays(rot, transl, times, fps)
    if canonical:
        rot, transl = _canonicalise(rot, transl)
    return Motion(
        name=Path(path).stem.replace("humanoid3d_", ""),
        pose=_rotmats_to_pose(rot),
        transl=transl.astype(np.float32),
        fps=float(fps),
        loop=(loop == "wrap"),
    )


def load_all_clips(folder: str | os.PathLike = "data/assets/motions", fps: float = 30.0,
                   canonical: bool = True) -> List[Motion]:
    """All ``humanoid3d_*.txt`` clips in ``folder``, sorted by name."""
    folder = Path(folder)
    files = sorted(folder.glob("humanoid3d_*.txt"))
    if not files:
        raise MissingAssetError(f"{folder}: no humanoid3d_*.txt motion clips (run scripts/fetch_assets.sh)")
    return [load_clip(f, fps=fps, canonical=canonical) for f in files]


# --------------------------------------------------------------------------- editing

_FLIP = flip_permutation("smpl24")


def mirror(motion: Motion) -> Motion:
    """Left/right mirror image: reflect through the x = 0 (sagittal) plane and swap sides.

    A reflection S = diag(-1, 1, 1) turns a rotation R into S R S, i.e. the
    axis-angle (x, y, z) into (x, -y, -z); the joint order swaps left and right.
    """
    pose = motion.pose.reshape(-1, 24, 3)[:, _FLIP].copy()
    pose[..., 1:] *= -1
    transl = motion.transl.copy()
    transl[:, 0] *= -1
    name = motion.name[:-7] if motion.name.endswith("_mirror") else motion.name + "_mirror"
    return replace(motion, name=name, pose=pose.reshape(-1, 72), transl=transl)


def resample(motion: Motion, fps: float) -> Motion:
    """Resample to ``fps`` (slerp per joint, linear root); the duration is kept to within
    one output frame. A speed change is ``resample`` followed by relabelling ``fps``."""
    if fps <= 0:
        raise UserError(f"resample: fps must be positive, got {fps}")
    times = np.arange(motion.num_frames) / motion.fps
    rot, transl = _resample_arrays(_pose_to_rotmats(motion.pose), motion.transl.astype(np.float64), times, fps)
    return replace(motion, pose=_rotmats_to_pose(rot), transl=transl.astype(np.float32), fps=float(fps))


def _chain_cycles(rot: torch.Tensor, tr: np.ndarray, cycles: int):
    """Chain a cycle ``cycles`` times: each cycle starts where and how (heading) the previous
    one ended. Frame N-1 of a cycle is frame 0 of the next and is kept once.

    rot (N, 24, 3, 3) float64 locals, tr (N, 3) -> (C (N-1) + 1, 24, 3, 3), (C (N-1) + 1, 3)."""
    # The clips do not close exactly (e.g. walk's right shoulder is 0.24 rad off): spread
    # each joint's end-to-start mismatch linearly over the cycle so the seams are smooth.
    n = rot.shape[0]
    gap = roma.rotmat_to_rotvec(rot[-1, 1:].transpose(-1, -2) @ rot[0, 1:])  # (23, 3)
    ramp = torch.linspace(0.0, 1.0, n, dtype=torch.float64)[:, None, None]
    rot = rot.clone()
    rot[:, 1:] = rot[:, 1:] @ roma.rotvec_to_rotmat(ramp * gap)
    # Cycle-to-cycle change: the turn about y and the horizontal shift of the root.
    yaw = _heading_yaw(rot[-1, PELVIS]) - _heading_yaw(rot[0, PELVIS])
    turn = _roty(-yaw)
    turn_np = turn.numpy()
    p0 = tr[0]
    rots, trs = [rot], [tr]
    acc_rot, acc_np = torch.eye(3, dtype=torch.float64), np.eye(3)
    origin = tr[0].copy()
    for _ in range(cycles - 1):
        # This cycle starts at the previous cycle's last root position (horizontally).
        origin = origin + acc_np @ (tr[-1] - p0)
        acc_rot, acc_np = turn @ acc_rot, turn_np @ acc_np
        new_rot = rot[1:].clone()
        new_rot[:, PELVIS] = acc_rot @ new_rot[:, PELVIS]
        new_tr = (tr[1:] - p0) @ acc_np.T + origin
        new_tr[:, 1] = tr[1:, 1]
        rots.append(new_rot)
        trs.append(new_tr)
    return torch.cat(rots), np.concatenate(trs)


def repeat(motion: Motion, times: int) -> Motion:
    """Chain a looping motion ``times`` times (walks keep walking; the heading change of one
    cycle is applied again each cycle). Assumes the last frame is where the next cycle
    starts, which holds exactly for ``load_clip(..., cycles=k)`` key frames and to within
    one frame for resampled clips; prefer ``load_clip(path, fps, cycles=times)``.
    Non-looping motions are returned unchanged."""
    if times <= 1 or not motion.loop or motion.num_frames < 2:
        return motion
    rot, tr = _chain_cycles(_pose_to_rotmats(motion.pose), motion.transl.astype(np.float64), times)
    return replace(motion, pose=_rotmats_to_pose(rot), transl=tr.astype(np.float32))


# --------------------------------------------------------------------------- bodies


def body_transl(motion: Motion, rest_joints, sole_y: Optional[float] = None) -> np.ndarray:
    """``transl`` (N, 3) that makes a body of this shape perform ``motion`` on the ground.

    The clip's root (hip centre) path is scaled by the body's leg length over
    DeepMimic's, so strides and jumps fit the body, and lifted so that the soles
    stand on y = 0.

    Args:
        motion: the motion.
        rest_joints: (24, 3) shaped rest joints of the body (``BodyModelOutput.rest_joints[0]``), metres.
        sole_y: y of the sole in the rest pose (e.g. the lowest rest vertex); default:
            the ankle height scaled from DeepMimic's.
    Returns:
        (N, 3) float32 metres to pass as the body model's ``transl``.
    """
    rest = np.asarray(rest_joints.detach().cpu() if isinstance(rest_joints, torch.Tensor) else rest_joints,
                      dtype=np.float64).reshape(24, 3)
    hip_c = 0.5 * (rest[LHIP] + rest[RHIP])
    ankle_y = 0.5 * (rest[LANKLE, 1] + rest[RANKLE, 1])
    leg = hip_c[1] - ankle_y
    if leg <= 0:
        raise UserError(f"body_transl: rest joints have the ankles above the hips (leg {leg:.3f} m)")
    scale = leg / DM_LEG
    ankle_height = scale * DM_ANKLE_HEIGHT if sole_y is None else ankle_y - sole_y
    target = motion.transl.astype(np.float64) * scale
    target[:, 1] = scale * (motion.transl[:, 1] - DM_ANKLE_HEIGHT) + ankle_height
    # The pelvis rotates about its own joint; hips hang off it: hip_c(t) = J0 + R (hip_c - J0) + transl.
    root_rot = roma.rotvec_to_rotmat(_t(motion.pose[:, :3])).numpy()
    hip_now = np.einsum("nij,j->ni", root_rot, hip_c - rest[PELVIS])
    return (target - rest[PELVIS] - hip_now).astype(np.float32)


def motion_tensors(motion: Motion, device: Optional[str | torch.device] = None) -> Dict[str, torch.Tensor]:
    """Rotation matrices for the body layer: ``global_orient`` (N, 1, 3, 3), ``body_pose`` (N, 23, 3, 3)."""
    rot = roma.rotvec_to_rotmat(torch.as_tensor(motion.pose, dtype=torch.float32).reshape(-1, 24, 3))
    rot = rot.to(device) if device is not None else rot
    return {"global_orient": rot[:, :1], "body_pose": rot[:, 1:]}

