"""Shared pieces of the raw-dataset converters: input validation with clear
messages, a numpy-only restricted unpickler, joint-name mapping into spin49."""
from __future__ import annotations

import logging
import os
import pickle
from pathlib import Path
from typing import Any, Dict, Iterable, List, Mapping, Sequence

import numpy as np

from lib.errors import UserError
from lib.joints.conventions import SPIN_49

logger = logging.getLogger(__name__)


class ConverterError(UserError):
    """A raw dataset file is missing, malformed, or not what the converter expects."""


def require_dir(path: str | os.PathLike, what: str) -> Path:
    path = Path(path)
    if not path.is_dir():
        raise ConverterError(f"{what}: folder {path} not found")
    return path


def load_mat(path: Path, what: str) -> Dict[str, Any]:
    """A MATLAB v5 ``.mat`` file as a dict (scipy.io.loadmat); a file scipy cannot
    read raises naming it as ``what`` (e.g. "MATLAB label file")."""
    import scipy.io

    try:
        return scipy.io.loadmat(path)
    except Exception as err:  # noqa: BLE001 - scipy fails on foreign files with many types (MatReadError, IndexError, ...)
        raise ConverterError(f"{path}: not a {what} ({err})") from None


def require_keys(data: Mapping, keys: Iterable[str], where: str) -> None:
    """Raise naming the first missing key of ``data`` (read from ``where``)."""
    for k in keys:
        if k not in data:
            have = ", ".join(sorted(map(str, data.keys())))[:300]
            raise ConverterError(f"{where}: missing key {k!r} (has: {have})")


def require_shape(arr, shape: Sequence, name: str, where: str) -> np.ndarray:
    """Check ``arr``'s shape against ``shape`` (None = any size); returns it as an array."""
    try:
        arr = np.asarray(arr)
    except Exception as err:  # ragged lists and the like
        raise ConverterError(f"{where}: {name!r} is not an array ({err})") from None
    ok = arr.ndim == len(shape) and all(s is None or s == a for s, a in zip(shape, arr.shape))
    if not ok:
        want = "(" + ", ".join("N" if s is None else str(s) for s in shape) + ")"
        raise ConverterError(f"{where}: {name!r} has shape {tuple(arr.shape)}, expected {want}")
    return arr


# --------------------------------------------------------------------------- restricted unpickling

def _numpy_globals() -> Dict[tuple, Any]:
    from lib.body_models.pickle_io import _numpy_reconstruct, _numpy_scalar
    import codecs

    allowed: Dict[tuple, Any] = {}
    for mod in ("numpy.core.multiarray", "numpy._core.multiarray"):
        allowed[(mod, "_reconstruct")] = _numpy_reconstruct()
        allowed[(mod, "scalar")] = _numpy_scalar()
    # Protocol-5 pickles rebuild arrays from a byte buffer (numpy.core.numeric._frombuffer).
    try:
        from numpy._core.numeric import _frombuffer
    except ImportError:  # pragma: no cover - numpy 1
        from numpy.core.numeric import _frombuffer
    for mod in ("numpy.core.numeric", "numpy._core.numeric"):
        allowed[(mod, "_frombuffer")] = _frombuffer
    allowed[("numpy", "ndarray")] = np.ndarray
    allowed[("numpy", "dtype")] = np.dtype
    allowed[("_codecs", "encode")] = codecs.encode  # Python 3 bytes in protocol 2
    return allowed


class _NumpyOnlyUnpickler(pickle.Unpickler):
    _allowed = None

    def find_class(self, module: str, name: str):
        if type(self)._allowed is None:
            type(self)._allowed = _numpy_globals()
        try:
            return self._allowed[(module, name)]
        except KeyError:
            raise pickle.UnpicklingError(
                f"refusing to load {module}.{name}: dataset pickles may only hold numpy arrays and "
                "plain Python values"
            ) from None


def load_numpy_pickle(path: str | os.PathLike) -> Any:
    """Load a (Python 2 or 3) pickle that holds only dicts/lists/strings/numbers and
    numpy arrays, without running code from the file (3DPW sequence files, AMASS-style
    pickles). Anything else is refused with an error naming the class."""
    try:
        with open(path, "rb") as fh:
            return _NumpyOnlyUnpickler(fh, encoding="latin1").load()
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError) as err:
        raise ConverterError(f"{path}: not a readable data pickle ({err})") from None


# --------------------------------------------------------------------------- joints

SPIN_INDEX = {n: i for i, n in enumerate(SPIN_49)}


def names_to_spin49(kps: np.ndarray, names: Sequence[str]) -> np.ndarray:
    """(..., J, C) joints named ``names`` (spin49 vocabulary; unknown names and
    None are dropped) -> (..., 49, C), zeros where absent."""
    kps = np.asarray(kps)
    if kps.shape[-2] != len(names):
        raise ValueError(f"names_to_spin49: {kps.shape[-2]} joints but {len(names)} names")
    out = np.zeros(kps.shape[:-2] + (49, kps.shape[-1]), dtype=np.float32)
    for j, n in enumerate(names):
        if n in SPIN_INDEX:
            out[..., SPIN_INDEX[n], :] = kps[..., j, :]
    return out


def with_validity(j3d: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """(N, 49, 3) + (N, 49) or (49,) validity -> (N, 49, 4) with invalid joints zeroed."""
    valid = np.broadcast_to(np.asarray(valid, np.float32), j3d.shape[:2])
    return np.concatenate([j3d * valid[..., None], valid[..., None]], -1).astype(np.float32)


def concat_parts(parts: Dict[str, List[np.ndarray]]) -> Dict[str, np.ndarray]:
    """Concatenate per-video lists into frame-aligned arrays (keys with no parts dropped)."""
    return {k: np.concatenate(v) for k, v in parts.items() if v}
