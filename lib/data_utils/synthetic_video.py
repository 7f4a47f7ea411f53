"""Rendered synthetic videos: several people of a body model performing the
DeepMimic clips in one scene, seen by one static pinhole camera, with ground truth.

Each person: a clip segment (random speed, mirroring, heading), a random shape,
a place on the ground 4-10 m in front of the camera. Bodies are shaded meshes
(lib.demo.render.OverlayRenderer) over a plain two-tone background (sky and
floor split at the horizon) or a given image.

Ground truth (``gt.npz``), for P tracks and T frames:
``track_ids`` (P,), ``frame_ids`` (T,), ``visible`` (P, T) (some joint inside
the image, in front of the camera), ``bboxes`` (P, T, 4) cx, cy, w, h around
the projected vertices, ``joints2d`` (P, T, 49, 3) pixels + in-image flag (no
occlusion test), ``joints3d`` (P, T, 49, 3) camera frame metres, ``pose``
(P, T, 72) axis-angle with camera-frame global orientation, ``betas`` (P, 10),
``transl`` (P, T, 3) body-model translation (camera frame), ``vertices``
(P, T, V, 3) float16 camera frame, ``faces``, ``focal_length``, ``img_size``
(w, h), ``fps``, ``clips`` (P,) clip names.
"""
from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Dict, Optional, Sequence

import numpy as np
import torch

from lib.data_utils.motion_utils import mirror_smpl, resample_motion
from lib.data_utils.synthetic import (Clip, _rot_x, _rot_y, body_joints, clip_segment, project, rest_joints,
                                      root_path_to_transl)
from lib.geometry.rotations import axis_angle_to_matrix, matrix_to_axis_angle

logger = logging.getLogger(__name__)

# spin49 skeleton for drawing (ground-truth style joints).
SKELETON = [("rankle", "rknee"), ("rknee", "rhip"), ("lankle", "lknee"), ("lknee", "lhip"), ("rhip", "lhip"),
            ("rhip", "rshoulder"), ("lhip", "lshoulder"), ("rshoulder", "lshoulder"), ("rshoulder", "relbow"),
            ("relbow", "rwrist"), ("lshoulder", "lelbow"), ("lelbow", "lwrist"), ("neck", "headtop")]


def make_scene(body_model, clips: Sequence[Clip], rng: np.random.Generator, num_people: int = 3,
               num_frames: int = 90, fps: float = 30.0, img_size=(640, 480)) -> Dict[str, np.ndarray]:
    """Sample a scene and compute its ground truth (see the module docstring)."""
    w, h = img_size
    focal = 1.1 * max(w, h)
    cam_height = float(rng.uniform(1.3, 1.8))
    look_z = 7.0
    pitch = math.atan2(cam_height - 0.9, look_z)
    cam_rot = _rot_x(pitch) @ np.diag([-1.0, -1.0, 1.0])  # world (y up, looking +z) -> OpenCV camera
    cam_pos = np.array([0.0, cam_height, 0.0])
    lanes = np.linspace(-1.0, 1.0, num_people) * min(2.2, 0.35 * num_people + 0.5)
    out: Dict[str, list] = {k: [] for k in ("pose", "betas", "transl", "joints3d", "joints2d", "vertices", "bboxes",
                                            "visible", "clips")}
    for p in range(num_people):
        clip = clips[int(rng.integers(len(clips)))]
        betas = np.clip(rng.normal(0, 1, 10), -2.5, 2.5).astype(np.float32)
        rest = rest_joints(body_model, betas).astype(np.float64)
        pose, path = resample_motion(clip.pose, clip.transl, clip.fps * float(rng.uniform(0.85, 1.15)), fps)
        pose, path = clip_segment(Clip(clip.name, pose, path, fps), num_frames, rng)
        if len(pose) < num_frames:  # short clip: hold the last frame
            pad = num_frames - len(pose)
            pose = np.concatenate([pose, np.repeat(pose[-1:], pad, 0)])
            path = np.concatenate([path, np.repeat(path[-1:], pad, 0)])
        if rng.random() < 0.5:
            pose, path = mirror_smpl(pose, path)
        transl = root_path_to_transl(pose, path, rest).astype(np.float64)
        # heading: mostly across the view so people stay in frame
        ry = _rot_y(float(rng.choice([0.5, -0.5, 1.0, -1.0]) * math.pi / 2 + rng.normal(0, 0.3)))
        go = axis_angle_to_matrix(torch.from_numpy(pose[:, :3].astype(np.float64))).numpy()
        pose = pose.copy()
        pose[:, :3] = matrix_to_axis_angle(torch.from_numpy(ry[None] @ go)).numpy()
        root = rest[0]
        transl = (transl + root) @ ry.T - root
        centre = (transl + root).mean(0)
        place = np.array([lanes[p] + rng.normal(0, 0.3), 0.0, rng.uniform(5.0, 9.0)])
        transl = transl - np.array([centre[0], 0.0, centre[2]]) + place
        # camera frame: X_c = R (X_w - C)
        go = axis_angle_to_matrix(torch.from_numpy(pose[:, :3].astype(np.float64))).numpy()
        pose_c = pose.copy()
        pose_c[:, :3] = matrix_to_axis_angle(torch.from_numpy(cam_rot[None] @ go)).numpy()
        transl_c = (transl + root - cam_pos) @ cam_rot.T - root
        j3d, verts = body_joints(body_model, pose_c.astype(np.float32), betas, transl_c.astype(np.float32),
                                 vertices=True)
        uv = project(j3d, focal, img_size)
        inside = (uv[..., 0] >= 0) & (uv[..., 0] < w) & (uv[..., 1] >= 0) & (uv[..., 1] < h) & (j3d[..., 2] > 0.1)
        vuv = project(verts, focal, img_size)
        x0, x1 = vuv[..., 0].min(1), vuv[..., 0].max(1)
        y0, y1 = vuv[..., 1].min(1), vuv[..., 1].max(1)
        out["bboxes"].append(np.stack([(x0 + x1) / 2, (y0 + y1) / 2, x1 - x0, y1 - y0], -1))
        out["visible"].append(inside.any(-1))
        out["pose"].append(pose_c.astype(np.float32))
        out["betas"].append(betas)
        out["transl"].append(transl_c.astype(np.float32))
        out["joints3d"].append(j3d)
        out["joints2d"].append(np.concatenate([uv, inside[..., None]], -1))
        out["vertices"].append(verts.astype(np.float16))
        out["clips"].append(clip.name)
    gt = {k: np.stack(v) if k != "clips" else np.array(v) for k, v in out.items()}
    gt.update(track_ids=np.arange(num_people), frame_ids=np.arange(num_frames), faces=body_model.faces,
              focal_length=np.float32(focal), img_size=np.array(img_size), fps=np.float32(fps),
              cam_rot=cam_rot.astype(np.float32), cam_pos=cam_pos.astype(np.float32))
    for k in ("bboxes", "joints2d", "joints3d"):
        gt[k] = gt[k].astype(np.float32)
    return gt


def background(img_size, gt: Dict, image: Optional[np.ndarray] = None) -> np.ndarray:
    """(H, W, 3) uint8: the given image resized, or sky/floor split at the camera's horizon."""
    import cv2

    w, h = img_size
    if image is not None:
        return cv2.resize(image, (w, h), interpolation=cv2.INTER_AREA)
    # horizon: a far point at camera height projects to y = cy - f tan(pitch)
    pitch = math.asin(float(np.clip(-gt["cam_rot"][1, 2], -1, 1)))
    horizon = int(np.clip(h / 2 - float(gt["focal_length"]) * math.tan(pitch), 0, h))
    bg = np.zeros((h, w, 3), np.uint8)
    ys = np.arange(h)[:, None]
    sky = (np.array([200, 215, 235]) - 40 * (ys / max(h, 1))).clip(0, 255)
    floor = (np.array([150, 145, 135]) - 50 * ((ys - horizon) / max(h - horizon, 1))).clip(0, 255)
    bg[:] = np.where(ys < horizon, sky, floor)[:, None, :].astype(np.uint8).reshape(h, 1, 3)
    return bg


def draw_joints(img: np.ndarray, joints2d: np.ndarray, color=(255, 255, 255)) -> np.ndarray:
    """Draw spin49 ground-truth joints (49, 3) and the skeleton on an RGB image."""
    import cv2

    from lib.joints.conventions import SPIN_49

    img = np.ascontiguousarray(img)
    idx = {n: i for i, n in enumerate(SPIN_49)}
    for a, b in SKELETON:
        pa, pb = joints2d[idx[a]], joints2d[idx[b]]
        if pa[2] > 0 and pb[2] > 0:
            cv2.line(img, tuple(int(round(v)) for v in pa[:2]), tuple(int(round(v)) for v in pb[:2]), color, 2,
                     cv2.LINE_AA)
    for j in range(25, 49):
        if joints2d[j, 2] > 0:
            cv2.circle(img, tuple(int(round(v)) for v in joints2d[j, :2]), 3, (20, 20, 20), -1, cv2.LINE_AA)
    return img


def render_video(gt: Dict, out_mp4: str | Path, bg_image: Optional[np.ndarray] = None,
                 preview_png: Optional[str | Path] = None, preview_frame: int = 0) -> None:
    """Render the scene of ``gt`` to ``out_mp4`` (H.264) and optionally one preview PNG
    of frame ``preview_frame`` with the ground-truth joints drawn."""
    import cv2
    from tqdm import tqdm

    from lib.demo.render import OverlayRenderer
    from lib.demo.video import VideoWriter

    w, h = (int(v) for v in gt["img_size"])
    bg = background((w, h), gt, bg_image)
    verts = gt["vertices"]
    num_v = verts.shape[2]
    with OverlayRenderer(w, h, float(gt["focal_length"]), gt["faces"], num_v, alpha=1.0) as ren, \
            VideoWriter(out_mp4, float(gt["fps"]), w, h) as writer:
        for t in tqdm(range(verts.shape[1]), desc="render", unit="frame"):
            z = verts[:, t, :, 2].astype(np.float32).mean(-1)
            order = np.argsort(-z)  # any order works with the depth buffer; far first is stable
            frame = ren.render(bg, verts[order, t].astype(np.float32), [int(i) for i in gt["track_ids"][order]])
            writer.write(frame)
            if preview_png is not None and t == preview_frame:
                img = frame.copy()
                for p in range(len(gt["track_ids"])):
                    img = draw_joints(img, gt["joints2d"][p, t])
                Path(preview_png).parent.mkdir(parents=True, exist_ok=True)
                cv2.imwrite(str(preview_png), img[..., ::-1])
