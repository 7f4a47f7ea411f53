"""Mixed 2D/3D training batches.

VIBE draws a fixed fraction of every batch from 2D-only datasets (InstaVariety,
PennAction, PoseTrack) and the rest from 3D datasets (MPI-INF-3DHP, H36M,
3DPW). :class:`MixedBatchSampler` does that over one ``ConcatDataset`` whose
first ``num_2d`` members are the 2D sets: each batch has ``round(ratio * B)``
windows from the 2D group and the rest from the 3D group, uniformly over the
windows of each group.
"""
from __future__ import annotations

import os
from typing import Iterator, List, Sequence, Tuple

import numpy as np
from torch.utils.data import ConcatDataset, Sampler

from lib.dataset.sequence import SequenceDataset
from lib.errors import UserError


class MixedBatchSampler(Sampler[List[int]]):
    """Batches of indices into a ConcatDataset mixing two groups.

    Args:
        group_sizes_2d: lengths of the 2D datasets (first in the concat).
        group_sizes_3d: lengths of the 3D datasets (after them).
        batch_size: windows per batch.
        ratio_2d: fraction of each batch from the 2D group (0..1); if a group
            is empty its share goes to the other.
        num_batches: batches per epoch (len of the sampler).
        seed: base seed; each epoch (see :meth:`set_epoch`) draws differently.
    """

    def __init__(self, group_sizes_2d: Sequence[int], group_sizes_3d: Sequence[int], batch_size: int,
                 ratio_2d: float, num_batches: int, seed: int = 0):
        if not 0.0 <= ratio_2d <= 1.0:
            raise ValueError(f"ratio_2d must be in [0, 1], got {ratio_2d}")
        self.n2d = int(sum(group_sizes_2d))
        self.n3d = int(sum(group_sizes_3d))
        if self.n2d + self.n3d == 0:
            raise UserError("mixed sampler: the training datasets have no windows")
        self.batch_size, self.num_batches, self.seed = int(batch_size), int(num_batches), int(seed)
        k2d = int(round(ratio_2d * self.batch_size))
        if self.n2d == 0:
            k2d = 0
        elif self.n3d == 0:
            k2d = self.batch_size
        self.k2d, self.k3d = k2d, self.batch_size - k2d
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return self.num_batches

    def __iter__(self) -> Iterator[List[int]]:
        rng = np.random.default_rng((self.seed, self.epoch))
        for _ in range(self.num_batches):
            part2d = rng.integers(0, self.n2d, self.k2d) if self.k2d else np.zeros(0, np.int64)
            part3d = self.n2d + rng.integers(0, self.n3d, self.k3d) if self.k3d else np.zeros(0, np.int64)
            yield np.concatenate([part2d, part3d]).astype(np.int64).tolist()


def build_mixed_train_set(cfg) -> Tuple[ConcatDataset, MixedBatchSampler]:
    """The training ConcatDataset (2D sets then 3D sets, split "train") and its sampler."""
    d = cfg.DATASET
    sets_2d = [SequenceDataset.from_config(cfg, name, "train", train=True) for name in d.TRAIN_2D]
    sets_3d = [SequenceDataset.from_config(cfg, name, "train", train=True) for name in d.TRAIN_3D]
    concat = ConcatDataset(sets_2d + sets_3d)
    sampler = MixedBatchSampler([len(s) for s in sets_2d], [len(s) for s in sets_3d], cfg.TRAIN.BATCH_SIZE,
                                d.RATIO_2D, cfg.TRAIN.NUM_ITERS_PER_EPOCH, seed=cfg.SEED)
    return concat, sampler


def dataset_folder(cfg, name: str, split: str) -> str:
    """``PATHS.DATASET_ROOT/<name>/<split>``."""
    return os.path.join(cfg.PATHS.DATASET_ROOT, name, split)
