"""Atomic file writes: write a temporary file next to the target, then rename.

A reader never sees a half-written file and an interrupted run leaves the old
file (or none) in place. The temporary file lives in the target's folder so the
rename stays on one filesystem, and the result gets the permissions a plain
``open()`` would give (``mkstemp`` makes owner-only files).
"""
from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Callable


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write(path: str | os.PathLike, write_fn: Callable[[Path], None], suffix: str = "") -> Path:
    """Call ``write_fn(tmp_path)`` to fill a temporary file, fsync it, rename it to ``path``.

    ``suffix`` (default: the target's) is kept on the temporary name for writers
    that choose a format by extension.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=suffix or path.suffix)
    os.close(fd)
    try:
        write_fn(Path(tmp))
        with open(tmp, "rb") as fh:
            os.fsync(fh.fileno())
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Atomically write ``data`` to ``path``."""
    return atomic_write(path, lambda tmp: tmp.write_bytes(data))


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    """Atomically write ``text`` (UTF-8) to ``path``."""
    return atomic_write(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))


def atomic_write_dir(folder: str | os.PathLike, write_fn: Callable[[Path], None]) -> Path:
    """Call ``write_fn(tmp_folder)`` to fill a temporary folder next to ``folder``,
    then swap it in: an existing ``folder`` is replaced as a whole, and a failed
    write leaves the old one (or none) in place."""
    import shutil

    folder = Path(folder)
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=folder.parent, prefix=f".{folder.name}.tmp-"))
    try:
        write_fn(tmp)
        os.chmod(tmp, 0o777 & ~_umask())
        if folder.exists():
            trash = Path(tempfile.mkdtemp(dir=folder.parent, prefix=f".{folder.name}.old-"))
            os.replace(folder, trash / "old")
            os.replace(tmp, folder)
            shutil.rmtree(trash, ignore_errors=True)
        else:
            os.replace(tmp, folder)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return folder
