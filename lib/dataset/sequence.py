"""Windows of T frames of one person, cut inside each video of a schema dataset.

:class:`SequenceDataset` serves the training/evaluation batch contract (numpy
arrays per item; the default collate stacks them into tensors):

==============  ==============  =================================================
``features``    (T, 2048) f32   backbone features (zeros if the set has none and
                                ``require_features`` is False)
``joints2d``    (T, 49, 3) f32  x, y crop-normalised to [-1, 1] with the frame's
                                box (square side max(w, h)) + confidence
``joints3d``    (T, 49, 4) f32  x, y, z metres + per-joint validity
``pose``        (T, 72) f32     SMPL axis-angle (zeros where ``has_smpl`` is 0)
``shape``       (T, 10) f32     SMPL betas
``has_smpl``    (T,) f32        1 where pose/shape are labelled
``has_3d``      (T,) f32        1 where any 3D joint is valid
``valid``       (T,) f32        the dataset's frame validity
``bbox``        (T, 4) f32      (cx, cy, w, h) pixels
``frame_id``    (T,) int64      frame index in the source video
``vid_name``    str             the window's video
==============  ==============  =================================================

Windows never cross videos: they start at ``video_start + k * stride`` and
end inside the same video; videos shorter than T give no window (with
``cover_all`` a last window aligned to the video's end is added so every frame
of every long-enough video is seen, as evaluation needs).
"""
from __future__ import annotations

import logging
import os
from typing import Dict, Optional, Sequence

import numpy as np
import torch
from torch.utils.data import Dataset

from lib.dataset.schema import FEATURE_DIM, NUM_JOINTS, DatasetArrays, load_dataset
from lib.errors import UserError
from lib.geometry.camera import image_to_crop

logger = logging.getLogger(__name__)


def window_starts(starts: np.ndarray, seq_len: int, stride: int, cover_all: bool = False) -> np.ndarray:
    """First frame of every window given video boundaries ``starts`` (V + 1,).

    Returns (W,) int64; each window [s, s + seq_len) lies inside one video.
    """
    if seq_len < 1 or stride < 1:
        raise ValueError(f"seq_len and stride must be >= 1, got {seq_len}, {stride}")
    out = []
    for lo, hi in zip(starts[:-1], starts[1:]):
        if hi - lo < seq_len:
            continue
        s = np.arange(lo, hi - seq_len + 1, stride, dtype=np.int64)
        if cover_all and s[-1] != hi - seq_len:
            s = np.append(s, hi - seq_len)
        out.append(s)
    return np.concatenate(out) if out else np.zeros((0,), dtype=np.int64)


def normalize_keypoints(joints2d: np.ndarray, bbox: np.ndarray) -> np.ndarray:
    """(T, J, 3) pixels + conf and (T, 4) boxes -> (T, J, 3) crop coordinates + conf.

    Uses :func:`lib.geometry.camera.image_to_crop` (square crop, side max(w, h));
    joints with zero confidence get coordinates 0.
    """
    xy = image_to_crop(torch.from_numpy(np.ascontiguousarray(joints2d[..., :2], dtype=np.float32)),
                       torch.from_numpy(np.ascontiguousarray(bbox, dtype=np.float32))).numpy()
    conf = joints2d[..., 2:3].astype(np.float32)
    xy = np.where(conf > 0, xy, 0.0)
    return np.concatenate([xy, conf], axis=-1).astype(np.float32)


def augment_keypoints(kp: np.ndarray, rng: np.random.Generator, noise: float, dropout: float) -> np.ndarray:
    """Train-time 2D augmentation in crop units: Gaussian jitter of std ``noise``
    on visible joints, and each visible joint dropped (conf 0) with prob ``dropout``."""
    kp = kp.copy()
    vis = kp[..., 2] > 0
    if noise > 0:
        kp[..., :2] += rng.normal(0.0, noise, kp[..., :2].shape).astype(np.float32) * vis[..., None]
    if dropout > 0:
        drop = vis & (rng.random(vis.shape) < dropout)
        kp[drop] = 0.0
    return kp


class SequenceDataset(Dataset):
    """Fixed-length windows of one schema dataset split.

    Args:
        folder: the split folder (``<root>/<name>/<split>``).
        seq_len: frames per window (T).
        stride: frames between window starts of one video.
        cover_all: add a last window at the end of each video (evaluation).
        require_features: raise if the set has no ``features.npy``.
        kp_noise: std of 2D keypoint jitter in crop units (0 = off; training only).
        kp_dropout: probability of dropping a visible 2D joint (0 = off).
        release_every_mb: when the process holds more than this many MB of mapped
            file pages (checked every 16 windows), drop them from RSS (they stay in
            the OS page cache); keeps huge sets within a small memory budget.
        seed: seed of the augmentation generator.
    """

    def __init__(
        self,
        folder: str | os.PathLike,
        seq_len: int = 16,
        stride: int = 8,
        cover_all: bool = False,
        require_features: bool = True,
        kp_noise: float = 0.0,
        kp_dropout: float = 0.0,
        release_every_mb: float = 256.0,
        seed: int = 0,
    ):
        self.data: DatasetArrays = load_dataset(folder)
        self.name = str(self.data.meta.get("source", os.path.basename(os.fspath(folder))))
        if require_features and "features" not in self.data:
            raise UserError(
                f"dataset {folder} has no features.npy; run python scripts/extract_features.py on it "
                "(or pass require_features=False)"
            )
        self.seq_len, self.stride = int(seq_len), int(stride)
        self.kp_noise, self.kp_dropout = float(kp_noise), float(kp_dropout)
        self.windows = window_starts(self.data.starts, self.seq_len, self.stride, cover_all)
        if len(self.windows) == 0:
            logger.warning("dataset %s: no video has %d frames; no windows", folder, self.seq_len)
        self._seed = int(seed)
        self._rng = np.random.default_rng(seed)
        self._rng_worker = -1
        self._release_mb = float(release_every_mb)
        self._reads = 0

    @classmethod
    def from_config(cls, cfg, name: str, split: str, train: bool = True) -> "SequenceDataset":
        """The dataset ``PATHS.DATASET_ROOT/<name>/<split>`` with the DATASET settings."""
        d = cfg.DATASET
        return cls(
            os.path.join(cfg.PATHS.DATASET_ROOT, name, split),
            seq_len=d.SEQ_LEN,
            stride=d.STRIDE if train else d.EVAL_STRIDE,
            cover_all=not train,
            require_features=d.REQUIRE_FEATURES,
            kp_noise=d.KP_NOISE if train else 0.0,
            kp_dropout=d.KP_DROPOUT if train else 0.0,
            release_every_mb=d.MMAP_RELEASE_MB,
            seed=cfg.SEED,
        )

    def __len__(self) -> int:
        return len(self.windows)

    def reseed(self, key: Sequence[int]) -> None:
        """Restart the augmentation stream from ``key`` (e.g. (seed, epoch, rank, worker)).

        The trainer calls it at each epoch and in each DataLoader worker, so the
        augmentation of an item depends on where training is, not on how many
        items this process happened to read before (a resumed run repeats it).
        """
        info = torch.utils.data.get_worker_info()
        self._rng = np.random.default_rng(tuple(int(k) for k in key))
        self._rng_worker = -1 if info is None else info.id  # this process's stream now

    def _worker_rng(self) -> np.random.Generator:
        """The augmentation generator; each DataLoader worker gets its own stream
        (forked workers would otherwise all copy the same state)."""
        info = torch.utils.data.get_worker_info()
        wid = -1 if info is None else info.id
        if wid != self._rng_worker:
            self._rng_worker = wid
            self._rng = np.random.default_rng((self._seed, wid + 1, torch.initial_seed() % 2 ** 32))
        return self._rng

    def _get(self, name: str, lo: int, hi: int, shape, dtype=np.float32) -> Optional[np.ndarray]:
        if name not in self.data:
            return None
        # A copy: the item must not alias the read-only mapping (torch wants writable arrays).
        return np.array(self.data[name][lo:hi], dtype=dtype).reshape((hi - lo,) + shape)

    def __getitem__(self, index: int) -> Dict[str, object]:
        lo = int(self.windows[index])
        hi = lo + self.seq_len
        t = self.seq_len
        feats = self._get("features", lo, hi, (FEATURE_DIM,))
        if feats is None:
            feats = np.zeros((t, FEATURE_DIM), np.float32)
        bbox = self._get("bbox", lo, hi, (4,))
        kp = self._get("joints2D", lo, hi, (NUM_JOINTS, 3))
        if kp is None or bbox is None:
            kp2d = np.zeros((t, NUM_JOINTS, 3), np.float32)
            bbox = np.zeros((t, 4), np.float32) if bbox is None else bbox
        else:
            kp2d = normalize_keypoints(kp, bbox)
            if self.kp_noise > 0 or self.kp_dropout > 0:
                kp2d = augment_keypoints(kp2d, self._worker_rng(), self.kp_noise, self.kp_dropout)
        j3d = self._get("joints3D", lo, hi, (NUM_JOINTS, 4))
        if j3d is None:
            j3d = np.zeros((t, NUM_JOINTS, 4), np.float32)
        pose = self._get("pose", lo, hi, (72,))
        shape = self._get("shape", lo, hi, (10,))
        if pose is None or shape is None:
            has_smpl = np.zeros(t, np.float32)
            pose = np.zeros((t, 72), np.float32) if pose is None else pose
            shape = np.zeros((t, 10), np.float32) if shape is None else shape
        else:
            flag = self._get("has_smpl", lo, hi, ())
            has_smpl = np.ones(t, np.float32) if flag is None else flag
        valid = self._get("valid", lo, hi, ())
        valid = np.ones(t, np.float32) if valid is None else valid
        item = {
            "features": feats,
            "joints2d": kp2d,
            "joints3d": j3d,
            "pose": pose,
            "shape": shape,
            "has_smpl": has_smpl,
            "has_3d": (j3d[..., 3] > 0).any(-1).astype(np.float32),
            "valid": valid,
            "bbox": bbox,
            "frame_id": np.asarray(self.data["frame_id"][lo:hi], dtype=np.int64),
            "vid_name": str(self.data["vid_name"][lo]),
        }
        self._reads += 1
        if self._reads % 16 == 0:  # a cheap /proc read every 16 windows
            self.data.maybe_release(self._release_mb)
        return item


class MotionWindowDataset(Dataset):
    """AMASS-style motion windows for the motion discriminator.

    Items: ``pose`` (T, 72) float32 axis-angle (SMPL body frame, y up) and
    ``shape`` (T, 10) (zeros if the set has none). Windows never cross videos.
    """

    def __init__(self, folder: str | os.PathLike, seq_len: int = 16, stride: int = 8):
        self.data = load_dataset(folder, fields=("pose", "shape"))
        if "pose" not in self.data:
            raise UserError(f"motion dataset {folder} has no pose.npy")
        self.seq_len = int(seq_len)
        self.windows = window_starts(self.data.starts, self.seq_len, int(stride))

    @classmethod
    def from_config(cls, cfg, split: str = "train") -> "MotionWindowDataset":
        d = cfg.DATASET
        return cls(os.path.join(cfg.PATHS.DATASET_ROOT, d.MOTION, split), seq_len=d.SEQ_LEN, stride=d.MOTION_STRIDE)

    def __len__(self) -> int:
        return len(self.windows)

    def __getitem__(self, index: int) -> Dict[str, np.ndarray]:
        lo = int(self.windows[index])
        hi = lo + self.seq_len
        pose = np.asarray(self.data["pose"][lo:hi], dtype=np.float32)
        shape = (np.asarray(self.data["shape"][lo:hi], dtype=np.float32) if "shape" in self.data
                 else np.zeros((self.seq_len, 10), np.float32))
        return {"pose": pose, "shape": shape}
