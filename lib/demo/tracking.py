"""Multi-person box tracking (SORT/ByteTrack style), plus offline clean-up.

Each track carries a constant-velocity Kalman filter on (cx, cy, w, h) whose
noise scales with the box height (as in DeepSORT/ByteTrack), so small and
large people are tracked alike. Per frame:

1. predict every track one frame ahead (a track not seen lately slows down);
2. drop detections lying across two tracked people side by side
   (:func:`lib.demo.detection.group_boxes`): they would pull one track into
   the gap between the two;
3. match confident detections (score >= ``high_thresh``) by IoU with
   Hungarian assignment (``scipy.optimize.linear_sum_assignment``), first to
   the confirmed tracks seen on the last frame, then to the lost ones (a
   matching cascade, as in DeepSORT);
4. match the low-score detections (``low_thresh`` .. ``high_thresh``) to the
   tracks still unmatched, with a stricter IoU (ByteTrack's second stage: a
   partly occluded person scores low but is still the same person);
5. match remaining confident detections to tentative tracks;
6. start a tentative track from each unmatched detection scoring at least
   ``new_track_thresh``; it is confirmed after ``n_init`` hits and dropped if
   it misses ``tentative_max_age`` frames in a row before that;
7. a confirmed track without a match coasts on its prediction ("lost") and is
   removed after ``max_age`` missed frames, so ids survive short occlusions.

The tracker also records, per track, which frames had a detection. After the
last frame the front-end drops background clutter (:func:`is_static_clutter`),
links pieces of one person's track across longer gaps
(:func:`stitch_tracks`), trims coasting tails, enforces a minimum length and
fills and smooths the boxes (:func:`finalize_boxes`).
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Tuple

import numpy as np
from scipy.optimize import linear_sum_assignment

from lib.demo.detection import box_iou, cxcywh_to_xyxy, group_boxes, xyxy_to_cxcywh

logger = logging.getLogger(__name__)


class BoxKalman:
    """Constant-velocity Kalman filter on a box (cx, cy, w, h); noise proportional to h."""

    _std_pos = 1.0 / 20
    _std_vel = 1.0 / 160

    def __init__(self, box_cxcywh: np.ndarray):
        z = np.asarray(box_cxcywh, np.float64)
        self.x = np.concatenate([z, np.zeros(4)])
        h = max(z[3], 1.0)
        std = np.array([2 * self._std_pos * h] * 4 + [10 * self._std_vel * h] * 4)
        self.P = np.diag(std ** 2)
        self.F = np.eye(8)
        self.F[:4, 4:] = np.eye(4)
        self.H = np.eye(4, 8)

    def predict(self, velocity_decay: float = 1.0) -> np.ndarray:
        """One frame ahead; ``velocity_decay`` < 1 slows a box that is not being seen."""
        self.x[4:] *= velocity_decay
        h = max(self.x[3], 1.0)
        q = np.array([self._std_pos * h] * 4 + [self._std_vel * h] * 4) ** 2
        self.x = self.F @ self.x
        self.x[2:4] = np.maximum(self.x[2:4], 1.0)
        self.P = self.F @ self.P @ self.F.T + np.diag(q)
        return self.x[:4].copy()

    def update(self, box_cxcywh: np.ndarray, score: float = 1.0) -> np.ndarray:
        z = np.asarray(box_cxcywh, np.float64)
        h = max(self.x[3], 1.0)
        # Low-confidence detections are trusted less (confidence-aware measurement noise).
        r = (self._std_pos * h / max(score, 0.1) ** 0.5) ** 2
        S = self.H @ self.P @ self.H.T + np.eye(4) * r
        K = np.linalg.solve(S, self.H @ self.P).T
        self.x = self.x + K @ (z - self.H @ self.x)
        self.P = (np.eye(8) - K @ self.H) @ self.P
        return self.x[:4].copy()

    @property
    def box(self) -> np.ndarray:
        return self.x[:4].copy()


@dataclass
class Track:
    """One tracked person while tracking runs."""

    track_id: int
    kf: BoxKalman
    start_frame: int
    hits: int = 1
    misses: int = 0  # consecutive frames without a match
    confirmed: bool = False
    # per-frame history: frame -> (filtered box cx,cy,w,h, detection score or 0 when coasting)
    history: Dict[int, Tuple[np.ndarray, float]] = field(default_factory=dict)
    raw: Dict[int, np.ndarray] = field(default_factory=dict)  # frame -> matched detection (cx,cy,w,h)


@dataclass
class TrackState:
    """A track's box on the current frame, as returned by :meth:`Tracker.update`."""

    track_id: int
    box: np.ndarray  # (4,) cx, cy, w, h px
    score: float  # matched detection score; 0 when coasting
    detected: bool
    confirmed: bool


def _match(tracks: List[Track], boxes_xyxy: np.ndarray, det_idx: np.ndarray, min_iou: float,
           pred_xyxy: Dict[int, np.ndarray]) -> Tuple[List[Tuple[int, int]], List[int], List[int]]:
    """Hungarian matching on 1 - IoU; pairs below ``min_iou`` are not matched.

    Returns (pairs of (track list index, detection index)), unmatched track list
    indices, unmatched detection indices (into the full detection array).
    """
    if not tracks or len(det_idx) == 0:
        return [], list(range(len(tracks))), list(det_idx)
    tb = np.stack([pred_xyxy[t.track_id] for t in tracks])
    iou = box_iou(tb, boxes_xyxy[det_idx])
    cost = 1.0 - iou
    cost[iou < min_iou] = 1e6
    rows, cols = linear_sum_assignment(cost)
    pairs, used_t, used_d = [], set(), set()
    for r, c in zip(rows, cols):
        if iou[r, c] >= min_iou:
            pairs.append((r, int(det_idx[c])))
            used_t.add(r)
            used_d.add(int(det_idx[c]))
    return pairs, [i for i in range(len(tracks)) if i not in used_t], [int(d) for d in det_idx if int(d) not in used_d]


class Tracker:
    """ByteTrack-style tracker on per-frame detections.

    Args:
        high_thresh: detections at or above this score are matched first.
        low_thresh: detections below this are ignored; between the two they
            only extend existing tracks (second stage).
        new_track_thresh: minimum score to start a track.
        match_iou: minimum IoU for first-stage (and tentative) matches.
        low_match_iou: minimum IoU for second-stage (low-score) matches.
        n_init: hits that confirm a tentative track.
        max_age: frames a confirmed track may miss before it is removed.
        tentative_max_age: frames a tentative track may miss in a row.
        coast_decay: velocity factor per frame while a track goes unseen, so a
            lost track slows down instead of drifting onto someone else.
    """

    def __init__(self, high_thresh: float = 0.5, low_thresh: float = 0.15, new_track_thresh: float = 0.5,
                 match_iou: float = 0.2, low_match_iou: float = 0.4, n_init: int = 3, max_age: int = 30,
                 tentative_max_age: int = 1, coast_decay: float = 0.8):
        self.high_thresh, self.low_thresh = float(high_thresh), float(low_thresh)
        self.new_track_thresh = float(new_track_thresh)
        self.match_iou, self.low_match_iou = float(match_iou), float(low_match_iou)
        self.n_init, self.max_age = int(n_init), int(max_age)
        self.tentative_max_age = int(tentative_max_age)
        self.coast_decay = float(coast_decay)
        self.active: List[Track] = []
        self.finished: List[Track] = []
        self._next_id = 1

    def update(self, dets: np.ndarray, frame: int) -> List[TrackState]:
        """Advance one frame with detections (K, 5) x1, y1, x2, y2, score.

        Returns the state of every live track (confirmed or tentative) on this
        frame: detected ones with their updated box, coasting ones with their
        prediction.
        """
        dets = np.asarray(dets, np.float32).reshape(-1, 5)
        dets = dets[dets[:, 4] >= self.low_thresh]
        pred = {t.track_id: cxcywh_to_xyxy(t.kf.predict(self.coast_decay if t.misses else 1.0)) for t in self.active}
        dets = self._drop_group_boxes(dets, pred)
        boxes = dets[:, :4]
        scores = dets[:, 4]

        high = np.nonzero(scores >= self.high_thresh)[0]
        low = np.nonzero(scores < self.high_thresh)[0]
        established = [t for t in self.active if t.confirmed]
        tentative = [t for t in self.active if not t.confirmed]

        matched: Dict[int, int] = {}  # track id -> detection index
        # Tracks seen on the last frame choose first, then lost ones (a matching cascade):
        # a track coasting on its prediction must not take a person another track follows.
        seen = [t for t in established if t.misses == 0]
        lost = [t for t in established if t.misses > 0]
        pairs, un_t, un_high = _match(seen, boxes, high, self.match_iou, pred)
        matched.update({seen[r].track_id: d for r, d in pairs})
        rest = [seen[i] for i in un_t]
        pairs, un_lost, un_high = _match(lost, boxes, np.asarray(un_high, int), self.match_iou, pred)
        matched.update({lost[r].track_id: d for r, d in pairs})
        rest += [lost[i] for i in un_lost]
        pairs, un_t2, _ = _match(rest, boxes, low, self.low_match_iou, pred)
        matched.update({rest[r].track_id: d for r, d in pairs})
        pairs, _, un_high = _match(tentative, boxes, np.asarray(un_high, int), self.match_iou, pred)
        matched.update({tentative[r].track_id: d for r, d in pairs})
        # Low-score boxes may also keep tentative tracks alive (not start them).
        still_tent = [t for t in tentative if t.track_id not in matched]
        used = set(matched.values())
        pairs, _, _ = _match(still_tent, boxes, np.asarray([d for d in low if d not in used], int),
                             self.low_match_iou, pred)
        matched.update({still_tent[r].track_id: d for r, d in pairs})

        states: List[TrackState] = []
        survivors: List[Track] = []
        for t in self.active:
            d = matched.get(t.track_id)
            if d is not None:
                box = t.kf.update(xyxy_to_cxcywh(boxes[d]), float(scores[d]))
                t.hits += 1
                t.misses = 0
                t.raw[frame] = xyxy_to_cxcywh(boxes[d])
                if not t.confirmed and t.hits >= self.n_init:
                    t.confirmed = True
                t.history[frame] = (box, float(scores[d]))
                states.append(TrackState(t.track_id, box, float(scores[d]), True, t.confirmed))
                survivors.append(t)
                continue
            t.misses += 1
            limit = self.max_age if t.confirmed else self.tentative_max_age
            if t.misses > limit:
                self.finished.append(t)
                continue
            box = t.kf.box
            t.history[frame] = (box, 0.0)
            states.append(TrackState(t.track_id, box, 0.0, False, t.confirmed))
            survivors.append(t)
        used = set(matched.values())
        for d in high:
            if int(d) in used or scores[d] < self.new_track_thresh:
                continue
            box = xyxy_to_cxcywh(boxes[d])
            t = Track(self._next_id, BoxKalman(box), frame, confirmed=self.n_init <= 1)
            self._next_id += 1
            t.history[frame] = (box.astype(np.float64), float(scores[d]))
            t.raw[frame] = box
            survivors.append(t)
            states.append(TrackState(t.track_id, box.astype(np.float64), float(scores[d]), True, t.confirmed))
        self.active = survivors
        return states

    def _drop_group_boxes(self, dets: np.ndarray, pred: Dict[int, np.ndarray]) -> np.ndarray:
        """Detections spanning two confirmed, recently seen tracks side by side are not used.

        Such a box (two people walking together seen as one) would drag one
        track between the people and leave the other to coast; both coast
        instead until the people are told apart again.
        """
        live = [pred[t.track_id] for t in self.active if t.confirmed and t.misses <= 2]
        if len(live) < 2 or len(dets) == 0:
            return dets
        flags = group_boxes(np.concatenate([np.stack(live), dets[:, :4]]))[len(live):]
        # a box on a tracked person squeezed between two others is that person's box
        flags &= box_iou(dets[:, :4], np.stack(live)).max(axis=1) < 0.6
        return dets[~flags]

    def all_tracks(self) -> List[Track]:
        """Finished and active tracks (call after the last frame)."""
        return self.finished + self.active


def finalize_boxes(track: Track, min_len: int, smooth_sigma: float = 1.0
                   ) -> Optional[Tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """Offline clean-up of one track.

    Keeps frames from the first to the last *detected* frame (coasting tails
    dropped), requires ``min_len`` of them and at least ``n_init``-style
    confirmation (done by the caller), fills undetected frames inside by
    linear interpolation of the matched detections, and smooths cx, cy, w, h
    with a Gaussian of ``smooth_sigma`` frames.

    Returns:
        (frame_ids (N,), boxes (N, 4) cx,cy,w,h, detected (N,) bool), or None
        when the track is too short.
    """
    from scipy.ndimage import gaussian_filter1d

    if not track.raw:
        return None
    det_frames = np.array(sorted(track.raw))
    first, last = int(det_frames[0]), int(det_frames[-1])
    frames = np.arange(first, last + 1)
    if len(frames) < max(int(min_len), 1):
        return None
    det_boxes = np.stack([track.raw[int(f)] for f in det_frames]).astype(np.float64)
    boxes = np.stack([np.interp(frames, det_frames, det_boxes[:, k]) for k in range(4)], axis=1)
    if smooth_sigma > 0 and len(frames) > 2:
        boxes = gaussian_filter1d(boxes, smooth_sigma, axis=0, mode="nearest")
    detected = np.isin(frames, det_frames)
    return frames, boxes.astype(np.float32), detected


def is_static_clutter(track: Track, min_peak_score: float = 0.5, max_motion: float = 0.1,
                      min_frames: int = 10) -> bool:
    """Whether a track looks like a person-shaped background object, not a person.

    Sign posts, bins and bollards draw weak detections, frame after frame, at
    the same spot. A track that never scored ``min_peak_score`` and whose
    matched boxes never moved more than ``max_motion`` of their height from
    their median position over at least ``min_frames`` detections is taken
    for such clutter. People found with confidence, or moving, are kept; so
    is a short track (too little evidence either way).
    """
    scores = [s for _, s in track.history.values() if s > 0]
    if len(track.raw) < min_frames or (scores and max(scores) >= min_peak_score):
        return False
    boxes = np.stack(list(track.raw.values())).astype(np.float64)
    centre = np.median(boxes[:, :2], axis=0)
    height = max(float(np.median(boxes[:, 3])), 1.0)
    return bool(np.abs(boxes[:, :2] - centre).max() <= max_motion * height)


def _end_state(track: Track, head: bool, k: int = 5) -> Tuple[int, np.ndarray, np.ndarray]:
    """(frame, box cx,cy,w,h, velocity px/frame of cx,cy) at the first (``head``) or last detection,
    the velocity fitted over up to ``k`` detections there."""
    frames = np.array(sorted(track.raw))
    sel = frames[:k] if head else frames[-k:]
    boxes = np.stack([track.raw[int(f)] for f in sel]).astype(np.float64)
    vel = np.zeros(2)
    if len(sel) >= 2 and sel[-1] > sel[0]:
        vel = np.polyfit(sel.astype(np.float64), boxes[:, :2], 1)[0]
    end = 0 if head else -1
    return int(sel[end]), boxes[end], vel


def stitch_tracks(tracks: List[Track], max_gap: int, max_dist: float = 0.5, max_overlap_iou: float = 0.5
                  ) -> List[List[Track]]:
    """Link track fragments of one person across a gap (offline; the demo sees the whole video).

    A person hidden for longer than the tracker's ``max_age`` (behind a sign,
    behind another person) comes back as a new track. Fragment ``b`` is
    linked after fragment ``a`` when it starts 1..``max_gap`` frames after
    ``a`` ends, their heights agree within 25%, and ``a`` carried forward at
    its walking speed meets ``b`` carried back at its speed within
    ``max_dist`` box heights. Links are chosen by Hungarian assignment on that
    distance (one successor and one predecessor per fragment). A link is
    refused when the straight path across the gap runs over another track
    (IoU above ``max_overlap_iou`` on most gap frames): that person is
    already tracked there.

    Returns:
        chains of tracks in time order (every input track in exactly one chain).
    """
    n = len(tracks)
    if n < 2:
        return [[t] for t in tracks]
    heads = [_end_state(t, head=True) for t in tracks]
    tails = [_end_state(t, head=False) for t in tracks]
    cost = np.full((n, n), np.inf)
    for i in range(n):
        fa, ba, va = tails[i]
        for j in range(n):
            fb, bb, vb = heads[j]
            gap = fb - fa
            if i == j or not 0 < gap <= max_gap:
                continue
            h = 0.5 * (ba[3] + bb[3])
            if not 0.8 <= ba[3] / max(bb[3], 1e-6) <= 1.25:
                continue
            fwd = np.linalg.norm(ba[:2] + va * gap - bb[:2]) / h
            back = np.linalg.norm(bb[:2] - vb * gap - ba[:2]) / h
            d = min(fwd, back)
            if d <= max_dist and not _gap_taken(tracks, i, j, fa, ba, fb, bb, max_overlap_iou):
                cost[i, j] = d
    if not np.isfinite(cost).any():
        return [[t] for t in tracks]
    big = 1e6
    rows, cols = linear_sum_assignment(np.where(np.isfinite(cost), cost, big))
    nxt = {int(r): int(c) for r, c in zip(rows, cols) if np.isfinite(cost[r, c])}
    has_prev = set(nxt.values())
    chains = []
    for i in range(n):
        if i in has_prev:
            continue
        chain, k = [tracks[i]], i
        while k in nxt:
            k = nxt[k]
            chain.append(tracks[k])
        chains.append(chain)
    return chains


def _gap_taken(tracks: List[Track], i: int, j: int, fa: int, ba: np.ndarray, fb: int, bb: np.ndarray,
               max_iou: float) -> bool:
    """Whether another track covers the straight path from ``ba`` (frame ``fa``) to ``bb`` (``fb``)."""
    frames = np.arange(fa + 1, fb)
    if len(frames) == 0:
        return False
    w = ((frames - fa) / (fb - fa))[:, None]
    path = cxcywh_to_xyxy((1 - w) * ba + w * bb)
    for k, t in enumerate(tracks):
        if k in (i, j):
            continue
        hits = 0
        for f, box in zip(frames.tolist(), path):
            if f in t.history and box_iou(box[None], cxcywh_to_xyxy(t.history[f][0])[None])[0, 0] > max_iou:
                hits += 1
        if hits > len(frames) / 2:
            return True
    return False


def merge_tracks(chain: List[Track]) -> Track:
    """One track from a chain of fragments (the first one's id; detections and history combined)."""
    if len(chain) == 1:
        return chain[0]
    first = chain[0]
    merged = Track(first.track_id, first.kf, first.start_frame, hits=sum(t.hits for t in chain),
                   confirmed=True)
    for t in chain:
        merged.history.update(t.history)
        merged.raw.update(t.raw)
    return merged

