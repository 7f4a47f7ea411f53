"""Temporal SMPLify: fit per-frame pose, one shape per track and per-frame camera
translation to tracked 2D keypoints (plus BlazePose 3D landmarks as a weak cue).

Camera: a pinhole with ``focal_length`` pixels and the principal point at the
image centre; the fitted ``transl`` is the body's camera-space translation
(OpenCV axes: x right, y down, z forward, metres), so the camera-space joints are
``body_model(pose, betas).joints + transl``.

Objective per person-frame (weights in :class:`FitWeights`):

- robust 2D reprojection: Geman-McClure on the residual in units of box height,
  weighted by keypoint confidence and a per-joint weight (detector hips sit higher
  and wider than SMPL hip joints, so they count less);
- 3D bone directions: 1 - cos between model bones and the detector's 3D world
  landmarks (same axes as the camera), a weak cue that settles depth ambiguities
  such as which way a limb points;
- pose prior + joint-angle limits, shape prior, a weak pull of the depth towards
  its box-height estimate;
- temporal smoothness: acceleration of camera-space joints, velocity of body pose
  and global orientation along each track.

Speed: the loop evaluates only the 25 detector joints (SMPL joints + keypoint
vertices) with :class:`lib.smplify.kinematics.FastJoints` (level-wise forward
kinematics; the layer's ``joints_only=True`` path for models with pose blend
shapes), batches every track of a time window
into one problem, and carries each track's shape and last frames into the next
window (warm start + smoothness across the seam). Full meshes are skinned only
afterwards, by whoever needs them (the renderer).
"""
from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np
import torch
from tqdm import tqdm

from lib.geometry.camera import default_focal_length
from lib.geometry.rotations import axis_angle_to_matrix, matrix_to_axis_angle, matrix_to_rot6d, rot6d_to_matrix
from lib.joints.conventions import SPIN_49, convert_kps
from lib.smplify.kinematics import NUM_OP, FastJoints
from lib.smplify.priors import hinge_joint_limits, load_priors, quadratic_pose_prior

logger = logging.getLogger(__name__)

_IDX = {n: i for i, n in enumerate(SPIN_49)}

# Joints fitted in 2D (detector slots of the 49-joint format) and their weights.
_FACE_W, _FOOT_W = 0.5, 0.5
FIT_JOINT_WEIGHTS: Dict[str, float] = {
    "op_nose": 1.0, "op_reye": _FACE_W, "op_leye": _FACE_W, "op_rear": _FACE_W, "op_lear": _FACE_W,
    "op_neck": 1.0, "op_rshoulder": 1.0, "op_relbow": 1.0, "op_rwrist": 1.0,
    "op_lshoulder": 1.0, "op_lelbow": 1.0, "op_lwrist": 1.0,
    "op_rhip": 1.0, "op_lhip": 1.0,  # scaled by FitWeights.hip
    "op_rknee": 1.0, "op_rankle": 1.0, "op_lknee": 1.0, "op_lankle": 1.0,
    "op_lbigtoe": _FOOT_W, "op_rbigtoe": _FOOT_W, "op_lheel": _FOOT_W, "op_rheel": _FOOT_W,
}
FIT_JOINTS = [_IDX[n] for n in FIT_JOINT_WEIGHTS]

# Bones compared with the detector's 3D landmarks (parent, child) in SPIN_49 slots.
_BONE_NAMES = [
    ("op_lshoulder", "op_lelbow"), ("op_lelbow", "op_lwrist"),
    ("op_rshoulder", "op_relbow"), ("op_relbow", "op_rwrist"),
    ("op_lhip", "op_lknee"), ("op_lknee", "op_lankle"),
    ("op_rhip", "op_rknee"), ("op_rknee", "op_rankle"),
    ("op_rshoulder", "op_lshoulder"), ("op_rhip", "op_lhip"),
    ("op_lankle", "op_lbigtoe"), ("op_rankle", "op_rbigtoe"),
]
BONES = np.array([[_IDX[a], _IDX[b]] for a, b in _BONE_NAMES], dtype=np.int64)
_LSH, _RSH, _LHIP, _RHIP = (_IDX[n] for n in ("op_lshoulder", "op_rshoulder", "op_lhip", "op_rhip"))


@dataclass
class FitWeights:
    """Loss weights (see the module docstring); defaults = lib/core/config.py SMPLIFY.*."""

    kp2d: float = 1.0
    bone3d: float = 0.5
    pose_prior: float = 0.002
    joint_limit: float = 0.1
    shape: float = 0.005
    smooth_joints: float = 50.0
    smooth_pose: float = 2.0
    depth: float = 0.01
    sigma: float = 0.1
    hip: float = 0.3


@dataclass
class FitResult:
    """Fitted parameters of one track, all numpy float32, N = frames of the track.

    pose: (N, 72) axis-angle, global orientation first (camera frame).
    betas: (10,) shape.
    transl: (N, 3) metres, camera space.
    cam: (N, 3) weak-perspective (s, tx, ty) of the crop given by the track's boxes.
    joints3d: (N, 49, 3) metres, camera space, SPIN_49 order.
    joints2d: (N, 49, 2) pixels, perspective projection of ``joints3d``.
    """

    pose: np.ndarray
    betas: np.ndarray
    transl: np.ndarray
    cam: np.ndarray
    joints3d: np.ndarray
    joints2d: np.ndarray


@dataclass
class _TrackState:
    """What a track carries from one window into the next."""

    betas: torch.Tensor  # (10,)
    frames_seen: int = 0
    last_frame: int = -10
    anchor_joints: Optional[torch.Tensor] = None  # (2, 25, 3) last two fitted frames (op_* joints)
    anchor_pose: Optional[torch.Tensor] = None  # (2, 69)
    anchor_orient: Optional[torch.Tensor] = None  # (2, 6)
    anchor_frames: Tuple[int, int] = (-10, -10)
    chunks: List[Dict[str, torch.Tensor]] = field(default_factory=list)


def _a_pose(n: int) -> torch.Tensor:
    """(n, 69) body pose with the arms lowered ~70 degrees (closer to people walking than a T-pose)."""
    pose = torch.zeros(n, 23, 3)
    pose[:, 15, 2] = -1.2  # left shoulder (joint 16): arm from +x down towards -y
    pose[:, 16, 2] = 1.2  # right shoulder (joint 17)
    return pose.reshape(n, 69)


def orientation_from_landmarks(world: torch.Tensor, conf: torch.Tensor) -> torch.Tensor:
    """Global orientation (camera frame) from 3D landmarks in the SPIN_49 slots.

    The model frame has the left hip at +x, up +y, facing +z; the observed frame
    takes x from right hip -> left hip and y from mid-hip -> mid-shoulder.

    Args:
        world: (B, 49, 3) landmarks, camera axes (y down), metres.
        conf: (B, 49) confidences.
    Returns:
        (B, 3, 3) rotations; frames without usable landmarks face the camera.
    """
    x = world[:, _LHIP] - world[:, _RHIP] + 0.5 * (world[:, _LSH] - world[:, _RSH])
    up = 0.5 * (world[:, _LSH] + world[:, _RSH] - world[:, _LHIP] - world[:, _RHIP])
    x = x / x.norm(dim=-1, keepdim=True).clamp(min=1e-6)
    up = up - (up * x).sum(-1, keepdim=True) * x
    ok = (up.norm(dim=-1) > 1e-3) & (conf[:, [_LSH, _RSH, _LHIP, _RHIP]].min(-1).values > 0.05)
    up = up / up.norm(dim=-1, keepdim=True).clamp(min=1e-6)
    z = torch.cross(x, up, dim=-1)
    rot = torch.stack([x, up, z], dim=-1)  # columns = model axes in the camera frame
    facing = torch.diag(torch.tensor([1.0, -1.0, -1.0], dtype=world.dtype, device=world.device))
    return torch.where(ok[:, None, None], rot, facing.expand_as(rot))


# Limb chains for the landmark IK: (SMPL joint, its SMPL child, SPIN_49 slot of the
# joint, SPIN_49 slot of the child). Every rotation is solved after its parent's.
_IK_CHAIN = [
    (1, 4, "op_lhip", "op_lknee"), (4, 7, "op_lknee", "op_lankle"),
    (2, 5, "op_rhip", "op_rknee"), (5, 8, "op_rknee", "op_rankle"),
    (16, 18, "op_lshoulder", "op_lelbow"), (18, 20, "op_lelbow", "op_lwrist"),
    (17, 19, "op_rshoulder", "op_relbow"), (19, 21, "op_relbow", "op_rwrist"),
]


def _swing(u: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """(B, 3) x2 -> (B, 3) axis-angle of the smallest rotation taking direction u to v."""
    u = u / u.norm(dim=-1, keepdim=True).clamp(min=1e-8)
    v = v / v.norm(dim=-1, keepdim=True).clamp(min=1e-8)
    axis = torch.cross(u, v, dim=-1)
    sin = axis.norm(dim=-1, keepdim=True)
    cos = (u * v).sum(-1, keepdim=True)
    return axis / sin.clamp(min=1e-8) * torch.atan2(sin, cos)


def pose_from_landmarks(
    world: torch.Tensor, conf: torch.Tensor, orient: torch.Tensor, rest_joints: torch.Tensor,
    parents: Sequence[int], default_pose: torch.Tensor, min_conf: float = 0.3,
) -> torch.Tensor:
    """Limb rotations from 3D landmark bone directions (swing-only IK), a fitting init.

    Spine, collars, head, hands and feet keep ``default_pose``; each hip, knee,
    shoulder and elbow rotation turns its rest bone onto the observed bone, given
    its parent's global rotation. Bones with unconfident landmarks keep the default.

    Args:
        world: (B, 49, 3) landmarks in the SPIN_49 slots, camera axes, metres.
        conf: (B, 49) confidences.
        orient: (B, 3, 3) global orientation (camera frame).
        rest_joints: (24, 3) rest joints of the model.
        parents: 24 parent indices.
        default_pose: (B, 69) axis-angle used where the landmarks say nothing.
    Returns:
        (B, 69) axis-angle body pose.
    """
    b = world.shape[0]
    local = axis_angle_to_matrix(default_pose.reshape(b, 23, 3))
    glob: Dict[int, torch.Tensor] = {0: orient}

    def global_rot(j: int) -> torch.Tensor:
        if j not in glob:
            glob[j] = global_rot(parents[j]) @ local[:, j - 1]
        return glob[j]

    out = default_pose.reshape(b, 23, 3).clone()
    for joint, child, a, c in _IK_CHAIN:
        parent_rot = global_rot(parents[joint])
        rest_dir = (rest_joints[child] - rest_joints[joint]).expand(b, 3)
        obs = world[:, _IDX[c]] - world[:, _IDX[a]]
        target = (parent_rot.transpose(-1, -2) @ obs[..., None])[..., 0]  # in the parent's frame
        rotvec = _swing(rest_dir, target)
        ok = (torch.minimum(conf[:, _IDX[a]], conf[:, _IDX[c]]) > min_conf) & (obs.norm(dim=-1) > 1e-4)
        out[:, joint - 1] = torch.where(ok[:, None], rotvec, out[:, joint - 1])
        local = local.clone()
        local[:, joint - 1] = axis_angle_to_matrix(out[:, joint - 1])
        glob.pop(joint, None)
        for k in list(glob):  # children of this joint must be recomputed
            if k != 0 and k != joint and parents[k] == joint:
                glob.pop(k)
    return out.reshape(b, 69)


def _smooth_track(x: torch.Tensor, width: int) -> torch.Tensor:
    """(N, C) values over consecutive frames -> (N, C) moving average over ``width`` frames (edges replicated)."""
    n = x.shape[0]
    width = min(int(width), n if n % 2 else n - 1)
    if width <= 1:
        return x
    pad = width // 2
    padded = torch.nn.functional.pad(x.T[None], (pad, pad), mode="replicate")  # (1, C, N + 2 pad)
    return torch.nn.functional.avg_pool1d(padded, width, stride=1)[0].T


def geman_mcclure(sq_residual: torch.Tensor, sigma: float) -> torch.Tensor:
    """Bounded robust penalty of a squared residual: r^2 / (r^2 + sigma^2), in [0, 1)."""
    return sq_residual / (sq_residual + sigma * sigma)


class TemporalSMPLify:
    """Batched temporal fitter of a body model to tracked keypoints.

    Args:
        body_model: a :class:`lib.body_models.BodyModelLayer`.
        image_size: (width, height) pixels.
        focal_length: pixels; None = :func:`default_focal_length` of the image.
        num_iters: optimiser steps of the full stage per window.
        num_camera_iters: steps of the first stage (translation + global orientation).
        optimizer: "lbfgs" or "adam".
        lr: step size (LBFGS initial step / Adam learning rate).
        window: frames per optimisation window.
        weights: loss weights.
        pose_prior, joint_limits: callables (B, 69) -> (B,); None = quadratic / hinge.
        body_height: metres, for the initial depth from the box height.
        init_smoothing: frames of the moving average applied to box heights and hip
            positions before they set the initial depth and position (1 = none).
        device: torch device of the optimisation (the body model is moved there).
    """

    def __init__(
        self,
        body_model,
        image_size: Tuple[int, int],
        focal_length: Optional[float] = None,
        num_iters: int = 20,
        num_camera_iters: int = 5,
        optimizer: str = "lbfgs",
        lr: float = 1.0,
        window: int = 200,
        weights: Optional[FitWeights] = None,
        pose_prior: Optional[Callable[[torch.Tensor], torch.Tensor]] = None,
        joint_limits: Optional[Callable[[torch.Tensor], torch.Tensor]] = None,
        body_height: float = 1.7,
        init_smoothing: int = 15,
        device: str | torch.device = "cpu",
    ):
        if optimizer not in ("lbfgs", "adam"):
            raise ValueError(f"SMPLify optimizer must be 'lbfgs' or 'adam', got {optimizer!r}")
        self.device = torch.device(device)
        self.body_model = body_model.to(self.device)
        self.width, self.height = int(image_size[0]), int(image_size[1])
        self.focal_length = float(focal_length or default_focal_length(self.width, self.height))
        self.center = torch.tensor([self.width / 2.0, self.height / 2.0], device=self.device)
        self.num_iters = int(num_iters)
        self.num_camera_iters = int(num_camera_iters)
        self.optimizer = optimizer
        self.lr = float(lr)
        self.window = max(int(window), 1)
        self.weights = weights or FitWeights()
        self.pose_prior = pose_prior or quadratic_pose_prior
        self.joint_limits = joint_limits or hinge_joint_limits
        self.body_height = float(body_height)
        self.init_smoothing = int(init_smoothing)
        w = torch.zeros(len(SPIN_49))
        for name, val in FIT_JOINT_WEIGHTS.items():
            w[_IDX[name]] = val * (self.weights.hip if name in ("op_lhip", "op_rhip") else 1.0)
        assert max(FIT_JOINTS) < NUM_OP and int(BONES.max()) < NUM_OP  # the loop sees the op_* slots only
        self.joint_weights = w[:NUM_OP].to(self.device)  # (25,)
        self.fast = FastJoints(self.body_model).to(self.device) if not self.body_model.has_pose_correctives else None
        self.bones = torch.as_tensor(BONES, device=self.device)
        with torch.no_grad():
            # Rest pelvis (root joint) of the mean shape: the model rotates about it.
            self.rest_joints = self.body_model.j_template.to(self.device)  # (24, 3)
            self.rest_root = self.rest_joints[0]

    @classmethod
    def from_config(cls, cfg, body_model, image_size: Tuple[int, int], focal_length: Optional[float] = None,
                    device: str | torch.device = "cpu") -> "TemporalSMPLify":
        """Build from the ``SMPLIFY`` section of the config."""
        c = cfg.SMPLIFY
        prior, limits, name = load_priors(c.PRIOR, c.PRIOR_PATH, device)
        logger.info("SMPLify pose prior: %s", name)
        weights = FitWeights(
            kp2d=c.W_KP2D, bone3d=c.W_BONE3D, pose_prior=c.W_POSE_PRIOR, joint_limit=c.W_JOINT_LIMIT,
            shape=c.W_SHAPE, smooth_joints=c.W_SMOOTH_JOINTS, smooth_pose=c.W_SMOOTH_POSE, depth=c.W_DEPTH,
            sigma=c.SIGMA, hip=c.HIP_WEIGHT,
        )
        return cls(body_model, image_size, focal_length=focal_length, num_iters=c.NUM_ITERS,
                   num_camera_iters=c.NUM_CAMERA_ITERS, optimizer=c.OPTIMIZER, lr=c.LR, window=c.WINDOW,
                   weights=weights, pose_prior=prior, joint_limits=limits, body_height=c.BODY_HEIGHT,
                   init_smoothing=c.INIT_SMOOTHING, device=device)

    # ------------------------------------------------------------------ public
    def fit(
        self,
        tracks: Mapping[int, object],
        init: Optional[Mapping[int, Mapping[str, np.ndarray]]] = None,
        progress: bool = False,
    ) -> Dict[int, FitResult]:
        """Fit every track.

        Args:
            tracks: track id -> object with ``frame_ids`` (N,) ints (increasing),
                ``bboxes`` (N, 4) cx, cy, w, h px, ``keypoints_2d`` (N, 49, 3) px + conf
                (SPIN_49; the ``op_*`` slots are fitted) and optionally
                ``world_landmarks`` (N, 33, 3) BlazePose 3D landmarks (metres, camera axes).
            init: optional track id -> ``pose`` (N, 72), ``betas`` (10,), ``transl`` (N, 3)
                (e.g. network output) to start from instead of the landmark-oriented neutral pose.
            progress: show a tqdm bar over windows.
        Returns:
            track id -> :class:`FitResult`.
        """
        tracks = {int(k): v for k, v in tracks.items() if len(v.frame_ids) > 0}
        if not tracks:
            return {}
        data = {tid: self._track_tensors(t) for tid, t in tracks.items()}
        init_t = {int(k): {n: torch.as_tensor(np.asarray(a), dtype=torch.float32, device=self.device)
                           for n, a in v.items()} for k, v in (init or {}).items()}
        first = min(int(d["frames"][0]) for d in data.values())
        last = max(int(d["frames"][-1]) for d in data.values())
        zero_betas = torch.zeros(10, device=self.device)
        states = {tid: _TrackState(betas=init_t.get(tid, {}).get("betas", zero_betas).clone()) for tid in data}
        starts = list(range(first, last + 1, self.window))
        for w0 in tqdm(starts, desc="fit", unit="window", disable=not progress):
            self._fit_window(w0, w0 + self.window, data, init_t, states)
        return {tid: self._collect(tid, data[tid], states[tid]) for tid in data}

    # ------------------------------------------------------------------ internals
    def _track_tensors(self, t) -> Dict[str, torch.Tensor]:
        dev = self.device
        frames = torch.as_tensor(np.asarray(t.frame_ids, dtype=np.int64), device=dev)
        n = frames.shape[0]
        kp = torch.as_tensor(np.asarray(t.keypoints_2d, dtype=np.float32), device=dev).reshape(n, 49, 3)
        kp = torch.nan_to_num(kp)
        box = torch.as_tensor(np.asarray(t.bboxes, dtype=np.float32), device=dev).reshape(n, 4)
        world = getattr(t, "world_landmarks", None)
        if world is not None and len(world) == n:
            w = np.nan_to_num(np.asarray(world, dtype=np.float32)).reshape(n, -1, 3)
            w49 = torch.as_tensor(convert_kps(w, "blazepose33", "spin49"), device=dev) if w.shape[1] == 33 \
                else torch.as_tensor(w, device=dev)
            has_world = torch.ones(n, dtype=torch.bool, device=dev)
        else:
            w49 = torch.zeros(n, 49, 3, device=dev)
            has_world = torch.zeros(n, dtype=torch.bool, device=dev)
        return {"frames": frames, "kp": kp, "box": box, "world": w49, "has_world": has_world}

    def _init_params(self, d: Dict[str, torch.Tensor], sl: slice, init: Optional[Dict[str, torch.Tensor]]):
        """Initial (orient6d, body_pose, transl) of the frames ``sl`` of a track."""
        kp, box = d["kp"][sl], d["box"][sl]
        n = kp.shape[0]
        if init is not None and "pose" in init:
            pose = init["pose"][sl].reshape(n, 24, 3)
            orient = axis_angle_to_matrix(pose[:, 0])
            body = pose[:, 1:].reshape(n, 69).clone()
        else:
            conf = kp[..., 2] * d["has_world"][sl, None]
            world = d["world"][sl]
            world = _smooth_track(world.reshape(n, -1), self.init_smoothing // 3).reshape(world.shape)
            orient = orientation_from_landmarks(world, conf)
            body = pose_from_landmarks(world, conf, orient, self.rest_joints, self.body_model.parents,
                                       _a_pose(n).to(self.device))
        if init is not None and "transl" in init:
            transl = init["transl"][sl].clone()
        else:
            # Depth from the box height; the pelvis goes where the detector's hips are
            # (or the box centre), back-projected at that depth.
            # Box heights jitter from frame to frame; a jittery start (and depth anchor) is
            # something the few optimiser steps cannot smooth out, so start from a smoothed one.
            h = _smooth_track(box[:, 3:4].clamp(min=8.0), self.init_smoothing)[:, 0]
            tz = self.focal_length * self.body_height / h
            hips_ok = (kp[:, [_LHIP, _RHIP], 2].min(-1).values > 0.3)[:, None]
            hip_px = 0.5 * (kp[:, _LHIP, :2] + kp[:, _RHIP, :2])
            target = _smooth_track(torch.where(hips_ok, hip_px, box[:, :2]), self.init_smoothing)
            xy = (target - self.center) * tz[:, None] / self.focal_length
            root = torch.cat([xy, tz[:, None]], dim=-1)
            transl = root - self.rest_root  # joints = model joints (root at rest_root) + transl
        return matrix_to_rot6d(orient), body, transl

    def _fit_window(self, w0: int, w1: int, data, init_t, states) -> None:
        dev = self.device
        items_kp, items_box, items_world, items_hasw = [], [], [], []
        orient0, body0, transl0, track_of, frames_all = [], [], [], [], []
        slices, beta_rows, optimise_beta = [], [], []
        anchors_j, anchors_p, anchors_o = [], [], []
        trip: List[Tuple[int, int, int]] = []
        pairs: List[Tuple[int, int]] = []
        tids = []
        offset = 0
        n_anchor = 0
        for tid, d in data.items():
            fr = d["frames"]
            lo = int(torch.searchsorted(fr, torch.tensor(w0, device=dev)))
            hi = int(torch.searchsorted(fr, torch.tensor(w1, device=dev)))
            if hi <= lo:
                continue
            sl = slice(lo, hi)
            st = states[tid]
            k = len(tids)
            tids.append(tid)
            o, b, t = self._init_params(d, sl, init_t.get(tid))
            n = hi - lo
            orient0.append(o), body0.append(b), transl0.append(t)
            items_kp.append(d["kp"][sl]), items_box.append(d["box"][sl])
            items_world.append(d["world"][sl]), items_hasw.append(d["has_world"][sl])
            track_of.append(torch.full((n,), k, dtype=torch.long, device=dev))
            fl = fr[sl].tolist()
            frames_all.append(fr[sl])
            slices.append((offset, offset + n))
            beta_rows.append(st.betas)
            optimise_beta.append(st.frames_seen < 3 * self.window // 4)
            # Anchors (the track's last two frames of the previous window, constants) are
            # encoded as -1 - a for anchor row a; remap() puts them before the items.
            seq_idx = list(range(offset, offset + n))
            seq_fr = list(fl)
            if st.anchor_joints is not None and st.anchor_frames[1] >= fl[0] - 2:
                anchors_j.append(st.anchor_joints), anchors_p.append(st.anchor_pose)
                anchors_o.append(st.anchor_orient)
                seq_idx = [-1 - n_anchor, -2 - n_anchor] + seq_idx  # rows t-2, t-1
                seq_fr = list(st.anchor_frames) + seq_fr
                n_anchor += 2
            for a in range(len(seq_idx) - 1):
                if seq_fr[a + 1] - seq_fr[a] == 1:
                    pairs.append((seq_idx[a], seq_idx[a + 1]))
                if a + 2 < len(seq_idx) and seq_fr[a + 2] - seq_fr[a] == 2:
                    trip.append((seq_idx[a], seq_idx[a + 1], seq_idx[a + 2]))
            offset += n
        if not tids:
            return
        batch = {
            "kp": torch.cat(items_kp)[:, :NUM_OP], "box": torch.cat(items_box),
            "world": torch.cat(items_world)[:, :NUM_OP],
            "has_world": torch.cat(items_hasw), "track_of": torch.cat(track_of),
        }
        n_items = batch["kp"].shape[0]
        if anchors_j:
            anc_j, anc_p, anc_o = torch.cat(anchors_j), torch.cat(anchors_p), torch.cat(anchors_o)
        else:
            anc_j = torch.zeros(0, NUM_OP, 3, device=dev)
            anc_p = torch.zeros(0, 69, device=dev)
            anc_o = torch.zeros(0, 6, device=dev)

        def remap(idx_list, width):
            # Items go after the anchors in the concatenated tensors; anchor a sits at index a.
            if not idx_list:
                return torch.zeros(0, width, dtype=torch.long, device=dev)
            t = torch.as_tensor(idx_list, dtype=torch.long, device=dev)
            return torch.where(t >= 0, t + anc_j.shape[0], -1 - t)

        pairs_t = remap(pairs, 2)
        trip_t = remap(trip, 3)

        orient = torch.cat(orient0).detach().clone().requires_grad_(True)
        body = torch.cat(body0).detach().clone().requires_grad_(True)
        transl = torch.cat(transl0).detach().clone().requires_grad_(True)
        betas_init = torch.stack(beta_rows).detach()
        beta_free = torch.as_tensor(optimise_beta, device=dev)
        betas_var = betas_init.clone().requires_grad_(True)
        tz0 = transl.detach()[:, 2].clamp(min=0.1) + self.rest_root[2]
        stuff = dict(batch=batch, pairs=pairs_t, trip=trip_t, anc_j=anc_j, anc_p=anc_p, anc_o=anc_o,
                     tz0=tz0, beta_free=beta_free, betas_init=betas_init, n_items=n_items)

        if self.num_camera_iters > 0:
            self._run([orient, transl], lambda: self._loss(orient, body, transl, betas_var, stuff, camera_only=True),
                      self.num_camera_iters)
        if self.num_iters > 0:
            self._run([orient, body, transl, betas_var],
                      lambda: self._loss(orient, body, transl, betas_var, stuff, camera_only=False),
                      self.num_iters)

        with torch.no_grad():
            betas = torch.where(beta_free[:, None], betas_var, betas_init)
            joints = self._op_joints(orient, body, transl, betas, batch["track_of"])
        for k, tid in enumerate(tids):
            a, b = slices[k]
            st = states[tid]
            st.betas = betas[k].detach().clone()
            st.frames_seen += b - a
            st.chunks.append({"orient": orient[a:b].detach(), "body": body[a:b].detach(),
                              "transl": transl[a:b].detach(), "frames": frames_all[k]})
            if b - a >= 2:
                # Last two frames in time order, matching anchor_frames.
                st.anchor_joints = joints[b - 2:b].clone()
                st.anchor_pose = body[b - 2:b].detach().clone()
                st.anchor_orient = orient[b - 2:b].detach().clone()
                fr = frames_all[k]
                st.anchor_frames = (int(fr[-2]), int(fr[-1]))
            else:
                st.anchor_joints = None

    def _op_joints(self, orient6d, body, transl, betas, track_of) -> torch.Tensor:
        """(B, 25, 3) camera-space op_* joints, the fitting loop's fast path."""
        if self.fast is None:
            return self._joints(orient6d, body, transl, betas, track_of)[:, :NUM_OP]
        n = body.shape[0]
        rot = torch.cat([rot6d_to_matrix(orient6d)[:, None], axis_angle_to_matrix(body.reshape(n, 23, 3))], dim=1)
        return self.fast(rot, betas[track_of], transl)

    def _joints(self, orient6d, body, transl, betas, track_of) -> torch.Tensor:
        """(B, 49, 3) camera-space joints from the body model."""
        n = body.shape[0]
        out = self.body_model(
            global_orient=rot6d_to_matrix(orient6d),
            body_pose=axis_angle_to_matrix(body.reshape(n, 23, 3)),
            betas=betas[track_of],
            transl=transl,
            joints_only=True,
        )
        return out.joints

    def _project(self, joints: torch.Tensor) -> torch.Tensor:
        z = joints[..., 2:].clamp(min=0.05)
        return joints[..., :2] / z * self.focal_length + self.center

    def _loss(self, orient, body, transl, betas_var, s, camera_only: bool) -> torch.Tensor:
        w = self.weights
        b = s["batch"]
        n = s["n_items"]
        betas = torch.where(s["beta_free"][:, None], betas_var, s["betas_init"])
        joints = self._op_joints(orient, body, transl, betas, b["track_of"])  # (B, 25, 3)
        kp = b["kp"]
        h = b["box"][:, 3].clamp(min=8.0)
        res = (self._project(joints) - kp[..., :2]) / h[:, None, None]
        conf = kp[..., 2] * self.joint_weights
        loss = w.kp2d * (conf * geman_mcclure(res.square().sum(-1), w.sigma)).sum() / n

        if w.bone3d > 0 and bool(b["has_world"].any()):
            bj = joints[:, self.bones[:, 1]] - joints[:, self.bones[:, 0]]
            bw = b["world"][:, self.bones[:, 1]] - b["world"][:, self.bones[:, 0]]
            cos = torch.nn.functional.cosine_similarity(bj, bw, dim=-1, eps=1e-6)
            bconf = (kp[:, self.bones[:, 0], 2] * kp[:, self.bones[:, 1], 2]) * b["has_world"][:, None]
            loss = loss + w.bone3d * (bconf * (1.0 - cos)).sum() / n

        tz = (transl[:, 2] + self.rest_root[2]).clamp(min=0.05)
        loss = loss + w.depth * torch.log(tz / s["tz0"]).square().sum() / n

        # Temporal terms over [anchors | items].
        all_j = torch.cat([s["anc_j"], joints])
        if s["trip"].shape[0]:
            t = s["trip"]
            acc = all_j[t[:, 0]] - 2 * all_j[t[:, 1]] + all_j[t[:, 2]]
            loss = loss + w.smooth_joints * acc.square().sum(-1).mean(-1).sum() / n
        if s["pairs"].shape[0]:
            p = s["pairs"]
            all_o = torch.cat([s["anc_o"], orient])
            loss = loss + w.smooth_pose * (all_o[p[:, 1]] - all_o[p[:, 0]]).square().sum() / n
            if not camera_only:
                all_p = torch.cat([s["anc_p"], body])
                loss = loss + w.smooth_pose * (all_p[p[:, 1]] - all_p[p[:, 0]]).square().sum() / n

        if not camera_only:
            loss = loss + w.pose_prior * self.pose_prior(body).sum() / n
            loss = loss + w.joint_limit * self.joint_limits(body).sum() / n
            loss = loss + w.shape * betas_var.square().sum() / max(betas_var.shape[0], 1)
        return loss

    def _run(self, params: Sequence[torch.Tensor], loss_fn, iters: int) -> None:
        if self.optimizer == "lbfgs":
            opt = torch.optim.LBFGS(params, lr=self.lr, max_iter=iters, max_eval=int(iters * 1.25) + 1,
                                    tolerance_grad=1e-7, tolerance_change=1e-9, history_size=10,
                                    line_search_fn="strong_wolfe")

            def closure():
                opt.zero_grad(set_to_none=True)
                loss = loss_fn()
                loss.backward()
                return loss

            opt.step(closure)
        else:
            opt = torch.optim.Adam(params, lr=self.lr)
            for _ in range(iters):
                opt.zero_grad(set_to_none=True)
                loss = loss_fn()
                loss.backward()
                opt.step()

    def _collect(self, tid: int, d: Dict[str, torch.Tensor], st: _TrackState) -> FitResult:
        """Concatenate a track's windows and compute its outputs with the final shape."""
        orient = torch.cat([c["orient"] for c in st.chunks])
        body = torch.cat([c["body"] for c in st.chunks])
        transl = torch.cat([c["transl"] for c in st.chunks])
        n = body.shape[0]
        with torch.no_grad():
            betas = st.betas[None]
            joints = self._joints(orient, body, transl, betas, torch.zeros(n, dtype=torch.long, device=self.device))
            j2d = self._project(joints)
            rot_g = rot6d_to_matrix(orient)
            # Round-trip through matrices so every angle is in [0, pi].
            body_aa = matrix_to_axis_angle(axis_angle_to_matrix(body.reshape(n, 23, 3))).reshape(n, 69)
            pose = torch.cat([matrix_to_axis_angle(rot_g), body_aa], dim=-1)
            box = d["box"]
            size = torch.maximum(box[:, 2], box[:, 3]).clamp(min=1.0)
            tz = transl[:, 2].clamp(min=1e-3)
            sc = 2.0 * self.focal_length / (size * tz)
            # Inverse of lib.geometry.camera.crop_cam_to_full_translation.
            tx = transl[:, 0] - (box[:, 0] - self.center[0]) * tz / self.focal_length
            ty = transl[:, 1] - (box[:, 1] - self.center[1]) * tz / self.focal_length
            cam = torch.stack([sc, tx, ty], dim=-1)
        f32 = lambda x: x.detach().cpu().numpy().astype(np.float32)  # noqa: E731
        return FitResult(pose=f32(pose), betas=f32(st.betas), transl=f32(transl), cam=f32(cam),
                         joints3d=f32(joints), joints2d=f32(j2d))


def fit_quality(result: FitResult, keypoints_2d: np.ndarray, bboxes: np.ndarray, min_conf: float = 0.5) -> float:
    """Median over confident fitted joints of |projected - detected| / box height (unitless).

    Args:
        result: a fitted track.
        keypoints_2d: (N, 49, 3) detections px + conf.
        bboxes: (N, 4) cx, cy, w, h px.
    """
    kp = np.asarray(keypoints_2d)
    conf = kp[..., 2]
    mask = np.zeros_like(conf, dtype=bool)
    mask[:, FIT_JOINTS] = conf[:, FIT_JOINTS] > min_conf
    hips = [_LHIP, _RHIP]
    mask[:, hips] = False  # detector hips are not SMPL hips
    err = np.linalg.norm(result.joints2d - kp[..., :2], axis=-1) / np.maximum(np.asarray(bboxes)[:, 3:4], 1.0)
    return float(np.median(err[mask])) if mask.any() else math.nan
