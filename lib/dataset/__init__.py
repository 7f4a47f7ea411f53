"""One dataset schema (memory-mapped .npy per field), sequence windows, mixed batches."""
from lib.dataset.schema import (DatasetArrays, DatasetFormatError, FIELDS, SCHEMA_VERSION, dataset_dir,
                                load_dataset, video_starts, write_dataset)
from lib.dataset.sequence import MotionWindowDataset, SequenceDataset, normalize_keypoints, window_starts
from lib.dataset.sampler import MixedBatchSampler, build_mixed_train_set

__all__ = [
    "DatasetArrays", "DatasetFormatError", "FIELDS", "SCHEMA_VERSION", "dataset_dir", "load_dataset",
    "video_starts", "write_dataset", "MotionWindowDataset", "SequenceDataset", "normalize_keypoints",
    "window_starts", "MixedBatchSampler", "build_mixed_train_set",
]
