"""Build the free "open" body model in the SMPL file format from the ``anny`` package.

Anny (NAVER; Apache-2.0 code, CC0 MakeHuman-derived data) is a phenotype-driven
human model with a 104-bone MakeHuman rig, an A-pose rest mesh, z-up axes with
the person facing -y. pbn needs SMPL's interface instead: 24 joints in SMPL's
tree, a T-pose rest, y up with the person facing +z, 10 linear shape
coefficients and joint regressors. This module turns one into the other:

1. sample adult phenotypes with Anny's own calibrated shape distribution and
   compute their rest meshes and bone heads (``rest_vertices``,
   ``rest_bone_heads``; the identity pose of Anny is *not* its rest mesh);
2. change axes (Anny x, y, z -> SMPL x, z, -y), symmetrise left/right;
3. re-pose the A-pose rest to SMPL's T-pose (arms straight along x, palms
   down, legs nearly vertical) with Anny's own skinning weights;
4. merge the 104 bones into SMPL's 24 joints (merged skinning weights; joint
   positions from the corresponding bone heads);
5. decimate the mean mesh to about ``target_vertices`` symmetrically (the left
   half is simplified with its centre border kept, then mirrored), and express
   every decimated vertex as a barycentric point of the full mesh so that all
   samples, weights and regressors transfer linearly;
6. 10-component PCA of the decimated shapes with unit-variance coefficients;
7. fit a non-negative, sparse, rows-sum-to-one joint regressor that
   reproduces the joints of all sampled shapes, build the extra (9) and H36M
   (17) regressors from Anny's COCO/feet keypoint regressors and the anatomy,
   and pick keypoint vertices;
8. write the files of the SMPL contract (see doc/body_models.md).

The builder is deterministic for a given seed and set of arguments.
"""
from __future__ import annotations

import io
import json
import logging
import math
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Tuple

import numpy as np
import torch

from lib.atomic_io import atomic_write_bytes
from lib.body_models.pickle_io import dump_portable_pickle

logger = logging.getLogger(__name__)

# Bump when the output of the builder changes for the same arguments.
BUILDER_VERSION = "1.1"
ANNY_VERSION_TESTED = "0.6.2"

SMPL_JOINT_NAMES: List[str] = [
    "pelvis", "L_hip", "R_hip", "spine1", "L_knee", "R_knee", "spine2", "L_ankle", "R_ankle",
    "spine3", "L_foot", "R_foot", "neck", "L_collar", "R_collar", "head", "L_shoulder",
    "R_shoulder", "L_elbow", "R_elbow", "L_wrist", "R_wrist", "L_hand", "R_hand",
]
SMPL_PARENTS: List[int] = [-1, 0, 0, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 9, 9, 12, 13, 14, 16, 17, 18, 19, 20, 21]
# Joint index of the mirrored joint (left <-> right).
SMPL_FLIP: List[int] = [0, 2, 1, 3, 5, 4, 6, 8, 7, 9, 11, 10, 12, 14, 13, 15, 17, 16, 19, 18, 21, 20, 23, 22]
NUM_BETAS = 10

# Anny axes (z up, person faces -y) -> SMPL axes (y up, person faces +z): x' = x, y' = z, z' = -y.
# Person's left is +x in both frames.
ANNY_TO_SMPL = np.array([[1.0, 0.0, 0.0], [0.0, 0.0, 1.0], [0.0, -1.0, 0.0]])

# SMPL joint -> the Anny bones whose (posed) heads define its position (mean if several).
# "{s}" is the side suffix (L/R).
_JOINT_BONES: Dict[str, List[str]] = {
    "pelvis": ["root"],
    "hip": ["upperleg01.{s}"],
    "spine1": ["spine04"],
    "knee": ["lowerleg01.{s}"],
    "spine2": ["spine02"],
    "ankle": ["foot.{s}"],
    "spine3": ["spine01"],
    "foot": ["toe1-1.{s}", "toe2-1.{s}", "toe3-1.{s}", "toe4-1.{s}", "toe5-1.{s}"],
    "neck": ["neck01"],
    "collar": ["clavicle.{s}"],
    "head": ["head"],
    "shoulder": ["upperarm01.{s}"],
    "elbow": ["lowerarm01.{s}"],
    "wrist": ["wrist.{s}"],
    "hand": ["finger2-1.{s}", "finger3-1.{s}", "finger4-1.{s}", "finger5-1.{s}"],
}
# Bones that start a new SMPL segment when walking down Anny's tree (the bones of the
# segment are this bone and its descendants up to the next segment bone).
_SEGMENT_START: Dict[str, str] = {
    "root": "pelvis", "upperleg01.{s}": "{S}_hip", "spine04": "spine1", "lowerleg01.{s}": "{S}_knee",
    "spine02": "spine2", "foot.{s}": "{S}_ankle", "spine01": "spine3",
    "toe1-1.{s}": "{S}_foot", "toe2-1.{s}": "{S}_foot", "toe3-1.{s}": "{S}_foot",
    "toe4-1.{s}": "{S}_foot", "toe5-1.{s}": "{S}_foot",
    "neck01": "neck", "clavicle.{s}": "{S}_collar", "head": "head", "upperarm01.{s}": "{S}_shoulder",
    "lowerarm01.{s}": "{S}_elbow", "wrist.{s}": "{S}_wrist",
    # Fingers (thumb included) follow SMPL's hand joint; the metacarpals (palm) stay with the wrist.
    "finger1-1.{s}": "{S}_hand", "finger2-1.{s}": "{S}_hand", "finger3-1.{s}": "{S}_hand",
    "finger4-1.{s}": "{S}_hand", "finger5-1.{s}": "{S}_hand",
}


@dataclass(frozen=True)
class BuildArgs:
    """Arguments that determine the output (recorded in meta.json for caching)."""

    n_shapes: int = 1000
    target_vertices: int = 7000
    seed: int = 0
    min_age: float = 20.0  # years (Anny's morphological age)
    max_age: float = 65.0

    def as_dict(self) -> dict:
        return dict(n_shapes=self.n_shapes, target_vertices=self.target_vertices, seed=self.seed,
                    min_age=self.min_age, max_age=self.max_age)


OUTPUT_FILES = ("SMPL_NEUTRAL.pkl", "J_regressor_extra.npy", "J_regressor_h36m.npy",
                "vertex_ids.json", "smpl_mean_params.npz", "meta.json")


def _anny_version() -> str:
    import importlib.metadata

    return importlib.metadata.version("anny")


def is_up_to_date(out_dir: str | os.PathLike, args: BuildArgs) -> bool:
    """True if ``out_dir`` holds a complete model built by this builder version with ``args``."""
    out_dir = Path(out_dir)
    if not all((out_dir / name).is_file() for name in OUTPUT_FILES):
        return False
    try:
        meta = json.loads((out_dir / "meta.json").read_text())
    except (OSError, ValueError):
        return False
    return meta.get("builder_version") == BUILDER_VERSION and meta.get("args") == args.as_dict()


# ----------------------------------------------------------------------------- geometry helpers


def _rotation_between(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """(..., 3), (..., 3) -> (..., 3, 3): the smallest rotation taking direction a to b."""
    a = a / a.norm(dim=-1, keepdim=True)
    b = b / b.norm(dim=-1, keepdim=True)
    axis = torch.cross(a, b, dim=-1)
    sin = axis.norm(dim=-1, keepdim=True).clamp_min(1e-12)
    cos = (a * b).sum(-1, keepdim=True)
    angle = torch.atan2(sin, cos)
    return _rotvec_to_matrix(axis / sin * angle)


def _rotvec_to_matrix(rotvec: torch.Tensor) -> torch.Tensor:
    import roma

    return roma.rotvec_to_rotmat(rotvec)


def _twist_about(axis: torch.Tensor, vec: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Rotation about unit ``axis`` turning the part of ``vec`` normal to it towards ``target``."""
    axis = axis / axis.norm(dim=-1, keepdim=True)
    v = vec - (vec * axis).sum(-1, keepdim=True) * axis
    t = target - (target * axis).sum(-1, keepdim=True) * axis
    angle = torch.atan2((axis * torch.cross(v, t, dim=-1)).sum(-1), (v * t).sum(-1))
    return _rotvec_to_matrix(axis * angle[..., None])


def _closest_points_on_mesh(points: np.ndarray, verts: np.ndarray, faces: np.ndarray, k: int = 24):
    """Closest surface point of each query point (brute force over the k triangles with the
    nearest centroids; no spatial-index package needed).

    Returns (face index (N,), barycentric coordinates (N, 3), distance (N,)).
    """
    import trimesh
    from scipy.spatial import cKDTree

    tris = verts[faces]  # (F, 3, 3)
    k = min(k, len(faces))
    _, cand = cKDTree(tris.mean(1)).query(points, k=k)  # (N, k)
    cand = cand.reshape(len(points), k)
    flat_tris = tris[cand.reshape(-1)]
    flat_pts = np.repeat(points, k, axis=0)
    closest = trimesh.triangles.closest_point(flat_tris, flat_pts)
    dist = np.linalg.norm(closest - flat_pts, axis=1).reshape(len(points), k)
    best = dist.argmin(1)
    rows = np.arange(len(points))
    face_idx = cand[rows, best]
    closest = closest.reshape(len(points), k, 3)[rows, best]
    bary = trimesh.triangles.points_to_barycentric(tris[face_idx], closest)
    bary = np.clip(bary, 0.0, None)
    bary /= bary.sum(1, keepdims=True)
    return face_idx, bary, dist[rows, best]


def _barycentric_matrix(face_idx: np.ndarray, bary: np.ndarray, faces: np.ndarray, n_cols: int):
    """Sparse (N, n_cols) matrix whose rows are the barycentric weights."""
    import scipy.sparse as sp

    rows = np.repeat(np.arange(len(face_idx)), 3)
    return sp.csr_matrix((bary.reshape(-1), (rows, faces[face_idx].reshape(-1))), shape=(len(face_idx), n_cols))


# ----------------------------------------------------------------------------- the builder


class _AnnySource:
    """Anny's data in SMPL axes: sampled rest shapes, bones, weights, keypoint regressors."""

    def __init__(self):
        import anny
        from anny.shape_distribution import SimpleShapeDistribution

        # No eyes/tongue: they are separate shells inside the head; without them the body is
        # one closed, consistently wound surface. Plain LBS (no Warp kernels to compile).
        self.model = anny.Anny(topology="anny-noeyes-notongue", skinning_method="lbs").to(torch.float64)
        self.labels: List[str] = list(self.model.bone_labels)
        self.parents: List[int] = list(self.model.bone_parents)
        self.faces = self.model.faces.cpu().numpy().astype(np.int64)
        self.num_bones = len(self.labels)
        self.SimpleShapeDistribution = SimpleShapeDistribution
        n = self.model.template_vertices.shape[0]
        w = torch.zeros(n, self.num_bones, dtype=torch.float64)
        w.scatter_add_(1, self.model.vertex_bone_indices.long(), self.model.vertex_bone_weights.to(torch.float64))
        self.weights = w  # (Vo, 104) dense skinning weights
        self.num_vertices = n

    def index(self, label: str) -> int:
        return self.labels.index(label)

    def sample_phenotypes(self, n: int, min_age: float, max_age: float, seed: int) -> torch.Tensor:
        dist = self.SimpleShapeDistribution(
            self.model,
            morphological_age_distribution=torch.distributions.Uniform(
                torch.tensor(min_age, dtype=torch.float64), torch.tensor(max_age, dtype=torch.float64)
            ),
        )
        with torch.random.fork_rng():
            torch.manual_seed(seed)
            _, kwargs = dist.sample(n)
        cols = [kwargs[label].clamp(0.0, 1.0) for label in self.model.phenotype_labels]
        return torch.stack(cols, dim=1).to(torch.float64)

    def rest(self, phenotypes: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        """(B, P) phenotypes -> rest vertices (B, Vo, 3) and bone heads (B, 104, 3), SMPL axes."""
        m = self.model
        empty = phenotypes.new_zeros(phenotypes.shape[0], 0)
        coeffs = m._get_phenotype_blendshape_coefficients(phenotypes, empty, empty)
        rest = m.get_rest_model(coeffs)
        conv = torch.as_tensor(ANNY_TO_SMPL, dtype=torch.float64)
        return rest["rest_vertices"] @ conv.T, rest["rest_bone_heads"] @ conv.T

    def coco_regressors(self) -> Dict[str, np.ndarray]:
        """Anny's COCO + feet keypoint regressors over the model's vertices (each row sums to 1)."""
        from anny.paths import get_anny_root_dir

        data = torch.load(get_anny_root_dir() / "data" / "keypoints" / "coco.pth", weights_only=True)
        idx = self.model.base_mesh_vertex_indices.cpu().numpy()
        out = {}
        for label, weights in data.items():
            w = weights.double().numpy()[idx]
            # The eye keypoints sit partly on the (removed) eyeballs: keep their eyelid part.
            out[label] = w / w.sum()
        return out


class OpenBodyModelBuilder:
    """Builds the open model; :meth:`build` returns the arrays, :func:`write_model` the files."""

    def __init__(self, args: BuildArgs):
        self.args = args
        self.timings: Dict[str, float] = {}

    def _tick(self, name: str, start: float) -> float:
        now = time.perf_counter()
        self.timings[name] = round(now - start, 2)
        logger.info("%s: %.1f s", name, now - start)
        return now

    # -- mirror maps ------------------------------------------------------------------------

    @staticmethod
    def _mirror_perm(verts: np.ndarray, tol: float = 1e-4) -> np.ndarray:
        from scipy.spatial import cKDTree

        dist, perm = cKDTree(verts).query(verts * np.array([-1.0, 1.0, 1.0]))
        if dist.max() > tol or len(np.unique(perm)) != len(perm):
            raise RuntimeError(f"mesh is not left/right symmetric (max mirror distance {dist.max():.2e} m)")
        return perm

    def _bone_mirror(self, src: _AnnySource) -> np.ndarray:
        out = []
        for label in src.labels:
            if label.endswith(".L"):
                out.append(src.index(label[:-2] + ".R"))
            elif label.endswith(".R"):
                out.append(src.index(label[:-2] + ".L"))
            else:
                out.append(src.index(label))
        return np.array(out)

    # -- bones -> SMPL joints -----------------------------------------------------------------

    def _bone_to_joint(self, src: _AnnySource) -> np.ndarray:
        """(104,) SMPL joint index each Anny bone's skinning weight goes to."""
        start = {}
        for pattern, joint in _SEGMENT_START.items():
            for s in ("L", "R"):
                start[pattern.format(s=s)] = SMPL_JOINT_NAMES.index(joint.format(S=s))
        out = np.full(src.num_bones, -1)
        for b in range(src.num_bones):  # parents come first in Anny's bone order
            label = src.labels[b]
            if label in start:
                out[b] = start[label]
            else:
                out[b] = out[src.parents[b]]
        return out

    def _joint_bones(self, src: _AnnySource) -> List[List[int]]:
        out = []
        for name in SMPL_JOINT_NAMES:
            side, base = (name[0], name[2:]) if name[:2] in ("L_", "R_") else ("", name)
            out.append([src.index(p.format(s=side)) for p in _JOINT_BONES[base]])
        return out

    # -- A-pose -> T-pose ---------------------------------------------------------------------

    def _tpose_transforms(self, src: _AnnySource, heads: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        """World rest->T-pose transforms of every bone: rotations (B,104,3,3), translations (B,104,3).

        Each adjusted bone gets a world-frame rotation about its (already moved) head, chosen
        from the current positions of its descendants' heads, so the adjustments compose down
        the tree: legs nearly vertical, upper arm, forearm and hand along +-x, palms down.
        """
        batch = heads.shape[0]
        dt = heads.dtype
        rot = torch.zeros(batch, src.num_bones, 3, 3, dtype=dt)
        trans = torch.zeros(batch, src.num_bones, 3, dtype=dt)
        idx = src.index

        def moved(bone_parent: int, bone: int) -> torch.Tensor:
            return (rot[:, bone_parent] @ heads[:, bone, :, None])[..., 0] + trans[:, bone_parent]

        adjust = {}
        for s, sign in (("L", 1.0), ("R", -1.0)):
            adjust[idx(f"upperleg01.{s}")] = ("leg", s, sign)
            adjust[idx(f"upperarm01.{s}")] = ("point", s, sign, f"lowerarm01.{s}")
            adjust[idx(f"lowerarm01.{s}")] = ("point", s, sign, f"wrist.{s}")
            adjust[idx(f"lowerarm02.{s}")] = ("palm", s, sign)
            adjust[idx(f"wrist.{s}")] = ("hand", s, sign)
        eye = torch.eye(3, dtype=dt).expand(batch, 3, 3)
        xaxis = torch.tensor([1.0, 0.0, 0.0], dtype=dt)
        for b in range(src.num_bones):
            p = src.parents[b]
            if p < 0:
                rot[:, b] = eye
                continue
            if b not in adjust:
                rot[:, b], trans[:, b] = rot[:, p], trans[:, p]
                continue
            head = moved(p, b)
            job = adjust[b]
            sign = job[2]
            if job[0] == "leg":
                # Hip -> ankle nearly vertical: ankle 2 cm further out than the hip (as SMPL's
                # T-pose), front/back offset kept.
                d = moved(p, idx(f"foot.{job[1]}")) - head
                length = d.norm(dim=-1)
                out = torch.full_like(length, 0.02 * sign)
                down = -(length**2 - out**2 - d[:, 2] ** 2).sqrt()
                delta = _rotation_between(d, torch.stack([out, down, d[:, 2]], dim=-1))
            elif job[0] == "point":
                d = moved(p, idx(job[3])) - head
                delta = _rotation_between(d, (sign * xaxis).expand_as(d))
            elif job[0] == "palm":
                # Twist the forearm so the knuckle line (little finger -> index finger)
                # points forward (+z): palm down, thumb forward, as in SMPL's T-pose.
                s = job[1]
                knuckles = moved(p, idx(f"finger2-1.{s}")) - moved(p, idx(f"finger5-1.{s}"))
                axis = (sign * xaxis).expand_as(knuckles)
                delta = _twist_about(axis, knuckles, torch.tensor([0.0, 0.0, 1.0], dtype=dt).expand_as(knuckles))
            else:  # hand: wrist -> middle knuckles along the arm
                s = job[1]
                mid = torch.stack([moved(p, idx(f"finger{i}-1.{s}")) for i in (2, 3, 4, 5)]).mean(0)
                d = mid - head
                delta = _rotation_between(d, (sign * xaxis).expand_as(d))
            rot[:, b] = delta @ rot[:, p]
            trans[:, b] = (delta @ (trans[:, p] - head)[..., None])[..., 0] + head
        return rot, trans

    @staticmethod
    def _skin(weights: torch.Tensor, verts: torch.Tensor, rot: torch.Tensor, trans: torch.Tensor) -> torch.Tensor:
        """LBS: weights (V, K), verts (B, V, 3), rot (B, K, 3, 3), trans (B, K, 3) -> (B, V, 3)."""
        batch, k = rot.shape[:2]
        mats = torch.cat([rot, trans[..., None]], dim=-1).reshape(batch, k, 12)
        blended = (weights @ mats).reshape(batch, -1, 3, 4)
        return (blended[..., :3] * verts[:, :, None, :]).sum(-1) + blended[..., 3]

    # -- decimation ---------------------------------------------------------------------------

    def _decimate_symmetric(self, verts: np.ndarray, faces: np.ndarray, target_vertices: int):
        """Simplify a left/right symmetric closed mesh to about ``target_vertices``, keeping
        exact mirror symmetry: the left half (x >= 0) is simplified with its centre border kept,
        then mirrored and welded. Returns (vertices, faces, mirror permutation)."""
        import fast_simplification

        centre = np.abs(verts[:, 0]) < 1e-9
        left_faces = faces[(verts[faces, 0] >= -1e-9).all(1)]
        used = np.unique(left_faces)
        remap = -np.ones(len(verts), dtype=np.int64)
        remap[used] = np.arange(len(used))
        half_v, half_f = verts[used], remap[left_faces]
        n_centre = int(centre[used].sum())
        want_half = (target_vertices + n_centre) / 2.0
        target_faces = int(2 * want_half - n_centre)
        for _ in range(4):
            pts, tri = fast_simplification.simplify(
                half_v, half_f.astype(np.int64), target_count=target_faces, agg=5.0, preserve_border=True
            )
            n_total = 2 * len(pts) - int((np.abs(pts[:, 0]) < 1e-9).sum())
            if abs(n_total - target_vertices) <= 0.02 * target_vertices:
                break
            target_faces = int(target_faces * target_vertices / n_total)
        pts = np.asarray(pts, dtype=np.float64)
        tri = np.asarray(tri, dtype=np.int64)
        on_centre = np.abs(pts[:, 0]) < 1e-9
        pts[on_centre, 0] = 0.0
        side = np.nonzero(~on_centre)[0]
        n_half = len(pts)
        mirror_index = np.arange(n_half)
        mirror_index[side] = n_half + np.arange(len(side))
        all_v = np.concatenate([pts, pts[side] * np.array([-1.0, 1.0, 1.0])])
        right_f = mirror_index[tri][:, ::-1]  # mirroring flips the winding: reverse it back
        all_f = np.concatenate([tri, right_f])
        perm = np.arange(len(all_v))
        perm[side] = n_half + np.arange(len(side))
        perm[n_half + np.arange(len(side))] = side
        return all_v, all_f, perm

    # -- regressors ---------------------------------------------------------------------------

    @staticmethod
    def _fit_regressor_row(xs: np.ndarray, target: np.ndarray, cand: np.ndarray, ridge: float) -> np.ndarray:
        """Non-negative weights over ``cand`` vertices, summing to one, with xs[:, cand] @ w ~ target.

        xs: (S, V, 3) shapes; target: (S, 3).
        """
        from scipy.optimize import nnls

        a = xs[:, cand, :].transpose(0, 2, 1).reshape(-1, len(cand))  # (S*3, C)
        b = target.reshape(-1)
        rho = 10.0 * math.sqrt(len(b))
        a = np.concatenate([a, rho * np.ones((1, len(cand))), math.sqrt(ridge) * np.eye(len(cand))])
        b = np.concatenate([b, [rho], np.zeros(len(cand))])
        w, _ = nnls(a, b, maxiter=50 * len(cand))
        w[w < 1e-4 * w.max()] = 0.0
        return w / w.sum()

    def _fit_joint_regressor(self, xs: np.ndarray, joints: np.ndarray, weights: np.ndarray, perm: np.ndarray):
        """(24, V) regressor reproducing ``joints`` (S, 24, 3) from ``xs`` (S, V, 3); symmetric."""
        num_v = xs.shape[1]
        mean_v, mean_j = xs.mean(0), joints.mean(0)
        children = {j: [c for c, p in enumerate(SMPL_PARENTS) if p == j] for j in range(24)}
        reg = np.zeros((24, num_v))
        ridge = 1e-6 * xs.shape[0]
        for j in range(24):
            if SMPL_FLIP[j] < j:  # right joints: mirrored from the left ones below
                continue
            family = [j] + children[j] + ([SMPL_PARENTS[j]] if SMPL_PARENTS[j] >= 0 else [])
            near = weights[:, family].sum(1) > 0.2
            dist = np.linalg.norm(mean_v - mean_j[j], axis=1)
            cand = np.nonzero(near)[0]
            cand = cand[np.argsort(dist[cand])[:160]]
            reg[j, cand] = self._fit_regressor_row(xs, joints[:, j], cand, ridge)
        for j in range(24):
            f = SMPL_FLIP[j]
            if f > j:
                reg[f] = reg[j][perm]
            elif f == j:
                reg[j] = 0.5 * (reg[j] + reg[j][perm])
        return reg

    # -- the build ----------------------------------------------------------------------------

    def build(self) -> Dict[str, object]:
        args = self.args
        t0 = t = time.perf_counter()
        src = _AnnySource()
        t = self._tick("load anny", t)

        phen = src.sample_phenotypes(args.n_shapes, args.min_age, args.max_age, args.seed)
        # Symmetry maps on the full-resolution mesh (from the first sample's rest mesh).
        v0, _ = src.rest(phen[:1])
        vperm = self._mirror_perm(v0[0].numpy())
        bperm = self._bone_mirror(src)
        flip = torch.tensor([-1.0, 1.0, 1.0], dtype=torch.float64)
        vperm_t, bperm_t = torch.as_tensor(vperm), torch.as_tensor(bperm)
        centre = torch.as_tensor(vperm == np.arange(len(vperm)))
        bone_to_joint = self._bone_to_joint(src)
        joint_bones = self._joint_bones(src)
        # Symmetric skinning weights of the full mesh (Anny's are symmetric up to round-off).
        w_anny = 0.5 * (src.weights + src.weights[vperm_t][:, bperm_t])

        tposed, joints = [], []
        chunk = 50
        for i in range(0, args.n_shapes, chunk):
            verts, heads = src.rest(phen[i:i + chunk])
            verts = 0.5 * (verts + verts[:, vperm_t] * flip)
            verts[:, centre, 0] = 0.0
            heads = 0.5 * (heads + heads[:, bperm_t] * flip)
            rot, trans = self._tpose_transforms(src, heads)
            tposed.append(self._skin(w_anny, verts, rot, trans))
            posed_heads = (rot @ heads[..., None])[..., 0] + trans
            joints.append(torch.stack([posed_heads[:, ids].mean(1) for ids in joint_bones], dim=1))
        # Every shape is placed with its pelvis joint at the origin (as SMPL's template is,
        # roughly), so shape changes grow around the hips and carry no global translation.
        joints_t = torch.cat(joints)
        pelvis = joints_t[:, :1].clone()
        joints_np = (joints_t - pelvis).numpy()
        tposed_t = torch.cat(tposed) - pelvis
        t = self._tick("rest shapes + T-pose", t)

        mean_full = tposed_t.mean(0).numpy()
        mean_full[np.abs(mean_full[:, 0]) < 1e-12, 0] = 0.0
        dec_v, dec_f, dperm = self._decimate_symmetric(mean_full, src.faces, args.target_vertices)
        # Decimated vertices as barycentric points of the full mesh, mirror-consistent: the
        # left (and centre) vertices are projected, the right ones use the mirrored rows.
        import scipy.sparse as sp

        n_dec = len(dec_v)
        left = np.nonzero(dperm >= np.arange(n_dec))[0]
        is_centre = dperm[left] == left
        fidx, bary, _ = _closest_points_on_mesh(dec_v[left], mean_full, src.faces)
        b_left = _barycentric_matrix(fidx, bary, src.faces, src.num_vertices)
        # (row @ mirror_cols) puts each weight on the mirrored full-mesh vertex.
        mirror_cols = sp.csr_matrix((np.ones(len(vperm)), (np.arange(len(vperm)), vperm)),
                                    shape=(len(vperm), len(vperm)))
        b_mirror = b_left @ mirror_cols
        half = sp.diags(0.5 * is_centre.astype(np.float64))
        b_left = b_left + half @ (b_mirror - b_left)  # centre vertices stay on x = 0
        stacked = sp.vstack([b_left, b_mirror[np.nonzero(~is_centre)[0]]]).tocsr()
        order = np.empty(n_dec, dtype=np.int64)
        order[left] = np.arange(len(left))
        order[dperm[left[~is_centre]]] = len(left) + np.arange(int((~is_centre).sum()))
        bmat = stacked[order]
        cen = left[is_centre]
        t = self._tick("decimate", t)

        xs = np.stack([bmat @ v for v in tposed_t.numpy()])  # (S, Vd, 3)
        xs[:, cen, 0] = 0.0
        num_v = xs.shape[1]

        # PCA with unit-variance coefficients.
        mean = xs.mean(0)
        centred = (xs - mean).reshape(len(xs), -1)
        # Eigen-decomposition of the small (S, S) Gram matrix instead of an SVD of (S, 3V).
        evals, evecs = np.linalg.eigh(centred @ centred.T)
        evals, evecs = evals[::-1].clip(0.0), evecs[:, ::-1]
        svals = np.sqrt(evals)
        sigma = svals[:NUM_BETAS] / math.sqrt(len(xs) - 1)
        comps = (evecs[:, :NUM_BETAS].T @ centred) / svals[:NUM_BETAS, None]  # (10, Vd*3) orthonormal
        coeffs = centred @ comps.T / sigma  # (S, 10) unit variance
        heights = xs[:, :, 1].max(1) - xs[:, :, 1].min(1)
        for i in range(NUM_BETAS):
            ref = np.corrcoef(coeffs[:, i], heights)[0, 1] if i == 0 else comps[i][np.argmax(np.abs(comps[i]))]
            if ref < 0:
                comps[i] *= -1
                coeffs[:, i] *= -1
        shapedirs = (comps * sigma[:, None]).reshape(NUM_BETAS, num_v, 3).transpose(1, 2, 0)
        explained = float((svals[:NUM_BETAS] ** 2).sum() / (svals**2).sum())
        height_corr = float(np.corrcoef(coeffs[:, 0], heights)[0, 1])
        t = self._tick("pca", t)

        # Skinning weights: Anny bones merged into SMPL joints, moved to the decimated mesh.
        merge = np.zeros((src.num_bones, 24))
        merge[np.arange(src.num_bones), bone_to_joint] = 1.0
        w_smpl = np.asarray(bmat @ (w_anny.numpy() @ merge))
        w_smpl = 0.5 * (w_smpl + w_smpl[dperm][:, SMPL_FLIP])
        w_smpl[w_smpl < 1e-6] = 0.0
        w_smpl /= w_smpl.sum(1, keepdims=True)

        n_fit = min(len(xs), 400)
        j_reg = self._fit_joint_regressor(xs[:n_fit], joints_np[:n_fit], w_smpl, dperm)
        fit_err = np.linalg.norm(np.einsum("jv,svc->sjc", j_reg, xs) - joints_np, axis=-1)
        logger.info("joint regressor fit error per joint, mean/max mm: %s", {
            SMPL_JOINT_NAMES[j]: (round(float(fit_err[:, j].mean() * 1000), 1), round(float(fit_err[:, j].max() * 1000), 1))
            for j in range(24)})
        t = self._tick("joint regressor", t)

        # Keypoint regressors moved to the decimated mesh: each full-mesh vertex as its closest
        # point on the decimated surface.
        fidx_o, bary_o, _ = _closest_points_on_mesh(mean_full, mean, dec_f)
        a_od = _barycentric_matrix(fidx_o, bary_o, dec_f, num_v)  # (Vo, Vd)
        coco = {k: np.asarray(a_od.T @ w).ravel() for k, w in src.coco_regressors().items()}
        kp = self._keypoints(coco, mean, w_smpl, j_reg, dperm)
        t = self._tick("keypoints", t)

        template = mean.copy()
        out = dict(
            v_template=template,
            shapedirs=shapedirs,
            posedirs=np.zeros((num_v, 3, 207)),
            J_regressor=j_reg,
            weights=w_smpl,
            kintree_table=np.array([[4294967295] + SMPL_PARENTS[1:], list(range(24))], dtype=np.int64),
            f=dec_f.astype(np.int64),
            J_regressor_extra=kp["extra"],
            J_regressor_h36m=kp["h36m"],
            vertex_ids=kp["vertex_ids"],
            mean_pose6d=mean_pose_6d(),
            stats=dict(
                num_vertices=int(num_v),
                num_faces=int(len(dec_f)),
                height_zero_betas_m=round(float(template[:, 1].max() - template[:, 1].min()), 4),
                pca_explained_variance_10=round(explained, 4),
                beta1_height_correlation=round(height_corr, 3),
                joint_fit_error_mm_mean=round(float(fit_err.mean() * 1000), 2),
                joint_fit_error_mm_max=round(float(fit_err.max() * 1000), 2),
                sample_height_m_mean=round(float(heights.mean()), 3),
                sample_height_m_std=round(float(heights.std()), 3),
            ),
        )
        self._tick("total", t0)
        return out

    def _keypoints(self, coco: Dict[str, np.ndarray], mean: np.ndarray, w_smpl: np.ndarray,
                   j_reg: np.ndarray, perm: np.ndarray) -> dict:
        """Extra (9) and H36M (17) regressors and the 11 keypoint vertex ids."""
        num_v = len(mean)
        J = {name: j_reg[i] for i, name in enumerate(SMPL_JOINT_NAMES)}

        def sym_pair(left_row: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
            return left_row, left_row[perm]

        def sym_centre(row: np.ndarray) -> np.ndarray:
            return 0.5 * (row + row[perm])

        c = {k: v for k, v in coco.items()}
        lhip, rhip = sym_pair(c["left_hip"])
        lsho, rsho = sym_pair(c["left_shoulder"])
        lelb, relb = sym_pair(c["left_elbow"])
        lwri, rwri = sym_pair(c["left_wrist"])
        lkne, rkne = sym_pair(c["left_knee"])
        lank, rank = sym_pair(c["left_ankle"])
        nose = sym_centre(c["nose"])
        lear, rear = sym_pair(c["left_ear"])

        # Top of the head: the vertices within 1 cm of the highest point of the mean shape.
        top = mean[:, 1] >= mean[:, 1].max() - 0.01
        headtop = np.where(top, 1.0, 0.0)
        headtop = sym_centre(headtop / headtop.sum())
        pelvis = 0.5 * (lhip + rhip)
        thorax = 0.5 * (lsho + rsho)
        neck_lsp = 0.5 * thorax + 0.5 * J["neck"]
        spine = 0.5 * (pelvis + thorax)
        # H36M's "neck/nose" joint sits in the face behind the nose. The mesh has a mouth and
        # throat cavity (outside the body), so stay above it: in the upper jaw, 0.4 nose tip +
        # 0.4 SMPL head joint (skull base) + 0.2 top of the head. H36M's head joint: between
        # the head centre (mid ears) and the top of the head.
        jaw = 0.4 * nose + 0.4 * J["head"] + 0.2 * headtop
        head = 0.5 * headtop + 0.25 * (lear + rear)
        extra = np.stack([rhip, lhip, neck_lsp, headtop, pelvis, thorax, spine, jaw, head])
        h36m = np.stack([pelvis, lhip, lkne, lank, rhip, rkne, rank, spine, thorax, jaw, headtop,
                         lsho, lelb, lwri, rsho, relb, rwri])

        # Keypoint vertices: nearest vertex to the keypoint position; right = mirror of left.
        centre_ids = np.nonzero(perm == np.arange(num_v))[0]

        def nearest(point: np.ndarray, pool: Optional[np.ndarray] = None) -> int:
            ids = np.arange(num_v) if pool is None else pool
            return int(ids[np.argmin(np.linalg.norm(mean[ids] - point, axis=1))])

        feet_l = np.nonzero(w_smpl[:, SMPL_JOINT_NAMES.index("L_ankle")] + w_smpl[:, SMPL_JOINT_NAMES.index("L_foot")] > 0.5)[0]
        head_ids = np.nonzero(w_smpl[:, SMPL_JOINT_NAMES.index("head")] > 0.5)[0]
        ids = {"nose": nearest(c["nose"] @ mean, centre_ids)}
        ids["leye"] = nearest(c["left_eye"] @ mean, head_ids)
        # Anny's ear keypoint is a broad average inside the head; take the outermost head
        # vertex at its height and depth (the ear).
        ear = c["left_ear"] @ mean
        cand = head_ids[np.linalg.norm(mean[head_ids][:, 1:] - ear[1:], axis=1) < 0.02]
        ids["lear"] = int(cand[np.argmax(mean[cand, 0])]) if len(cand) else nearest(ear, head_ids)
        ids["lbigtoe"] = nearest(c["left_big_toe"] @ mean, feet_l)
        ids["lsmalltoe"] = nearest(c["left_small_toe"] @ mean, feet_l)
        # Heel: the rearmost foot vertex in the lowest 3 cm.
        floor = mean[feet_l, 1].min()
        low = feet_l[mean[feet_l, 1] < floor + 0.03]
        heel_x = (c["left_heel"] @ mean)[0]
        low = low[np.abs(mean[low, 0] - heel_x) < 0.02] if (np.abs(mean[low, 0] - heel_x) < 0.02).any() else low
        ids["lheel"] = int(low[np.argmin(mean[low, 2])])
        for name in ("eye", "ear", "bigtoe", "smalltoe", "heel"):
            ids["r" + name] = int(perm[ids["l" + name]])
        order = ["nose", "reye", "leye", "rear", "lear", "lbigtoe", "lsmalltoe", "lheel", "rbigtoe", "rsmalltoe", "rheel"]
        return dict(extra=extra, h36m=h36m, vertex_ids={k: ids[k] for k in order})


def mean_pose_6d() -> np.ndarray:
    """(144,) mean pose as 24 x 6D (first two columns of each rotation matrix, row-major, i.e.
    ``R[:, :2].reshape(6)`` as lib.geometry.rotations.matrix_to_rot6d and SPIN's file).

    Global orientation: pi about x (the model faces a camera whose image y points down);
    body: a relaxed standing pose, arms 65 degrees down from the T-pose, elbows bent 15
    degrees, knees 5 degrees.
    """
    import roma

    rotvec = torch.zeros(24, 3, dtype=torch.float64)
    rotvec[0] = torch.tensor([math.pi, 0.0, 0.0])
    down, elbow, knee = math.radians(65), math.radians(15), math.radians(5)
    rotvec[16] = torch.tensor([0.0, 0.0, -down])  # L_shoulder: +x arm swung down
    rotvec[17] = torch.tensor([0.0, 0.0, down])
    rotvec[18] = torch.tensor([0.0, -elbow, 0.0])  # L_elbow: forearm forward (+z)
    rotvec[19] = torch.tensor([0.0, elbow, 0.0])
    rotvec[4] = torch.tensor([knee, 0.0, 0.0])  # knees: shin backwards
    rotvec[5] = torch.tensor([knee, 0.0, 0.0])
    rotmat = roma.rotvec_to_rotmat(rotvec)
    return rotmat[:, :, :2].reshape(-1).numpy()


def write_model(model: Dict[str, object], out_dir: str | os.PathLike, args: BuildArgs, seconds: float) -> None:
    """Write the SMPL-contract files into ``out_dir`` (each atomically; meta.json last)."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "meta.json").unlink(missing_ok=True)  # an interrupted rebuild is never "up to date"
    pkl = {k: np.asarray(model[k]) for k in ("v_template", "shapedirs", "posedirs", "J_regressor", "weights",
                                             "kintree_table", "f")}
    for key in ("v_template", "shapedirs", "posedirs", "J_regressor", "weights"):
        pkl[key] = pkl[key].astype(np.float64)
    dump_portable_pickle(pkl, out_dir / "SMPL_NEUTRAL.pkl")
    for name, key in (("J_regressor_extra.npy", "J_regressor_extra"), ("J_regressor_h36m.npy", "J_regressor_h36m")):
        buf = io.BytesIO()
        np.save(buf, np.asarray(model[key], dtype=np.float64))
        atomic_write_bytes(out_dir / name, buf.getvalue())
    buf = io.BytesIO()
    np.savez(buf, pose=np.asarray(model["mean_pose6d"], dtype=np.float64), shape=np.zeros(NUM_BETAS),
             cam=np.array([0.9, 0.0, 0.0]))
    atomic_write_bytes(out_dir / "smpl_mean_params.npz", buf.getvalue())
    atomic_write_bytes(out_dir / "vertex_ids.json", (json.dumps(model["vertex_ids"], indent=1) + "\n").encode())
    meta = dict(
        name="pbn open body model",
        source=f"anny {_anny_version()} (NAVER); topology anny-noeyes-notongue, rig anny",
        licence="derived from anny: Apache-2.0 code, CC0 data (MakeHuman assets); this model: CC0 data",
        builder="lib/body_models/anny_builder.py",
        builder_version=BUILDER_VERSION,
        args=args.as_dict(),
        build_seconds=round(seconds, 1),
        axes="SMPL: metres, y up, the person faces +z, left side at +x; rest pose: T-pose",
        joints=SMPL_JOINT_NAMES,
        betas=f"{NUM_BETAS} PCA components of the sampled adult shapes, unit variance "
              "(beta_i = 1 is one standard deviation); beta_1 grows with height",
        pose_correctives="none (posedirs are zeros)",
        mean_pose_layout="pose: 24 x 6D, each the first two columns of the rotation matrix "
                         "laid out row-major (R[:, :2].reshape(6), as matrix_to_rot6d in "
                         "lib/geometry/rotations.py and SPIN's smpl_mean_params.npz); joint 0 = "
                         "global orientation (pi about x)",
        extra_regressor_rows=["rhip_lsp", "lhip_lsp", "neck_lsp", "headtop", "pelvis_mpii", "thorax_mpii",
                              "spine_h36m", "jaw_h36m", "head_h36m"],
        **model["stats"],
    )
    atomic_write_bytes(out_dir / "meta.json", (json.dumps(meta, indent=1) + "\n").encode())


def build_open_body_model(out_dir: str | os.PathLike, args: Optional[BuildArgs] = None, force: bool = False) -> Path:
    """Build the open model into ``out_dir`` unless an up-to-date one is there. Returns out_dir."""
    args = args or BuildArgs()
    out_dir = Path(out_dir)
    if not force and is_up_to_date(out_dir, args):
        logger.info("open body model in %s is up to date", out_dir)
        return out_dir
    if args.target_vertices < 6890:
        # Stock smplx.SMPL picks SMPL's own keypoint vertex ids (up to 6832): keep the mesh larger.
        raise ValueError("target_vertices must be >= 6890 so stock smplx.SMPL can load the model")
    start = time.perf_counter()
    model = OpenBodyModelBuilder(args).build()
    write_model(model, out_dir, args, time.perf_counter() - start)
    logger.info("wrote the open body model to %s (%s)", out_dir, model["stats"])
    return out_dir
