"""Rendered synthetic video: ground truth is self-consistent and the bodies are where it says."""
from __future__ import annotations

import numpy as np
import pytest

from lib.data_utils.synthetic import procedural_walk, project
from lib.data_utils.synthetic_video import background, make_scene, render_video
from lib.joints.conventions import SPIN_49


def test_scene_ground_truth(toy_body_model):
    gt = make_scene(toy_body_model, [procedural_walk()], np.random.default_rng(0), num_people=2, num_frames=5,
                    img_size=(320, 240))
    assert gt["joints3d"].shape == (2, 5, 49, 3) and gt["vertices"].shape[:2] == (2, 5)
    uv = project(gt["joints3d"], float(gt["focal_length"]), (320, 240))
    np.testing.assert_allclose(gt["joints2d"][..., :2], uv, atol=1e-3)
    assert gt["visible"].all() and (gt["joints3d"][..., 2] > 3).all()
    # the camera-frame pose + transl reproduce the stored joints
    from lib.data_utils.synthetic import body_joints
    j = body_joints(toy_body_model, gt["pose"][0], gt["betas"][0], gt["transl"][0])
    np.testing.assert_allclose(j, gt["joints3d"][0], atol=1e-4)


def test_render_puts_bodies_at_their_joints(toy_body_model, tmp_path):
    av = pytest.importorskip("av")
    try:
        from lib.demo.render import OverlayRenderer
        OverlayRenderer(8, 8, 10.0, toy_body_model.faces, toy_body_model.num_vertices).close()
    except Exception as err:  # noqa: BLE001
        pytest.skip(f"no offscreen OpenGL here: {err}")
    gt = make_scene(toy_body_model, [procedural_walk()], np.random.default_rng(1), num_people=2, num_frames=4,
                    img_size=(320, 240))
    render_video(gt, tmp_path / "v.mp4", preview_png=tmp_path / "p.png", preview_frame=0)
    with av.open(str(tmp_path / "v.mp4")) as c:
        frames = [f.to_ndarray(format="rgb24") for f in c.decode(video=0)]
    assert len(frames) == 4 and (tmp_path / "p.png").is_file()
    bg = background((320, 240), gt).astype(int)
    pelvis = SPIN_49.index("pelvis")
    for p in range(2):
        x, y = np.round(gt["joints2d"][p, 0, pelvis, :2]).astype(int)
        diff = np.abs(frames[0][y - 1:y + 2, x - 1:x + 2].astype(int) - bg[y - 1:y + 2, x - 1:x + 2]).max()
        assert diff > 30, f"no body drawn at person {p}'s pelvis"
