"""A stateless SMPL-format body layer: rotation matrices in, any batch size.

One class serves every body model in the SMPL file format (the real SMPL and
the open model): linear blend skinning of a template with shape and pose blend
shapes over the 24-joint SMPL tree, plus the joint sets pbn needs:

- ``smpl_joints``: the 24 posed SMPL joints;
- ``joints``: the 49-joint training format (lib.joints.conventions.SPIN_49),
  taken from the SMPL joints, 11 keypoint vertices (nose, eyes, ears, feet) and
  the 9 rows of the extra joint regressor;
- :meth:`BodyModelLayer.h36m_joints`: the H36M-17 regressor for evaluation.

``joints_only=True`` skins only the few vertices the 49 joints need, which
makes fitting loops (SMPLify) an order of magnitude cheaper than skinning the
whole mesh.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, List, Optional

import numpy as np
import torch
from torch import nn

from lib.joints.conventions import SPIN_49

NUM_BETAS = 10
NUM_JOINTS = 24

# The 11 keypoint vertices, in the order their rows follow the 24 SMPL joints.
VERTEX_KEYPOINTS: List[str] = [
    "nose", "reye", "leye", "rear", "lear",
    "lbigtoe", "lsmalltoe", "lheel", "rbigtoe", "rsmalltoe", "rheel",
]
# Rows of J_regressor_extra.npy, following the keypoint vertices.
EXTRA_JOINTS: List[str] = [
    "rhip", "lhip", "neck", "headtop", "pelvis", "thorax", "spine_h36m", "jaw_h36m", "head_h36m",
]


def _build_joint_map() -> np.ndarray:
    """Index of each of the 49 joints in [24 SMPL joints | 11 vertices | 9 extra]."""
    smpl = {
        "midhip": 0, "lhip": 1, "rhip": 2, "lknee": 4, "rknee": 5, "lankle": 7, "rankle": 8,
        "neck": 12, "lshoulder": 16, "rshoulder": 17, "lelbow": 18, "relbow": 19,
        "lwrist": 20, "rwrist": 21,
    }
    vert = {n: NUM_JOINTS + i for i, n in enumerate(VERTEX_KEYPOINTS)}
    extra = {n: NUM_JOINTS + len(VERTEX_KEYPOINTS) + i for i, n in enumerate(EXTRA_JOINTS)}
    out = []
    for name in SPIN_49:
        if name.startswith("op_"):
            base = name[3:]
            # OpenPose-style joints sit on the SMPL skeleton or on keypoint vertices.
            out.append(smpl[base] if base in smpl else vert[base])
        elif name in extra:
            out.append(extra[name])
        elif name in vert:
            out.append(vert[name])
        else:  # knees, ankles, shoulders, elbows, wrists: SMPL joints
            out.append(smpl[name])
    return np.array(out, dtype=np.int64)


JOINT_MAP = _build_joint_map()


@dataclass
class BodyModelOutput:
    """Output of :class:`BodyModelLayer`; metres, in the model frame plus ``transl``.

    vertices: (B, V, 3), or None with ``joints_only=True``.
    joints: (B, 49, 3) in SPIN_49 order.
    smpl_joints: (B, 24, 3).
    rest_joints: (B, 24, 3) shaped joints before posing (for exporters/IK).
    """

    vertices: Optional[torch.Tensor]
    joints: torch.Tensor
    smpl_joints: torch.Tensor
    rest_joints: torch.Tensor


class BodyModelLayer(nn.Module):
    """Stateless LBS body layer in the SMPL file format.

    Args:
        v_template: (V, 3) template vertices, metres, T-pose.
        shapedirs: (V, 3, NB) shape blend shapes (NB >= 10; the first 10 are used).
        posedirs: (V, 3, 207) pose blend shapes (all zero for the open model).
        j_regressor: (24, V) joint regressor.
        weights: (V, 24) skinning weights.
        parents: (24,) parent index per joint, -1 for the root.
        faces: (F, 3) triangle indices.
        j_regressor_extra: (9, V) rows in :data:`EXTRA_JOINTS` order.
        j_regressor_h36m: (17, V) rows in H36M_17 order.
        vertex_ids: the 11 :data:`VERTEX_KEYPOINTS` vertex indices, in order.
        mean_params: dict with ``pose`` (144,) 6D, ``shape`` (10,), ``cam`` (3,).
        kind: name of the model ("open" / "smpl"), for messages and checks.
    """

    def __init__(
        self,
        v_template: np.ndarray,
        shapedirs: np.ndarray,
        posedirs: np.ndarray,
        j_regressor: np.ndarray,
        weights: np.ndarray,
        parents: np.ndarray,
        faces: np.ndarray,
        j_regressor_extra: np.ndarray,
        j_regressor_h36m: np.ndarray,
        vertex_ids: List[int],
        mean_params: Dict[str, np.ndarray],
        kind: str = "smpl",
    ):
        super().__init__()
        self.kind = kind
        f32 = lambda a: torch.as_tensor(np.asarray(a), dtype=torch.float32)  # noqa: E731
        v_template = f32(v_template)
        shapedirs = f32(shapedirs)[..., :NUM_BETAS]
        j_regressor = f32(j_regressor)
        num_verts = v_template.shape[0]
        self.num_vertices = num_verts
        self.register_buffer("v_template", v_template)
        self.register_buffer("shapedirs", shapedirs)  # (V, 3, 10)
        posedirs = f32(posedirs).reshape(num_verts * 3, -1)
        self.has_pose_correctives = bool(posedirs.abs().max() > 0)
        # (207, V*3): the pose feature multiplies from the left.
        self.register_buffer("posedirs", posedirs.T.contiguous() if self.has_pose_correctives else torch.zeros(0))
        self.register_buffer("j_regressor", j_regressor)
        self.register_buffer("weights", f32(weights))
        self.register_buffer("faces_tensor", torch.as_tensor(np.asarray(faces, dtype=np.int64)))
        self.register_buffer("j_regressor_h36m", f32(j_regressor_h36m))
        parents = np.asarray(parents, dtype=np.int64).copy()
        parents[0] = -1
        self.parents: List[int] = parents.tolist()
        # Shaped joints are linear in betas: J = J_template + J_dirs @ betas.
        self.register_buffer("j_template", j_regressor @ v_template)  # (24, 3)
        self.register_buffer("j_shapedirs", torch.einsum("jv,vcb->jcb", j_regressor, shapedirs))  # (24, 3, 10)

        # Joints-only path. The extra joints are linear in the posed vertices, so
        # E @ LBS(v) = sum_k A_k (sum_v E_jv W_vk [v_v; 1]) with v = v_template + S betas:
        # precompute those sums per (extra joint, skinning joint) and the joints never
        # need the mesh. Keypoint vertices are skinned individually.
        extra = f32(j_regressor_extra)
        self.register_buffer("j_regressor_extra", extra)
        weights_t = f32(weights)
        ew = extra[:, :, None] * weights_t[None]  # (9, V, 24)
        self.register_buffer("extra_w", ew.sum(1))  # (9, 24)
        self.register_buffer("extra_p", torch.einsum("jvk,vc->jkc", ew, v_template))  # (9, 24, 3)
        self.register_buffer("extra_q", torch.einsum("jvk,vcb->jkcb", ew, shapedirs))  # (9, 24, 3, 10)
        self.register_buffer("vertex_ids", torch.as_tensor(np.asarray(vertex_ids, dtype=np.int64)))
        self.register_buffer("joint_map", torch.as_tensor(JOINT_MAP))
        self.mean_params = {k: np.asarray(v, dtype=np.float32) for k, v in mean_params.items()}

    @property
    def faces(self) -> np.ndarray:
        """(F, 3) int64 triangle indices."""
        return self.faces_tensor.cpu().numpy()

    def forward(
        self,
        global_orient: torch.Tensor,
        body_pose: torch.Tensor,
        betas: Optional[torch.Tensor] = None,
        transl: Optional[torch.Tensor] = None,
        joints_only: bool = False,
    ) -> BodyModelOutput:
        """Pose and shape the body.

        Args:
            global_orient: (B, 1, 3, 3) or (B, 3, 3) root rotation.
            body_pose: (B, 23, 3, 3) joint rotations relative to the parent.
            betas: (B, 10) shape coefficients, or (1, 10) / (10,) broadcast; None = zeros.
            transl: (B, 3) metres added to every output, or None.
            joints_only: skin only the vertices the 49 joints need (``vertices`` is None).
        Returns:
            :class:`BodyModelOutput`.
        """
        batch = body_pose.shape[0]
        dtype, device = self.v_template.dtype, self.v_template.device
        if global_orient.dim() == 3:
            global_orient = global_orient[:, None]
        rot = torch.cat([global_orient, body_pose], dim=1).to(dtype)  # (B, 24, 3, 3)
        if rot.shape[1:] != (NUM_JOINTS, 3, 3):
            raise ValueError(
                f"body layer: global_orient + body_pose must give (B, 24, 3, 3) rotations, got {tuple(rot.shape)}"
            )
        if betas is None:
            betas = torch.zeros(1, NUM_BETAS, dtype=dtype, device=device)
        betas = betas.to(dtype).reshape(-1, betas.shape[-1])[:, :NUM_BETAS]
        betas = betas.expand(batch, -1)

        rest_joints = self.j_template + torch.einsum("jcb,nb->njc", self.j_shapedirs, betas)  # (B, 24, 3)
        transforms, posed_joints = self._forward_kinematics(rot, rest_joints)  # (B,24,3,4), (B,24,3)

        if joints_only and not self.has_pose_correctives:
            ids = self.vertex_ids
            kp_rest = self.v_template[ids] + torch.einsum("vcb,nb->nvc", self.shapedirs[ids], betas)
            kp_verts = self._skin(transforms, kp_rest, self.weights[ids])  # (B, 11, 3)
            rest = self.extra_p + torch.einsum("jkcb,nb->njkc", self.extra_q, betas)  # (B, 9, 24, 3)
            extra = torch.einsum("nkcd,njkd->njc", transforms[..., :3], rest) + torch.einsum(
                "jk,nkc->njc", self.extra_w, transforms[..., 3]
            )
            vertices = None
        else:
            v_shaped = self.v_template + torch.einsum("vcb,nb->nvc", self.shapedirs, betas)
            if self.has_pose_correctives:
                eye = torch.eye(3, dtype=dtype, device=device)
                pose_feature = (rot[:, 1:] - eye).reshape(batch, -1)  # (B, 207)
                v_shaped = v_shaped + (pose_feature @ self.posedirs).reshape(batch, -1, 3)
            vertices = self._skin(transforms, v_shaped, self.weights)
            kp_verts = vertices[:, self.vertex_ids]
            extra = torch.einsum("jv,nvc->njc", self.j_regressor_extra, vertices)

        all_joints = torch.cat([posed_joints, kp_verts, extra], dim=1)  # (B, 44, 3)
        joints = all_joints[:, self.joint_map]
        if transl is not None:
            offset = transl.to(dtype)[:, None, :]
            joints = joints + offset
            posed_joints = posed_joints + offset
            if vertices is not None:
                vertices = vertices + offset
        return BodyModelOutput(vertices=vertices, joints=joints, smpl_joints=posed_joints, rest_joints=rest_joints)

    def _forward_kinematics(self, rot: torch.Tensor, joints: torch.Tensor):
        """Chain the local transforms down the tree.

        Returns (B, 24, 3, 4) skinning transforms (rest -> posed, [R | t]) and the
        (B, 24, 3) posed joint positions.
        """
        # Unbind once: per-joint slicing inside the loop would make autograd
        # zero-fill a full-size gradient for every slice.
        rots = rot.unbind(1)
        parents = torch.as_tensor([max(p, 0) for p in self.parents], device=joints.device)
        offsets = (joints - joints[:, parents]).unsqueeze(-1).unbind(1)  # 24 x (B, 3, 1)
        glob_rot = [rots[0]]
        glob_pos = [joints[:, 0]]
        for j in range(1, NUM_JOINTS):
            p = self.parents[j]
            glob_rot.append(glob_rot[p] @ rots[j])
            glob_pos.append(glob_pos[p] + (glob_rot[p] @ offsets[j])[..., 0])
        g_rot = torch.stack(glob_rot, dim=1)  # (B, 24, 3, 3)
        g_pos = torch.stack(glob_pos, dim=1)  # (B, 24, 3)
        # Skinning maps rest positions x to g_rot (x - J_rest) + g_pos.
        trans = g_pos - (g_rot @ joints[..., None])[..., 0]
        return torch.cat([g_rot, trans[..., None]], dim=-1), g_pos

    @staticmethod
    def _skin(transforms: torch.Tensor, rest: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
        """Linear blend skinning: (B,24,3,4) transforms, (B,V,3) rest, (V,24) weights -> (B,V,3)."""
        batch = transforms.shape[0]
        blended = (weights @ transforms.reshape(batch, NUM_JOINTS, 12)).reshape(batch, -1, 3, 4)  # (B, V, 3, 4)
        # An elementwise product and sum beats millions of tiny 3x3 matmuls on CPU.
        return (blended[..., :3] * rest[:, :, None, :]).sum(-1) + blended[..., 3]

    def h36m_joints(self, vertices: torch.Tensor) -> torch.Tensor:
        """(B, V, 3) vertices -> (B, 17, 3) H36M joints (H36M_17 order)."""
        return torch.einsum("jv,nvc->njc", self.j_regressor_h36m, vertices)

    def mean_pose_rotmat(self) -> torch.Tensor:
        """(24, 3, 3) mean pose rotations from ``mean_params['pose']`` (6D)."""
        from lib.geometry.rotations import rot6d_to_matrix

        pose6d = torch.as_tensor(self.mean_params["pose"]).reshape(NUM_JOINTS, 6)
        return rot6d_to_matrix(pose6d)
