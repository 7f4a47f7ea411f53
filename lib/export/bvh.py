"""BVH (skeleton only) per track, for tools that retarget motion capture.

The hierarchy is the 24-joint SMPL tree with the track's shaped bone offsets
(metres, y up: the export frame of :mod:`lib.export.common`). The root has
absolute position channels plus rotations; every joint rotates in ``Z X Y``
order (R = Rz @ Rx @ Ry, degrees), the most widely read BVH layout. Leaf joints
(feet, hands, head) end in a short End Site along their bone. BVH needs one
sample per frame, so gaps in a track are filled (:func:`fill_gaps`).
"""
from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import List, Sequence

import numpy as np
from scipy.spatial.transform import Rotation

from lib.atomic_io import atomic_write
from lib.export.common import JOINT_NAMES, TrackMotion, fill_gaps

logger = logging.getLogger(__name__)

END_SITE_LENGTH = 0.05  # metres past a leaf joint, along its bone


def _dfs_order(parents: Sequence[int]) -> List[int]:
    children = {j: [c for c in range(len(parents)) if parents[c] == j] for j in range(len(parents))}
    order, stack = [], [0]
    while stack:
        j = stack.pop()
        order.append(j)
        stack.extend(reversed(children[j]))
    return order


def bvh_text(motion: TrackMotion, parents: Sequence[int]) -> str:
    """The full BVH file for one (gap-free) track."""
    parents = list(parents)
    rest = motion.rest_joints
    children = {j: [c for c in range(len(parents)) if parents[c] == j] for j in range(len(parents))}
    lines: List[str] = ["HIERARCHY"]

    def fmt(v) -> str:
        return " ".join(f"{x:.6f}" for x in v)

    def write(j: int, depth: int):
        ind = "\t" * depth
        if j == 0:
            lines.append(f"ROOT {JOINT_NAMES[j]}")
            lines.append(f"{ind}{{")
            # Root OFFSET 0: its position channels carry the absolute position.
            lines.append(f"{ind}\tOFFSET {fmt((0.0, 0.0, 0.0))}")
            lines.append(f"{ind}\tCHANNELS 6 Xposition Yposition Zposition Zrotation Xrotation Yrotation")
        else:
            lines.append(f"{ind}JOINT {JOINT_NAMES[j]}")
            lines.append(f"{ind}{{")
            lines.append(f"{ind}\tOFFSET {fmt(rest[j] - rest[parents[j]])}")
            lines.append(f"{ind}\tCHANNELS 3 Zrotation Xrotation Yrotation")
        if children[j]:
            for c in children[j]:
                write(c, depth + 1)
        else:
            bone = rest[j] - rest[parents[j]]
            tip = END_SITE_LENGTH * bone / max(np.linalg.norm(bone), 1e-9)
            lines.append(f"{ind}\tEnd Site")
            lines.append(f"{ind}\t{{")
            lines.append(f"{ind}\t\tOFFSET {fmt(tip)}")
            lines.append(f"{ind}\t}}")
        lines.append(f"{ind}}}")

    write(0, 0)
    order = _dfs_order(parents)
    n = motion.num_frames
    rot = motion.local_rot[:, order].reshape(-1, 3, 3)
    euler = Rotation.from_matrix(rot).as_euler("ZXY", degrees=True).reshape(n, len(order), 3)
    # Unwrap over time so channels do not jump by 360 degrees between frames.
    euler = np.degrees(np.unwrap(np.radians(euler), axis=0))
    data = np.concatenate([motion.root_pos, euler.reshape(n, -1)], axis=1)
    lines += ["MOTION", f"Frames: {n}", f"Frame Time: {1.0 / motion.fps:.8f}"]
    row = " ".join(["%.6f"] * data.shape[1])
    lines += [row % tuple(r) for r in data]
    return "\n".join(lines) + "\n"


def write_bvh(path: str | os.PathLike, motion: TrackMotion, parents: Sequence[int]) -> Path:
    """Write one track as BVH (gaps filled); written atomically."""
    motion = fill_gaps(motion)
    text = bvh_text(motion, parents)
    out = atomic_write(path, lambda tmp: tmp.write_text(text, encoding="ascii"))
    logger.info("wrote %s (%d frames)", out, motion.num_frames)
    return out
