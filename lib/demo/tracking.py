"""Multi-person box tracking (SORT/ByteTrack style).

Each track carries a constant-velocity Kalman filter on (cx, cy, w, h) whose
noise scales with the box height (as in DeepSORT/ByteTrack), so small and
large people are tracked alike. Per frame:

1. predict every track one frame ahead;
2. match confident detections (score >= ``high_thresh``) to confirmed and lost
   tracks by IoU with Hungarian assignment (``scipy.optimize.linear_sum_assignment``);
3. match the low-score detections (``low_thresh`` .. ``high_thresh``) to the
   tracks still unmatched, with a stricter IoU (ByteTrack's second stage: a
   partly occluded person scores low but is still the same person);
4. match remaining confident detections to tentative tracks;
5. start a tentative track from each unmatched detection scoring at least
   ``new_track_thresh``; it is confirmed after ``n_init`` hits and dropped if
   it misses ``tentative_max_age`` frames in a row before that;
6. a confirmed track without a match coasts on its prediction ("lost") and is
   removed after ``max_age`` missed frames, so ids survive short occlusions.

The tracker also records, per track, which frames had a detection; the
front-end uses that to trim coasting tails, enforce a minimum length and fill
and smooth the boxes offline (:func:`finalize_boxes`).
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Tuple

import numpy as np
from scipy.optimize import linear_sum_assignment

from lib.demo.detection import box_iou, cxcywh_to_xyxy, xyxy_to_cxcywh

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

    def predict(self) -> np.ndarray:
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
    """

    def __init__(self, high_thresh: float = 0.5, low_thresh: float = 0.15, new_track_thresh: float = 0.5,
                 match_iou: float = 0.2, low_match_iou: float = 0.4, n_init: int = 3, max_age: int = 30,
                 tentative_max_age: int = 1):
        self.high_thresh, self.low_thresh = float(high_thresh), float(low_thresh)
        self.new_track_thresh = float(new_track_thresh)
        self.match_iou, self.low_match_iou = float(match_iou), float(low_match_iou)
        self.n_init, self.max_age = int(n_init), int(max_age)
        self.tentative_max_age = int(tentative_max_age)
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
        boxes = dets[:, :4]
        scores = dets[:, 4]
        pred = {t.track_id: cxcywh_to_xyxy(t.kf.predict()) for t in self.active}

        high = np.nonzero(scores >= self.high_thresh)[0]
        low = np.nonzero(scores < self.high_thresh)[0]
        established = [t for t in self.active if t.confirmed]
        tentative = [t for t in self.active if not t.confirmed]

        matched: Dict[int, int] = {}  # track id -> detection index
        pairs, un_t, un_high = _match(established, boxes, high, self.match_iou, pred)
        matched.update({established[r].track_id: d for r, d in pairs})
        rest = [established[i] for i in un_t]
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
