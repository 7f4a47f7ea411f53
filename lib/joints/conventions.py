"""Named joint lists and conversion between keypoint formats.

Every format is an ordered list of joint names drawn from one vocabulary, so a
conversion is a lookup by name: a destination joint takes the source joint of
the same name, or zeros (confidence 0) where the source has none.

Names prefixed ``op_`` are OpenPose-style *detections* (BODY_25 definitions);
the plain names are the ground-truth style joints of LSP/MPII/H36M/COCO. The
49-joint training format keeps both, in VIBE/SPIN order: slots 0-24 are
OpenPose BODY_25, slots 25-48 the ground-truth style joints. Datasets with
annotated joints fill the plain slots and keypoint detectors the ``op_`` slots,
so a detector's hip (BODY_25 "RHip") is never confused with an annotated LSP
hip. SMPL's own 24 joints carry a ``smpl_`` prefix for the same reason.

Evaluation uses the 14 common (LSP) joints; :data:`H36M_TO_J14` picks them from
the H36M-17 regressor output, and the pelvis is the midpoint of the two hips.
"""
from __future__ import annotations

from typing import Dict, List, Sequence

import numpy as np

OPENPOSE_25: List[str] = [
    "op_nose", "op_neck", "op_rshoulder", "op_relbow", "op_rwrist",
    "op_lshoulder", "op_lelbow", "op_lwrist", "op_midhip", "op_rhip",
    "op_rknee", "op_rankle", "op_lhip", "op_lknee", "op_lankle",
    "op_reye", "op_leye", "op_rear", "op_lear", "op_lbigtoe",
    "op_lsmalltoe", "op_lheel", "op_rbigtoe", "op_rsmalltoe", "op_rheel",
]

COMMON_14: List[str] = [
    "rankle", "rknee", "rhip", "lhip", "lknee", "lankle",
    "rwrist", "relbow", "rshoulder", "lshoulder", "lelbow", "lwrist",
    "neck", "headtop",
]

SPIN_49: List[str] = OPENPOSE_25 + COMMON_14 + [
    "pelvis", "thorax", "spine_h36m", "jaw_h36m", "head_h36m",
    "nose", "leye", "reye", "lear", "rear",
]

SMPL_24: List[str] = [
    "smpl_pelvis", "smpl_lhip", "smpl_rhip", "smpl_spine1", "smpl_lknee",
    "smpl_rknee", "smpl_spine2", "smpl_lankle", "smpl_rankle", "smpl_spine3",
    "smpl_lfoot", "smpl_rfoot", "smpl_neck", "smpl_lcollar", "smpl_rcollar",
    "smpl_head", "smpl_lshoulder", "smpl_rshoulder", "smpl_lelbow",
    "smpl_relbow", "smpl_lwrist", "smpl_rwrist", "smpl_lhand", "smpl_rhand",
]

# Order of the rows of J_regressor_h36m.npy (VIBE/SPIN file): index 1-3 is the
# left leg in this naming, which is what H36M_TO_J14 below assumes.
H36M_17: List[str] = [
    "pelvis", "lhip", "lknee", "lankle", "rhip", "rknee", "rankle",
    "spine_h36m", "neck", "head_h36m", "headtop",
    "lshoulder", "lelbow", "lwrist", "rshoulder", "relbow", "rwrist",
]

COCO_17: List[str] = [
    "nose", "leye", "reye", "lear", "rear", "lshoulder", "rshoulder",
    "lelbow", "relbow", "lwrist", "rwrist", "lhip", "rhip", "lknee", "rknee",
    "lankle", "rankle",
]

# 3DPW ``poses2d``: OpenPose COCO-18 order.
PW3D_18: List[str] = [
    "nose", "neck", "rshoulder", "relbow", "rwrist", "lshoulder", "lelbow",
    "lwrist", "rhip", "rknee", "rankle", "lhip", "lknee", "lankle",
    "reye", "leye", "rear", "lear",
]

# MPI-INF-3DHP training annotations (annot.mat), all 28 joints.
MPII3D_28: List[str] = [
    "mpi_spine3", "mpi_spine4", "mpi_spine2", "spine_h36m", "pelvis",
    "neck", "head_h36m", "headtop", "mpi_lclavicle", "lshoulder", "lelbow",
    "lwrist", "mpi_lhand", "mpi_rclavicle", "rshoulder", "relbow", "rwrist",
    "mpi_rhand", "lhip", "lknee", "lankle", "mpi_lfoot", "mpi_ltoe",
    "rhip", "rknee", "rankle", "mpi_rfoot", "mpi_rtoe",
]

# MPI-INF-3DHP test set (annot_data.mat), 17 joints.
MPII3D_17: List[str] = [
    "headtop", "neck", "rshoulder", "relbow", "rwrist", "lshoulder",
    "lelbow", "lwrist", "rhip", "rknee", "rankle", "lhip", "lknee", "lankle",
    "pelvis", "spine_h36m", "head_h36m",
]

# BlazePose (MediaPipe Pose) 33 landmarks. The landmarks a keypoint detector
# shares with OpenPose BODY_25 take its ``op_`` names, so detections land in the
# detector slots of the 49-joint format; the rest keep ``bp_`` names.
BLAZEPOSE_33: List[str] = [
    "op_nose", "bp_leye_inner", "op_leye", "bp_leye_outer", "bp_reye_inner",
    "op_reye", "bp_reye_outer", "op_lear", "op_rear", "bp_mouth_left",
    "bp_mouth_right", "op_lshoulder", "op_rshoulder", "op_lelbow",
    "op_relbow", "op_lwrist", "op_rwrist", "bp_lpinky", "bp_rpinky",
    "bp_lindex", "bp_rindex", "bp_lthumb", "bp_rthumb", "op_lhip", "op_rhip",
    "op_lknee", "op_rknee", "op_lankle", "op_rankle", "op_lheel", "op_rheel",
    "op_lbigtoe", "op_rbigtoe",
]

# PennAction: 13 joints; its "head" is the top of the head.
PENN_ACTION_13: List[str] = [
    "headtop", "lshoulder", "rshoulder", "lelbow", "relbow", "lwrist",
    "rwrist", "lhip", "rhip", "lknee", "rknee", "lankle", "rankle",
]

# PoseTrack 2018: 17 joints in COCO layout with head_bottom/head_top in place of
# the eyes (ears are listed but unannotated in the data).
POSETRACK_17: List[str] = [
    "nose", "neck", "headtop", "lear", "rear", "lshoulder", "rshoulder",
    "lelbow", "relbow", "lwrist", "rwrist", "lhip", "rhip", "lknee", "rknee",
    "lankle", "rankle",
]

JOINT_FORMATS: Dict[str, List[str]] = {
    "spin49": SPIN_49,
    "openpose25": OPENPOSE_25,
    "common14": COMMON_14,
    "lsp14": COMMON_14,
    "smpl24": SMPL_24,
    "h36m17": H36M_17,
    "coco17": COCO_17,
    "pw3d18": PW3D_18,
    "mpii3d28": MPII3D_28,
    "mpii3d17": MPII3D_17,
    "blazepose33": BLAZEPOSE_33,
    "penn_action13": PENN_ACTION_13,
    "posetrack17": POSETRACK_17,
}

# Picks the 14 common joints out of an H36M-17 regressor output.
H36M_TO_J14: List[int] = [H36M_17.index(n) for n in COMMON_14]
# Picks the 14 common joints out of the 49-joint format (slots 25..38).
SPIN49_TO_J14: List[int] = [SPIN_49.index(n) for n in COMMON_14]

def _mirror_name(name: str) -> str:
    """The name of the mirrored joint (left <-> right); unsided names map to themselves."""
    prefix = ""
    for p in ("op_", "smpl_", "mpi_", "bp_"):
        if name.startswith(p):
            prefix, name = p, name[len(p):]
            break
    if "left" in name:
        return prefix + name.replace("left", "right")
    if "right" in name:
        return prefix + name.replace("right", "left")
    if name[:1] in ("l", "r"):
        return prefix + {"l": "r", "r": "l"}[name[0]] + name[1:]
    return prefix + name


def joint_names(fmt: str) -> List[str]:
    """The ordered joint names of format ``fmt``; raises KeyError naming the choices."""
    try:
        return JOINT_FORMATS[fmt]
    except KeyError:
        raise KeyError(
            f"unknown joint format {fmt!r}; known formats: {', '.join(sorted(JOINT_FORMATS))}"
        ) from None


def conversion_indices(src: str, dst: str) -> np.ndarray:
    """For each joint of ``dst``, the index of the same-named joint in ``src`` or -1."""
    src_names = joint_names(src)
    lookup = {name: i for i, name in enumerate(src_names)}
    return np.array([lookup.get(name, -1) for name in joint_names(dst)], dtype=np.int64)


def convert_kps(kps, src: str, dst: str):
    """Convert keypoints between named formats.

    Args:
        kps: (..., J_src, C) numpy array or torch tensor, any C (e.g. 2, 3 for
            x, y, conf or x, y, z, 4 for x, y, z, conf).
        src, dst: format names from :data:`JOINT_FORMATS`.

    Returns:
        (..., J_dst, C) of the same type and dtype; joints of ``dst`` absent from
        ``src`` are all-zero (so their confidence is 0).
    """
    idx = conversion_indices(src, dst)
    n_src = len(joint_names(src))
    if kps.shape[-2] != n_src:
        raise ValueError(
            f"convert_kps: keypoints have {kps.shape[-2]} joints but format {src!r} has {n_src}"
        )
    present = idx >= 0
    if _is_torch(kps):
        import torch

        out = kps.new_zeros(kps.shape[:-2] + (len(idx), kps.shape[-1]))
        dst_i = torch.as_tensor(np.nonzero(present)[0], device=kps.device)
        src_i = torch.as_tensor(idx[present], device=kps.device)
        out[..., dst_i, :] = kps[..., src_i, :]
        return out
    kps = np.asarray(kps)
    out = np.zeros(kps.shape[:-2] + (len(idx), kps.shape[-1]), dtype=kps.dtype)
    out[..., present, :] = kps[..., idx[present], :]
    return out


def flip_permutation(fmt: str) -> np.ndarray:
    """Index permutation that swaps left and right joints of ``fmt`` (for mirroring)."""
    names = joint_names(fmt)
    lookup = {n: i for i, n in enumerate(names)}
    return np.array([lookup.get(_mirror_name(n), i) for i, n in enumerate(names)], dtype=np.int64)


def _is_torch(x) -> bool:
    return type(x).__module__.startswith("torch")


def pelvis_from_hips(joints, fmt: str = "common14"):
    """Pelvis as the midpoint of the two hips of ``fmt``: (..., J, C) -> (..., C)."""
    names = joint_names(fmt)
    return 0.5 * (joints[..., names.index("lhip"), :] + joints[..., names.index("rhip"), :])


def select(joints, names: Sequence[str], fmt: str):
    """Joints of ``fmt`` picked by name: (..., J, C) -> (..., len(names), C)."""
    all_names = joint_names(fmt)
    return joints[..., [all_names.index(n) for n in names], :]
