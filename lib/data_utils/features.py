"""Backbone features for a converted dataset: crop every frame's box from the raw
image, run the HMR backbone in batches, store ``features.npy`` (float16 or 32).

Resumable: features go into ``features.partial.npy`` (a memory-mapped array)
with the number of finished frames in ``features.progress.json``; a new run
continues from there, and the finished array is renamed to ``features.npy``
(then ``meta.json`` lists it) in one step.

Images: ``<raw_root>/<img_name>``; InstaVariety frames are named
``<file>.tfrecord:<record>:<frame>`` and decoded from the record.
"""
from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Callable, Dict, Optional

import numpy as np
import torch
from tqdm import tqdm

from lib.atomic_io import atomic_write_bytes
from lib.data_utils.common import ConverterError
from lib.dataset.schema import FEATURE_DIM, load_dataset

logger = logging.getLogger(__name__)

CROP_SIZE = 224


def crop_image(image: np.ndarray, bbox, size: int = CROP_SIZE, scale: float = 1.0) -> np.ndarray:
    """Square crop of side ``scale * max(w, h)`` centred on the box, resized to ``size``.

    image (H, W, 3) uint8; bbox (cx, cy, w, h) pixels -> (size, size, 3) uint8, zeros outside.
    Crop pixel centres map linearly onto the box, the same mapping as
    :func:`lib.geometry.camera.image_to_crop` (crop x in [-1, 1] = the square's edges).
    """
    import cv2

    cx, cy, w, h = [float(v) for v in bbox]
    side = max(w, h, 1.0) * scale
    k = size / side
    # Key points use pixel-index coordinates (pixel j's centre is x = j); crop pixel u's centre
    # is at crop coordinate c = (u + 0.5) * 2 / size - 1 and x = cx + c * side / 2, hence
    # u = k (x - cx) + size / 2 - 0.5 with k = size / side.
    m = np.array([[k, 0.0, size / 2 - 0.5 - k * cx], [0.0, k, size / 2 - 0.5 - k * cy]], dtype=np.float64)
    return cv2.warpAffine(image, m, (size, size), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT)


class ImageReader:
    """Reads dataset images by ``img_name`` (files, or InstaVariety tfrecord frames)."""

    def __init__(self, raw_root: str | os.PathLike):
        self.root = Path(raw_root)
        self._record_cache: Dict[tuple, list] = {}

    def __call__(self, img_name: str) -> np.ndarray:
        import cv2

        if ".tfrecord:" in img_name:
            from lib.data_utils.tfrecord import parse_example, read_tfrecord

            path, rec, frame = img_name.rsplit(":", 2)
            key = (path, int(rec))
            if key not in self._record_cache:
                self._record_cache.clear()  # records are read in order; keep one
                for r, data in enumerate(read_tfrecord(self.root / path)):
                    if r == key[1]:
                        self._record_cache[key] = parse_example(data)["image/encoded"]
                        break
                else:
                    raise ConverterError(f"{self.root / path}: no record {rec}")
            buf = np.frombuffer(self._record_cache[key][int(frame)], np.uint8)
            img = cv2.imdecode(buf, cv2.IMREAD_COLOR)
        else:
            path = self.root / img_name
            img = cv2.imread(str(path), cv2.IMREAD_COLOR)
            if img is None:
                raise ConverterError(f"cannot read image {path} (img_name {img_name!r}; is --raw_dir right?)")
        return img[..., ::-1]  # BGR -> RGB


def extract_dataset_features(
    folder: str | os.PathLike,
    backbone: torch.nn.Module,
    raw_root: Optional[str | os.PathLike] = None,
    batch_size: int = 64,
    float16: bool = True,
    device: str = "cpu",
    max_batches: Optional[int] = None,
    read_image: Optional[Callable[[str], np.ndarray]] = None,
) -> Optional[Path]:
    """Compute ``features.npy`` for the dataset in ``folder``.

    Args:
        backbone: (B, 3, 224, 224) ImageNet-normalised crops -> (B, 2048).
        raw_root: folder ``img_name`` is relative to (default: ``meta.json`` ``raw_root``).
        float16: store float16 (half the disk and page cache) instead of float32.
        max_batches: stop after this many batches (the run can be resumed).
    Returns:
        the path of ``features.npy`` when finished, None when stopped early.
    """
    from lib.models.backbone import normalize_images

    folder = Path(folder)
    data = load_dataset(folder, fields=("img_name", "bbox"))
    for key in ("img_name", "bbox"):
        if key not in data:
            raise ConverterError(f"{folder}: no {key}.npy; features need images and boxes")
    n = len(data)
    raw_root = raw_root or data.meta.get("raw_root") or "."
    reader = read_image or ImageReader(raw_root)
    dtype = np.float16 if float16 else np.float32
    partial, progress = folder / "features.partial.npy", folder / "features.progress.json"
    done = 0
    if partial.is_file() and progress.is_file():
        state = json.loads(progress.read_text())
        if state.get("num_frames") == n and state.get("dtype") == np.dtype(dtype).name:
            done = int(state["done"])
    if done == 0:
        out = np.lib.format.open_memmap(partial, mode="w+", dtype=dtype, shape=(n, FEATURE_DIM))
    else:
        out = np.load(partial, mmap_mode="r+")
        logger.info("resuming feature extraction of %s at frame %d / %d", folder, done, n)
    backbone = backbone.to(device).eval()
    batches = 0
    with torch.no_grad(), tqdm(total=n, initial=done, desc=f"features {folder.name}", unit="frame") as bar:
        while done < n:
            if max_batches is not None and batches >= max_batches:
                out.flush()
                return None
            hi = min(done + batch_size, n)
            crops = np.stack([crop_image(reader(str(data["img_name"][i])), data["bbox"][i]) for i in range(done, hi)])
            x = torch.from_numpy(crops).to(device).permute(0, 3, 1, 2).float() / 255.0
            feats = backbone(normalize_images(x)).float().cpu().numpy()
            out[done:hi] = feats.astype(dtype)
            out.flush()
            done = hi
            batches += 1
            atomic_write_bytes(progress, json.dumps({"done": done, "num_frames": n,
                                                     "dtype": np.dtype(dtype).name}).encode())
            bar.update(len(feats))
    del out
    final = folder / "features.npy"
    os.replace(partial, final)
    meta = json.loads((folder / "meta.json").read_text())
    meta["labelled"] = sorted(set(meta.get("labelled", [])) | {"features"})
    meta["features"] = {"backbone": type(backbone).__name__, "dtype": np.dtype(dtype).name}
    atomic_write_bytes(folder / "meta.json", json.dumps(meta, indent=1, sort_keys=True).encode())
    progress.unlink(missing_ok=True)
    return final
