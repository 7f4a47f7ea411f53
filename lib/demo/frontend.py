"""The demo's front half: video -> person boxes -> tracks -> 2D keypoints.

One streaming pass over the frames (no frame is kept): detect people, update
the tracker, and run the keypoint model on every live track's box. Small
people are found by 2x2 half-overlapping tiles; each tile runs every
``tile_every`` frames, the tiles staggered so that each frame pays about the
same; in between, low-score full-frame detections and the Kalman predictions
keep their tracks alive (see :mod:`lib.demo.tracking`). After the pass, weak
motionless tracks (sign posts and the like) are dropped, pieces of one
person's track are stitched across gaps, and each track is trimmed to its
detected span, checked for a minimum length, its boxes gap-filled and
smoothed, and its keypoints one-euro filtered.
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Dict, List, Optional

import numpy as np
from tqdm import tqdm

logger = logging.getLogger(__name__)


@dataclass
class TrackData:
    """One person's track, frames consecutive.

    Attributes:
        frame_ids: (N,) int video frame indices.
        bboxes: (N, 4) float32 cx, cy, w, h px (gap-filled, smoothed).
        keypoints_2d: (N, 49, 3) float32 px + confidence, spin49 order (smoothed).
        world_landmarks: (N, 33, 3) float32 BlazePose world landmarks, metres (smoothed).
        landmarks_33: (N, 33, 3) float32 BlazePose landmarks px + visibility (raw).
        detected: (N,) bool, whether the detector saw the person on that frame.
    """

    frame_ids: np.ndarray
    bboxes: np.ndarray
    keypoints_2d: np.ndarray
    world_landmarks: np.ndarray
    landmarks_33: np.ndarray
    detected: np.ndarray

    @property
    def num_frames(self) -> int:
        return int(len(self.frame_ids))


@dataclass
class FrontendResult:
    """Everything the back half needs from the video.

    Attributes:
        tracks: track id (1, 2, ... in order of appearance) -> :class:`TrackData`.
        detections: (M, 6) float32 frame, x1, y1, x2, y2, score: raw per-frame detections.
        timings: stage -> total seconds (decode, detect, track, keypoints, post).
        fps, width, height: of the video.
        num_frames: frames processed.
        stats: counts (tiled frames, person crops, tracks) and ``cpu_<stage>``
            seconds (CPU time of the stage's thread; see run_frontend).
    """

    tracks: Dict[int, TrackData]
    detections: np.ndarray
    timings: Dict[str, float]
    fps: float
    width: int
    height: int
    num_frames: int
    start_frame: int = 0
    stats: Dict[str, float] = field(default_factory=dict)


def frontend_kwargs(cfg) -> dict:
    """Keyword arguments of :func:`run_frontend` from the ``DEMO`` config section."""
    d = cfg.DEMO
    return dict(detector=d.get("DETECTOR", "ssdlite"), keypoint_model=d.get("KEYPOINT_MODEL", "blazepose"),
                tile_every=int(d.get("TILE_EVERY", 3)),
                detect_threshold=float(d.get("DETECT_THRESHOLD", 0.15)),
                new_track_threshold=float(d.get("NEW_TRACK_THRESHOLD", 0.5)),
                max_lost_seconds=float(d.get("MAX_LOST_SECONDS", 1.5)),
                stitch_seconds=float(d.get("STITCH_SECONDS", 2.0)),
                min_track_len=d.get("MIN_TRACK_LEN", None),
                num_threads=int(d.get("NUM_THREADS", 0)) or None)


_END = object()
GAP_CONFIDENCE = 0.2  # confidence factor of keypoints carried across a stitched gap


def _fill_gaps(values: np.ndarray, have: np.ndarray, conf_scale: Optional[float] = None) -> np.ndarray:
    """Linear interpolation over the frames without values (``have`` False), per channel.

    With ``conf_scale`` the last channel is a confidence: filled frames get the
    interpolated confidence times ``conf_scale``. Frames before the first or
    after the last valued frame take the nearest value.
    """
    out = values.copy()
    idx = np.nonzero(have)[0]
    miss = np.nonzero(~have)[0]
    flat = out.reshape(len(out), -1)
    for c in range(flat.shape[1]):
        flat[miss, c] = np.interp(miss, idx, flat[idx, c])
    if conf_scale is not None:
        out[miss, ..., -1] *= conf_scale
    return out


def tiles_for_frame(n: int, tile_every: int, num_tiles: int) -> List[int]:
    """Tiles to detect on the ``n``-th frame: tile ``k`` every ``tile_every`` frames, the tiles
    staggered over those frames so that each frame pays about the same (``num_tiles / tile_every``
    tiles, e.g. one tile per frame for 4 tiles every 4 frames)."""
    if tile_every <= 0 or num_tiles <= 0:
        return []
    return [k for k in range(num_tiles) if (n - (k * tile_every) // num_tiles) % tile_every == 0]


def _detect_stream(frames_iter, det, tile_every: int, pipelined: bool):
    """Yield ``(idx, frame, dets, tiled, (decode_s, detect_s), (decode_cpu_s, detect_cpu_s))`` per frame.

    ``pipelined`` decodes and detects in a worker thread, up to a few frames
    ahead of the consumer (tracking + keypoints): OpenCV DNN and TFLite release
    the GIL, so on 2 cores the two halves run side by side.
    """
    def produce():
        n = 0
        while True:
            t0, c0 = time.perf_counter(), time.thread_time()
            try:
                idx, frame = next(frames_iter)
            except StopIteration:
                return
            t1, c1 = time.perf_counter(), time.thread_time()
            tiled = tiles_for_frame(n, tile_every, getattr(det, "num_tiles", 0))
            dets = det.detect(frame, tiled=tiled)
            n += 1
            yield idx, frame, dets, tiled, (t1 - t0, time.perf_counter() - t1), (c1 - c0, time.thread_time() - c1)

    if not pipelined:
        yield from produce()
        return
    import queue
    import threading

    q: "queue.Queue" = queue.Queue(maxsize=3)
    stop = threading.Event()

    def worker():
        try:
            for item in produce():
                while not stop.is_set():
                    try:
                        q.put(item, timeout=0.1)
                        break
                    except queue.Full:
                        continue
                if stop.is_set():
                    return
            q.put(_END)
        except BaseException as err:  # noqa: BLE001 - handed to the consumer, re-raised there
            q.put(err)

    thread = threading.Thread(target=worker, name="pbn-detect", daemon=True)
    thread.start()
    try:
        while True:
            item = q.get()
            if item is _END:
                return
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()
        thread.join(timeout=5)


def run_frontend(reader, detector: str = "ssdlite", asset_root: str = "data/assets", start_frame: int = 0,
                 max_frames: Optional[int] = None, min_track_len: Optional[int] = None, progress: bool = True,
                 keypoint_model: Optional[str] = "blazepose", tile_every: int = 3, detect_threshold: float = 0.15,
                 new_track_threshold: float = 0.5, max_lost_seconds: float = 1.5, stitch_seconds: float = 2.0,
                 num_threads: Optional[int] = None, smooth: bool = True, pipelined: Optional[bool] = None,
                 detector_kwargs: Optional[dict] = None, keypoint_kwargs: Optional[dict] = None
                 ) -> FrontendResult:
    """Detect, track and find keypoints of the people in a video.

    Args:
        reader: a :class:`lib.demo.video.VideoReader`.
        detector: detector registry name (``ssdlite``, ``hog``).
        asset_root: folder with ``detector/`` and ``keypoints/`` assets.
        start_frame, max_frames: the frame range to process.
        min_track_len: tracks spanning fewer frames are dropped; None = half a
            second of video (at least 3 frames).
        progress: show a tqdm bar.
        keypoint_model: keypoint model registry name; None = boxes only (keypoints
            left at zero confidence), for detection and tracking benchmarks.
        tile_every: each of the detector's small-people tiles runs every this many
            frames, staggered (:func:`tiles_for_frame`); 0 = never, 1 = every tile every frame.
        detect_threshold: lowest detection score kept (low scores only extend tracks).
        new_track_threshold: lowest score that starts a track.
        max_lost_seconds: a track missing this long is ended (occlusions shorter keep their id).
        stitch_seconds: after the pass, link track pieces of one person across gaps up to
            this long (:func:`lib.demo.tracking.stitch_tracks`); 0 = off.
        num_threads: OpenCV / TFLite threads each (None = 1 each when pipelined, else
            OpenCV's default and 1 for TFLite).
        smooth: smooth boxes and keypoints.
        pipelined: decode + detect in a worker thread alongside tracking + keypoints
            (None = when the machine has 2 or more cores). Stage timings then overlap.

    Returns:
        :class:`FrontendResult`; no person in the video gives empty ``tracks``.
    """
    import cv2

    from lib.demo.detection import build_detector
    from lib.demo.filters import smooth_keypoints
    from lib.demo.keypoints import build_keypoint_model
    from lib.demo.tracking import Tracker, finalize_boxes, is_static_clutter, merge_tracks, stitch_tracks

    import os

    if pipelined is None:
        pipelined = (os.cpu_count() or 1) >= 2
    if num_threads:
        cv2.setNumThreads(int(num_threads))
    elif pipelined:
        cv2.setNumThreads(1)  # the other core runs the keypoint model
    fps = float(reader.fps) if reader.fps and reader.fps > 0 else 30.0
    det_kw = dict(detector_kwargs or {})
    if detector == "ssdlite":
        det_kw.setdefault("score_threshold", detect_threshold)
    det = build_detector(detector, asset_root=asset_root, **det_kw)
    kp_kw = dict(keypoint_kwargs or {})
    kp_kw.setdefault("num_threads", int(num_threads) if num_threads else 1)
    kpm = build_keypoint_model(keypoint_model, asset_root=asset_root, **kp_kw) if keypoint_model else None
    tile_every = max(int(tile_every), 0)
    if min_track_len is None:
        min_track_len = max(3, int(round(0.5 * fps)))
    min_track_len = max(int(min_track_len), 1)
    tracker = Tracker(low_thresh=detect_threshold, new_track_thresh=new_track_threshold,
                      high_thresh=max(new_track_threshold, detect_threshold),
                      max_age=max(int(round(max_lost_seconds * fps)), 1),
                      tentative_max_age=max(tile_every, 1),
                      n_init=min(3, min_track_len))  # a 1-frame clip can still confirm a track

    timings = {"decode": 0.0, "detect": 0.0, "track": 0.0, "keypoints": 0.0, "post": 0.0}
    # CPU seconds of the calling threads per stage: with 1 library thread per stage this is what
    # the stage costs on an idle core, whatever else shares the machine.
    cpu_timings = {"decode": 0.0, "detect": 0.0, "track": 0.0, "keypoints": 0.0}
    det_rows: List[np.ndarray] = []
    # internal track id -> frame -> (kp49, lm33, world33)
    kp_store: Dict[int, Dict[int, tuple]] = {}
    # Crops of frames that may not end up in a kept track (tentative tracks, coasting
    # frames): the model runs on them only once the track is confirmed and detected
    # again, so false starts and coasting tails cost a warp, not a network pass.
    pending: Dict[int, List[tuple]] = {}
    n_avail = max(reader.num_frames - start_frame, 0)
    total = min(n_avail, max_frames) if max_frames else n_avail
    n_done = 0
    n_tiled = 0
    person_crops = 0
    frames_iter = reader.iter_frames(start=start_frame, max_frames=max_frames)
    stream = _detect_stream(frames_iter, det, tile_every, pipelined)
    bar = tqdm(total=total, desc="detect+track+keypoints", unit="frame", disable=not progress)
    try:
        for idx, frame, dets, tiled, (t_dec, t_det), (c_dec, c_det) in stream:
            n_tiled += len(tiled)
            t2, c2 = time.perf_counter(), time.thread_time()
            if len(dets):
                det_rows.append(np.concatenate([np.full((len(dets), 1), idx, np.float32), dets], axis=1))
            states = tracker.update(dets, idx)
            live = {t.track_id for t in tracker.active}
            for tid in [t for t in pending if t not in live]:
                del pending[tid]  # the track ended: its uncertain frames are dropped
            t3, c3 = time.perf_counter(), time.thread_time()
            if states and kpm is not None:
                crops, mats = kpm.make_crops(frame, np.stack([s.box for s in states]).astype(np.float32))
                run: List[tuple] = []  # (track id, frame, crop, mat)
                for k, s in enumerate(states):
                    if s.confirmed and s.detected:
                        run.extend((s.track_id, f, c, m) for f, c, m in pending.pop(s.track_id, []))
                        run.append((s.track_id, idx, crops[k], mats[k]))
                    else:
                        pending.setdefault(s.track_id, []).append((idx, crops[k], mats[k]))
                if run:
                    out = kpm.predict_crops(np.stack([r[2] for r in run]), np.stack([r[3] for r in run]))
                    for k, (tid, f, _, _) in enumerate(run):
                        kp_store.setdefault(tid, {})[f] = (out["keypoints"][k], out["landmarks"][k], out["world"][k])
                    person_crops += len(run)
            t4, c4 = time.perf_counter(), time.thread_time()
            for key, cpu in (("decode", c_dec), ("detect", c_det), ("track", c3 - c2), ("keypoints", c4 - c3)):
                cpu_timings[key] += cpu
            timings["decode"] += t_dec
            timings["detect"] += t_det
            timings["track"] += t3 - t2
            timings["keypoints"] += t4 - t3
            n_done += 1
            bar.update(1)
            if progress and n_done % 10 == 0:
                bar.set_postfix(people=len(states))
    finally:
        stream.close()
        bar.close()

    t0 = time.perf_counter()
    sigma = 0.5 * fps / 10.0 if smooth else 0.0  # ~50 ms of Gaussian smoothing on the boxes
    confirmed = [t for t in tracker.all_tracks() if t.confirmed]
    people = [t for t in confirmed if not is_static_clutter(t)]
    n_clutter = len(confirmed) - len(people)
    chains = stitch_tracks(people, max_gap=int(round(stitch_seconds * fps))) if stitch_seconds > 0 \
        else [[t] for t in people]
    merged = sorted(((merge_tracks(c), c) for c in chains), key=lambda mc: (min(mc[0].raw), mc[0].track_id))
    tracks: Dict[int, TrackData] = {}
    for t, chain in merged:
        fin = finalize_boxes(t, min_track_len, smooth_sigma=sigma)
        if fin is None:
            continue
        frames, boxes, detected = fin
        store = {f: v for piece in chain for f, v in kp_store.get(piece.track_id, {}).items()}
        kp = np.zeros((len(frames), 49, 3), np.float32)
        lm = np.zeros((len(frames), 33, 3), np.float32)
        wl = np.zeros((len(frames), 33, 3), np.float32)
        have = np.zeros(len(frames), bool)
        for i, f in enumerate(frames.tolist()):
            if f in store:
                kp[i], lm[i], wl[i] = store[f]
                have[i] = True
        if len(chain) > 1 and have.any() and not have.all():
            # Frames of a stitched gap have no keypoints: carry the neighbours' across,
            # weakly trusted (the fitter leans on temporal smoothness there).
            kp, wl = _fill_gaps(kp, have, conf_scale=GAP_CONFIDENCE), _fill_gaps(wl, have)
        if smooth and len(frames) > 1:
            kp = smooth_keypoints(kp, fps, scale=boxes[:, 3])
            wl = smooth_keypoints(wl, fps, has_conf=False)
        tid = len(tracks) + 1
        tracks[tid] = TrackData(frame_ids=frames.astype(np.int64), bboxes=boxes, keypoints_2d=kp,
                                world_landmarks=wl, landmarks_33=lm, detected=detected)
    timings["post"] = time.perf_counter() - t0
    detections = np.concatenate(det_rows) if det_rows else np.zeros((0, 6), np.float32)
    stats = {**{f"cpu_{k}": v for k, v in cpu_timings.items()}, "tile_passes": n_tiled, "person_crops": person_crops,
             "tracks_started": len(tracker.all_tracks()), "tracks_kept": len(tracks),
             "tracks_clutter": n_clutter, "tracks_stitched": sum(len(c) - 1 for c in chains)}
    if n_done == 0:
        logger.warning("front-end: no frame decoded from %s (start %d)", getattr(reader, "path", "?"), start_frame)
    logger.info("front-end: %d frames, %d detections, %d tracks (%d person crops)",
                n_done, len(detections), len(tracks), person_crops)
    return FrontendResult(tracks=tracks, detections=detections.astype(np.float32), timings=timings, fps=fps,
                          width=int(reader.width), height=int(reader.height), num_frames=n_done,
                          start_frame=int(start_frame), stats=stats)
