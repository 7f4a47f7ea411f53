"""Feature extraction: crops match the crop convention; extraction is resumable."""
from __future__ import annotations

import json

import numpy as np
import torch

from lib.data_utils.features import crop_image, extract_dataset_features
from lib.dataset import load_dataset, write_dataset
from lib.geometry.camera import image_to_crop


def test_crop_matches_image_to_crop():
    img = np.zeros((300, 400, 3), np.uint8)
    img[150, 250] = 255  # one bright pixel at x=250, y=150
    bbox = np.array([240.0, 160.0, 60.0, 100.0])  # crop side 100 px -> 224
    crop = crop_image(img, bbox)
    v, u = np.unravel_index(crop[..., 0].argmax(), crop.shape[:2])
    c = image_to_crop(torch.tensor([[[250.0, 150.0]]]), torch.tensor(bbox[None], dtype=torch.float32))[0, 0]
    expect = (c.numpy() + 1) * 224 / 2 - 0.5
    assert abs(u - expect[0]) <= 1.5 and abs(v - expect[1]) <= 1.5


class TinyBackbone(torch.nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.conv = torch.nn.Conv2d(3, 2048, 8, stride=8)

    def forward(self, x):
        return self.conv(x).mean((2, 3))


def _dataset(tmp_path, n=7):
    import cv2
    raw = tmp_path / "raw"
    (raw / "img").mkdir(parents=True)
    names = []
    for i in range(n):
        img = np.full((120, 160, 3), 20 * i, np.uint8)
        cv2.imwrite(str(raw / "img" / f"{i:03d}.png"), img)
        names.append(f"img/{i:03d}.png")
    out = write_dataset(tmp_path / "ds" / "train", {
        "vid_name": ["v_0"] * n, "frame_id": np.arange(n), "img_name": names,
        "bbox": np.tile([80.0, 60.0, 50.0, 100.0], (n, 1))}, {"source": "t", "fps": 30, "raw_root": str(raw)})
    return out


def test_extraction_is_resumable(tmp_path):
    out = _dataset(tmp_path)
    assert extract_dataset_features(out, TinyBackbone(), batch_size=2, max_batches=2) is None
    assert json.loads((out / "features.progress.json").read_text())["done"] == 4
    final = extract_dataset_features(out, TinyBackbone(), batch_size=2)
    assert final.name == "features.npy" and not (out / "features.partial.npy").exists()
    data = load_dataset(out)
    assert data["features"].dtype == np.float16 and "features" in data.meta["labelled"]
    # same as one uninterrupted run
    out2 = _dataset(tmp_path / "b")
    extract_dataset_features(out2, TinyBackbone(), batch_size=3, float16=False)
    np.testing.assert_allclose(np.asarray(data["features"], np.float32), load_dataset(out2)["features"],
                               rtol=2e-3, atol=2e-3)
    # frames differ in brightness, so features differ
    assert np.abs(np.diff(np.asarray(load_dataset(out2)["features"]), axis=0)).max() > 1e-3
