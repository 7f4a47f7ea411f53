"""Offscreen overlay rendering of fitted bodies with pyrender (CPU via EGL + Mesa llvmpipe).

All people of a frame are merged into one mesh with per-vertex colours and drawn
in a single pass (one upload, one draw call), which is what keeps CPU rendering
affordable. The camera is the fitter's pinhole (focal length in pixels,
principal point at the image centre) looking down +z in OpenCV axes; pyrender
uses OpenGL axes, so the camera pose flips y and z.

Headless set-up: ``PYOPENGL_PLATFORM=egl`` (set here unless the caller chose
another platform) with the system packages ``libegl1 libgl1-mesa-dri
libegl-mesa0`` (Debian/Ubuntu names).
"""
from __future__ import annotations

import logging
import os
from typing import Optional, Sequence

import numpy as np

from lib.errors import UserError

logger = logging.getLogger(__name__)

# One colour per track id (RGB 0-1), cycled: distinct, light enough to shade well.
PALETTE = np.array([
    [0.90, 0.35, 0.30], [0.30, 0.60, 0.90], [0.40, 0.80, 0.40], [0.95, 0.75, 0.25],
    [0.70, 0.45, 0.85], [0.30, 0.80, 0.80], [0.95, 0.55, 0.75], [0.65, 0.65, 0.30],
    [0.55, 0.40, 0.30], [0.60, 0.75, 0.95], [0.85, 0.60, 0.40], [0.50, 0.50, 0.70],
], dtype=np.float32)


def track_color(track_id: int) -> np.ndarray:
    """(3,) RGB in [0, 1] for a track id."""
    return PALETTE[int(track_id) % len(PALETTE)]


class VertexNormals:
    """Area-weighted vertex normals of many copies of one mesh, via a sparse incidence matrix."""

    def __init__(self, faces: np.ndarray, num_vertices: int):
        from scipy import sparse

        faces = np.asarray(faces, dtype=np.int64)
        rows = faces.reshape(-1)
        cols = np.repeat(np.arange(faces.shape[0]), 3)
        self.faces = faces
        self.incidence = sparse.csr_matrix((np.ones(rows.shape[0], np.float32), (rows, cols)),
                                           shape=(num_vertices, faces.shape[0]))

    def __call__(self, verts: np.ndarray) -> np.ndarray:
        """(P, V, 3) -> (P, V, 3) unit normals."""
        p, v, _ = verts.shape
        tri = verts[:, self.faces]  # (P, F, 3, 3)
        fn = np.cross(tri[:, :, 1] - tri[:, :, 0], tri[:, :, 2] - tri[:, :, 0])  # (P, F, 3), |fn| = 2 area
        fn = fn.transpose(1, 0, 2).reshape(fn.shape[1], p * 3)  # (F, P*3)
        vn = (self.incidence @ fn).reshape(v, p, 3).transpose(1, 0, 2)
        return vn / np.maximum(np.linalg.norm(vn, axis=-1, keepdims=True), 1e-12)


class OverlayRenderer:
    """Render posed meshes over video frames.

    Args:
        width, height: frame size, pixels.
        focal_length: pixels (the fitter's camera).
        faces: (F, 3) triangle indices of the body model.
        num_vertices: V of the body model.
        side_view: also render a second panel with the bodies turned 90 degrees about
            the vertical axis through each body's centre, placed right of the overlay.
        alpha: opacity of the bodies over the frame.
    """

    def __init__(self, width: int, height: int, focal_length: float, faces: np.ndarray, num_vertices: int,
                 side_view: bool = False, alpha: float = 0.9):
        os.environ.setdefault("PYOPENGL_PLATFORM", "egl")  # headless; must precede the OpenGL import
        try:
            import pyrender
        except Exception as err:  # noqa: BLE001 - any import-time GL failure means "cannot render"
            raise UserError(f"rendering unavailable ({err}); install pyrender and the EGL libraries "
                            "(apt: libegl1 libgl1-mesa-dri libegl-mesa0) or run with --no_render") from None
        self._pyrender = pyrender
        self.width, self.height = int(width), int(height)
        self.focal_length = float(focal_length)
        self.side_view = bool(side_view)
        self.alpha = float(alpha)
        self.faces = np.asarray(faces, dtype=np.uint32)
        self.num_vertices = int(num_vertices)
        self.normals = VertexNormals(self.faces, self.num_vertices)
        try:
            self.renderer = pyrender.OffscreenRenderer(self.width, self.height)
        except Exception as err:  # noqa: BLE001 - EGL/OSMesa errors come in many types
            raise UserError(f"cannot open an offscreen OpenGL context ({type(err).__name__}: {err}); install "
                            "the EGL libraries (apt: libegl1 libgl1-mesa-dri libegl-mesa0), set "
                            "PYOPENGL_PLATFORM=egl, or run with --no_render") from None
        self.scene = pyrender.Scene(bg_color=[0.0, 0.0, 0.0, 0.0], ambient_light=[0.35, 0.35, 0.35])
        cam = pyrender.IntrinsicsCamera(fx=self.focal_length, fy=self.focal_length, cx=self.width / 2.0,
                                        cy=self.height / 2.0, znear=0.05, zfar=200.0)
        gl_from_cv = np.diag([1.0, -1.0, -1.0, 1.0])  # OpenCV camera axes -> OpenGL camera axes
        self.scene.add(cam, pose=gl_from_cv)
        # Lighting is done per vertex in _draw; the fill light comes from above and to the left.
        fill = np.array([-0.4, -1.0, -0.3])  # camera axes: y down, so "above" is -y
        self.fill_dir = fill / np.linalg.norm(fill)
        self.material = pyrender.MetallicRoughnessMaterial(baseColorFactor=[1.0, 1.0, 1.0, 1.0])
        self._slots: list = []  # (scene node, primitive) per body slot

    def close(self) -> None:
        if getattr(self, "renderer", None) is not None:
            self.renderer.delete()
            self.renderer = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def _draw(self, verts: np.ndarray, colors: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Render (P, V, 3) camera-space meshes with (P, 3) colours -> RGB (H, W, 3) uint8, mask (H, W).

        Shading is computed here per vertex (Lambert: a key light at the camera and a
        fill light from above, plus ambient) and drawn unlit (``RenderFlags.FLAT``,
        colours interpolated across triangles): on a software rasteriser pyrender's
        per-pixel PBR shader costs more than everything else together.
        """
        pr = self._pyrender
        p = verts.shape[0]
        normals = self.normals(verts)  # (P, V, 3), camera axes
        view = verts / np.maximum(np.linalg.norm(verts, axis=-1, keepdims=True), 1e-6)
        key = np.abs((normals * view).sum(-1))  # headlight; abs: the mesh may be seen from inside
        fill = np.clip(normals @ self.fill_dir, 0.0, None)
        shade = (0.25 + 0.65 * key + 0.25 * fill)[..., None]  # (P, V, 1)
        vcol = np.clip(colors[:, None, :] * shade, 0.0, 1.0).reshape(-1, 3)
        rgba = np.concatenate([vcol, np.ones((vcol.shape[0], 1))], axis=1).reshape(p, -1, 4)
        data = np.concatenate([verts, rgba], axis=-1).astype(np.float32)  # (P, V, 7): pyrender's vertex layout
        for i in range(p):
            self._set_slot(i, data[i])
        for i, (node, _) in enumerate(self._slots):
            node.mesh.is_visible = i < p
        color, depth = self.renderer.render(self.scene, flags=pr.RenderFlags.FLAT)
        return color[..., :3], depth > 0

    def _set_slot(self, i: int, data: np.ndarray) -> None:
        """Put one body (V, 7 = xyz + rgba) into mesh slot ``i``.

        Slots are created once and then updated in place (``glBufferSubData``), which
        avoids building a new vertex array and buffers for every frame; unused slots
        are hidden.
        """
        pr = self._pyrender
        if i < len(self._slots):
            from OpenGL import GL

            _, prim = self._slots[i]
            if prim._vaid is not None:  # uploaded by an earlier render: overwrite in place
                self.renderer._platform.make_current()
                GL.glBindBuffer(GL.GL_ARRAY_BUFFER, prim._buffers[0])
                GL.glBufferSubData(GL.GL_ARRAY_BUFFER, 0, data.nbytes, np.ascontiguousarray(data))
                GL.glBindBuffer(GL.GL_ARRAY_BUFFER, 0)
                return
            self.scene.remove_node(self._slots[i][0])
        prim = pr.Primitive(positions=data[:, :3], color_0=data[:, 3:], indices=self.faces,
                            material=self.material, mode=pr.constants.GLTF.TRIANGLES)
        node = self.scene.add(pr.Mesh([prim]))
        if i < len(self._slots):
            self._slots[i] = (node, prim)
        else:
            self._slots.append((node, prim))

    def render(self, frame: np.ndarray, verts: Optional[np.ndarray], track_ids: Sequence[int]) -> np.ndarray:
        """Overlay the bodies of one frame.

        Args:
            frame: (H, W, 3) RGB uint8 (grayscale (H, W) is accepted).
            verts: (P, V, 3) camera-space vertices, metres, or None / P = 0.
            track_ids: P track ids (they pick the colours).
        Returns:
            (H, W, 3) RGB uint8, or (H, 2W, 3) with the side view.
        """
        frame = _as_rgb(frame)
        out = frame.copy()
        side = np.full_like(frame, 255) if self.side_view else None
        if verts is not None and len(verts):
            verts = np.asarray(verts, dtype=np.float32)
            colors = np.stack([track_color(t) for t in track_ids])
            color, mask = self._draw(verts, colors)
            a = self.alpha
            out[mask] = (a * color[mask] + (1.0 - a) * frame[mask]).astype(np.uint8)
            if side is not None:
                # Each body turns about its own centre, so a crowd does not collapse into a line.
                centre = verts.mean(1, keepdims=True)
                turned = (verts - centre) @ _rot_y(np.pi / 2).T.astype(np.float32) + centre
                color, mask = self._draw(turned, colors)
                side[mask] = color[mask]
        return np.concatenate([out, side], axis=1) if side is not None else out


def _as_rgb(frame: np.ndarray) -> np.ndarray:
    frame = np.asarray(frame)
    if frame.ndim == 2:
        frame = np.repeat(frame[..., None], 3, axis=-1)
    if frame.shape[-1] == 4:
        frame = frame[..., :3]
    return np.ascontiguousarray(frame, dtype=np.uint8)


def _rot_x(a: float) -> np.ndarray:
    c, s = np.cos(a), np.sin(a)
    return np.array([[1, 0, 0], [0, c, -s], [0, s, c]])


def _rot_y(a: float) -> np.ndarray:
    c, s = np.cos(a), np.sin(a)
    return np.array([[c, 0, s], [0, 1, 0], [-s, 0, c]])
