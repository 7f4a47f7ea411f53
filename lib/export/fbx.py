"""FBX export through Blender-as-a-module (bpy) in its own environment.

bpy pins its own numpy (1.x) and is ~950 MB, so it lives in ``.venv-fbx/``
(``bash scripts/install_fbx.sh``) and never in the main environment. This
module writes the rig and motion of each track to a plain .npz and runs
``blender_fbx_script.py`` with that environment's python; the script builds an
armature + skinned mesh, bakes the animation and exports with
``add_leaf_bones=False``. Set ``PBN_FBX_PYTHON`` to use another interpreter
that has bpy.
"""
from __future__ import annotations

import functools
import json
import logging
import os
import subprocess
import tempfile
from pathlib import Path
from typing import List, Optional, Sequence

import numpy as np
import roma
import torch

from lib.errors import UserError
from lib.export.common import JOINT_NAMES, TrackMotion, continuous_quaternions, fill_gaps

logger = logging.getLogger(__name__)

REPO_ROOT = Path(__file__).resolve().parents[2]
SCRIPT = Path(__file__).resolve().with_name("blender_fbx_script.py")
FBX_TIMEOUT_S = 1800


def fbx_python() -> Optional[Path]:
    """The interpreter with bpy: $PBN_FBX_PYTHON or .venv-fbx/bin/python, if present."""
    env = os.environ.get("PBN_FBX_PYTHON")
    cand = Path(env) if env else REPO_ROOT / ".venv-fbx" / "bin" / "python"
    return cand if cand.is_file() else None


def fbx_available() -> bool:
    """True when the bpy environment exists and imports bpy (checked once per interpreter)."""
    py = fbx_python()
    return py is not None and _imports_bpy(str(py))


@functools.lru_cache(maxsize=None)
def _imports_bpy(python: str) -> bool:
    try:
        res = subprocess.run([python, "-c", "import bpy"], capture_output=True, timeout=300)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return res.returncode == 0


def write_fbx(paths: Sequence[str | os.PathLike], motions: Sequence[TrackMotion], faces: np.ndarray,
              weights: np.ndarray, parents: Sequence[int]) -> List[Path]:
    """Write one FBX per track (gaps filled), in one Blender subprocess.

    Args:
        paths: output ``.fbx`` per motion; each appears only when complete.
        motions: posed tracks (:func:`lib.export.common.track_motion`).
        faces: (F, 3); weights: (V, 24); parents: (24,).
    Raises:
        UserError: bpy is not installed (the message says how) or Blender failed.
    """
    py = fbx_python()
    if py is None:
        raise UserError("FBX export needs Blender's bpy in .venv-fbx/: run bash scripts/install_fbx.sh "
                        "(about 1 GB), or set PBN_FBX_PYTHON")
    paths = [Path(p) for p in paths]
    for p in paths:
        p.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="pbn_fbx_") as tmp:
        tmp_outs = [str(Path(tmp) / f"out{k}.fbx") for k in range(len(paths))]
        arrays = {
            "joint_names": np.array(JOINT_NAMES),
            "parents": np.asarray(parents, dtype=np.int64),
            "faces": np.asarray(faces, dtype=np.int64),
            "weights": np.asarray(weights, dtype=np.float64),
            "fps": np.float64(motions[0].fps),
            "outputs": np.array(json.dumps(tmp_outs)),
        }
        for k, m in enumerate(motions):
            m = fill_gaps(m)
            quat = roma.rotmat_to_unitquat(torch.as_tensor(m.local_rot)).numpy()  # x, y, z, w
            quat = continuous_quaternions(quat)[..., [3, 0, 1, 2]]  # Blender wants w, x, y, z
            arrays.update({
                f"t{k}_name": np.array(f"track{m.track_id}"),
                f"t{k}_rest_joints": m.rest_joints,
                f"t{k}_rest_vertices": m.rest_vertices,
                f"t{k}_quat_wxyz": quat,
                f"t{k}_root_pos": m.root_pos,
            })
        inp = Path(tmp) / "input.npz"
        np.savez(inp, **arrays)
        cmd = [str(py), str(SCRIPT), str(inp)]
        logger.info("running Blender (bpy) for %d FBX file(s)", len(paths))
        try:
            res = subprocess.run(cmd, capture_output=True, text=True, timeout=FBX_TIMEOUT_S,
                                 env={**os.environ, "PYTHONNOUSERSITE": "1"})
        except subprocess.TimeoutExpired:
            raise UserError(f"FBX export: Blender did not finish within {FBX_TIMEOUT_S} s") from None
        if res.returncode != 0 or not all(Path(t).is_file() for t in tmp_outs):
            tail = "\n".join((res.stderr or res.stdout).strip().splitlines()[-5:])
            hint = " -- bpy missing or broken: rerun bash scripts/install_fbx.sh" if "bpy" in tail else ""
            raise UserError(f"FBX export failed in Blender (exit {res.returncode}): {tail}{hint}")
        for t, p in zip(tmp_outs, paths):
            os.replace(t, p) if Path(t).stat().st_dev == p.parent.stat().st_dev else _copy_replace(t, p)
    for p in paths:
        logger.info("wrote %s", p)
    return paths


def _copy_replace(src: str, dst: Path) -> None:
    """Move across file systems: copy next to ``dst``, then rename into place."""
    import shutil

    fd, tmp = tempfile.mkstemp(dir=dst.parent, prefix=f".{dst.name}.", suffix=".fbx")
    os.close(fd)
    try:
        shutil.copyfile(src, tmp)
        os.replace(tmp, dst)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
