"""Preview images of an exported GLB, rendered offscreen (pyrender).

The GLB is read back from its own accessors and posed with linear blend
skinning at the requested times (what a glTF viewer does), so the picture
shows the file, not our in-memory bodies. Used for the screenshot in
doc/export.md and by ``python scripts/export.py --preview``.
Headless machines need ``PYOPENGL_PLATFORM=egl`` (set by default here).
"""
from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import List, Optional, Sequence, Tuple

import numpy as np
import pygltflib as gl

logger = logging.getLogger(__name__)

_DTYPES = {gl.FLOAT: np.float32, gl.UNSIGNED_BYTE: np.uint8, gl.UNSIGNED_SHORT: np.uint16, gl.UNSIGNED_INT: np.uint32}
_NCOMP = {"SCALAR": 1, "VEC2": 2, "VEC3": 3, "VEC4": 4, "MAT4": 16}


def _accessor(g: gl.GLTF2, blob: bytes, idx: int) -> np.ndarray:
    """Accessor ``idx`` as a (count, components) array (tightly packed views only)."""
    acc = g.accessors[idx]
    view = g.bufferViews[acc.bufferView]
    dt, nc = np.dtype(_DTYPES[acc.componentType]), _NCOMP[acc.type]
    if view.byteStride not in (None, dt.itemsize * nc):
        raise ValueError("interleaved buffer views are not supported by the preview reader")
    start = (view.byteOffset or 0) + (acc.byteOffset or 0)
    return np.frombuffer(blob, dtype=dt, count=acc.count * nc, offset=start).reshape(acc.count, nc)


def _quat_to_matrix(q: np.ndarray) -> np.ndarray:
    """(4,) x, y, z, w -> (3, 3)."""
    x, y, z, w = q / np.linalg.norm(q)
    return np.array([
        [1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
        [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
        [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)],
    ])


class GlbPoser:
    """Pose the skinned meshes of a GLB at any time of its animation."""

    def __init__(self, path: str | os.PathLike):
        self.gltf = gl.GLTF2.load(str(path))
        self.blob = self.gltf.binary_blob()
        g = self.gltf
        self.channels = []
        for an in g.animations:
            for ch in an.channels:
                s = an.samplers[ch.sampler]
                self.channels.append((ch.target.node, ch.target.path, s.interpolation,
                                      _accessor(g, self.blob, s.input)[:, 0].astype(np.float64),
                                      _accessor(g, self.blob, s.output).astype(np.float64)))
        self.duration = max((c[3][-1] for c in self.channels), default=0.0)

    def _value(self, times, values, t, interp, path):
        k = int(np.searchsorted(times, t, side="right")) - 1
        if k < 0:
            return values[0]
        if k >= len(times) - 1 or interp == "STEP":
            return values[min(k, len(times) - 1)]
        a = (t - times[k]) / (times[k + 1] - times[k])
        v = (1 - a) * values[k] + a * values[k + 1]
        return v / np.linalg.norm(v) if path == "rotation" else v

    def pose(self, t: float) -> List[Tuple[np.ndarray, np.ndarray, Tuple[float, ...]]]:
        """[(vertices (V, 3), faces (F, 3), rgba)] of every skinned mesh at time ``t`` seconds."""
        g = self.gltf
        trs = [{"translation": np.array(n.translation or [0.0, 0, 0]), "rotation": np.array(n.rotation or [0.0, 0, 0, 1]),
                "scale": np.array(n.scale or [1.0, 1, 1])} for n in g.nodes]
        for node, path, interp, times, values in self.channels:
            trs[node][path] = self._value(times, values, t, interp, path)
        world: List[Optional[np.ndarray]] = [None] * len(g.nodes)

        def visit(i: int, parent: np.ndarray) -> None:
            m = np.eye(4)
            m[:3, :3] = _quat_to_matrix(trs[i]["rotation"]) * trs[i]["scale"][None]
            m[:3, 3] = trs[i]["translation"]
            world[i] = parent @ m
            for c in g.nodes[i].children or []:
                visit(c, world[i])

        for root in g.scenes[g.scene or 0].nodes:
            visit(root, np.eye(4))
        out = []
        for n in g.nodes:
            if n.skin is None or n.mesh is None:
                continue
            skin = g.skins[n.skin]
            ibm = _accessor(g, self.blob, skin.inverseBindMatrices).reshape(-1, 4, 4).transpose(0, 2, 1)
            mats = np.stack([world[j] for j in skin.joints]) @ ibm
            prim = g.meshes[n.mesh].primitives[0]
            pos = _accessor(g, self.blob, prim.attributes.POSITION).astype(np.float64)
            blend = np.zeros((len(pos), 3, 4))
            s = 0
            while getattr(prim.attributes, f"JOINTS_{s}", None) is not None:
                jj = _accessor(g, self.blob, getattr(prim.attributes, f"JOINTS_{s}")).astype(np.int64)
                ww = _accessor(g, self.blob, getattr(prim.attributes, f"WEIGHTS_{s}")).astype(np.float64)
                blend += np.einsum("vk,vkij->vij", ww, mats[jj][:, :, :3])
                s += 1
            verts = np.einsum("vij,vj->vi", blend[..., :3], pos) + blend[..., 3]
            faces = _accessor(g, self.blob, prim.indices).reshape(-1, 3).astype(np.int64)
            color = (0.7, 0.7, 0.7, 1.0)
            if prim.material is not None and g.materials[prim.material].pbrMetallicRoughness is not None:
                color = tuple(g.materials[prim.material].pbrMetallicRoughness.baseColorFactor)
            if np.ptp(verts, axis=0).max() > 1e-6:  # skip people hidden at this time (scale 0)
                out.append((verts, faces, color))
        return out


def _look_at(eye: np.ndarray, target: np.ndarray) -> np.ndarray:
    """Camera-to-world pose for a camera at ``eye`` looking at ``target`` (y up)."""
    fwd = target - eye
    fwd /= np.linalg.norm(fwd)
    right = np.cross(fwd, [0.0, 1.0, 0.0])
    right /= np.linalg.norm(right)
    up = np.cross(right, fwd)
    pose = np.eye(4)
    pose[:3, 0], pose[:3, 1], pose[:3, 2], pose[:3, 3] = right, up, -fwd, eye
    return pose


def render_glb_preview(glb: str | os.PathLike, png: str | os.PathLike, times: Optional[Sequence[float]] = None,
                       size: Tuple[int, int] = (320, 400), azimuth_deg: float = 25.0) -> Path:
    """Render the GLB's bodies at ``times`` (default: 4 evenly spread) side by side into ``png``.

    Each panel looks at the bodies from the front-right (``azimuth_deg``) and
    from above, framed to fit; a light floor under the lowest foot takes their shadows.
    """
    os.environ.setdefault("PYOPENGL_PLATFORM", "egl")
    import pyrender
    import trimesh
    from PIL import Image

    poser = GlbPoser(glb)
    if times is None:
        times = np.linspace(0.0, poser.duration, 4) if poser.duration > 0 else [0.0]
    panels = []
    renderer = pyrender.OffscreenRenderer(*size)
    try:
        for t in times:
            bodies = poser.pose(float(t))
            if not bodies:
                continue
            allv = np.concatenate([b[0] for b in bodies])
            lo, hi = allv.min(0), allv.max(0)
            centre = 0.5 * (lo + hi)
            radius = 0.5 * np.linalg.norm(hi - lo) + 0.1
            scene = pyrender.Scene(bg_color=[1.0, 1.0, 1.0, 1.0], ambient_light=[0.35, 0.35, 0.35])
            for verts, faces, color in bodies:
                mesh = trimesh.Trimesh(verts, faces, process=False)
                mat = pyrender.MetallicRoughnessMaterial(baseColorFactor=color, metallicFactor=0.0, roughnessFactor=0.7)
                scene.add(pyrender.Mesh.from_trimesh(mesh, material=mat, smooth=True))
            # A floor under the lowest foot, wide enough that its far edge stays out of view.
            floor = trimesh.creation.box(extents=[32 * radius, 0.01, 32 * radius])
            floor.apply_translation([centre[0], lo[1] - 0.005, centre[2]])
            scene.add(pyrender.Mesh.from_trimesh(floor, material=pyrender.MetallicRoughnessMaterial(
                baseColorFactor=(0.93, 0.93, 0.93, 1.0), metallicFactor=0.0, roughnessFactor=1.0)))
            yfov = np.radians(35.0)
            dist = radius / np.sin(yfov / 2) * 1.05
            # Looking down a bit more than half the field of view hides the horizon.
            az, el = np.radians(azimuth_deg), np.radians(24.0)
            eye = centre + dist * np.array([np.sin(az) * np.cos(el), np.sin(el), np.cos(az) * np.cos(el)])
            cam_pose = _look_at(eye, centre)
            scene.add(pyrender.PerspectiveCamera(yfov=yfov, aspectRatio=size[0] / size[1]), pose=cam_pose)
            scene.add(pyrender.DirectionalLight(intensity=3.0), pose=_look_at(centre + [1.0, 3.0, 2.0], centre))
            color, _ = renderer.render(scene, flags=pyrender.RenderFlags.SHADOWS_DIRECTIONAL)
            panels.append(color)
    finally:
        renderer.delete()
    if not panels:
        raise ValueError(f"{glb}: no visible body to render")
    sep = np.full((size[1], 2, 3), 200, dtype=np.uint8)  # thin grey line between panels
    strip = [panels[0]]
    for p in panels[1:]:
        strip += [sep, p]
    image = Image.fromarray(np.concatenate(strip, axis=1))
    png = Path(png)
    png.parent.mkdir(parents=True, exist_ok=True)
    image.save(png, optimize=True)
    logger.info("wrote preview %s", png)
    return png
