"""Person-box recall against hand-labelled frames.

Labels are JSON::

    {"video": "vtest.avi", "frames": {"30": [{"box": [x1, y1, x2, y2], "ignore": false}, ...], ...}}

``ignore`` marks people too little visible to demand (a sliver at the image
edge): finding them is neither a hit nor a false box. Predicted boxes are
matched one-to-one to labelled people by Hungarian assignment on IoU; a pair
counts when its IoU is at least ``min_iou`` (0.3 by default: loose enough for
the detector's and the labeller's idea of a box edge to differ by a few pixels
on a 40 px person).
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Mapping, Union

import numpy as np
from scipy.optimize import linear_sum_assignment

from lib.demo.detection import box_iou, cxcywh_to_xyxy
from lib.errors import UserError


@dataclass
class BoxScore:
    """Matches over all labelled frames.

    Attributes:
        hits: labelled (not ignored) people with a matching box.
        people: labelled (not ignored) people.
        false_boxes: predicted boxes matching no labelled person (ignored ones included).
        per_frame: frame -> (hits, people, false boxes).
        missed: frame -> boxes x1, y1, x2, y2 of the people without a match.
        false: frame -> the false boxes.
    """

    hits: int = 0
    people: int = 0
    false_boxes: int = 0
    per_frame: Dict[int, tuple] = field(default_factory=dict)
    missed: Dict[int, List[List[float]]] = field(default_factory=dict)
    false: Dict[int, List[List[float]]] = field(default_factory=dict)

    @property
    def recall(self) -> float:
        return self.hits / self.people if self.people else 1.0


def load_box_labels(path: Union[str, Path]) -> Dict[int, List[dict]]:
    """Labelled frames: frame index -> list of ``{"box": [x1, y1, x2, y2], "ignore": bool}``."""
    path = Path(path)
    try:
        data = json.loads(path.read_text())
        frames = {int(f): [{"box": [float(v) for v in p["box"]], "ignore": bool(p.get("ignore", False))}
                           for p in people] for f, people in data["frames"].items()}
    except FileNotFoundError:
        raise UserError(f"box labels not found: {path}") from None
    except (ValueError, KeyError, TypeError) as err:
        raise UserError(f"{path}: not a box label file ({err})") from None
    for f, people in frames.items():
        for p in people:
            x1, y1, x2, y2 = p["box"]
            if not (x2 > x1 and y2 > y1):
                raise UserError(f"{path}: frame {f}: box {p['box']} is empty (need x1 < x2, y1 < y2)")
    return frames


def score_boxes(pred: Mapping[int, np.ndarray], labels: Mapping[int, List[dict]], min_iou: float = 0.3) -> BoxScore:
    """Recall and false boxes of predicted boxes on the labelled frames.

    Args:
        pred: frame -> (K, >=4) boxes x1, y1, x2, y2 (extra columns ignored);
            frames without an entry have no box.
        labels: from :func:`load_box_labels`.
    """
    out = BoxScore()
    for f in sorted(labels):
        people = labels[f]
        gt = np.array([p["box"] for p in people], np.float64).reshape(-1, 4)
        ignore = np.array([p["ignore"] for p in people], bool)
        boxes = np.asarray(pred.get(f, np.zeros((0, 4))), np.float64)
        boxes = boxes.reshape(len(boxes), -1)[:, :4] if len(boxes) else np.zeros((0, 4))
        iou = box_iou(gt, boxes)
        hit_gt, hit_box = set(), set()
        if iou.size:
            for i, j in zip(*linear_sum_assignment(-iou)):
                if iou[i, j] >= min_iou:
                    hit_gt.add(int(i))
                    hit_box.add(int(j))
        hits = sum(1 for i in hit_gt if not ignore[i])
        n = int((~ignore).sum())
        false = [j for j in range(len(boxes)) if j not in hit_box]
        out.hits += hits
        out.people += n
        out.false_boxes += len(false)
        out.per_frame[f] = (hits, n, len(false))
        missed = [gt[i].round(1).tolist() for i in range(len(gt)) if not ignore[i] and i not in hit_gt]
        if missed:
            out.missed[f] = missed
        if false:
            out.false[f] = [boxes[j].round(1).tolist() for j in false]
    return out


def track_boxes_by_frame(tracks: Mapping[int, object]) -> Dict[int, np.ndarray]:
    """Frame -> (K, 4) x1, y1, x2, y2 of every track present, from tracks with
    ``frame_ids`` and ``bboxes`` (cx, cy, w, h) attributes or keys."""
    per: Dict[int, list] = {}
    for t in tracks.values():
        frames = t["frame_ids"] if isinstance(t, Mapping) else t.frame_ids
        boxes = t["bboxes"] if isinstance(t, Mapping) else t.bboxes
        for f, b in zip(np.asarray(frames).tolist(), cxcywh_to_xyxy(np.asarray(boxes))):
            per.setdefault(int(f), []).append(b)
    return {f: np.stack(b) for f, b in per.items()}
