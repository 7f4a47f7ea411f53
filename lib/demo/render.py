"""Offscreen overlay rendering of fitted bodies (CPU: EGL + Mesa llvmpipe).

pyrender opens the headless OpenGL context; drawing is a minimal pipeline of our
own in that context, because on a software rasteriser pyrender's own path
(4x multisampling resolved on every frame, per-pixel PBR lighting, a new vertex
array per mesh and frame) cost ~4x more than the drawing itself. Here:

- shading is computed per vertex in numpy (Lambert: a headlight and a fill light
  from above, plus ambient) and interpolated; one colour per track;
- all people of a frame are one vertex buffer, updated in place, drawn with one
  call into a plain (not multisampled) framebuffer, read back once as RGBA.

The camera is the fitter's pinhole (focal length in pixels, principal point at
the image centre, OpenCV axes: x right, y down, z forward). The projection maps
image row 0 to the first row glReadPixels returns, so no flip is needed.

Headless set-up: ``PYOPENGL_PLATFORM=egl`` (set here unless the caller chose
another platform) with the system packages ``libegl1 libgl1-mesa-dri
libegl-mesa0`` (Debian/Ubuntu names).
"""
from __future__ import annotations

import ctypes
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

_VERTEX_SHADER = """
#version 330 core
layout(location = 0) in vec3 position;  // camera space, OpenCV axes, metres
layout(location = 1) in vec3 color;
uniform vec4 intrinsics;  // 2 f / W, 2 f / H, 2 cx / W - 1, 2 cy / H - 1
uniform vec2 depth_range;  // near, far
out vec3 v_color;
void main() {
    float z = position.z;
    float n = depth_range.x, f = depth_range.y;
    gl_Position = vec4(intrinsics.x * position.x + intrinsics.z * z,
                       intrinsics.y * position.y + intrinsics.w * z,
                       (f + n) / (f - n) * z - 2.0 * f * n / (f - n),
                       z);
    v_color = color;
}
"""

_FRAGMENT_SHADER = """
#version 330 core
in vec3 v_color;
out vec4 frag_color;
void main() { frag_color = vec4(v_color, 1.0); }
"""


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
        near, far: clipping depths, metres.
    """

    def __init__(self, width: int, height: int, focal_length: float, faces: np.ndarray, num_vertices: int,
                 side_view: bool = False, alpha: float = 0.9, near: float = 0.05, far: float = 500.0):
        os.environ.setdefault("PYOPENGL_PLATFORM", "egl")  # headless; must precede the OpenGL import
        try:
            import pyrender
            from OpenGL import GL
        except Exception as err:  # noqa: BLE001 - any import-time GL failure means "cannot render"
            raise UserError(f"rendering unavailable ({err}); install pyrender and the EGL libraries "
                            "(apt: libegl1 libgl1-mesa-dri libegl-mesa0) or run with --no_render") from None
        self._gl = GL
        self.width, self.height = int(width), int(height)
        self.focal_length = float(focal_length)
        self.side_view = bool(side_view)
        self.alpha = float(alpha)
        self.faces = np.asarray(faces, dtype=np.uint32)
        self.num_vertices = int(num_vertices)
        self.normals = VertexNormals(self.faces, self.num_vertices)
        fill = np.array([-0.4, -1.0, -0.3])  # fill light from above-left (camera axes: y down)
        self.fill_dir = (fill / np.linalg.norm(fill)).astype(np.float32)
        self._capacity = 0  # bodies the buffers hold
        self._vao = self._vbo = self._ebo = self._fbo = None
        self._rbos: list = []
        try:
            # pyrender only opens the context (EGL / OSMesa per PYOPENGL_PLATFORM); we draw ourselves.
            self._context = pyrender.OffscreenRenderer(self.width, self.height)
            self._make_current()
            self._program = self._build_program()
            self._build_framebuffer()
            GL.glUseProgram(self._program)
            cx, cy = self.width / 2.0, self.height / 2.0
            GL.glUniform4f(GL.glGetUniformLocation(self._program, "intrinsics"),
                           2.0 * self.focal_length / self.width, 2.0 * self.focal_length / self.height,
                           2.0 * cx / self.width - 1.0, 2.0 * cy / self.height - 1.0)
            GL.glUniform2f(GL.glGetUniformLocation(self._program, "depth_range"), near, far)
        except UserError:
            raise
        except Exception as err:  # noqa: BLE001 - EGL/OSMesa/GL errors come in many types
            raise UserError(f"cannot open an offscreen OpenGL context ({type(err).__name__}: {err}); install "
                            "the EGL libraries (apt: libegl1 libgl1-mesa-dri libegl-mesa0), set "
                            "PYOPENGL_PLATFORM=egl, or run with --no_render") from None

    # ------------------------------------------------------------------ GL set-up
    def _make_current(self) -> None:
        self._context._platform.make_current()

    def _build_program(self) -> int:
        GL = self._gl

        def compile_shader(src: str, kind) -> int:
            sh = GL.glCreateShader(kind)
            GL.glShaderSource(sh, src)
            GL.glCompileShader(sh)
            if not GL.glGetShaderiv(sh, GL.GL_COMPILE_STATUS):
                raise RuntimeError(f"shader compile error: {GL.glGetShaderInfoLog(sh)}")
            return sh

        vs = compile_shader(_VERTEX_SHADER, GL.GL_VERTEX_SHADER)
        fs = compile_shader(_FRAGMENT_SHADER, GL.GL_FRAGMENT_SHADER)
        prog = GL.glCreateProgram()
        GL.glAttachShader(prog, vs)
        GL.glAttachShader(prog, fs)
        GL.glLinkProgram(prog)
        if not GL.glGetProgramiv(prog, GL.GL_LINK_STATUS):
            raise RuntimeError(f"shader link error: {GL.glGetProgramInfoLog(prog)}")
        GL.glDeleteShader(vs)
        GL.glDeleteShader(fs)
        return prog

    def _build_framebuffer(self) -> None:
        GL = self._gl
        self._fbo = GL.glGenFramebuffers(1)
        GL.glBindFramebuffer(GL.GL_FRAMEBUFFER, self._fbo)
        color, depth = GL.glGenRenderbuffers(2)
        self._rbos = [color, depth]
        GL.glBindRenderbuffer(GL.GL_RENDERBUFFER, color)
        GL.glRenderbufferStorage(GL.GL_RENDERBUFFER, GL.GL_RGBA8, self.width, self.height)
        GL.glFramebufferRenderbuffer(GL.GL_FRAMEBUFFER, GL.GL_COLOR_ATTACHMENT0, GL.GL_RENDERBUFFER, color)
        GL.glBindRenderbuffer(GL.GL_RENDERBUFFER, depth)
        GL.glRenderbufferStorage(GL.GL_RENDERBUFFER, GL.GL_DEPTH_COMPONENT24, self.width, self.height)
        GL.glFramebufferRenderbuffer(GL.GL_FRAMEBUFFER, GL.GL_DEPTH_ATTACHMENT, GL.GL_RENDERBUFFER, depth)
        if GL.glCheckFramebufferStatus(GL.GL_FRAMEBUFFER) != GL.GL_FRAMEBUFFER_COMPLETE:
            raise RuntimeError("offscreen framebuffer incomplete")
        GL.glViewport(0, 0, self.width, self.height)
        GL.glEnable(GL.GL_DEPTH_TEST)
        GL.glDisable(GL.GL_CULL_FACE)  # fitted meshes may be seen from inside (e.g. a hand in a torso)
        GL.glClearColor(0.0, 0.0, 0.0, 0.0)

    def _ensure_capacity(self, bodies: int) -> None:
        """(Re)allocate the vertex and index buffers for at least ``bodies`` bodies."""
        if bodies <= self._capacity:
            return
        GL = self._gl
        cap = max(bodies, 2 * self._capacity, 8)
        if self._vao is None:
            self._vao = GL.glGenVertexArrays(1)
            self._vbo, self._ebo = GL.glGenBuffers(2)
        GL.glBindVertexArray(self._vao)
        GL.glBindBuffer(GL.GL_ARRAY_BUFFER, self._vbo)
        GL.glBufferData(GL.GL_ARRAY_BUFFER, cap * self.num_vertices * 6 * 4, None, GL.GL_DYNAMIC_DRAW)
        stride = 6 * 4  # xyz + rgb, float32
        GL.glVertexAttribPointer(0, 3, GL.GL_FLOAT, GL.GL_FALSE, stride, ctypes.c_void_p(0))
        GL.glEnableVertexAttribArray(0)
        GL.glVertexAttribPointer(1, 3, GL.GL_FLOAT, GL.GL_FALSE, stride, ctypes.c_void_p(12))
        GL.glEnableVertexAttribArray(1)
        offsets = (np.arange(cap, dtype=np.uint32) * self.num_vertices)[:, None, None]
        indices = np.ascontiguousarray((self.faces[None] + offsets).reshape(-1), dtype=np.uint32)
        GL.glBindBuffer(GL.GL_ELEMENT_ARRAY_BUFFER, self._ebo)
        GL.glBufferData(GL.GL_ELEMENT_ARRAY_BUFFER, indices.nbytes, indices, GL.GL_STATIC_DRAW)
        self._capacity = cap

    def close(self) -> None:
        if getattr(self, "_context", None) is not None:
            try:
                self._make_current()
                GL = self._gl
                if self._vao is not None:
                    GL.glDeleteBuffers(2, [self._vbo, self._ebo])
                    GL.glDeleteVertexArrays(1, [self._vao])
                if self._fbo is not None:
                    GL.glDeleteRenderbuffers(2, self._rbos)
                    GL.glDeleteFramebuffers(1, [self._fbo])
                GL.glDeleteProgram(self._program)
            except Exception:  # noqa: BLE001 - freeing GL objects of a dying context may fail; harmless
                pass
            self._context.delete()
            self._context = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    # ------------------------------------------------------------------ drawing
    def _draw(self, verts: np.ndarray, colors: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Render (P, V, 3) camera-space meshes with (P, 3) colours -> RGB (H, W, 3) uint8, mask (H, W)."""
        GL = self._gl
        p = verts.shape[0]
        normals = self.normals(verts)  # (P, V, 3), camera axes
        view = verts / np.maximum(np.linalg.norm(verts, axis=-1, keepdims=True), 1e-6)
        key = np.abs((normals * view).sum(-1))  # headlight; abs: the mesh may be seen from inside
        fill = np.clip(normals @ self.fill_dir, 0.0, None)
        shade = (0.25 + 0.65 * key + 0.25 * fill)[..., None]  # (P, V, 1)
        vcol = np.clip(colors[:, None, :] * shade, 0.0, 1.0)
        data = np.ascontiguousarray(np.concatenate([verts, vcol], axis=-1), dtype=np.float32)  # (P, V, 6)

        self._make_current()
        self._ensure_capacity(p)
        GL.glBindFramebuffer(GL.GL_FRAMEBUFFER, self._fbo)
        GL.glUseProgram(self._program)
        GL.glBindVertexArray(self._vao)
        GL.glBindBuffer(GL.GL_ARRAY_BUFFER, self._vbo)
        GL.glBufferSubData(GL.GL_ARRAY_BUFFER, 0, data.nbytes, data)
        GL.glClear(GL.GL_COLOR_BUFFER_BIT | GL.GL_DEPTH_BUFFER_BIT)
        GL.glDrawElements(GL.GL_TRIANGLES, p * self.faces.size, GL.GL_UNSIGNED_INT, ctypes.c_void_p(0))
        buf = GL.glReadPixels(0, 0, self.width, self.height, GL.GL_RGBA, GL.GL_UNSIGNED_BYTE)
        rgba = np.frombuffer(buf, dtype=np.uint8).reshape(self.height, self.width, 4)
        return rgba[..., :3], rgba[..., 3] > 0

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
