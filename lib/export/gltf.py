"""Animated, skinned GLB (binary glTF 2.0) per track, or all tracks in one scene.

Per track the file holds:

- a mesh in the bind pose: the body model's template shaped with the track's
  betas (model frame, y up, T-pose), with ``JOINTS_n``/``WEIGHTS_n`` sets carrying
  every non-zero skinning weight (so players reproduce our linear blend skinning);
- a 24-joint skeleton (nodes named after SMPL_24) whose rest translations are the
  shaped bone offsets, and a skin whose inverse bind matrices undo the rest joint
  positions (the bind pose has no rotation, like SMPL's);
- one animation: per-joint rotation channels (quaternions kept sign-continuous)
  and the root translation, in glTF's y-up frame (camera space rotated by pi
  about x), sampled at the video's frame times.

With ``combined=True`` every track sits in one scene on the video's time line;
a STEP scale channel on each root hides a person outside their track's frames.
Body models with pose correctives (SMPL) lose them here: glTF skinning is
linear blend skinning only.
"""
from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Dict, List, Optional, Sequence

import numpy as np
import pygltflib as gl
import roma
import torch

from lib.atomic_io import atomic_write
from lib.export.common import JOINT_NAMES, TrackMotion, continuous_quaternions

logger = logging.getLogger(__name__)

# Distinct, muted colours per track (linear RGB base colour factors).
PALETTE = [
    (0.65, 0.74, 0.86), (0.86, 0.62, 0.52), (0.60, 0.82, 0.60), (0.85, 0.78, 0.52),
    (0.75, 0.62, 0.85), (0.55, 0.80, 0.80), (0.85, 0.60, 0.72), (0.70, 0.70, 0.70),
]
WEIGHT_EPS = 1e-6  # skinning weights below this are dropped (far below 1 mm effect)


def skin_influences(weights: np.ndarray, eps: float = WEIGHT_EPS):
    """(V, J) dense skinning weights -> ((V, 4k) joint ids, (V, 4k) weights).

    Keeps every weight above ``eps`` (k sets of four, as many as the most
    influenced vertex needs), sorted by weight, renormalised to sum to one.
    """
    weights = np.asarray(weights, dtype=np.float64)
    order = np.argsort(-weights, axis=1, kind="stable")
    sorted_w = np.take_along_axis(weights, order, axis=1)
    count = int(max(1, (sorted_w > eps).sum(1).max()))
    width = 4 * int(np.ceil(count / 4))
    ids = order[:, :width].copy()
    w = sorted_w[:, :width].copy()
    w[w <= eps] = 0.0
    ids[w == 0.0] = 0  # unused slots: joint 0, weight 0
    w = (w / w.sum(1, keepdims=True)).astype(np.float32)
    # Absorb float32 rounding into the largest weight so each row sums to 1.
    w[:, 0] = np.float32(1.0) - w[:, 1:].sum(1, dtype=np.float32)
    return ids, w


def vertex_normals(vertices: np.ndarray, faces: np.ndarray) -> np.ndarray:
    """(V, 3) area-weighted unit vertex normals."""
    tri = vertices[faces]
    fn = np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0])
    vn = np.zeros_like(vertices)
    for k in range(3):
        np.add.at(vn, faces[:, k], fn)
    norm = np.linalg.norm(vn, axis=1, keepdims=True)
    vn = np.where(norm > 1e-12, vn / np.maximum(norm, 1e-12), np.array([0.0, 1.0, 0.0]))
    return vn


class _Builder:
    """Collects binary chunks, buffer views and accessors for one GLB."""

    def __init__(self):
        self.gltf = gl.GLTF2(asset=gl.Asset(version="2.0", generator="pbn export"))
        self.chunks: List[bytes] = []
        self.offset = 0

    def view(self, data: bytes, target: Optional[int] = None) -> int:
        pad = (-self.offset) % 4
        if pad:
            self.chunks.append(b"\x00" * pad)
            self.offset += pad
        self.gltf.bufferViews.append(
            gl.BufferView(buffer=0, byteOffset=self.offset, byteLength=len(data), target=target)
        )
        self.chunks.append(data)
        self.offset += len(data)
        return len(self.gltf.bufferViews) - 1

    def accessor(self, array: np.ndarray, type_: str, target: Optional[int] = None,
                 minmax: bool = False, normalized: Optional[bool] = None) -> int:
        array = np.ascontiguousarray(array)
        ctype = {
            np.dtype(np.float32): gl.FLOAT, np.dtype(np.uint8): gl.UNSIGNED_BYTE,
            np.dtype(np.uint16): gl.UNSIGNED_SHORT, np.dtype(np.uint32): gl.UNSIGNED_INT,
        }[array.dtype]
        view = self.view(array.tobytes(), target)
        flat = array.reshape(array.shape[0], -1)
        acc = gl.Accessor(bufferView=view, componentType=ctype, count=int(array.shape[0]), type=type_,
                          normalized=normalized)
        if minmax:
            cast = float if ctype == gl.FLOAT else int
            acc.min = [cast(v) for v in flat.min(0)]
            acc.max = [cast(v) for v in flat.max(0)]
        self.gltf.accessors.append(acc)
        return len(self.gltf.accessors) - 1

    def finish(self) -> gl.GLTF2:
        blob = b"".join(self.chunks)
        blob += b"\x00" * ((-len(blob)) % 4)
        self.gltf.buffers = [gl.Buffer(byteLength=len(blob))]
        self.gltf.set_binary_blob(blob)
        return self.gltf


def _add_track(b: _Builder, motion: TrackMotion, faces: np.ndarray, weights: np.ndarray,
               parents: Sequence[int], times: np.ndarray, color, visible: Optional[tuple],
               animation: gl.Animation, name: str) -> List[int]:
    """Add one track's mesh, skeleton, skin and channels; returns its root node ids."""
    g = b.gltf
    rest_v = motion.rest_vertices.astype(np.float32)
    rest_j = motion.rest_joints
    num_j = len(parents)

    # --- mesh
    ids, w = skin_influences(weights)
    joint_dtype = np.uint8 if num_j < 256 else np.uint16
    index_dtype = np.uint16 if rest_v.shape[0] < 65535 else np.uint32
    attrs = gl.Attributes(
        POSITION=b.accessor(rest_v, gl.VEC3, gl.ARRAY_BUFFER, minmax=True),
        NORMAL=b.accessor(vertex_normals(motion.rest_vertices, faces).astype(np.float32), gl.VEC3, gl.ARRAY_BUFFER),
    )
    for s in range(ids.shape[1] // 4):
        setattr(attrs, f"JOINTS_{s}", b.accessor(ids[:, 4 * s:4 * s + 4].astype(joint_dtype), gl.VEC4, gl.ARRAY_BUFFER))
        setattr(attrs, f"WEIGHTS_{s}", b.accessor(w[:, 4 * s:4 * s + 4], gl.VEC4, gl.ARRAY_BUFFER))
    indices = b.accessor(faces.reshape(-1).astype(index_dtype), gl.SCALAR, gl.ELEMENT_ARRAY_BUFFER)
    g.materials.append(gl.Material(
        name=f"{name}_material",
        pbrMetallicRoughness=gl.PbrMetallicRoughness(baseColorFactor=[*color, 1.0], metallicFactor=0.0,
                                                     roughnessFactor=0.75),
    ))
    g.meshes.append(gl.Mesh(name=f"{name}_body", primitives=[
        gl.Primitive(attributes=attrs, indices=indices, material=len(g.materials) - 1, mode=gl.TRIANGLES)
    ]))

    # --- skeleton: joint j's rest translation is its offset from the parent.
    base = len(g.nodes)
    joint_nodes = [base + j for j in range(num_j)]
    for j in range(num_j):
        p = parents[j]
        offset = rest_j[j] - (rest_j[p] if p >= 0 else 0.0)
        children = [base + c for c in range(num_j) if parents[c] == j]
        g.nodes.append(gl.Node(name=f"{name}_{JOINT_NAMES[j]}", translation=[float(x) for x in offset],
                               children=children or None))
    ibm = np.tile(np.eye(4), (num_j, 1, 1))
    ibm[:, :3, 3] = -rest_j
    # glTF matrices are column-major: transpose before flattening.
    ibm_acc = b.accessor(ibm.transpose(0, 2, 1).reshape(num_j, 16).astype(np.float32), gl.MAT4)
    g.skins.append(gl.Skin(name=f"{name}_skin", joints=joint_nodes, inverseBindMatrices=ibm_acc,
                           skeleton=joint_nodes[0]))
    g.nodes.append(gl.Node(name=f"{name}_body", mesh=len(g.meshes) - 1, skin=len(g.skins) - 1))
    mesh_node = len(g.nodes) - 1

    # --- animation: rotations of every joint, translation of the root.
    quat = roma.rotmat_to_unitquat(torch.as_tensor(motion.local_rot)).numpy()  # (N, 24, 4) x, y, z, w
    quat = continuous_quaternions(quat).astype(np.float32)
    g.nodes[joint_nodes[0]].translation = [float(x) for x in motion.root_pos[0]]
    g.nodes[joint_nodes[0]].rotation = [float(x) for x in quat[0, 0]]
    t_acc = b.accessor(times.astype(np.float32), gl.SCALAR, minmax=True)

    def channel(node: int, path: str, out_acc: int, in_acc: int = t_acc, interp: str = gl.ANIM_LINEAR):
        animation.samplers.append(gl.AnimationSampler(input=in_acc, output=out_acc, interpolation=interp))
        animation.channels.append(gl.AnimationChannel(
            sampler=len(animation.samplers) - 1, target=gl.AnimationChannelTarget(node=node, path=path)))

    # All rotation outputs share one buffer view (joint-major) to keep the file compact.
    rot_view = b.view(np.ascontiguousarray(quat.transpose(1, 0, 2)).tobytes())
    n = quat.shape[0]
    for j in range(num_j):
        g.accessors.append(gl.Accessor(bufferView=rot_view, byteOffset=j * n * 16, componentType=gl.FLOAT,
                                       count=n, type=gl.VEC4))
        channel(joint_nodes[j], "rotation", len(g.accessors) - 1)
    channel(joint_nodes[0], "translation", b.accessor(motion.root_pos.astype(np.float32), gl.VEC3))
    if visible is not None:
        vis_times, vis_scale = visible
        vt = b.accessor(np.asarray(vis_times, np.float32), gl.SCALAR, minmax=True)
        channel(joint_nodes[0], "scale", b.accessor(np.asarray(vis_scale, np.float32), gl.VEC3), vt, gl.ANIM_STEP)
    return [mesh_node, joint_nodes[0]]


def write_glb(path: str | os.PathLike, motions: Sequence[TrackMotion], faces: np.ndarray, weights: np.ndarray,
              parents: Sequence[int], combined: bool = False, extras: Optional[Dict] = None,
              camera: Optional[Dict[str, float]] = None) -> Path:
    """Write ``motions`` (one or more tracks) to one GLB file.

    Args:
        path: output ``.glb``; written atomically.
        motions: posed tracks from :func:`lib.export.common.track_motion`.
        faces: (F, 3) triangle indices; weights: (V, 24) skinning weights; parents: (24,).
        combined: put the tracks on the video's time line (time = frame / fps) and
            hide each person outside their frames; otherwise a single track's
            animation starts at time 0.
        extras: JSON-able metadata stored in the scene's ``extras``.
        camera: ``{"yfov": radians, "aspect": width / height}`` of the video camera;
            adds a camera node at the origin, where the bodies were seen from
            (glTF cameras look down -z with y up: exactly our export frame).
    """
    if not motions:
        raise ValueError("write_glb: no tracks to write")
    b = _Builder()
    animation = gl.Animation(name="motion", samplers=[], channels=[])
    roots: List[int] = []
    last_frame = max(int(m.frame_ids[-1]) for m in motions)
    for k, m in enumerate(motions):
        name = f"track{m.track_id}"
        if combined:
            times = m.frame_ids / m.fps
            vis_t, vis_s = [], []
            if m.frame_ids[0] > 0:
                vis_t.append(0.0), vis_s.append([0.0] * 3)
            # Switch half a frame early/late so rounding of key times never hides a frame.
            vis_t.append(max(0.0, (m.frame_ids[0] - 0.5) / m.fps)), vis_s.append([1.0] * 3)
            if m.frame_ids[-1] < last_frame:
                vis_t.append((m.frame_ids[-1] + 0.5) / m.fps), vis_s.append([0.0] * 3)
            visible = (vis_t, vis_s) if len(vis_t) > 1 else None
        else:
            times = (m.frame_ids - m.frame_ids[0]) / m.fps
            visible = None
        roots += _add_track(b, m, np.asarray(faces), np.asarray(weights), list(parents), times,
                            PALETTE[k % len(PALETTE)], visible, animation, name)
    g = b.gltf
    if camera is not None:
        g.cameras.append(gl.Camera(name="video_camera", type=gl.PERSPECTIVE, perspective=gl.Perspective(
            yfov=float(camera["yfov"]), aspectRatio=float(camera["aspect"]), znear=0.05, zfar=1000.0)))
        g.nodes.append(gl.Node(name="video_camera", camera=len(g.cameras) - 1))
        roots.append(len(g.nodes) - 1)
    if animation.channels:
        g.animations.append(animation)
    meta = {"fps": float(motions[0].fps), "tracks": [str(m.track_id) for m in motions],
            "first_frames": [int(m.frame_ids[0]) for m in motions], "frame": "y up (camera space rotated pi about x)"}
    meta.update(extras or {})
    g.scenes = [gl.Scene(name="pbn", nodes=roots, extras=meta)]
    g.scene = 0
    g = b.finish()
    out = atomic_write(path, lambda tmp: g.save_binary(str(tmp)))
    logger.info("wrote %s (%d track(s), %d frames)", out, len(motions), sum(m.num_frames for m in motions))
    return out
