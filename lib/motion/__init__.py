"""Real motion (DeepMimic clips retargeted to SMPL) and pose priors built from it."""
from lib.motion.deepmimic import Motion, body_transl, load_all_clips, load_clip, mirror, motion_tensors, repeat, resample
from lib.motion.prior import (
    MotionPosePrior,
    QuadraticPosePrior,
    build_motion_prior,
    joint_limit_penalty,
    load_pose_prior,
)

__all__ = [
    "Motion", "body_transl", "load_all_clips", "load_clip", "mirror", "motion_tensors", "repeat", "resample",
    "MotionPosePrior", "QuadraticPosePrior", "build_motion_prior", "joint_limit_penalty", "load_pose_prior",
]
