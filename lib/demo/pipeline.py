"""The demo pipeline: video -> front-end (detection, tracking, keypoints) ->
estimator (Temporal SMPLify, or the network) -> results.npz -> overlay video -> exports.

Outputs go to ``<output_folder>/<video stem>/``: ``results.npz`` (see
:mod:`lib.demo.results`), ``<stem>_overlay.mp4`` and any requested exports.
Each file is written atomically; stale outputs of an earlier run in the same
folder are removed first, so a failed run never leaves old files looking like
its own results.
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Sequence

import numpy as np
import torch
from tqdm import tqdm

from lib.errors import UserError

logger = logging.getLogger(__name__)

ESTIMATORS = ("fit", "pbn")
EXPORT_CHOICES = ("glb", "fbx", "obj", "bvh")


@dataclass
class DemoOptions:
    """What a demo run does (demo.py's arguments after the config is resolved)."""

    vid_file: str
    output_folder: str
    start_frame: int = 0
    max_frames: Optional[int] = None
    tracks: Optional[List[int]] = None
    estimator: str = "fit"
    checkpoint: str = ""
    run_smplify: bool = False
    body_model: str = "open"
    device: str = "cpu"
    detector: str = "ssdlite"
    keypoint_model: str = "blazepose"
    batch_size: int = 64
    render: bool = True
    side_view: bool = False
    export: List[str] = field(default_factory=list)
    progress: bool = True


@dataclass
class DemoSummary:
    """Numbers of a finished run, for the console and benchmarks."""

    out_dir: Path
    results_path: Path
    overlay_path: Optional[Path]
    num_frames: int
    num_tracks: int
    person_frames: int
    stage_seconds: Dict[str, float]
    total_seconds: float
    fit_error: float = float("nan")  # median |projected - detected| / box height over confident joints
    exports: Dict[str, List[Path]] = field(default_factory=dict)

    def ms_per_frame(self) -> Dict[str, float]:
        n = max(self.num_frames, 1)
        return {k: 1000.0 * v / n for k, v in self.stage_seconds.items()}

    @property
    def fps(self) -> float:
        return self.num_frames / self.total_seconds if self.total_seconds > 0 else float("nan")

    def format(self) -> str:
        lines = [
            f"video frames: {self.num_frames}   tracks: {self.num_tracks}   person-frames: {self.person_frames}",
            "per-stage ms/frame: " + ", ".join(f"{k} {v:.1f}" for k, v in self.ms_per_frame().items()),
            f"total: {self.total_seconds:.1f} s = {self.fps:.2f} fps"
            + (f"   fit error (median, box heights): {self.fit_error:.3f}" if np.isfinite(self.fit_error) else ""),
            f"results: {self.results_path}",
        ]
        if self.overlay_path is not None:
            lines.append(f"overlay: {self.overlay_path}")
        for fmt, paths in self.exports.items():
            lines.append(f"{fmt}: {len(paths)} file(s) in {paths[0].parent if paths else self.out_dir}")
        return "\n".join(lines)


def options_from_args(cfg, args) -> DemoOptions:
    """Merge demo.py arguments over the ``DEMO`` config section."""
    tracks = None
    if getattr(args, "tracks", None):
        try:
            tracks = [int(t) for t in str(args.tracks).replace(" ", "").split(",") if t != ""]
        except ValueError:
            raise UserError(f"--tracks expects comma-separated track ids like 1,4,7; got {args.tracks!r}") from None
    export = args.export if args.export is not None else ",".join(cfg.DEMO.EXPORT)
    export = [e.strip().lower() for e in str(export).split(",") if e.strip() and e.strip().lower() != "none"]
    bad = [e for e in export if e not in EXPORT_CHOICES]
    if bad:
        raise UserError(f"--export: unknown format(s) {', '.join(bad)}; choose from {', '.join(EXPORT_CHOICES)}")
    estimator = args.estimator or cfg.DEMO.ESTIMATOR
    checkpoint = args.checkpoint if args.checkpoint is not None else cfg.DEMO.CHECKPOINT
    if args.estimator is None and checkpoint and estimator == "fit":
        estimator = "pbn"  # a checkpoint without an explicit estimator means "use the network"
    if estimator not in ESTIMATORS:
        raise UserError(f"--estimator must be one of {', '.join(ESTIMATORS)}, got {estimator!r}")
    if args.max_frames is not None and args.max_frames < 1:
        raise UserError(f"--max_frames must be >= 1, got {args.max_frames}")
    if args.start_frame < 0:
        raise UserError(f"--start_frame must be >= 0, got {args.start_frame}")
    from lib.core.config import resolve_device

    device = resolve_device(args.device or cfg.DEVICE)
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise UserError(f"--device {device}: CUDA is not available here; use --device cpu")
    return DemoOptions(
        vid_file=args.vid_file, output_folder=args.output_folder, start_frame=args.start_frame,
        max_frames=args.max_frames, tracks=tracks, estimator=estimator, checkpoint=checkpoint,
        run_smplify=bool(args.run_smplify or cfg.DEMO.RUN_SMPLIFY),
        body_model=args.body_model or cfg.BODY_MODEL.KIND,
        device=device,
        detector=args.detector or cfg.DEMO.get("DETECTOR", "ssdlite"),
        keypoint_model=getattr(args, "keypoint_model", None) or cfg.DEMO.KEYPOINT_MODEL,
        batch_size=args.batch_size or cfg.DEMO.BATCH_SIZE,
        render=cfg.DEMO.RENDER and not args.no_render,
        side_view=bool(args.side_view or cfg.DEMO.SIDE_VIEW),
        export=export,
        progress=not getattr(args, "no_progress", False),
    )


def _output_paths(opts: DemoOptions) -> tuple[Path, Path, Path]:
    stem = Path(opts.vid_file).stem if Path(opts.vid_file).is_file() else Path(opts.vid_file).name
    out_dir = Path(opts.output_folder) / stem
    return out_dir, out_dir / "results.npz", out_dir / f"{stem}_overlay.mp4"


def _open_video(path: str):
    p = Path(path)
    if not p.exists():
        raise UserError(f"video not found: {path}")
    from lib.demo.video import open_video

    try:
        reader = open_video(p)
    except UserError:
        raise
    except Exception as err:  # noqa: BLE001 - decoders raise many types for corrupt files
        raise UserError(f"cannot read video {path}: {type(err).__name__}: {err}") from None
    if not reader.num_frames or reader.num_frames <= 0:
        raise UserError(f"video {path} has no frames")
    return reader


def run_demo(cfg, opts: DemoOptions) -> DemoSummary:
    """Run the whole demo; returns the summary (also logged)."""
    from lib.body_models import load_body_model
    from lib.demo.results import DemoResults, save_results, track_result_from_fit
    from lib.geometry.camera import default_focal_length

    t_start = time.perf_counter()
    stage: Dict[str, float] = {}
    reader = _open_video(opts.vid_file)
    out_dir, results_path, overlay_path = _output_paths(opts)
    if opts.start_frame >= reader.num_frames:
        raise UserError(f"--start_frame {opts.start_frame} is past the end of {opts.vid_file} "
                        f"({reader.num_frames} frames)")
    out_dir.mkdir(parents=True, exist_ok=True)
    for stale in (results_path, overlay_path):
        if stale.exists():
            logger.info("removing the previous run's %s", stale)
            stale.unlink()

    t0 = time.perf_counter()
    bm = load_body_model(opts.body_model, model_dir=cfg.BODY_MODEL.DIR or None,
                         root=cfg.PATHS.BODY_MODEL_ROOT, device=opts.device)
    stage["load"] = time.perf_counter() - t0

    # ---- front-end
    from lib.demo.frontend import frontend_kwargs, run_frontend

    n_avail = reader.num_frames - opts.start_frame
    n_frames = min(n_avail, opts.max_frames) if opts.max_frames else n_avail
    kwargs = frontend_kwargs(cfg)
    kwargs.update(detector=opts.detector, keypoint_model=opts.keypoint_model, asset_root=cfg.PATHS.ASSET_ROOT, start_frame=opts.start_frame,
                  max_frames=opts.max_frames, progress=opts.progress)
    min_len = kwargs.get("min_track_len")
    if min_len is None:
        min_len = max(3, int(round(0.5 * (reader.fps or 30.0))))  # the front-end's own default
    kwargs["min_track_len"] = max(1, min(int(min_len), n_frames))  # a clip shorter than that keeps its people
    t0 = time.perf_counter()
    front = run_frontend(reader, **kwargs)
    stage["frontend"] = time.perf_counter() - t0
    for name, sec in (getattr(front, "timings", None) or {}).items():
        if isinstance(sec, (int, float)) and name not in ("total",):
            stage[f"frontend.{name}"] = float(sec)  # sub-stages (may overlap when run in threads)
    n_frames = int(getattr(front, "num_frames", n_frames) or n_frames)
    width, height = int(front.width), int(front.height)
    fps = float(front.fps) if front.fps and front.fps > 0 else 30.0
    tracks = dict(front.tracks)
    if opts.tracks is not None:
        missing = [t for t in opts.tracks if t not in tracks]
        if missing:
            logger.warning("--tracks: no track(s) %s; found %s", missing, sorted(tracks) or "none")
        tracks = {t: tracks[t] for t in opts.tracks if t in tracks}
    focal = default_focal_length(width, height)
    if not tracks:
        logger.warning("no person tracked in %s (frames %d-%d); writing empty results",
                       opts.vid_file, opts.start_frame, opts.start_frame + n_frames - 1)

    # ---- estimator
    t0 = time.perf_counter()
    fits = _estimate(cfg, opts, bm, tracks, (width, height), focal, reader)
    stage["fit"] = time.perf_counter() - t0

    track_results = {tid: track_result_from_fit(tracks[tid], fits[tid]) for tid in sorted(fits)}
    detections = np.asarray(getattr(front, "detections", np.zeros((0, 6))), dtype=np.float32).reshape(-1, 6)
    t0 = time.perf_counter()
    save_results(results_path, DemoResults(
        tracks=track_results, detections=detections, fps=fps, body_model=bm.kind,
        num_vertices=bm.num_vertices, image_size=(width, height), focal_length=focal))
    stage["write"] = time.perf_counter() - t0

    overlay = None
    if opts.render:
        t0 = time.perf_counter()
        sub: Dict[str, float] = {}
        overlay = render_overlay(reader, overlay_path, track_results, bm, focal, fps, opts.start_frame, n_frames,
                                 side_view=opts.side_view, device=opts.device, progress=opts.progress,
                                 timings=sub)
        stage["render"] = time.perf_counter() - t0
        stage.update({f"render.{k}": v for k, v in sub.items()})

    exports: Dict[str, List[Path]] = {}
    if opts.export:
        if not track_results:
            logger.warning("nothing to export: no tracks")
        else:
            from lib.export import export_results

            t0 = time.perf_counter()
            exports = export_results(results_path, opts.export, out_dir, body_model=bm,
                                     combined=bool(cfg.EXPORT.COMBINED))
            stage["export"] = time.perf_counter() - t0

    fit_err = _fit_error(track_results)
    summary = DemoSummary(
        out_dir=out_dir, results_path=results_path, overlay_path=overlay, num_frames=n_frames,
        num_tracks=len(track_results), person_frames=sum(t.num_frames for t in track_results.values()),
        stage_seconds=stage, total_seconds=time.perf_counter() - t_start, fit_error=fit_err, exports=exports,
    )
    logger.info("demo finished: %d tracks, %d frames, %.2f fps", summary.num_tracks, n_frames, summary.fps)
    return summary


def _estimate(cfg, opts: DemoOptions, bm, tracks, image_size, focal, reader) -> Dict[int, object]:
    """Per-track fitted bodies (:class:`lib.smplify.fitter.FitResult`) from the chosen estimator."""
    from lib.smplify.fitter import TemporalSMPLify

    if not tracks:
        return {}
    init = None
    if opts.estimator == "pbn":
        if not opts.checkpoint:
            raise UserError("--estimator pbn needs --checkpoint (a trained pbn checkpoint); "
                            "without one use the default --estimator fit")
        net = run_network(cfg, bm, tracks, reader, checkpoint=opts.checkpoint, image_size=image_size,
                          focal_length=focal, batch_size=opts.batch_size, device=opts.device,
                          progress=opts.progress)
        if not opts.run_smplify:
            return net
        init = {tid: {"pose": r.pose, "betas": r.betas, "transl": r.transl} for tid, r in net.items()}
    fitter = TemporalSMPLify.from_config(cfg, bm, image_size, focal_length=focal, device=opts.device)
    return fitter.fit(tracks, init=init, progress=opts.progress)


def _load_network(cfg, bm, checkpoint: str, device: str):
    """The network with a backbone, weights from ``checkpoint`` (torch.load, weights only)."""
    from lib.models.pbn import ParallelBranchNet

    path = Path(checkpoint)
    if not path.is_file():
        raise UserError(f"checkpoint not found: {checkpoint}")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - corrupt/foreign files raise many types
        raise UserError(f"{checkpoint}: not a readable pbn checkpoint ({type(err).__name__}: {err})") from None
    state = ckpt
    if isinstance(ckpt, dict):
        for key in ("model", "state_dict", "model_state", "gen_state_dict", "generator"):
            if key in ckpt and isinstance(ckpt[key], dict):
                state = ckpt[key]
                break
    if not isinstance(state, dict) or not state:
        raise UserError(f"{checkpoint}: no model state dict found")
    mcfg = cfg.clone()
    mcfg.defrost()
    trained_cfg = ckpt.get("config") if isinstance(ckpt, dict) else None
    if isinstance(trained_cfg, str):  # the trainer stores its resolved config: build that architecture
        import yaml
        from yacs.config import CfgNode

        try:
            trained = CfgNode(yaml.safe_load(trained_cfg) or {})
            if "MODEL" in trained:
                mcfg.MODEL.merge_from_other_cfg(trained.MODEL)
        except (yaml.YAMLError, KeyError, ValueError, TypeError) as err:
            logger.warning("%s: its stored config does not apply (%s); using the current MODEL config",
                           checkpoint, err)
    mcfg.MODEL.USE_BACKBONE = True  # the demo feeds image crops
    net = ParallelBranchNet.from_config(mcfg, bm)
    missing, unexpected = net.load_state_dict(state, strict=False)
    if any(not k.startswith("backbone.") for k in missing):
        raise UserError(f"{checkpoint}: does not fit the configured model (missing e.g. "
                        f"{[k for k in missing if not k.startswith('backbone.')][:3]}); pass the training --cfg")
    if any(k.startswith("backbone.") for k in missing) and not cfg.PATHS.SPIN_CHECKPOINT:
        logger.warning("%s holds no backbone weights and PATHS.SPIN_CHECKPOINT is unset: the image "
                       "backbone is random, so network output will be meaningless", checkpoint)
    if unexpected:
        logger.debug("ignored checkpoint keys: %s", unexpected[:10])
    return net.to(device).eval()


def _crop(frame: np.ndarray, box: np.ndarray, size: int) -> np.ndarray:
    """Square crop of side max(w, h) around the box centre, resized to ``size`` (RGB uint8)."""
    import cv2

    side = max(float(box[2]), float(box[3]), 1.0)
    scale = size / side
    mat = np.array([[scale, 0.0, size / 2.0 - scale * box[0]], [0.0, scale, size / 2.0 - scale * box[1]]])
    return cv2.warpAffine(frame, mat, (size, size), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT)


def run_network(cfg, bm, tracks, reader, checkpoint: str, image_size, focal_length: float, batch_size: int = 64,
                device: str = "cpu", progress: bool = True) -> Dict[int, object]:
    """The ``pbn`` estimator: per-track windows of crops -> pose, shape, camera.

    Image features are computed while streaming the video (crops never pile up);
    the temporal model then runs on windows of ``MODEL.MAX_SEQ_LEN`` frames.
    Returns track id -> :class:`lib.smplify.fitter.FitResult`.
    """
    from lib.geometry.camera import crop_cam_to_full_translation, image_to_crop
    from lib.geometry.rotations import matrix_to_axis_angle
    from lib.models.backbone import CROP_SIZE, normalize_images
    from lib.smplify.fitter import FitResult

    net = _load_network(cfg, bm, checkpoint, device)
    width, height = image_size
    wanted: Dict[int, List[tuple]] = {}
    for tid, tr in tracks.items():
        for row, f in enumerate(np.asarray(tr.frame_ids).tolist()):
            wanted.setdefault(int(f), []).append((tid, row))
    feats = {tid: torch.zeros(len(tr.frame_ids), 2048) for tid, tr in tracks.items()}
    pending: List[tuple] = []

    def run_batch():
        if not pending:
            return
        imgs = torch.as_tensor(np.stack([c for _, _, c in pending])).permute(0, 3, 1, 2).float() / 255.0
        with torch.no_grad():
            out = net.backbone(normalize_images(imgs).to(device)).cpu()
        for k, (tid, row, _) in enumerate(pending):
            feats[tid][row] = out[k]
        pending.clear()

    first, last = min(wanted), max(wanted)
    for idx, frame in tqdm(reader.iter_frames(start=first, max_frames=last - first + 1), total=last - first + 1,
                           desc="features", unit="frame", disable=not progress):
        for tid, row in wanted.get(int(idx), []):
            frame3 = frame if frame.ndim == 3 else np.repeat(frame[..., None], 3, axis=-1)
            pending.append((tid, row, _crop(frame3, np.asarray(tracks[tid].bboxes[row]), CROP_SIZE)))
            if len(pending) >= batch_size:
                run_batch()
    run_batch()

    seq = int(cfg.MODEL.MAX_SEQ_LEN)
    results: Dict[int, object] = {}
    for tid, tr in tracks.items():
        n = len(tr.frame_ids)
        box = torch.as_tensor(np.asarray(tr.bboxes, np.float32))
        kp = torch.as_tensor(np.asarray(tr.keypoints_2d, np.float32))
        kp_crop = torch.cat([image_to_crop(kp[..., :2], box), kp[..., 2:]], dim=-1)
        pad = (-n) % seq
        idx = torch.cat([torch.arange(n), torch.full((pad,), n - 1)]).reshape(-1, seq)
        with torch.no_grad():
            out = net(features=feats[tid][idx].to(device), joints2d=kp_crop[idx].to(device), return_vertices=False)
        keep = lambda x: x.reshape((-1,) + x.shape[2:])[:n].cpu()  # noqa: E731
        rot = torch.cat([keep(out.pred_global_orient)[:, None], keep(out.pred_body_pose)], dim=1)  # (n, 24, 3, 3)
        pose = matrix_to_axis_angle(rot).reshape(n, 72)
        betas = keep(out.pred_betas).mean(0)
        cam = keep(out.pred_cam)
        transl = crop_cam_to_full_translation(cam, box, width, height, focal_length)
        with torch.no_grad():
            joints = bm(rot[:, :1].to(bm.v_template.device), rot[:, 1:].to(bm.v_template.device),
                        betas[None].to(bm.v_template.device), transl.to(bm.v_template.device),
                        joints_only=True).joints.cpu()
        z = joints[..., 2:].clamp(min=1e-3)
        j2d = joints[..., :2] / z * focal_length + torch.tensor([width / 2.0, height / 2.0])
        f32 = lambda x: x.numpy().astype(np.float32)  # noqa: E731
        results[tid] = FitResult(pose=f32(pose), betas=f32(betas), transl=f32(transl), cam=f32(cam),
                                 joints3d=f32(joints), joints2d=f32(j2d))
    return results


def _fit_error(track_results) -> float:
    """Median |projected - detected| / box height over confident fitted joints (detector hips excluded:
    they are not SMPL hip joints)."""
    from lib.joints.conventions import SPIN_49
    from lib.smplify.fitter import FIT_JOINTS

    joints = [j for j in FIT_JOINTS if SPIN_49[j] not in ("op_lhip", "op_rhip")]
    errs = []
    for tr in track_results.values():
        kp = tr.keypoints_2d
        conf = kp[..., 2]
        sel = np.zeros_like(conf, dtype=bool)
        sel[:, joints] = conf[:, joints] > 0.5
        err = np.linalg.norm(tr.joints2d - kp[..., :2], axis=-1) / np.maximum(tr.bboxes[:, 3:4], 1.0)
        errs.append(err[sel])
    errs = np.concatenate(errs) if errs else np.zeros(0)
    return float(np.median(errs)) if errs.size else float("nan")


def render_overlay(reader, path: Path, track_results, bm, focal: float, fps: float, start_frame: int,
                   num_frames: int, side_view: bool = False, device: str = "cpu", chunk: int = 16,
                   progress: bool = True, timings: Optional[Dict[str, float]] = None) -> Path:
    """Render every frame with its fitted bodies into an H.264 mp4 (atomic write).

    Full meshes are skinned here, once, in batches of ``chunk`` frames.
    ``timings``, when given, accumulates seconds per sub-stage (setup, decode,
    skin, draw, encode).
    """
    t_setup = time.perf_counter()
    from lib.demo.render import OverlayRenderer
    from lib.demo.video import VideoWriter
    from lib.geometry.rotations import axis_angle_to_matrix

    tm = timings if timings is not None else {}
    for k in ("setup", "decode", "skin", "draw", "encode"):
        tm.setdefault(k, 0.0)
    width, height = int(reader.width), int(reader.height)
    # frame -> list of (track id, row)
    per_frame: Dict[int, List[tuple]] = {}
    for tid, tr in track_results.items():
        for row, f in enumerate(tr.frame_ids.tolist()):
            per_frame.setdefault(int(f), []).append((tid, row))

    def skin(frames: Sequence[int]):
        items = [(f, tid, row) for f in frames for tid, row in per_frame.get(f, [])]
        if not items:
            return {}
        pose = torch.as_tensor(np.stack([track_results[t].pose[r] for _, t, r in items]), device=device)
        betas = torch.as_tensor(np.stack([track_results[t].betas for _, t, _ in items]), device=device)
        transl = torch.as_tensor(np.stack([track_results[t].transl[r] for _, t, r in items]), device=device)
        rot = axis_angle_to_matrix(pose.reshape(-1, 24, 3))
        with torch.no_grad():
            verts = bm(rot[:, :1], rot[:, 1:], betas, transl).vertices.cpu().numpy()
        out: Dict[int, tuple] = {}
        for k, (f, tid, _) in enumerate(items):
            out.setdefault(f, ([], []))
            out[f][0].append(verts[k])
            out[f][1].append(tid)
        return out

    out_w = width * (2 if side_view else 1)
    with OverlayRenderer(width, height, focal, bm.faces, bm.num_vertices, side_view=side_view) as renderer, \
            VideoWriter(path, fps, out_w, height) as writer:
        tm["setup"] += time.perf_counter() - t_setup
        buffer: List[tuple] = []

        def flush():
            t0 = time.perf_counter()
            meshes = skin([i for i, _ in buffer])
            tm["skin"] += time.perf_counter() - t0
            for idx, frame in buffer:
                verts, tids = meshes.get(idx, (None, []))
                t0 = time.perf_counter()
                img = renderer.render(frame, np.stack(verts) if verts else None, tids)
                t1 = time.perf_counter()
                writer.write(img)
                tm["draw"] += t1 - t0
                tm["encode"] += time.perf_counter() - t1
            buffer.clear()

        frames = reader.iter_frames(start=start_frame, max_frames=num_frames)
        bar = tqdm(total=num_frames, desc="render", unit="frame", disable=not progress)
        while True:
            t0 = time.perf_counter()
            item = next(frames, None)
            tm["decode"] += time.perf_counter() - t0
            if item is None:
                break
            buffer.append(item)
            bar.update(1)
            if len(buffer) >= chunk:
                flush()
        if buffer:
            flush()
        bar.close()
        t0 = time.perf_counter()
    tm["encode"] += time.perf_counter() - t0  # flushing the encoder and closing the file
    return Path(path)
