"""Safe reading and portable writing of SMPL-format ``.pkl`` model files.

The official SMPL files are Python-2 pickles that hold chumpy objects and
scipy sparse matrices. Unpickling runs arbitrary code, and chumpy no longer
imports on numpy 2, so :func:`load_smpl_pickle` uses a restricted unpickler
that admits only the classes such a file needs (numpy arrays and dtypes, scipy
sparse matrices, chumpy objects replaced by a shim) and refuses anything else.

:func:`dump_portable_pickle` writes a model file that numpy 1 and numpy 2 both
load (numpy 2 itself would name ``numpy._core``, which numpy 1 lacks).
"""
from __future__ import annotations

import io
import os
import pickle
from typing import Any, Dict

import numpy as np

from lib.atomic_io import atomic_write_bytes


class ChumpyShim:
    """Stand-in for a pickled ``chumpy.Ch``; keeps its state, exposes ``.x``."""

    def __init__(self, *args, **kwargs):
        self.__dict__["_state"] = {}

    def __setstate__(self, state):
        self.__dict__["_state"] = state if isinstance(state, dict) else {"state": state}

    def to_array(self) -> np.ndarray:
        state = self.__dict__["_state"]
        if "x" in state:
            return np.asarray(state["x"])
        raise pickle.UnpicklingError(
            "a chumpy object in the model file holds no plain array ('x'); "
            "convert the file with chumpy installed (numpy<2) first"
        )


def _numpy_reconstruct():
    try:
        from numpy._core.multiarray import _reconstruct  # numpy >= 2
    except ImportError:  # pragma: no cover - numpy 1
        from numpy.core.multiarray import _reconstruct
    return _reconstruct


def _numpy_scalar():
    try:
        from numpy._core.multiarray import scalar  # numpy >= 2
    except ImportError:  # pragma: no cover - numpy 1
        from numpy.core.multiarray import scalar
    return scalar


def _allowed_globals() -> Dict[tuple, Any]:
    import scipy.sparse as sp

    allowed = {}
    for mod in ("numpy.core.multiarray", "numpy._core.multiarray"):
        allowed[(mod, "_reconstruct")] = _numpy_reconstruct()
        allowed[(mod, "scalar")] = _numpy_scalar()
    import codecs

    # Python 3 writes bytes as _codecs.encode(str, "latin1") in protocol 2.
    allowed[("_codecs", "encode")] = codecs.encode
    allowed[("numpy", "ndarray")] = np.ndarray
    allowed[("numpy", "dtype")] = np.dtype
    # scipy moved the sparse classes to private modules in 1.8; files name either.
    for name in ("csc_matrix", "csr_matrix", "coo_matrix"):
        cls = getattr(sp, name)
        for mod in ("scipy.sparse", f"scipy.sparse.{name[:3]}", f"scipy.sparse._{name[:3]}"):
            allowed[(mod, name)] = cls
    return allowed


class _RestrictedUnpickler(pickle.Unpickler):
    _allowed = None

    def find_class(self, module: str, name: str):
        if type(self)._allowed is None:
            type(self)._allowed = _allowed_globals()
        key = (module, name)
        if key in self._allowed:
            return self._allowed[key]
        if module.startswith("chumpy"):
            return ChumpyShim
        raise pickle.UnpicklingError(
            f"refusing to load {module}.{name}: body-model files may only hold "
            "numpy arrays, scipy sparse matrices and chumpy arrays"
        )


def _to_plain(value):
    if isinstance(value, ChumpyShim):
        return value.to_array()
    if hasattr(value, "toarray") and type(value).__module__.startswith("scipy.sparse"):
        return value.toarray()
    return value


def load_smpl_pickle(path: str | os.PathLike) -> Dict[str, Any]:
    """Load an SMPL-format model pickle without running untrusted code.

    Returns the dict with chumpy objects and sparse matrices turned into dense
    numpy arrays (keys as in the file: ``v_template``, ``shapedirs``,
    ``posedirs``, ``J_regressor``, ``weights``, ``kintree_table``, ``f``, ...).
    """
    with open(path, "rb") as fh:
        data = _RestrictedUnpickler(fh, encoding="latin1").load()
    if not isinstance(data, dict):
        raise pickle.UnpicklingError(f"{path}: expected a dict of model arrays, got {type(data).__name__}")
    return {str(k): _to_plain(v) for k, v in data.items()}


class _PortablePickler(pickle._Pickler):
    """Pure-Python pickler that writes numpy 2's private module names as numpy 1's."""

    def save_global(self, obj, name=None):
        module = getattr(obj, "__module__", "") or ""
        if module.startswith("numpy._core"):
            qualname = name or obj.__qualname__
            legacy = module.replace("numpy._core", "numpy.core", 1)
            self.write(pickle.GLOBAL + f"{legacy}\n{qualname}\n".encode("ascii"))
            self.memoize(obj)
            return
        super().save_global(obj, name)


def dump_portable_pickle(obj: Dict[str, Any], path: str | os.PathLike) -> None:
    """Atomically write ``obj`` (a dict of numpy arrays and plain values) as a
    pickle that loads under numpy 1 and numpy 2 (protocol 4, Python 3)."""
    buf = io.BytesIO()
    _PortablePickler(buf, protocol=4).dump(obj)
    atomic_write_bytes(path, buf.getvalue())
