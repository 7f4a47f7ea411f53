"""The one on-disk dataset schema of pbn: a folder of ``.npy`` arrays + ``meta.json``.

A dataset split lives in ``<DATASET_ROOT>/<name>/<split>/``. Every array is
frame-aligned (first axis = N frames, frames of one video contiguous and in
time order) and is loaded memory-mapped, so opening a million-frame set costs
almost no memory and loading never unpickles anything.

Fields (shape per frame, dtype as written):

=============  ===========  ==========================================================
``vid_name``   ()  ``<U*``   ``<sequence>_<person index>``; one value per video track
``frame_id``   ()  int32     the frame's index in its source video
``img_name``   ()  ``<U*``   image path relative to the raw dataset root ("" if none)
``bbox``       (4,) float32  (cx, cy, w, h) pixels of the original image
``joints2D``   (49, 3) f32   spin49 order: x, y pixels + confidence (0 = missing)
``joints3D``   (49, 4) f32   spin49 order: x, y, z metres (camera frame where the
                             dataset has a camera) + validity (1 labelled, 0 not)
``pose``       (72,) f32     SMPL axis-angle, global orientation first (camera frame)
``shape``      (10,) f32     SMPL betas
``has_smpl``   ()  uint8     1 where ``pose``/``shape`` are ground truth for the frame
``features``   (2048,) f16/32  backbone features of the crop
``valid``      ()  uint8     1 = usable frame (e.g. 3DPW ``campose_valid``)
=============  ===========  ==========================================================

Validity convention for 3D joints: the fourth column of ``joints3D`` is the
per-joint validity; a frame "has 3D" when any joint is valid. This mirrors the
confidence column of ``joints2D`` and lets datasets label only some joints
(MPI-INF-3DHP labels 17 of the 49). A dataset without 3D simply omits the file.

Only ``vid_name`` and ``frame_id`` are required; a missing optional field
means "not labelled" (``meta.json`` ``labelled`` lists the present label fields).
Motion sets (AMASS style) hold ``vid_name``, ``frame_id``, ``pose`` (SMPL body
frame: y up) and ``shape``.

``meta.json``: ``source`` (dataset name), ``split``, ``fps``, ``joint_format``
("spin49"), ``schema_version``, ``num_frames``, ``num_videos``, ``labelled``
(field names present besides the bookkeeping ones), ``raw_root`` (the raw
dataset folder ``img_name`` is relative to), plus converter-specific notes.
"""
from __future__ import annotations

import json
import logging
import mmap
import os
from pathlib import Path
from typing import Dict, Iterable, Mapping, Optional, Tuple

import numpy as np

from lib.atomic_io import atomic_write_dir
from lib.errors import MissingAssetError, UserError

logger = logging.getLogger(__name__)

SCHEMA_VERSION = 1
NUM_JOINTS = 49
FEATURE_DIM = 2048

# field -> (per-frame shape, allowed dtype kinds / dtypes, dtype written)
FIELDS: Dict[str, Tuple[Tuple[int, ...], Tuple[str, ...], Optional[str]]] = {
    "vid_name": ((), ("U",), None),
    "frame_id": ((), ("i", "u"), "int32"),
    "img_name": ((), ("U",), None),
    "bbox": ((4,), ("f",), "float32"),
    "joints2D": ((NUM_JOINTS, 3), ("f",), "float32"),
    "joints3D": ((NUM_JOINTS, 4), ("f",), "float32"),
    "pose": ((72,), ("f",), "float32"),
    "shape": ((10,), ("f",), "float32"),
    "has_smpl": ((), ("u", "i", "b"), "uint8"),
    "features": ((FEATURE_DIM,), ("f",), None),  # float16 or float32 kept as given
    "valid": ((), ("u", "i", "b"), "uint8"),
}
REQUIRED = ("vid_name", "frame_id")
BOOKKEEPING = ("vid_name", "frame_id", "img_name", "bbox", "valid")


class DatasetFormatError(UserError):
    """A dataset folder or a field array does not follow the schema."""


def _check_field(name: str, arr: np.ndarray, n: Optional[int]) -> None:
    if name not in FIELDS:
        raise DatasetFormatError(f"unknown dataset field {name!r}; known fields: {', '.join(FIELDS)}")
    shape, kinds, _ = FIELDS[name]
    if arr.dtype.kind not in kinds:
        raise DatasetFormatError(f"field {name!r}: dtype {arr.dtype} not allowed (want kind {'/'.join(kinds)})")
    if arr.dtype.kind == "O":
        raise DatasetFormatError(f"field {name!r}: object arrays are not allowed (no pickles)")
    if tuple(arr.shape[1:]) != shape:
        raise DatasetFormatError(f"field {name!r}: shape {tuple(arr.shape)} but want (N, {', '.join(map(str, shape))})"
                                 .replace("(N, )", "(N,)"))
    if n is not None and arr.shape[0] != n:
        raise DatasetFormatError(f"field {name!r}: {arr.shape[0]} frames but vid_name has {n}")


def _as_written(name: str, arr) -> np.ndarray:
    arr = np.asarray(arr)
    if name in ("vid_name", "img_name"):
        # Fixed-width unicode: memory-mappable, no object arrays.
        return np.asarray(arr, dtype=str) if arr.size else np.zeros((0,), dtype="<U1")
    if name == "features" and arr.dtype in (np.float16, np.float32):
        return arr
    dtype = FIELDS[name][2] if name in FIELDS else None
    return arr.astype(dtype, copy=False) if dtype else arr


def write_dataset(folder: str | os.PathLike, fields: Mapping[str, np.ndarray], meta: Mapping) -> Path:
    """Write one dataset split atomically: arrays into a temp folder next to
    ``folder``, then a rename, so readers never see a half-written dataset.

    Args:
        folder: destination ``<root>/<name>/<split>``; replaced if it exists.
        fields: field name -> frame-aligned array (see the module table).
        meta: at least ``source`` and ``fps``; ``schema_version``, ``joint_format``,
            ``num_frames``, ``num_videos`` and ``labelled`` are filled in.
    Returns:
        The folder.
    Raises:
        DatasetFormatError: a field is unknown, missing, or has the wrong shape/dtype.
    """
    folder = Path(folder)
    for key in REQUIRED:
        if key not in fields:
            raise DatasetFormatError(f"write_dataset: required field {key!r} is missing")
    arrays = {k: _as_written(k, v) for k, v in fields.items() if v is not None}
    n = arrays["vid_name"].shape[0]
    for k, v in arrays.items():
        _check_field(k, v, n)
    for key in ("source", "fps"):
        if key not in meta:
            raise DatasetFormatError(f"write_dataset: meta.json needs {key!r}")
    full_meta = dict(meta)
    full_meta.update(
        schema_version=SCHEMA_VERSION,
        joint_format="spin49",
        num_frames=int(n),
        num_videos=int(len(video_starts(arrays["vid_name"])) - 1) if n else 0,
        labelled=sorted(k for k in arrays if k not in BOOKKEEPING),
    )
    def write(tmp: Path) -> None:
        for k, v in arrays.items():
            np.save(tmp / f"{k}.npy", np.ascontiguousarray(v), allow_pickle=False)
        (tmp / "meta.json").write_text(json.dumps(full_meta, indent=1, sort_keys=True))

    atomic_write_dir(folder, write)
    logger.info("wrote %s: %d frames, %d videos, fields %s", folder, n, full_meta["num_videos"], ", ".join(arrays))
    return folder


def video_starts(vid_name: np.ndarray, chunk: int = 1 << 18) -> np.ndarray:
    """Start index of every video (a run of equal ``vid_name``) plus N at the end.

    Reads the (possibly memory-mapped) names in chunks so a million-frame set
    needs only a few MB. Returns (V + 1,) int64.
    """
    n = len(vid_name)
    starts = [0] if n else []
    prev = None
    for lo in range(0, n, chunk):
        block = np.asarray(vid_name[lo:lo + chunk])
        change = np.nonzero(block[1:] != block[:-1])[0] + 1 + lo
        if prev is not None and block[0] != prev:
            starts.append(lo)
        starts.extend(change.tolist())
        prev = block[-1]
    starts.append(n)
    return np.asarray(starts, dtype=np.int64)


class DatasetArrays:
    """A dataset split opened read-only: memory-mapped arrays + meta.

    ``arrays[name]`` is a read-only ``np.memmap``-backed array (never a pickle).
    :meth:`release_memory` drops the mapped pages this process touched from its
    resident set (they stay in the OS page cache), which keeps RSS bounded while
    sampling windows from a file larger than RAM.
    """

    def __init__(self, folder: str | os.PathLike, fields: Optional[Iterable[str]] = None):
        self.folder = Path(folder)
        meta_file = self.folder / "meta.json"
        if not meta_file.is_file():
            raise MissingAssetError(
                f"dataset folder {self.folder} has no meta.json (convert the dataset first: "
                "python scripts/prepare_data.py ... or python scripts/make_synthetic_data.py)"
            )
        try:
            self.meta = json.loads(meta_file.read_text())
        except json.JSONDecodeError as err:
            raise DatasetFormatError(f"{meta_file}: not valid JSON ({err})") from None
        version = self.meta.get("schema_version")
        if version != SCHEMA_VERSION:
            raise DatasetFormatError(f"{meta_file}: schema_version {version!r}, this code reads {SCHEMA_VERSION}")
        wanted = set(fields) | set(REQUIRED) if fields is not None else None
        self.arrays: Dict[str, np.ndarray] = {}
        for path in sorted(self.folder.glob("*.npy")):
            name = path.stem
            if wanted is not None and name not in wanted:
                continue
            try:
                arr = np.load(path, mmap_mode="r", allow_pickle=False)
            except ValueError as err:
                raise DatasetFormatError(f"{path}: cannot be memory-mapped without pickle ({err})") from None
            self.arrays[name] = arr
        for key in REQUIRED:
            if key not in self.arrays:
                raise DatasetFormatError(f"dataset {self.folder}: required field file {key}.npy is missing")
        n = self.arrays["vid_name"].shape[0]
        for name, arr in self.arrays.items():
            _check_field(name, arr, n)
        self.num_frames = int(n)
        self.starts = video_starts(self.arrays["vid_name"])
        self.release_memory()

    def __getstate__(self):
        # Pickled into DataLoader workers (spawn start method): send the folder, not
        # the mapped arrays (pickling an np.memmap would copy the whole file).
        return {"folder": str(self.folder), "fields": sorted(self.arrays)}

    def __setstate__(self, state):
        self.__init__(state["folder"], state["fields"])

    def __contains__(self, name: str) -> bool:
        return name in self.arrays

    def __getitem__(self, name: str) -> np.ndarray:
        return self.arrays[name]

    def __len__(self) -> int:
        return self.num_frames

    @property
    def num_videos(self) -> int:
        return max(len(self.starts) - 1, 0)

    def maybe_release(self, budget_mb: float) -> bool:
        """Release the mapped pages if this process's file-backed resident memory grew
        by more than ``budget_mb`` since the last release (read from /proc/self/statm,
        so kernel read-ahead is counted too). Returns True if it released."""
        # Measured against the level right after the last release, so shared libraries
        # (also file-backed) do not count against the budget.
        if _file_rss_bytes() - self._rss_floor > budget_mb * 2 ** 20:
            self.release_memory()
            return True
        return False

    def release_memory(self) -> None:
        """Drop touched pages of every mapped array from this process's RSS."""
        for arr in self.arrays.values():
            mm = getattr(arr, "_mmap", None)
            if mm is None and isinstance(getattr(arr, "base", None), mmap.mmap):
                mm = arr.base
            if mm is not None and hasattr(mm, "madvise") and hasattr(mmap, "MADV_DONTNEED"):
                try:
                    mm.madvise(mmap.MADV_DONTNEED)
                except (OSError, ValueError):  # pragma: no cover - platform without madvise
                    pass
        self._rss_floor = _file_rss_bytes()


_PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


def _file_rss_bytes() -> int:
    """Resident file-backed (+ shared) memory of this process, bytes; 0 where /proc is missing."""
    try:
        with open("/proc/self/statm", "rb") as fh:
            return int(fh.read().split()[2]) * _PAGE
    except (OSError, ValueError, IndexError):
        return 0


def load_dataset(folder: str | os.PathLike, fields: Optional[Iterable[str]] = None) -> DatasetArrays:
    """Open a dataset split (memory-mapped, never unpickles); ``fields`` limits which files are opened."""
    return DatasetArrays(folder, fields)


def dataset_dir(root: str | os.PathLike, name: str, split: str) -> Path:
    """``<root>/<name>/<split>``."""
    return Path(root) / name / split
