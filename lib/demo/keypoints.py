"""2D keypoints (and BlazePose 3D world landmarks) for tracked person boxes.

The ``blazepose`` model is MediaPipe's BlazePose GHUM landmark network
(``pose_landmark_full.tflite``; ``blazepose_lite`` is the smaller
``pose_landmark_lite.tflite``, same inputs and outputs), run directly on each person box with
``ai-edge-litert`` (MediaPipe's own person detector misses small people, so we
skip it). Measured on the shipped model by inspection:

* input ``(B, 256, 256, 3)`` float32 RGB in [0, 1];
* output ``(B, 195)``: 39 landmarks x (x, y, z, visibility logit, presence
  logit), x/y/z in pixels of the 256x256 crop (the first 33 are the body, the
  last 6 the model's own ROI helpers);
* output ``(B, 1)``: pose presence score (already a probability);
* output ``(B, 117)``: 39 world landmarks x (x, y, z) in metres, origin
  between the hips, y down;
* plus a segmentation mask and heatmaps, unused.

A crop is the square of side ``margin`` x max(w, h) around the box centre,
warped to 256x256 with one affine map; landmarks are mapped back with its
inverse. Keypoint confidence is the landmark's visibility probability, scaled
down when the pose presence score is below 0.5 (crops without a clear person).
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Callable, Dict

import numpy as np

from lib.errors import MissingAssetError, UserError
from lib.joints.conventions import convert_kps, joint_names

logger = logging.getLogger(__name__)

BLAZEPOSE_FULL = "keypoints/pose_landmark_full.tflite"
BLAZEPOSE_LITE = "keypoints/pose_landmark_lite.tflite"
NUM_LANDMARKS = 33
_SPIN = joint_names("spin49")
_BP = joint_names("blazepose33")


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-np.clip(x, -60, 60)))


def crop_transforms(bboxes: np.ndarray, size: int, margin: float) -> np.ndarray:
    """Affine maps frame px -> crop px for square crops around boxes.

    Args:
        bboxes: (K, 4) cx, cy, w, h in pixels.
        size: crop side in pixels.
        margin: crop side = margin * max(w, h).

    Returns:
        (K, 2, 3) float64 matrices ``A`` with crop = A @ [x, y, 1].
    """
    b = np.asarray(bboxes, np.float64).reshape(-1, 4)
    side = np.maximum(np.maximum(b[:, 2], b[:, 3]) * margin, 1.0)
    s = size / side
    mats = np.zeros((len(b), 2, 3))
    mats[:, 0, 0] = s
    mats[:, 1, 1] = s
    mats[:, 0, 2] = size / 2.0 - s * b[:, 0]
    mats[:, 1, 2] = size / 2.0 - s * b[:, 1]
    return mats


def blazepose_to_spin49(landmarks: np.ndarray) -> np.ndarray:
    """(..., 33, 3) BlazePose px + confidence -> (..., 49, 3) in the spin49 ``op_`` slots.

    Joints without a BlazePose counterpart get confidence 0, except ``op_neck``
    and ``op_midhip``: midpoints of the shoulders / hips with the lower confidence.
    """
    out = convert_kps(np.asarray(landmarks, np.float32), "blazepose33", "spin49")
    for mid, (a, b) in (("op_neck", ("op_lshoulder", "op_rshoulder")), ("op_midhip", ("op_lhip", "op_rhip"))):
        ja, jb = landmarks[..., _BP.index(a), :], landmarks[..., _BP.index(b), :]
        out[..., _SPIN.index(mid), :2] = 0.5 * (ja[..., :2] + jb[..., :2])
        out[..., _SPIN.index(mid), 2] = np.minimum(ja[..., 2], jb[..., 2])
    return out


class BlazePoseLandmarks:
    """BlazePose landmark model on person boxes.

    Args:
        model_path: the ``.tflite`` file.
        margin: crop side as a multiple of the longer box side.
        num_threads: TFLite interpreter threads.
        max_batch: crops per interpreter call (the input is resized to the batch). 1 by
            default: measured with XNNPACK here, a batch of 8 costs 11.9 ms CPU per crop
            against 9.8 ms one at a time.
    """

    def __init__(self, model_path: Path, margin: float = 1.25, num_threads: int = 1, max_batch: int = 1):
        from ai_edge_litert.interpreter import Interpreter

        model_path = Path(model_path)
        if not model_path.is_file():
            raise MissingAssetError(f"keypoint model not found: {model_path}; run `bash scripts/fetch_assets.sh`")
        self.model_path = model_path
        self.margin = float(margin)
        self.max_batch = max(int(max_batch), 1)
        self.interp = Interpreter(model_path=str(model_path), num_threads=max(int(num_threads), 1))
        inp = self.interp.get_input_details()[0]
        self.size = int(inp["shape"][1])
        self._input_index = inp["index"]
        self._outputs = self._find_outputs()
        self._batch = 0
        self._crops = np.zeros((0, self.size, self.size, 3), np.float32)

    def _find_outputs(self) -> Dict[str, int]:
        """Output tensor indices by role, recognised by shape (names are just Identity_N)."""
        found: Dict[str, int] = {}
        for d in self.interp.get_output_details():
            shape = tuple(int(x) for x in d["shape"][1:])
            if shape == (195,):
                found["landmarks"] = d["index"]
            elif shape == (117,):
                found["world"] = d["index"]
            elif shape == (1,):
                found["presence"] = d["index"]
        missing = {"landmarks", "world", "presence"} - set(found)
        if missing:
            raise UserError(f"{self.model_path}: not a BlazePose landmark model (no {sorted(missing)} output)")
        return found

    def _resize(self, batch: int) -> None:
        if batch != self._batch:
            self.interp.resize_tensor_input(self._input_index, [batch, self.size, self.size, 3])
            self.interp.allocate_tensors()
            self._batch = batch
            self._crops = np.zeros((batch, self.size, self.size, 3), np.float32)

    def make_crops(self, frame_rgb: np.ndarray, bboxes: np.ndarray):
        """Square crops for K boxes: ((K, S, S, 3) uint8 RGB, (K, 2, 3) frame->crop affine maps)."""
        import cv2

        boxes = np.asarray(bboxes, np.float32).reshape(-1, 4)
        frame = np.asarray(frame_rgb)
        if frame.ndim == 2:
            frame = np.repeat(frame[..., None], 3, axis=-1)
        mats = crop_transforms(boxes, self.size, self.margin)
        crops = np.zeros((len(boxes), self.size, self.size, 3), np.uint8)
        for i in range(len(boxes)):
            cv2.warpAffine(frame, mats[i], (self.size, self.size), dst=crops[i], flags=cv2.INTER_LINEAR,
                           borderMode=cv2.BORDER_CONSTANT)
        return crops, mats

    def predict(self, frame_rgb: np.ndarray, bboxes: np.ndarray) -> Dict[str, np.ndarray]:
        """Keypoints for K boxes of one frame.

        Args:
            frame_rgb: (H, W, 3) uint8 RGB.
            bboxes: (K, 4) cx, cy, w, h in pixels.

        Returns:
            dict with ``keypoints`` (K, 49, 3) px + confidence in spin49 order,
            ``landmarks`` (K, 33, 3) px + visibility probability,
            ``world`` (K, 33, 3) metres (BlazePose world frame: hips origin, y down),
            ``presence`` (K,) pose presence score.
        """
        crops, mats = self.make_crops(frame_rgb, bboxes)
        return self.predict_crops(crops, mats)

    def predict_crops(self, crops: np.ndarray, mats: np.ndarray) -> Dict[str, np.ndarray]:
        """Like :meth:`predict` on crops made earlier by :meth:`make_crops` (possibly of several frames)."""
        k = len(crops)
        lm = np.zeros((k, NUM_LANDMARKS, 3), np.float32)
        world = np.zeros((k, NUM_LANDMARKS, 3), np.float32)
        presence = np.zeros((k,), np.float32)
        for lo in range(0, k, self.max_batch):
            hi = min(lo + self.max_batch, k)
            self._resize(hi - lo)
            np.multiply(crops[lo:hi], np.float32(1.0 / 255.0), out=self._crops, casting="unsafe")
            self.interp.set_tensor(self._input_index, self._crops)
            self.interp.invoke()
            raw = self.interp.get_tensor(self._outputs["landmarks"]).reshape(hi - lo, -1, 5)[:, :NUM_LANDMARKS]
            pres = self.interp.get_tensor(self._outputs["presence"]).reshape(-1)
            wl = self.interp.get_tensor(self._outputs["world"]).reshape(hi - lo, -1, 3)[:, :NUM_LANDMARKS]
            # crop px -> frame px: x = (u - t) / s
            s = mats[lo:hi, 0, 0][:, None]
            lm[lo:hi, :, 0] = (raw[..., 0] - mats[lo:hi, 0, 2][:, None]) / s
            lm[lo:hi, :, 1] = (raw[..., 1] - mats[lo:hi, 1, 2][:, None]) / s
            lm[lo:hi, :, 2] = _sigmoid(raw[..., 3])
            world[lo:hi] = wl
            presence[lo:hi] = pres
        conf_scale = np.clip(presence / 0.5, 0.0, 1.0)[:, None]
        lm_conf = lm.copy()
        lm_conf[..., 2] *= conf_scale
        return {"keypoints": blazepose_to_spin49(lm_conf), "landmarks": lm, "world": world, "presence": presence}


def _build_blazepose(asset_root: str = "data/assets", **kw) -> BlazePoseLandmarks:
    return BlazePoseLandmarks(Path(asset_root) / BLAZEPOSE_FULL, **kw)


def _build_blazepose_lite(asset_root: str = "data/assets", **kw) -> BlazePoseLandmarks:
    return BlazePoseLandmarks(Path(asset_root) / BLAZEPOSE_LITE, **kw)


KEYPOINT_MODELS: Dict[str, Callable[..., object]] = {"blazepose": _build_blazepose,
                                                     "blazepose_lite": _build_blazepose_lite}


def build_keypoint_model(name: str = "blazepose", asset_root: str = "data/assets", **kw):
    """A keypoint model by registry name; ``kw`` go to its constructor."""
    try:
        factory = KEYPOINT_MODELS[name]
    except KeyError:
        raise UserError(f"unknown keypoint model {name!r}; choose from {', '.join(sorted(KEYPOINT_MODELS))}") from None
    return factory(asset_root=asset_root, **kw)
