"""OBJ mesh sequence per track: one ``frame_<video frame>.obj`` per sample.

Vertices come straight from the body model (pose correctives included) in the
export frame (y up, metres; see :mod:`lib.export.common`); faces are the body
model's. The folder is written under a temporary name and renamed when
complete, so an interrupted export never looks finished.
"""
from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np

from lib.atomic_io import atomic_write_dir

logger = logging.getLogger(__name__)


def write_obj_sequence(folder: str | os.PathLike, vertices: np.ndarray, faces: np.ndarray,
                       frame_ids: np.ndarray) -> Path:
    """Write (N, V, 3) ``vertices`` as N OBJ files named by ``frame_ids`` into ``folder``.

    An existing ``folder`` is replaced as a whole.
    """
    face_block = "".join(f"f {a} {b} {c}\n" for a, b, c in (np.asarray(faces, dtype=np.int64) + 1))
    vert_fmt = "v %.6f %.6f %.6f\n" * vertices.shape[1]

    def write(tmp: Path) -> None:
        for verts, fid in zip(vertices, frame_ids):
            text = f"# pbn body, video frame {int(fid)}, metres, y up\n" + vert_fmt % tuple(verts.ravel()) + face_block
            (tmp / f"frame_{int(fid):06d}.obj").write_text(text, encoding="ascii")

    folder = atomic_write_dir(folder, write)
    logger.info("wrote %d OBJ frames to %s", len(frame_ids), folder)
    return folder
