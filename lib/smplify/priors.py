"""Pose priors for the fitter, behind one interface.

A prior is a callable ``prior(body_pose) -> penalty`` with ``body_pose`` the
(B, 69) axis-angle rotations of the 23 non-root joints and ``penalty`` (B,).
The real priors live in :mod:`lib.motion.prior` (a motion prior built from the
DeepMimic clips, or the GMM of the user's SMPLify file); when that module or
its file is missing the fitter falls back to a plain quadratic prior, so the
demo still runs (with a warning).
"""
from __future__ import annotations

import logging
from typing import Callable

import torch

logger = logging.getLogger(__name__)

PoseFn = Callable[[torch.Tensor], torch.Tensor]

# Per-joint weights of the quadratic fallback (23 non-root SMPL joints): the spine
# and neck bend little in everyday motion, hands and feet are barely seen.
_QUAD_WEIGHTS = torch.tensor([
    1.0, 1.0, 4.0,   # lhip, rhip, spine1
    0.5, 0.5, 4.0,   # lknee, rknee, spine2
    1.0, 1.0, 4.0,   # lankle, rankle, spine3
    4.0, 4.0, 2.0,   # lfoot, rfoot, neck
    2.0, 2.0, 1.0,   # lcollar, rcollar, head
    0.5, 0.5, 0.5,   # lshoulder, rshoulder, lelbow
    0.5, 2.0, 2.0,   # relbow, lwrist, rwrist
    4.0, 4.0,        # lhand, rhand
])


def quadratic_pose_prior(body_pose: torch.Tensor) -> torch.Tensor:
    """(B, 69) axis-angle -> (B,) weighted sum of squared rotation vectors."""
    w = _QUAD_WEIGHTS.to(body_pose)
    return (body_pose.reshape(-1, 23, 3).square().sum(-1) * w).sum(-1)


def hinge_joint_limits(body_pose: torch.Tensor) -> torch.Tensor:
    """(B, 69) axis-angle -> (B,) squared hinge on knees and elbows bending the wrong way.

    In the SMPL joint frames a knee flexes about +x and the left/right elbow about
    -y/+y (the rest pose is a T-pose facing +z), so the opposite signs are penalised.
    """
    p = body_pose.reshape(-1, 23, 3)
    knees = torch.relu(-p[:, 3:5, 0]).square().sum(-1)  # lknee, rknee (joints 4, 5)
    lelbow = torch.relu(p[:, 17, 1]).square()  # joint 18
    relbow = torch.relu(-p[:, 18, 1]).square()  # joint 19
    return knees + lelbow + relbow


def load_priors(kind: str = "motion", path: str = "", device: str | torch.device = "cpu") -> tuple[PoseFn, PoseFn, str]:
    """The pose prior and joint-limit penalty to fit with.

    Args:
        kind: "motion", "smplify_gmm" or "quadratic".
        path: prior file; "" = the default of ``kind``.
        device: where the prior's tensors go.
    Returns:
        (pose_prior, joint_limit_penalty, name of what was loaded).
    """
    if kind == "quadratic":
        return quadratic_pose_prior, hinge_joint_limits, "quadratic"
    try:
        from lib.motion import prior as motion_prior  # written alongside; optional at run time
    except ImportError:
        logger.warning("pose prior %r unavailable (lib.motion.prior missing); using a quadratic prior", kind)
        return quadratic_pose_prior, hinge_joint_limits, "quadratic"
    limits = getattr(motion_prior, "joint_limit_penalty", hinge_joint_limits)
    try:
        prior = motion_prior.load_pose_prior(kind=kind, path=path or None)
    except FileNotFoundError as err:
        if kind != "motion" or path:  # a file the user named explicitly must exist
            raise
        logger.warning("pose prior %r not loaded (%s); using a quadratic prior", kind, err)
        return quadratic_pose_prior, limits, "quadratic"
    if isinstance(prior, torch.nn.Module):
        prior = prior.to(device)
    return prior, limits, kind

