"""Pose priors and joint-angle limits for fitting (SMPLify) and regularisation.

- :class:`MotionPosePrior`: a Gaussian mixture over the 69-d body pose
  (axis-angle of joints 1..23), evaluated as SMPLify's "max-mixture": the
  penalty of a pose is its negative log-likelihood under the *best* component,
  which is smooth almost everywhere and cheaper and better behaved than the
  full log-sum-exp. The mixture is fitted (numpy EM) on the retargeted
  DeepMimic clips and their mirror images by ``scripts/build_motion_prior.py``
  and stored as a small ``.npz``; SMPLify's own ``gmm_08.pkl`` (a user file) is
  read into the same class.
- :func:`joint_limit_penalty`: knees and elbows bend one way only.

Penalties are shifted so that the best pose of the best component scores 0.
"""
from __future__ import annotations

import logging
import os
import pickle
from pathlib import Path
from typing import Dict, Optional

import numpy as np
import torch
from torch import nn

from lib.atomic_io import atomic_write_bytes
from lib.errors import MissingAssetError, UserError

logger = logging.getLogger(__name__)

POSE_DIM = 69
DEFAULT_MOTION_PRIOR = "data/assets/motion_prior.npz"
PRIOR_VERSION = 1  # file layout
# Bump when the retargeting or the fit changes, so cached priors are rebuilt.
BUILD_VERSION = 2

# Body-pose (69-d, joint j at 3 (j - 1)) components of the one-way hinges, with the
# sign of a *wrong-way* bend for our SMPL axes (y up, facing +z, left at +x):
# knees flex with a positive x rotation (the shin swings back), so negative x is
# hyperextension; elbows flex about y (forearm swings forward from the T-pose):
# negative y for the left arm (at +x), positive y for the right, so the wrong way
# is +y on the left and -y on the right.
_LKNEE, _RKNEE, _LELBOW, _RELBOW = 4, 5, 18, 19
HINGE_WRONG_WAY = (
    (3 * (_LKNEE - 1) + 0, -1.0),
    (3 * (_RKNEE - 1) + 0, -1.0),
    (3 * (_LELBOW - 1) + 1, 1.0),
    (3 * (_RELBOW - 1) + 1, -1.0),
)
# Hinges barely turn about their other two axes; allow this much (radians) freely.
HINGE_OFF_AXIS = (
    (3 * (_LKNEE - 1), (1, 2)), (3 * (_RKNEE - 1), (1, 2)),
    (3 * (_LELBOW - 1), (0, 2)), (3 * (_RELBOW - 1), (0, 2)),
)
OFF_AXIS_FREE = 0.35


def joint_limit_penalty(body_pose: torch.Tensor, off_axis: bool = True) -> torch.Tensor:
    """Penalty for knees and elbows bent the wrong way (and, optionally, twisted far
    about their off-hinge axes).

    Args:
        body_pose: (B, 69) axis-angle of joints 1..23 (radians), or (B, 23, 3).
        off_axis: also penalise knee/elbow rotation beyond ``OFF_AXIS_FREE`` about the
            two axes they do not hinge about.
    Returns:
        (B,) >= 0: the sum of squared wrong-way angles (radians^2); 0 for any pose that
        bends knees and elbows only the natural way.
    """
    pose = body_pose.reshape(body_pose.shape[0], POSE_DIM)
    idx = torch.as_tensor([i for i, _ in HINGE_WRONG_WAY], device=pose.device)
    sign = torch.as_tensor([s for _, s in HINGE_WRONG_WAY], dtype=pose.dtype, device=pose.device)
    # A squared hinge (not SMPLify's exp): zero and flat on the natural side, so it never
    # pushes a straight knee to bend.
    out = torch.relu(pose[:, idx] * sign).pow(2).sum(-1)
    if off_axis:
        off = [base + a for base, axes in HINGE_OFF_AXIS for a in axes]
        excess = torch.relu(pose[:, off].abs() - OFF_AXIS_FREE)
        out = out + excess.pow(2).sum(-1)
    return out


class MotionPosePrior(nn.Module):
    """Max-mixture Gaussian prior over the 69-d body pose.

    Args:
        means: (K, 69) component means (axis-angle, radians).
        covars: (K, 69, 69) covariances (symmetric positive definite).
        weights: (K,) mixture weights (normalised here).
        name: where it came from, for messages.
    """

    def __init__(self, means: np.ndarray, covars: np.ndarray, weights: np.ndarray, name: str = "motion"):
        super().__init__()
        means = np.asarray(means, dtype=np.float64)
        covars = np.asarray(covars, dtype=np.float64)
        weights = np.asarray(weights, dtype=np.float64).reshape(-1)
        k = means.shape[0]
        if means.shape != (k, POSE_DIM) or covars.shape != (k, POSE_DIM, POSE_DIM) or weights.shape != (k,):
            raise UserError(
                f"pose prior {name}: expected means (K, 69), covars (K, 69, 69), weights (K,); got "
                f"{means.shape}, {covars.shape}, {weights.shape}"
            )
        if not (np.isfinite(means).all() and np.isfinite(covars).all() and np.all(weights > 0)):
            raise UserError(f"pose prior {name}: non-finite parameters or non-positive weights")
        weights = weights / weights.sum()
        covars = 0.5 * (covars + covars.transpose(0, 2, 1))
        try:
            chol = np.linalg.cholesky(covars)  # cov = L L^T
        except np.linalg.LinAlgError:
            raise UserError(f"pose prior {name}: a covariance is not positive definite") from None
        # Mahalanobis distance = |L^-1 (x - mu)|^2; keep W = L^-T so it is |(x - mu) W|^2.
        inv_l = np.linalg.inv(chol)
        whiten = inv_l.transpose(0, 2, 1)
        logdet = 2.0 * np.log(np.diagonal(chol, axis1=1, axis2=2)).sum(-1)
        const = 0.5 * logdet - np.log(weights)
        const = const - const.min()
        self.name = name
        self.register_buffer("means", torch.as_tensor(means, dtype=torch.float32))
        self.register_buffer("whiten", torch.as_tensor(whiten, dtype=torch.float32))
        self.register_buffer("const", torch.as_tensor(const, dtype=torch.float32))
        self._raw = {"means": means, "covars": covars, "weights": weights}

    @property
    def num_components(self) -> int:
        return int(self.means.shape[0])

    def component_nll(self, body_pose: torch.Tensor) -> torch.Tensor:
        """(B, 69) -> (B, K): 0.5 Mahalanobis + 0.5 log det - log weight, shifted."""
        x = body_pose.reshape(body_pose.shape[0], POSE_DIM).to(self.means.dtype)
        diff = x[:, None, :] - self.means[None]  # (B, K, 69)
        white = torch.einsum("bkd,kde->bke", diff, self.whiten)
        return 0.5 * white.pow(2).sum(-1) + self.const[None]

    def forward(self, body_pose: torch.Tensor) -> torch.Tensor:
        """Penalty of each pose under its best component.

        Args:
            body_pose: (B, 69) axis-angle of joints 1..23 (radians), or (B, 23, 3).
        Returns:
            (B,) negative log-likelihood up to a constant (0 at the best mode); differentiable.
        """
        return self.component_nll(body_pose).min(dim=1).values

    # ------------------------------------------------------------------ io

    def save(self, path: str | os.PathLike, meta: Optional[Dict[str, object]] = None) -> None:
        """Write ``means``, ``covars``, ``weights`` (+ ``version`` and string metadata) to ``path`` atomically."""
        import io

        arrays = {k: v.astype(np.float32) for k, v in self._raw.items()}
        arrays["version"] = np.array(PRIOR_VERSION, dtype=np.int64)
        for key, value in (meta or {}).items():
            arrays["meta_" + key] = np.array(str(value))
        buf = io.BytesIO()
        np.savez_compressed(buf, **arrays)
        atomic_write_bytes(path, buf.getvalue())

    @classmethod
    def load(cls, path: str | os.PathLike) -> "MotionPosePrior":
        """Load a prior written by :meth:`save` (``scripts/build_motion_prior.py``)."""
        path = Path(path)
        if not path.is_file():
            raise MissingAssetError(
                f"{path}: motion pose prior not found (build it with scripts/build_motion_prior.py, "
                "which scripts/fetch_assets.sh runs)"
            )
        try:
            with np.load(path) as npz:
                missing = [k for k in ("means", "covars", "weights") if k not in npz]
                if missing:
                    raise UserError(f"{path}: not a pose prior file (no key {missing[0]!r})")
                return cls(npz["means"], npz["covars"], npz["weights"], name=str(path))
        except (OSError, ValueError) as exc:
            raise UserError(f"{path}: cannot read pose prior ({exc})") from None

    @classmethod
    def from_smplify_pickle(cls, path: str | os.PathLike) -> "MotionPosePrior":
        """SMPLify's mixture file (``gmm_08.pkl``: dict with ``means`` (8, 69),
        ``covars`` (8, 69, 69), ``weights`` (8,)), read with a numpy-only unpickler."""
        path = Path(path)
        if not path.is_file():
            raise MissingAssetError(f"{path}: SMPLify GMM file not found (it comes with SMPLify; see doc/motion.md)")
        from lib.body_models.pickle_io import load_smpl_pickle

        try:
            data = load_smpl_pickle(path)
        except (pickle.UnpicklingError, EOFError, AttributeError, ImportError, ValueError) as exc:
            raise UserError(f"{path}: not a readable SMPLify GMM pickle ({exc})") from None
        missing = [k for k in ("means", "covars", "weights") if k not in data]
        if missing:
            raise UserError(f"{path}: not a SMPLify GMM file (no key {missing[0]!r})")
        return cls(data["means"], data["covars"], data["weights"], name=str(path))


class QuadraticPosePrior(nn.Module):
    """Plain squared norm of the body pose ((B, 69) -> (B,)): a weak fallback prior."""

    def forward(self, body_pose: torch.Tensor) -> torch.Tensor:
        return body_pose.reshape(body_pose.shape[0], -1).pow(2).sum(-1)


def load_pose_prior(kind: str = "motion", path: Optional[str | os.PathLike] = None) -> nn.Module:
    """Pose prior by name: (B, 69) axis-angle -> (B,) penalty.

    Args:
        kind: "motion" (built from the DeepMimic clips; default file
            ``data/assets/motion_prior.npz``), "smplify_gmm" (SMPLify's ``gmm_08.pkl``;
            ``path`` required) or "quadratic" (squared norm, no file).
        path: the prior file; None or "" = the default of ``kind``.
    """
    if kind == "motion":
        return MotionPosePrior.load(path or DEFAULT_MOTION_PRIOR)
    if kind == "smplify_gmm":
        if not path:
            raise UserError("pose prior smplify_gmm needs the path of SMPLify's gmm_08.pkl (SMPLIFY.PRIOR_PATH)")
        return MotionPosePrior.from_smplify_pickle(path)
    if kind == "quadratic":
        return QuadraticPosePrior()
    raise UserError(f"unknown pose prior {kind!r} (expected motion, smplify_gmm or quadratic)")


# --------------------------------------------------------------------------- fitting


def fit_gmm(
    x: np.ndarray,
    num_components: int = 8,
    iters: int = 100,
    seed: int = 0,
    var_floor: float = 1e-3,
    unseen_var: float = 0.1,
    tol: float = 1e-5,
):
    """Full-covariance Gaussian mixture by EM (numpy), k-means++ initialisation.

    Dimensions the data never moves (e.g. wrists in DeepMimic clips) would get a zero
    variance; they get ``unseen_var`` (rad^2) instead so that the prior stays neutral
    about them, and every component gets ``var_floor`` added to its diagonal.

    Args:
        x: (N, D) samples.
    Returns:
        means (K, D), covars (K, D, D), weights (K,), mean log-likelihood (float).
    """
    x = np.asarray(x, dtype=np.float64)
    n, d = x.shape
    if n < num_components:
        raise UserError(f"fit_gmm: {n} samples for {num_components} components")
    rng = np.random.default_rng(seed)
    data_var = x.var(axis=0)
    reg = np.where(data_var < 1e-6, unseen_var, var_floor)

    # k-means++ seeds, then a few Lloyd steps, give a stable starting partition.
    centres = [x[rng.integers(n)]]
    for _ in range(1, num_components):
        dist = np.min(((x[:, None, :] - np.asarray(centres)[None]) ** 2).sum(-1), axis=1)
        centres.append(x[rng.choice(n, p=dist / dist.sum())])
    centres = np.asarray(centres)
    for _ in range(10):
        labels = np.argmin(((x[:, None, :] - centres[None]) ** 2).sum(-1), axis=1)
        centres = np.asarray([x[labels == k].mean(0) if np.any(labels == k) else centres[k]
                              for k in range(num_components)])
    resp = np.eye(num_components)[labels]

    prev = -np.inf
    ll = prev
    for _ in range(iters):
        # M step
        nk = resp.sum(0) + 1e-10
        weights = nk / n
        means = (resp.T @ x) / nk[:, None]
        covars = np.empty((num_components, d, d))
        for k in range(num_components):
            diff = x - means[k]
            covars[k] = (resp[:, k, None] * diff).T @ diff / nk[k] + np.diag(reg)
        # E step
        chol = np.linalg.cholesky(covars)
        log_prob = np.empty((n, num_components))
        for k in range(num_components):
            sol = np.linalg.solve(chol[k], (x - means[k]).T)  # (D, N)
            logdet = 2.0 * np.log(np.diag(chol[k])).sum()
            log_prob[:, k] = -0.5 * (sol ** 2).sum(0) - 0.5 * logdet - 0.5 * d * np.log(2 * np.pi) + np.log(weights[k])
        top = log_prob.max(1, keepdims=True)
        log_norm = top[:, 0] + np.log(np.exp(log_prob - top).sum(1))
        resp = np.exp(log_prob - log_norm[:, None])
        ll = float(log_norm.mean())
        if abs(ll - prev) < tol * max(1.0, abs(ll)):
            break
        prev = ll
    return means, covars, weights, ll


def build_motion_prior(
    motion_dir: str | os.PathLike = "data/assets/motions",
    out_path: str | os.PathLike = DEFAULT_MOTION_PRIOR,
    num_components: int = 8,
    fps: float = 30.0,
    seed: int = 0,
) -> MotionPosePrior:
    """Fit the motion prior on every DeepMimic clip in ``motion_dir`` and its mirror
    image (body pose only: the global orientation says nothing about plausibility),
    write it to ``out_path`` and return it."""
    from lib.motion.deepmimic import load_all_clips, mirror

    clips = load_all_clips(motion_dir, fps=fps)
    poses = np.concatenate([m.body_pose for c in clips for m in (c, mirror(c))])
    means, covars, weights, ll = fit_gmm(poses, num_components=num_components, seed=seed)
    logger.info("motion prior: %d poses from %d clips, %d components, mean log-lik %.2f",
                len(poses), len(clips), num_components, ll)
    prior = MotionPosePrior(means, covars, weights, name=str(out_path))
    prior.save(out_path, meta={
        "source": "DeepMimic humanoid clips (pybullet data) + mirrors, retargeted to SMPL",
        "clips": ",".join(c.name for c in clips), "fps": fps, "num_poses": len(poses),
        "build_version": BUILD_VERSION, "num_components": num_components,
    })
    return prior


def prior_is_up_to_date(out_path: str | os.PathLike, motion_dir: str | os.PathLike,
                        num_components: int = 8) -> bool:
    """True if ``out_path`` was built by this :data:`BUILD_VERSION` with ``num_components``
    and is newer than every clip in ``motion_dir``."""
    out = Path(out_path)
    clips = sorted(Path(motion_dir).glob("humanoid3d_*.txt"))
    if not out.is_file() or not clips or out.stat().st_mtime < max(c.stat().st_mtime for c in clips):
        return False
    try:
        with np.load(out) as npz:
            return (str(npz.get("meta_build_version", "")) == str(BUILD_VERSION)
                    and str(npz.get("meta_num_components", "")) == str(num_components))
    except (OSError, ValueError):
        return False
