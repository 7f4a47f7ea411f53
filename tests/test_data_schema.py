"""Dataset schema, loader, windows and mixed sampler."""
from __future__ import annotations

import json
import pickle

import numpy as np
import pytest
import torch

from lib.dataset import (DatasetFormatError, MixedBatchSampler, MotionWindowDataset, SequenceDataset,
                         load_dataset, write_dataset)
from lib.dataset.sequence import window_starts


def _toy_fields(lengths=(20, 7, 33), seed=0, features=True):
    rng = np.random.default_rng(seed)
    n = sum(lengths)
    vid = np.concatenate([[f"seq{i}_0"] * L for i, L in enumerate(lengths)])
    frame = np.concatenate([np.arange(L) for L in lengths])
    bbox = np.tile(np.array([320.0, 240.0, 100.0, 200.0], np.float32), (n, 1))
    j2d = np.zeros((n, 49, 3), np.float32)
    j2d[:, :, 0] = rng.uniform(220, 420, (n, 49))
    j2d[:, :, 1] = rng.uniform(140, 340, (n, 49))
    j2d[:, :, 2] = 1.0
    j2d[:, 3, 2] = 0.0
    j3d = np.concatenate([rng.normal(size=(n, 49, 3)), np.ones((n, 49, 1))], -1).astype(np.float32)
    j3d[:5, :, 3] = 0.0  # the first 5 frames have no 3D
    f = dict(vid_name=vid, frame_id=frame, img_name=np.array([f"img/{i:05d}.jpg" for i in range(n)]),
             bbox=bbox, joints2D=j2d, joints3D=j3d, pose=rng.normal(size=(n, 72)), shape=rng.normal(size=(n, 10)),
             valid=np.ones(n))
    if features:
        f["features"] = rng.normal(size=(n, 2048)).astype(np.float16)
    return f


def test_write_load_roundtrip_is_memory_mapped(tmp_path):
    fields = _toy_fields()
    out = write_dataset(tmp_path / "toy" / "train", fields, {"source": "toy", "fps": 30})
    meta = json.loads((out / "meta.json").read_text())
    assert meta["num_frames"] == 60 and meta["num_videos"] == 3 and meta["joint_format"] == "spin49"
    assert "joints3D" in meta["labelled"] and "vid_name" not in meta["labelled"]
    data = load_dataset(out)
    assert isinstance(data["joints2D"], np.memmap) and not data["joints2D"].flags.writeable
    np.testing.assert_array_equal(np.asarray(data["joints2D"]), fields["joints2D"])
    assert data["vid_name"].dtype.kind == "U"
    np.testing.assert_array_equal(data.starts, [0, 20, 27, 60])
    assert [p.name for p in tmp_path.joinpath("toy").iterdir()] == ["train"]  # no temp folder left behind


def test_rewrite_replaces_atomically(tmp_path):
    write_dataset(tmp_path / "d", _toy_fields(seed=0), {"source": "toy", "fps": 30})
    f2 = _toy_fields(lengths=(18,), seed=1)
    write_dataset(tmp_path / "d", f2, {"source": "toy", "fps": 30})
    assert load_dataset(tmp_path / "d").num_frames == 18
    assert sorted(p.name for p in tmp_path.iterdir()) == ["d"]


def test_writer_rejects_bad_fields(tmp_path):
    f = _toy_fields()
    f["joints2D"] = f["joints2D"][:, :25]
    with pytest.raises(DatasetFormatError, match="joints2D"):
        write_dataset(tmp_path / "x", f, {"source": "toy", "fps": 30})
    f = _toy_fields()
    f["pose"] = f["pose"][:-1]
    with pytest.raises(DatasetFormatError, match="pose"):
        write_dataset(tmp_path / "x", f, {"source": "toy", "fps": 30})
    assert not (tmp_path / "x").exists()


def test_loader_never_unpickles(tmp_path, monkeypatch):
    out = write_dataset(tmp_path / "d", _toy_fields(), {"source": "toy", "fps": 30})
    np.save(out / "pose.npy", np.array([{"evil": 1}] * 60, dtype=object), allow_pickle=True)
    monkeypatch.setattr(pickle, "loads", lambda *a, **k: (_ for _ in ()).throw(AssertionError("unpickled")))
    with pytest.raises(DatasetFormatError, match="pose"):
        load_dataset(out)


def test_windows_never_cross_videos(tmp_path):
    out = write_dataset(tmp_path / "d", _toy_fields(), {"source": "toy", "fps": 30})
    ds = SequenceDataset(out, seq_len=8, stride=3)
    assert len(ds) > 0
    for i in range(len(ds)):
        item = ds[i]
        assert len(set(np.asarray(load_dataset(out)["vid_name"][ds.windows[i]:ds.windows[i] + 8]))) == 1
        assert np.all(np.diff(item["frame_id"]) == 1)
    names = {ds[i]["vid_name"] for i in range(len(ds))}
    assert names == {"seq0_0", "seq2_0"}  # seq1 (7 frames) is shorter than a window
    # cover_all reaches the last frame of each video
    ev = SequenceDataset(out, seq_len=8, stride=8, cover_all=True)
    last = {(ev[i]["vid_name"], int(ev[i]["frame_id"][-1])) for i in range(len(ev))}
    assert ("seq0_0", 19) in last and ("seq2_0", 32) in last


def test_window_starts_property():
    rng = np.random.default_rng(3)
    lengths = rng.integers(1, 40, 50)
    starts = np.concatenate([[0], np.cumsum(lengths)])
    w = window_starts(starts, 16, 5, cover_all=True)
    vid = np.searchsorted(starts, w, side="right") - 1
    assert np.all(w + 16 <= starts[vid + 1])


def test_item_contract_and_crop_normalisation(tmp_path):
    f = _toy_fields()
    out = write_dataset(tmp_path / "d", f, {"source": "toy", "fps": 30})
    ds = SequenceDataset(out, seq_len=16, stride=4)
    item = ds[1]
    lo = int(ds.windows[1])
    shapes = {k: np.shape(v) for k, v in item.items() if k != "vid_name"}
    assert shapes == {"features": (16, 2048), "joints2d": (16, 49, 3), "joints3d": (16, 49, 4), "pose": (16, 72),
                      "shape": (16, 10), "has_smpl": (16,), "has_3d": (16,), "valid": (16,), "bbox": (16, 4),
                      "frame_id": (16,)}
    assert item["features"].dtype == np.float32 and isinstance(item["vid_name"], str)
    # box (320, 240, 100, 200): crop side 200, so x_crop = (x - 320) / 100
    kp = f["joints2D"][lo:lo + 16]
    np.testing.assert_allclose(item["joints2d"][..., 0, 0], (kp[:, 0, 0] - 320) / 100, rtol=1e-5)
    np.testing.assert_allclose(item["joints2d"][..., 0, 1], (kp[:, 0, 1] - 240) / 100, rtol=1e-5)
    assert np.all(item["joints2d"][:, 3] == 0)  # invisible joint zeroed
    assert np.abs(item["joints2d"][..., :2]).max() <= 1.0
    # frames 0-4 have no 3D labels
    first = ds[0]
    np.testing.assert_array_equal(first["has_3d"][:5], 0)
    np.testing.assert_array_equal(first["has_3d"][5:], 1)
    batch = torch.utils.data.default_collate([ds[0], ds[1]])
    assert batch["joints3d"].shape == (2, 16, 49, 4) and batch["vid_name"] == ["seq0_0", "seq0_0"]


def test_missing_labels_and_augmentation(tmp_path):
    f = _toy_fields()
    for k in ("pose", "shape", "joints3D"):
        del f[k]
    out = write_dataset(tmp_path / "d", f, {"source": "toy2d", "fps": 30})
    ds = SequenceDataset(out, seq_len=8, stride=8)
    item = ds[0]
    assert item["has_smpl"].sum() == 0 and item["has_3d"].sum() == 0
    aug = SequenceDataset(out, seq_len=8, stride=8, kp_noise=0.05, kp_dropout=0.5, seed=1)
    a = aug[0]["joints2d"]
    vis = item["joints2d"][..., 2] > 0
    kept = a[..., 2] > 0
    assert 0.3 < kept[vis].mean() < 0.7 and not kept[~vis].any()
    d = a[kept][:, :2] - item["joints2d"][kept][:, :2]
    assert 0.03 < d.std() < 0.07
    with pytest.raises(Exception, match="features"):
        del f["features"]
        write_dataset(tmp_path / "e", f, {"source": "x", "fps": 30})
        SequenceDataset(tmp_path / "e", seq_len=8)


def test_reseed_repeats_augmentation(tmp_path):
    out = write_dataset(tmp_path / "d", _toy_fields(), {"source": "toy", "fps": 30})
    ds = SequenceDataset(out, seq_len=8, stride=8, kp_noise=0.05, kp_dropout=0.3, seed=1)
    ds.reseed((1, 4))
    first = [ds[i]["joints2d"] for i in range(3)]
    ds[0]  # reading more moves the stream on...
    ds.reseed((1, 4))  # ...a reseed puts it back
    assert all(np.array_equal(a, ds[i]["joints2d"]) for i, a in enumerate(first))
    ds.reseed((1, 5))
    assert not np.array_equal(first[0], ds[0]["joints2d"])


def test_mixed_sampler_ratio():
    s = MixedBatchSampler([100, 50], [30], batch_size=10, ratio_2d=0.6, num_batches=20, seed=0)
    batches = list(s)
    assert len(batches) == 20
    for b in batches:
        assert len(b) == 10
        assert sum(i < 150 for i in b) == 6 and all(0 <= i < 180 for i in b)
    only3d = MixedBatchSampler([], [30], batch_size=8, ratio_2d=0.6, num_batches=2)
    assert all(i < 30 for b in only3d for i in b)


def test_motion_windows(tmp_path):
    n = 40
    out = write_dataset(tmp_path / "m", {"vid_name": ["a"] * 25 + ["b"] * 15, "frame_id": np.r_[0:25, 0:15],
                                         "pose": np.arange(n * 72, dtype=np.float32).reshape(n, 72)},
                        {"source": "amass", "fps": 30})
    ds = MotionWindowDataset(out, seq_len=16, stride=4)
    assert len(ds) == 3  # 0, 4, 8 in video a; b is too short
    assert ds[2]["pose"].shape == (16, 72) and ds[2]["pose"][0, 0] == 8 * 72


def test_mapped_pages_are_released(tmp_path):
    from lib.dataset.schema import _file_rss_bytes
    n = 8192  # 32 MB of float16 features
    f = {"vid_name": ["v_0"] * n, "frame_id": np.arange(n), "features": np.ones((n, 2048), np.float16)}
    out = write_dataset(tmp_path / "big", f, {"source": "t", "fps": 30})
    data = load_dataset(out)
    before = _file_rss_bytes()
    assert float(np.asarray(data["features"][:, ::512], np.float32).sum()) == n * 4  # touch every page
    grown = _file_rss_bytes() - before
    assert grown > 16 * 2 ** 20
    assert not data.maybe_release(budget_mb=64) and data.maybe_release(budget_mb=8)
    assert _file_rss_bytes() - before < grown / 4


def test_dataset_pickles_by_folder(tmp_path):
    out = write_dataset(tmp_path / "d", _toy_fields(), {"source": "toy", "fps": 30})
    ds = SequenceDataset(out, seq_len=8, stride=4)
    blob = pickle.dumps(ds)
    assert len(blob) < 50_000  # the mapped arrays are not copied into the pickle
    ds2 = pickle.loads(blob)
    np.testing.assert_array_equal(ds2[3]["joints3d"], ds[3]["joints3d"])

