"""One dataset schema (memory-mapped .npy per field), sequence windows, mixed batches.

The torch-based parts (windows, sampler) load on first use, so converters that only
write the schema do not import torch.
"""
from lib.dataset.schema import (DatasetArrays, DatasetFormatError, FIELDS, SCHEMA_VERSION, dataset_dir,
                                load_dataset, video_starts, write_dataset)

_LAZY = {
    "MotionWindowDataset": "lib.dataset.sequence", "SequenceDataset": "lib.dataset.sequence",
    "normalize_keypoints": "lib.dataset.sequence", "window_starts": "lib.dataset.sequence",
    "MixedBatchSampler": "lib.dataset.sampler", "build_mixed_train_set": "lib.dataset.sampler",
}


def __getattr__(name):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'lib.dataset' has no attribute {name!r}")


__all__ = [
    "DatasetArrays", "DatasetFormatError", "FIELDS", "SCHEMA_VERSION", "dataset_dir", "load_dataset",
    "video_starts", "write_dataset", *_LAZY,
]
