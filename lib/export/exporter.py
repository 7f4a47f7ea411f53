"""One entry point for every export format: :func:`export_results`.

``scripts/export.py`` and ``demo.py --export glb,fbx`` both call it. Output
names (``OUT`` = ``out_dir``, ``S`` = the video stem, i.e. the folder holding
``results.npz``, or the file's stem when it has another name):

- glb: ``OUT/S_track<T>.glb`` per track, or ``OUT/S_tracks.glb`` with ``combined``;
- fbx: ``OUT/S_track<T>.fbx`` per track (needs ``bash scripts/install_fbx.sh``);
- bvh: ``OUT/S_track<T>.bvh`` per track;
- obj: ``OUT/S_track<T>_obj/frame_<video frame>.obj`` per track.
"""
from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Dict, Iterable, List, Optional, Sequence

from tqdm import tqdm

from lib.body_models import BodyModelLayer, load_body_model
from lib.export.common import (
    Results,
    check_body_model,
    load_results,
    parse_formats,
    select_tracks,
    track_motion,
    track_vertices,
)

logger = logging.getLogger(__name__)


def results_stem(results: Results) -> str:
    """``<video stem>`` for OUT/<video stem>/results.npz, else the file's stem."""
    p = results.path.resolve()
    return p.parent.name if p.stem == "results" and p.parent.name else p.stem


def export_results(
    results_path: str | os.PathLike,
    formats: str | Sequence[str],
    out_dir: str | os.PathLike,
    tracks: Optional[Iterable] = None,
    body_model: Optional[str | BodyModelLayer] = None,
    model_dir: Optional[str | os.PathLike] = None,
    model_root: Optional[str | os.PathLike] = None,
    combined: bool = False,
) -> Dict[str, List[Path]]:
    """Export the tracks of a demo ``results.npz``.

    Args:
        results_path: the demo's results file (see :func:`lib.export.common.load_results`).
        formats: "glb,fbx" or a list from ("glb", "fbx", "obj", "bvh").
        out_dir: folder for the exported files (created).
        tracks: track ids to export (default: all).
        body_model: a loaded layer, a kind ("open"/"smpl"), or None = the kind the
            results name (``body_model`` key), else "open".
        model_dir / model_root: where to load the body model from (see load_body_model).
        combined: GLB only: all tracks in one scene on the video's time line.
    Returns:
        {format: [written paths]}.
    Raises:
        UserError: bad or mismatched results, unknown track, missing body model or bpy.
    """
    fmts = parse_formats(formats)
    results = load_results(results_path)
    if isinstance(body_model, BodyModelLayer):
        bm = body_model
    else:
        kind = body_model or results.body_model or "open"
        bm = load_body_model(kind, model_dir=model_dir, root=model_root)
    check_body_model(results, bm)
    chosen = select_tracks(results, tracks)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    stem = results_stem(results)
    faces = bm.faces
    weights = bm.weights.detach().cpu().numpy()
    parents = bm.parents
    written: Dict[str, List[Path]] = {f: [] for f in fmts}
    if not chosen:
        logger.warning("%s: no tracks to export", results.path)
        return written
    motions = [track_motion(bm, t, results.fps) for t in chosen]
    if bm.has_pose_correctives and set(fmts) & {"glb", "fbx"}:
        logger.warning("the '%s' body model has pose correctives; GLB/FBX carry linear blend skinning only, "
                       "so their meshes differ slightly from the body model's (OBJ is exact)", bm.kind)
    extras = {"body_model": bm.kind, "source": results.path.name}

    if "glb" in fmts:
        from lib.export.gltf import write_glb

        if combined:
            written["glb"].append(write_glb(out_dir / f"{stem}_tracks.glb", motions, faces, weights, parents,
                                            combined=True, extras=extras, camera=results.camera()))
        else:
            for m in motions:
                written["glb"].append(write_glb(out_dir / f"{stem}_track{m.track_id}.glb", [m], faces, weights,
                                                parents, extras=extras, camera=results.camera()))
    if "bvh" in fmts:
        from lib.export.bvh import write_bvh

        for m in motions:
            written["bvh"].append(write_bvh(out_dir / f"{stem}_track{m.track_id}.bvh", m, parents))
    if "obj" in fmts:
        from lib.export.obj import write_obj_sequence

        for t in tqdm(chosen, desc="export obj", unit="track", disable=len(chosen) < 2):
            verts = track_vertices(bm, t)
            written["obj"].append(write_obj_sequence(out_dir / f"{stem}_track{t.track_id}_obj", verts, faces,
                                                     t.frame_ids))
    if "fbx" in fmts:
        from lib.export.fbx import write_fbx

        paths = [out_dir / f"{stem}_track{m.track_id}.fbx" for m in motions]
        written["fbx"] += write_fbx(paths, motions, faces, weights, parents)
    for f, paths in written.items():
        logger.info("exported %d %s file(s) to %s", len(paths), f.upper(), out_dir)
    return written


def export_results_from_config(cfg, results_path: str | os.PathLike, out_dir: str | os.PathLike,
                               formats: str | Sequence[str],
                               tracks: Optional[Iterable] = None) -> Dict[str, List[Path]]:
    """:func:`export_results` with the scene layout from ``cfg.EXPORT`` and the
    body model from ``cfg.BODY_MODEL`` / ``cfg.PATHS``."""
    return export_results(
        results_path, formats, out_dir, tracks=tracks, body_model=cfg.BODY_MODEL.KIND,
        model_dir=cfg.BODY_MODEL.DIR or None, model_root=cfg.PATHS.BODY_MODEL_ROOT,
        combined=cfg.EXPORT.COMBINED,
    )
