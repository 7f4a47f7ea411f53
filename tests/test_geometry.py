import math

import numpy as np
import pytest
import torch

from lib.geometry import camera, rotations as rot
from lib.geometry.alignment import similarity_procrustes, similarity_procrustes_torch


def _random_rotvec(n, seed=0):
    g = torch.Generator().manual_seed(seed)
    axis = torch.nn.functional.normalize(torch.randn(n, 3, generator=g, dtype=torch.float64), dim=-1)
    return axis * torch.rand(n, 1, generator=g, dtype=torch.float64) * (math.pi - 1e-3)


def test_rotation_round_trips():
    aa = _random_rotvec(64)
    R = rot.axis_angle_to_matrix(aa)
    torch.testing.assert_close(R @ R.transpose(-1, -2), torch.eye(3, dtype=R.dtype).expand_as(R))
    torch.testing.assert_close(torch.linalg.det(R), torch.ones(64, dtype=R.dtype))
    torch.testing.assert_close(rot.matrix_to_axis_angle(R), aa)
    torch.testing.assert_close(rot.rot6d_to_matrix(rot.matrix_to_rot6d(R)), R)
    torch.testing.assert_close(rot.quaternion_to_matrix(rot.matrix_to_quaternion(R)), R)
    torch.testing.assert_close(rot.quaternion_to_axis_angle(rot.axis_angle_to_quaternion(aa)), aa)


def test_known_rotation_and_conventions():
    R = rot.axis_angle_to_matrix(torch.tensor([0.0, 0.0, math.pi / 2]))
    torch.testing.assert_close(R @ torch.tensor([1.0, 0, 0]), torch.tensor([0.0, 1, 0]), atol=1e-6, rtol=0)
    q = rot.matrix_to_quaternion(R)  # x, y, z, w
    torch.testing.assert_close(q.abs(), torch.tensor([0, 0, math.sqrt(0.5), math.sqrt(0.5)]), atol=1e-6, rtol=0)
    # 6D layout: first two columns, row-major.
    M = torch.arange(9.0).reshape(3, 3)
    assert rot.matrix_to_rot6d(M).tolist() == [0, 1, 3, 4, 6, 7]


def test_6d_gram_schmidt_returns_rotation_for_any_input():
    x = torch.randn(100, 6, dtype=torch.float64)
    R = rot.rot6d_to_matrix(x)
    torch.testing.assert_close(torch.linalg.det(R), torch.ones(100, dtype=R.dtype))


def test_crop_image_round_trip_and_box_size():
    bbox = torch.tensor([[100.0, 200.0, 50.0, 120.0]])
    pts = torch.tensor([[[100.0, 200.0], [160.0, 140.0]]])
    crop = camera.image_to_crop(pts, bbox)
    torch.testing.assert_close(crop[0, 0], torch.zeros(2))
    torch.testing.assert_close(crop[0, 1], torch.tensor([1.0, -1.0]))  # side = max(w, h) = 120
    torch.testing.assert_close(camera.crop_to_image(crop, bbox), pts)


def test_weak_perspective_matches_perspective_at_crop_centre():
    # A body at depth tz seen by a pinhole camera projects like the weak-perspective camera.
    f, crop = 5000.0, 224.0
    cam = torch.tensor([[0.9, 0.05, -0.1]])
    transl = camera.weak_perspective_to_translation(cam, f, crop)
    torch.testing.assert_close(camera.translation_to_weak_perspective(transl, f, crop), cam)
    pts = torch.randn(1, 10, 3) * 0.01  # near the optical axis, depth variation negligible
    px = camera.perspective_projection(pts, transl, f, torch.tensor([[crop / 2, crop / 2]]))
    wp = camera.weak_perspective_projection(pts, cam)
    torch.testing.assert_close((px - crop / 2) / (crop / 2), wp, atol=1e-4, rtol=0)


def test_crop_cam_to_full_translation_projects_into_the_box():
    img_w, img_h, f = 640.0, 480.0, 800.0
    bbox = torch.tensor([[400.0, 300.0, 100.0, 100.0]])
    cam = torch.tensor([[1.0, 0.0, 0.0]])
    t = camera.crop_cam_to_full_translation(cam, bbox, img_w, img_h, f)
    px = camera.perspective_projection(torch.zeros(1, 1, 3), t, f, torch.tensor([[img_w / 2, img_h / 2]]))
    torch.testing.assert_close(px[0, 0], bbox[0, :2])


def test_perspective_projection_focal_shapes():
    pts = torch.tensor([[[0.1, 0.2, 2.0]]])
    c = torch.zeros(1, 2)
    a = camera.perspective_projection(pts, torch.zeros(1, 3), 100.0, c)
    b = camera.perspective_projection(pts, torch.zeros(1, 3), torch.tensor([100.0]), c)
    d = camera.perspective_projection(pts, torch.zeros(1, 3), torch.tensor([[100.0, 100.0]]), c)
    torch.testing.assert_close(a, torch.tensor([[[5.0, 10.0]]]))
    torch.testing.assert_close(a, b)
    torch.testing.assert_close(a, d)


def test_procrustes_recovers_similarity_and_handles_reflection():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(4, 14, 3))
    R = rot.axis_angle_to_matrix(_random_rotvec(4, seed=3)).numpy()
    y = 2.5 * np.einsum("nij,nkj->nki", R, x) + rng.normal(size=(4, 1, 3))
    np.testing.assert_allclose(similarity_procrustes(x, y), y, atol=1e-9)
    # A mirrored copy cannot be matched by a proper rotation.
    mirrored = y * np.array([-1, 1, 1])
    assert np.abs(similarity_procrustes(x, mirrored) - mirrored).max() > 1e-3
    yt = similarity_procrustes_torch(torch.from_numpy(x), torch.from_numpy(y))
    np.testing.assert_allclose(yt.numpy(), y, atol=1e-9)
