"""Evaluation of the Parallel-Branch Network on a schema dataset, per branch.

The model runs over the evaluation windows of :class:`lib.dataset.SequenceDataset`
(``cover_all``: every frame of every video at least ``SEQ_LEN`` long lies in
some window). Windows overlap at the end of a video, so a frame can be
predicted more than once; **each frame is scored once, with the prediction of
the window in which it sits closest to the window's centre** (ties: the
earlier window), i.e. the prediction that saw the most context on both sides.
Frames of videos shorter than ``SEQ_LEN`` are not evaluated (counted and
reported as ``num_frames_skipped``).

Metrics (millimetres; lib.core.metrics does the arithmetic):

=============  ==============================================================
``mpjpe``      mean per-joint error on the 14 common joints after both sets
               are centred on their pelvis (midpoint of the hips)
``pa_mpjpe``   the same after a per-frame similarity Procrustes alignment
``pve``        SMPL branch only: per-vertex error of the predicted mesh vs the
               mesh of the ground-truth SMPL parameters (same body model),
               each centred on the midpoint of the hips that the body
               model's H36M regressor finds on it; only frames with SMPL
               ground truth
``accel``      acceleration error (second differences of the pelvis-centred
               14 joints), per video, frames spanning an invalid frame skipped;
               the mean over all accelerations of all videos (mm/frame^2)
=============  ==============================================================

Joint metrics count a frame when it is ``valid``, has 3D labels and all 14
common joints are labelled. Branches: ``smpl`` (SMPL-branch joints), ``stb``
(ST branch) and ``fused`` (fusion output), each when the model has it.

``smpl_h36m`` is the published 3DPW protocol of HMR/SPIN/VIBE: on frames with
ground-truth SMPL parameters, the 14 common joints are regressed with the H36M
regressor from the predicted mesh and from the ground-truth mesh (the same
body model), so the numbers are comparable with papers that follow it.
"""
from __future__ import annotations

import json
import logging
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional

import numpy as np
import torch
from torch.utils.data import DataLoader, Subset
from tqdm import tqdm

from lib.atomic_io import atomic_write_bytes
from lib.core import metrics
from lib.errors import UserError
from lib.geometry.rotations import axis_angle_to_matrix
from lib.joints.conventions import H36M_TO_J14, SPIN49_TO_J14, pelvis_from_hips

logger = logging.getLogger(__name__)

# branch name -> PBNOutput field holding its (B, T, 49, 3) joints
BRANCHES: Dict[str, str] = {"smpl": "joints3d_smpl", "stb": "joints3d_stb", "fused": "joints3d_fused"}
METRIC_NAMES = ("mpjpe", "pa_mpjpe", "pve", "accel")


@dataclass
class FramePredictions:
    """One prediction per dataset frame (N = frames of the dataset split).

    gt_j14: (N, 14, 3) ground-truth common joints, metres.
    gt_ok: (N,) bool, the frame counts for the joint metrics.
    pred_j14: branch -> (N, 14, 3) predicted common joints, metres.
    pve: (N,) per-frame PVE in mm, NaN where no SMPL ground truth.
    covered: (N,) bool, the frame was predicted.
    starts: (V + 1,) first frame of each video (video v = frames starts[v]:starts[v+1]).
    vid_names: (V,) video names.
    """

    gt_j14: np.ndarray
    gt_ok: np.ndarray
    pred_j14: Dict[str, np.ndarray]
    pve: np.ndarray
    covered: np.ndarray
    starts: np.ndarray
    vid_names: List[str] = field(default_factory=list)
    # branch -> (N, 14, 3) ground truth and (N,) mask for branches scored against
    # other joints than ``gt_j14`` (``smpl_h36m``: joints regressed from meshes).
    branch_gt: Dict[str, np.ndarray] = field(default_factory=dict)
    branch_ok: Dict[str, np.ndarray] = field(default_factory=dict)


def read_checkpoint(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> Dict[str, object]:
    """Load a checkpoint with ``weights_only=True``; a bad file is one :class:`UserError` line."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"checkpoint not found: {path}")
    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as err:  # corrupt file, pickle with code, ...
        raise UserError(f"{path}: not a readable checkpoint ({type(err).__name__}: {err})") from None
    if not isinstance(ckpt, dict):
        raise UserError(f"{path}: expected a dict checkpoint, got {type(ckpt).__name__}")
    return ckpt


def load_model_weights(model: torch.nn.Module, path: str | os.PathLike) -> Dict[str, object]:
    """Load the generator weights of a pbn checkpoint (or a bare state dict) into ``model``.

    Returns the checkpoint dict. Raises :class:`UserError` naming missing /
    unexpected keys when the checkpoint does not fit the configured model.
    """
    return apply_model_weights(model, read_checkpoint(path), path)


def apply_model_weights(model: torch.nn.Module, ckpt: Dict[str, object], path: str | os.PathLike = "checkpoint"):
    """:func:`load_model_weights` for an already read checkpoint dict."""
    state = ckpt.get("model", ckpt)
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as err:
        first = str(err).splitlines()[0:3]
        raise UserError(f"{path}: does not fit the configured model ({' '.join(first)[:400]}); "
                        "use the config the checkpoint was trained with") from None
    return ckpt


def _centred(j14: np.ndarray) -> np.ndarray:
    return metrics.centre_on_pelvis(j14, "common14")


def _gt_vertices(body_model, pose: torch.Tensor, shape: torch.Tensor) -> torch.Tensor:
    """(M, 72) axis-angle + (M, 10) -> (M, V, 3) vertices of the body model."""
    rot = axis_angle_to_matrix(pose.reshape(-1, 24, 3))  # (M, 24, 3, 3)
    return body_model(global_orient=rot[:, :1], body_pose=rot[:, 1:], betas=shape).vertices


def _mesh_centred(body_model, vertices: torch.Tensor) -> torch.Tensor:
    """(M, V, 3) minus the midpoint of the hips the body model's H36M regressor finds on the mesh."""
    j14 = body_model.h36m_joints(vertices)[:, H36M_TO_J14]  # (M, 14, 3)
    return vertices - pelvis_from_hips(j14, "common14")[:, None]


@torch.no_grad()
def collect_predictions(model: torch.nn.Module, dataset, body_model, batch_size: int = 32,
                        device: str | torch.device = "cpu", max_windows: int = 0, num_workers: int = 0,
                        progress: bool = True) -> FramePredictions:
    """Run ``model`` over the windows of ``dataset`` and keep one prediction per frame.

    Args:
        model: a :class:`lib.models.pbn.ParallelBranchNet` (or anything with the
            same forward/output); put in eval mode here and left so.
        dataset: a :class:`lib.dataset.SequenceDataset` (evaluation windows,
            ``cover_all``); its ``windows`` (W,) are the first frames.
        body_model: the body-model layer (ground-truth meshes for PVE).
        max_windows: only the first N windows (0 = all).
    Returns:
        :class:`FramePredictions`.
    """
    data = dataset.data
    n = len(data)
    starts = np.asarray(data.starts, dtype=np.int64)
    windows = np.asarray(dataset.windows, dtype=np.int64)
    if max_windows and max_windows < len(windows):
        windows = windows[:max_windows]
        dataset = Subset(dataset, range(max_windows))
    t = int(getattr(dataset, "seq_len", 0) or dataset.dataset.seq_len)
    centre_rank = np.abs(np.arange(t) - (t - 1) / 2.0)  # (T,) distance to the window centre
    best = np.full(n, np.inf)
    gt_j14 = np.zeros((n, 14, 3), np.float32)
    gt_ok = np.zeros(n, bool)
    pve = np.full(n, np.nan)
    preds: Dict[str, np.ndarray] = {}
    gt_h36m = np.zeros((n, 14, 3), np.float32)
    ok_h36m = np.zeros(n, bool)
    model.eval()
    body_model = body_model.to(device)
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=num_workers)
    w = 0
    for batch in tqdm(loader, desc="eval", disable=not progress, leave=False):
        feats = batch["features"].to(device, torch.float32)
        kp2d = batch["joints2d"].to(device, torch.float32)
        out = model(features=feats, joints2d=kp2d, return_vertices=True)
        b = feats.shape[0]
        j3d = batch["joints3d"].numpy()  # (B, T, 49, 4)
        ok = ((batch["valid"].numpy() > 0) & (batch["has_3d"].numpy() > 0)
              & (j3d[..., SPIN49_TO_J14, 3] > 0).all(-1))  # (B, T)
        branch_j14 = {}
        for name, attr in BRANCHES.items():
            joints = getattr(out, attr, None)
            if joints is not None:
                branch_j14[name] = joints[..., SPIN49_TO_J14, :].float().cpu().numpy()  # (B, T, 14, 3)
                if name not in preds:
                    preds[name] = np.full((n, 14, 3), np.nan, np.float32)
        # PVE on frames with SMPL ground truth (computed per window, kept for the chosen frames).
        smpl_ok = (batch["valid"].numpy() > 0) & (batch["has_smpl"].numpy() > 0)  # (B, T)
        frame_pve = np.full((b, t), np.nan)
        frame_h36m_pred = np.zeros((b, t, 14, 3), np.float32)
        frame_h36m_gt = np.zeros((b, t, 14, 3), np.float32)
        frame_h36m_ok = np.zeros((b, t), bool)
        if out.vertices is not None and smpl_ok.any():
            sel = torch.from_numpy(smpl_ok.reshape(-1))
            gt_v = _gt_vertices(body_model, batch["pose"].reshape(b * t, 72)[sel].to(device, torch.float32),
                                batch["shape"].reshape(b * t, 10)[sel].to(device, torch.float32))
            pred_v = out.vertices.reshape(b * t, -1, 3)[sel.to(out.vertices.device)].to(gt_v.dtype)
            with torch.no_grad():
                fsel = sel.numpy()
                frame_h36m_pred.reshape(-1, 14, 3)[fsel] = (
                    body_model.h36m_joints(pred_v)[:, H36M_TO_J14].float().cpu().numpy())
                frame_h36m_gt.reshape(-1, 14, 3)[fsel] = (
                    body_model.h36m_joints(gt_v)[:, H36M_TO_J14].float().cpu().numpy())
                frame_h36m_ok.reshape(-1)[fsel] = True
            pred_v, gt_v = _mesh_centred(body_model, pred_v), _mesh_centred(body_model, gt_v)
            frame_pve.reshape(-1)[sel.numpy()] = metrics.pve(pred_v.float().cpu().numpy(),
                                                             gt_v.float().cpu().numpy())
        for i in range(b):
            lo = int(windows[w + i])
            idx = np.arange(lo, lo + t)
            take = centre_rank < best[idx]
            if not take.any():
                continue
            fi = idx[take]
            best[fi] = centre_rank[take]
            gt_j14[fi] = j3d[i][take][:, SPIN49_TO_J14, :3]
            gt_ok[fi] = ok[i][take]
            pve[fi] = frame_pve[i][take]
            if frame_h36m_ok[i].any():
                if "smpl_h36m" not in preds:
                    preds["smpl_h36m"] = np.full((n, 14, 3), np.nan, np.float32)
                preds["smpl_h36m"][fi] = frame_h36m_pred[i][take]
                gt_h36m[fi] = frame_h36m_gt[i][take]
                ok_h36m[fi] = frame_h36m_ok[i][take]
            for name, j in branch_j14.items():
                preds[name][fi] = j[i][take]
        w += b
    covered = np.isfinite(best)
    vid_names = [str(data["vid_name"][s]) for s in starts[:-1]]
    fp = FramePredictions(gt_j14, gt_ok & covered, preds, pve, covered, starts, vid_names)
    if "smpl_h36m" in preds:
        fp.branch_gt["smpl_h36m"] = gt_h36m
        fp.branch_ok["smpl_h36m"] = ok_h36m & covered
    return fp


def compute_metrics(fp: FramePredictions) -> Dict[str, object]:
    """Metrics of :class:`FramePredictions` (see the module docstring).

    Returns:
        {"metrics": {"<branch>/<metric>": mm}, "per_video": {name: {...}},
         "num_frames", "num_frames_evaluated", "num_frames_3d", "num_frames_smpl",
         "num_frames_skipped"}; a metric without any counted frame is NaN.
    """
    out: Dict[str, float] = {}
    per_video: Dict[str, Dict[str, float]] = {name: {} for name in fp.vid_names}
    for name, pred in fp.pred_j14.items():
        gt_all = fp.branch_gt.get(name, fp.gt_j14)
        ok = fp.branch_ok.get(name, fp.gt_ok)
        gt_c = _centred(gt_all[ok].astype(np.float64))
        p = pred[ok].astype(np.float64)
        out[f"{name}/mpjpe"] = float(metrics.mpjpe(_centred(p), gt_c).mean()) if ok.any() else math.nan
        out[f"{name}/pa_mpjpe"] = float(metrics.pa_mpjpe(p, gt_all[ok]).mean()) if ok.any() else math.nan
        if name == "smpl":
            has = np.isfinite(fp.pve) & fp.covered
            out["smpl/pve"] = float(fp.pve[has].mean()) if has.any() else math.nan
        accels = []
        for v, (lo, hi) in enumerate(zip(fp.starts[:-1], fp.starts[1:])):
            vok = ok[lo:hi]
            vname = fp.vid_names[v]
            if vok.any():
                vp, vg = pred[lo:hi][vok].astype(np.float64), gt_all[lo:hi][vok].astype(np.float64)
                per_video[vname][f"{name}/pa_mpjpe"] = float(metrics.pa_mpjpe(vp, vg).mean())
            if hi - lo >= 3 and vok.sum() >= 3:
                pv = np.where(vok[:, None, None], pred[lo:hi], 0.0)
                gv = np.where(vok[:, None, None], gt_all[lo:hi], 0.0)
                acc = metrics.accel_error(_centred(pv), _centred(gv), valid=vok)
                acc = acc[np.isfinite(acc)]
                if acc.size:
                    accels.append(acc)
                    per_video[vname][f"{name}/accel"] = float(acc.mean())
        out[f"{name}/accel"] = float(np.concatenate(accels).mean()) if accels else math.nan
    return {
        "metrics": out,
        "num_frames": int(len(fp.gt_ok)),
        "num_frames_evaluated": int(fp.covered.sum()),
        "num_frames_3d": int(fp.gt_ok.sum()),
        "num_frames_smpl": int((np.isfinite(fp.pve) & fp.covered).sum()),
        "num_frames_skipped": int((~fp.covered).sum()),
        "per_video": {k: v for k, v in per_video.items() if v},
    }


def evaluate(model: torch.nn.Module, dataset, body_model, batch_size: int = 32,
             device: str | torch.device = "cpu", max_windows: int = 0, num_workers: int = 0,
             progress: bool = True) -> Dict[str, object]:
    """:func:`collect_predictions` then :func:`compute_metrics`; logs the table."""
    fp = collect_predictions(model, dataset, body_model, batch_size, device, max_windows, num_workers, progress)
    results = compute_metrics(fp)
    if results["num_frames_skipped"]:
        logger.warning("%d of %d frames were not evaluated (videos shorter than the window, or EVAL.MAX_WINDOWS)",
                       results["num_frames_skipped"], results["num_frames"])
    return results


def format_table(results: Dict[str, object]) -> str:
    """A plain-text table: one row per branch, one column per metric (mm)."""
    m = results["metrics"]
    branches = [b for b in (*BRANCHES, "smpl_h36m") if any(k.startswith(b + "/") for k in m)]
    head = f"{'branch':<10}" + "".join(f"{name:>10}" for name in METRIC_NAMES)
    rows = [head, "-" * len(head)]
    for b in branches:
        cells = []
        for name in METRIC_NAMES:
            v = m.get(f"{b}/{name}")
            cells.append(f"{'-':>10}" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:>10.1f}")
        rows.append(f"{b:<10}" + "".join(cells))
    rows.append(f"frames: {results['num_frames_3d']} with 3D, {results['num_frames_smpl']} with SMPL, "
                f"{results['num_frames_skipped']} skipped of {results['num_frames']} (mm; accel mm/frame^2)")
    return "\n".join(rows)


def _json_safe(x):
    if isinstance(x, dict):
        return {k: _json_safe(v) for k, v in x.items()}
    if isinstance(x, float) and not math.isfinite(x):
        return None  # JSON has no NaN
    return x


def write_results(path, results: Dict[str, object], extra: Optional[Dict[str, object]] = None) -> None:
    """Atomically write ``results`` (+ ``extra`` entries, e.g. checkpoint and dataset) as JSON; NaN -> null."""
    payload = dict(extra or {})
    payload.update(results)
    atomic_write_bytes(path, (json.dumps(_json_safe(payload), indent=1) + "\n").encode("utf-8"))


def default_results_path(cfg) -> Path:
    """``EVAL.OUT_FILE`` or ``OUTPUT_DIR/EXP_NAME/eval_<EVAL_SET>_<EVAL_SPLIT>.json``."""
    if cfg.EVAL.OUT_FILE:
        return Path(cfg.EVAL.OUT_FILE)
    return Path(cfg.OUTPUT_DIR) / cfg.EXP_NAME / f"eval_{cfg.DATASET.EVAL_SET}_{cfg.DATASET.EVAL_SPLIT}.json"


def evaluate_checkpoint(cfg, checkpoint: str | os.PathLike, progress: bool = True):
    """Build the configured model, load ``checkpoint`` (weights only), evaluate it on
    ``DATASET.EVAL_SET``/``EVAL_SPLIT`` and write the results JSON.

    Returns:
        (results dict, path of the written JSON).
    """
    from lib.body_models import load_body_model
    from lib.core.config import resolve_device
    from lib.dataset import SequenceDataset
    from lib.models.pbn import ParallelBranchNet

    ckpt = read_checkpoint(checkpoint)  # first: a bad path fails before anything is built
    device = resolve_device(cfg.DEVICE)
    body_model = load_body_model(cfg.BODY_MODEL.KIND, model_dir=cfg.BODY_MODEL.DIR or None,
                                 root=cfg.PATHS.BODY_MODEL_ROOT)
    model = ParallelBranchNet.from_config(cfg, body_model, load_pretrained=False)
    apply_model_weights(model, ckpt, checkpoint)
    model = model.to(device)
    dataset = SequenceDataset.from_config(cfg, cfg.DATASET.EVAL_SET, cfg.DATASET.EVAL_SPLIT, train=False)
    results = evaluate(model, dataset, model.body_model, batch_size=cfg.EVAL.BATCH_SIZE, device=device,
                       max_windows=cfg.EVAL.MAX_WINDOWS, num_workers=cfg.NUM_WORKERS, progress=progress)
    path = default_results_path(cfg)
    write_results(path, results, {"checkpoint": str(checkpoint), "step": ckpt.get("step"),
                                  "dataset": cfg.DATASET.EVAL_SET, "split": cfg.DATASET.EVAL_SPLIT,
                                  "body_model": cfg.BODY_MODEL.KIND})
    return results, path
