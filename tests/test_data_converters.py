"""Every raw-dataset converter on miniature fixtures in the exact raw formats."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from lib.data_utils.common import ConverterError
from lib.data_utils.registry import prepare
from lib.dataset import SequenceDataset, load_dataset
from lib.joints.conventions import SPIN_49, convert_kps
from tests import fixtures_data as fx

J = SPIN_49.index


def _load(folder):
    d = load_dataset(folder)
    return {k: np.asarray(v) for k, v in d.arrays.items()}, d.meta


# --------------------------------------------------------------------------- 3DPW

def test_3dpw(tmp_path, toy_body_model):
    from lib.data_utils.synthetic import body_joints
    from lib.geometry.rotations import axis_angle_to_matrix

    raw = tmp_path / "3DPW"
    truth = fx.write_3dpw(raw)
    [out] = prepare("3dpw", str(raw), str(tmp_path / "out"), "test", body_model=toy_body_model)
    d, meta = _load(out)
    assert meta["source"] == "3dpw" and meta["num_videos"] == 2
    n = 12
    for p in range(2):
        sl = slice(p * n, (p + 1) * n)
        assert set(d["vid_name"][sl]) == {f"downtown_test_00_{p}"}
        kp = truth["poses2d"][p].transpose(0, 2, 1)
        np.testing.assert_allclose(d["joints2D"][sl], convert_kps(kp, "pw3d18", "spin49"), rtol=1e-5)
        np.testing.assert_allclose(d["joints2D"][sl, J("rknee")], kp[:, 9], rtol=1e-5)
        np.testing.assert_array_equal(d["valid"][sl], truth["campose_valid"][p])
        np.testing.assert_allclose(d["pose"][sl, 3:], truth["poses"][p][:, 3:], atol=1e-6)
        R = truth["cam_poses"][:, :3, :3]
        go = axis_angle_to_matrix(torch.from_numpy(truth["poses"][p][:, :3])).numpy()
        got = axis_angle_to_matrix(torch.from_numpy(d["pose"][sl, :3].astype(np.float64))).numpy()
        np.testing.assert_allclose(got, R @ go, atol=1e-5)
        world = body_joints(toy_body_model, truth["poses"][p].astype(np.float32), truth["betas"][p][:10],
                            truth["trans"][p].astype(np.float32))
        cam = np.einsum("nij,nkj->nki", R, world) + truth["cam_poses"][:, None, :3, 3]
        np.testing.assert_allclose(d["joints3D"][sl, :, :3], cam, atol=1e-4)
        assert (d["joints3D"][sl, :, 3] == 1).all()
        # camera-frame pose reproduces the camera-frame joints up to a translation
        rel = body_joints(toy_body_model, d["pose"][sl], truth["betas"][p][:10], np.zeros((n, 3), np.float32))
        np.testing.assert_allclose(rel - rel[:, :1], cam - cam[:, :1], atol=1e-4)
        # boxes hold the projected joints
        K = truth["cam_intrinsics"]
        uv = (cam @ K.T)[..., :2] / (cam @ K.T)[..., 2:]
        b = d["bbox"][sl]
        assert (np.abs(uv[..., 0] - b[:, None, 0]) <= b[:, None, 2] / 2 + 1e-3).all()
    assert d["img_name"][3] == "imageFiles/downtown_test_00/image_00003.jpg"


@pytest.mark.parametrize("key", ["campose_valid", "cam_poses", "poses2d"])
def test_3dpw_missing_key(tmp_path, toy_body_model, key):
    fx.write_3dpw(tmp_path / "raw", drop_key=key)
    with pytest.raises(ConverterError, match=key):
        prepare("3dpw", str(tmp_path / "raw"), str(tmp_path / "out"), "test", body_model=toy_body_model)


def test_3dpw_wrong_shape_and_evil_pickle(tmp_path, toy_body_model):
    fx.write_3dpw(tmp_path / "raw", bad_shape="poses2d")
    with pytest.raises(ConverterError, match=r"poses2d\[0\].*shape"):
        prepare("3dpw", str(tmp_path / "raw"), str(tmp_path / "out"), "test", body_model=toy_body_model)
    evil = tmp_path / "evil" / "sequenceFiles" / "test" / "x.pkl"
    fx.write_evil_pickle(evil)
    with pytest.raises(ConverterError, match="refusing to load posix.system|refusing to load os.system"):
        prepare("3dpw", str(tmp_path / "evil"), str(tmp_path / "out"), "test", body_model=toy_body_model)


# --------------------------------------------------------------------------- MPI-INF-3DHP

def test_mpii3d_train(tmp_path):
    truth = fx.write_mpii3d_train(tmp_path / "raw")
    [out] = prepare("mpi_inf_3dhp", str(tmp_path / "raw"), str(tmp_path / "out"), "train")
    d, meta = _load(out)
    assert meta["num_videos"] == 8 and "pose" not in meta["labelled"] and "joints3D" in meta["labelled"]
    assert d["vid_name"][0] == "S1_Seq1_cam0_0" and d["vid_name"][-1] == "S1_Seq1_cam8_0"
    cam4 = d["vid_name"] == "S1_Seq1_cam4_0"
    j3 = truth["annot3"][4]
    np.testing.assert_allclose(d["joints3D"][cam4, J("lknee"), :3], j3[:, 19] / 1000, rtol=1e-5)
    np.testing.assert_allclose(d["joints3D"][cam4, J("pelvis"), :3], j3[:, 4] / 1000, rtol=1e-5)
    np.testing.assert_allclose(d["joints2D"][cam4, J("rwrist"), :2], truth["annot2"][4][:, 16], rtol=1e-5)
    mapped = [J(n) for n in ("pelvis", "neck", "headtop", "lshoulder", "rankle", "spine_h36m", "head_h36m")]
    assert (d["joints3D"][:, mapped, 3] == 1).all()
    assert (d["joints3D"][:, J("op_nose"), 3] == 0).all() and (d["joints3D"][:, J("nose"), 3] == 0).all()
    # camera 0 frame 0 has the left shoulder outside the image: confidence 0, frame invalid
    assert d["joints2D"][0, J("lshoulder"), 2] == 0 and d["valid"][0] == 0 and d["valid"][1] == 1
    assert d["img_name"][1] == "S1/Seq1/imageFrames/video_0/frame_000002.jpg"


def test_mpii3d_train_errors(tmp_path):
    fx.write_mpii3d_train(tmp_path / "a", drop_key="annot3")
    with pytest.raises(ConverterError, match="annot3"):
        prepare("mpi_inf_3dhp", str(tmp_path / "a"), str(tmp_path / "out"), "train")
    fx.write_mpii3d_train(tmp_path / "b", bad_shape=True)
    with pytest.raises(ConverterError, match=r"annot2\[0\].*shape"):
        prepare("mpi_inf_3dhp", str(tmp_path / "b"), str(tmp_path / "out"), "train")


def test_mpii3d_test(tmp_path):
    truth = fx.write_mpii3d_test(tmp_path / "raw")
    [out] = prepare("mpi_inf_3dhp", str(tmp_path / "raw"), str(tmp_path / "out"), "test")
    d, _ = _load(out)
    np.testing.assert_array_equal(d["valid"], truth["valid"])
    np.testing.assert_allclose(d["joints3D"][:, J("headtop"), :3], truth["annot3"][:, 0] / 1000, rtol=1e-5)
    np.testing.assert_allclose(d["joints3D"][:, J("pelvis"), :3], truth["annot3"][:, 14] / 1000, rtol=1e-5)
    np.testing.assert_allclose(d["joints2D"][:, J("lankle"), :2], truth["annot2"][:, 13], rtol=1e-5)
    assert d["joints3D"][..., 3].sum(-1).tolist() == [17] * 9
    assert d["img_name"][0] == "mpi_inf_3dhp_test_set/TS1/imageSequence/img_000001.jpg"
    fx.write_mpii3d_test(tmp_path / "bad", drop_key="valid_frame")
    with pytest.raises(ConverterError, match="valid_frame"):
        prepare("mpi_inf_3dhp", str(tmp_path / "bad"), str(tmp_path / "out"), "test")


# --------------------------------------------------------------------------- Human3.6M

def test_h36m(tmp_path):
    truth = fx.write_h36m(tmp_path / "raw", subject=9)
    [out] = prepare("h36m", str(tmp_path / "raw"), str(tmp_path / "out"), "test", frame_step=1)
    d, meta = _load(out)
    assert meta["fps"] == 50.0 and d["vid_name"][0] == "S9_Walking.54138969_0"
    np.testing.assert_allclose(d["joints3D"][:, J("pelvis"), :3], truth["p3"][:, 0] / 1000, rtol=1e-5)
    np.testing.assert_allclose(d["joints3D"][:, J("lankle"), :3], truth["p3"][:, 8] / 1000, rtol=1e-5)
    np.testing.assert_allclose(d["joints3D"][:, J("rwrist"), :3], truth["p3"][:, 27] / 1000, rtol=1e-5)
    np.testing.assert_allclose(d["joints2D"][:, J("headtop"), :2], truth["p2"][:, 15], rtol=1e-5)
    assert (d["joints3D"][..., 3].sum(-1) == 17).all()
    [out5] = prepare("h36m", str(tmp_path / "raw"), str(tmp_path / "out5"), "test")
    d5, meta5 = _load(out5)
    np.testing.assert_array_equal(d5["frame_id"], [0, 5, 10])
    assert meta5["fps"] == 10.0
    fx.write_h36m(tmp_path / "bad", subject=9, bad_shape=True)
    with pytest.raises(ConverterError, match="Pose.*shape"):
        prepare("h36m", str(tmp_path / "bad"), str(tmp_path / "out"), "test")
    with pytest.raises(ConverterError, match="S1"):
        prepare("h36m", str(tmp_path / "raw"), str(tmp_path / "out"), "train")


# --------------------------------------------------------------------------- InstaVariety

def test_tfrecord_roundtrip():
    from lib.data_utils.tfrecord import crc32c, encode_example, parse_example

    assert crc32c(b"123456789") == 0xE3069283  # the standard CRC-32C check value
    ex = {"a": np.array([1.5, -2.25], np.float32), "b": np.array([3, -7, 1 << 40]), "c": [b"x", b""]}
    back = parse_example(encode_example(ex))
    np.testing.assert_array_equal(back["a"], ex["a"])
    np.testing.assert_array_equal(back["b"], ex["b"])
    assert back["c"] == [b"x", b""]


def test_insta(tmp_path):
    truth = fx.write_insta(tmp_path / "raw")
    [out] = prepare("insta", str(tmp_path / "raw"), str(tmp_path / "out"), "train")
    d, meta = _load(out)
    assert meta["num_videos"] == 2 and "joints3D" not in meta["labelled"]
    r0 = truth["records"][0]
    kp = d["joints2D"][:6]
    vis = r0["vis"][:, 0]
    expect_rk = np.where(vis[:, 1:2] > 0, r0["xys"][:, :, 1], 0)  # right knee = LSP joint 1
    np.testing.assert_allclose(kp[:, J("op_rknee"), :2], expect_rk, rtol=1e-6)
    np.testing.assert_array_equal(kp[:, J("op_rknee"), 2], vis[:, 1] > 0)
    np.testing.assert_allclose(kp[:, J("headtop"), 2], vis[:, 13] > 0)
    np.testing.assert_array_equal(kp[:, J("op_lear"), 2], r0["face"][:, 2, 3] > 0)
    np.testing.assert_array_equal(kp[:, J("op_rheel"), 2], r0["toes"][:, 2, 5] > 0)
    assert list(d["vid_name"][[0, 6]]) == ["insta_variety_00_copy00-0_0", "insta_variety_00_copy00-1_0"]
    from lib.data_utils.insta import read_frame
    assert read_frame(str(tmp_path / "raw"), d["img_name"][7]) == truth["records"][1]["jpgs"][1]


def test_insta_errors(tmp_path):
    fx.write_insta(tmp_path / "a", drop_key="image/visibilities")
    with pytest.raises(ConverterError, match="image/visibilities"):
        prepare("insta", str(tmp_path / "a"), str(tmp_path / "o"), "train")
    fx.write_insta(tmp_path / "b", bad_shape=True)
    with pytest.raises(ConverterError, match="image/xys"):
        prepare("insta", str(tmp_path / "b"), str(tmp_path / "o"), "train")
    (tmp_path / "c" / "train").mkdir(parents=True)
    (tmp_path / "c" / "train" / "x.tfrecord").write_bytes(b"not a tfrecord at all")
    with pytest.raises(ConverterError, match="x.tfrecord"):
        prepare("insta", str(tmp_path / "c"), str(tmp_path / "o"), "train")


# --------------------------------------------------------------------------- PennAction

def test_penn_action(tmp_path):
    truth = fx.write_penn(tmp_path / "raw")
    fx.write_penn(tmp_path / "raw", vid="0002", train=-1, seed=1)
    [out] = prepare("penn_action", str(tmp_path / "raw"), str(tmp_path / "out"))
    d, _ = _load(out)
    assert list(np.unique(d["vid_name"])) == ["0001_0", "0002_0"]
    sl = d["vid_name"] == "0001_0"
    vis = truth["vis"] > 0
    np.testing.assert_allclose(d["joints2D"][sl, J("headtop"), 0], np.where(vis[:, 0], truth["x"][:, 0], 0), rtol=1e-5)
    np.testing.assert_allclose(d["joints2D"][sl, J("rankle"), 1], np.where(vis[:, 12], truth["y"][:, 12], 0), rtol=1e-5)
    b = truth["bbox"]
    np.testing.assert_allclose(d["bbox"][sl][:-1, 2], b[:, 2] - b[:, 0], rtol=1e-5)  # annotated box
    assert d["bbox"][sl][-1, 2] > 0  # the frame without an annotated box gets one from the joints
    [tr] = prepare("penn_action", str(tmp_path / "raw"), str(tmp_path / "o2"), "train")
    assert set(_load(tr)[0]["vid_name"]) == {"0001_0"}
    fx.write_penn(tmp_path / "bad", bad_shape=True)
    with pytest.raises(ConverterError, match="'y' has shape"):
        prepare("penn_action", str(tmp_path / "bad"), str(tmp_path / "out"))
    fx.write_penn(tmp_path / "bad2", drop_key="visibility")
    with pytest.raises(ConverterError, match="visibility"):
        prepare("penn_action", str(tmp_path / "bad2"), str(tmp_path / "out"))
    corrupt = tmp_path / "corrupt" / "labels"
    corrupt.mkdir(parents=True)
    (corrupt / "0001.mat").write_bytes(b"this is not a MATLAB file")
    with pytest.raises(ConverterError, match=r"0001\.mat: not a MATLAB label file"):
        prepare("penn_action", str(tmp_path / "corrupt"), str(tmp_path / "out"))


# --------------------------------------------------------------------------- PoseTrack

def test_posetrack(tmp_path):
    truth = fx.write_posetrack(tmp_path / "raw")
    [out] = prepare("posetrack", str(tmp_path / "raw"), str(tmp_path / "out"), "train")
    d, _ = _load(out)
    names = list(dict.fromkeys(d["vid_name"]))
    assert names == ["000001_bonn_train_0", "000001_bonn_train_1", "000001_bonn_train.1_1"]
    t1 = d["vid_name"] == "000001_bonn_train.1_1"
    np.testing.assert_array_equal(d["frame_id"][t1], [5, 6, 7, 8, 9])
    kp = truth[(1, 7)]
    row = np.nonzero(t1)[0][2]
    assert d["img_name"][row] == "images/train/000001_bonn_train/000007.jpg"
    np.testing.assert_allclose(d["joints2D"][row, J("neck"), :2], kp[1, :2] if kp[1, 2] > 0 else 0, rtol=1e-5)
    np.testing.assert_allclose(d["joints2D"][row, J("rankle"), 2], kp[16, 2] > 0)
    ds = SequenceDataset(out, seq_len=5, stride=1, require_features=False)
    for i in range(len(ds)):
        assert np.all(np.diff(ds[i]["frame_id"]) == 1)  # no window spans the gap
    fx.write_posetrack(tmp_path / "bad", bad_shape=True)
    with pytest.raises(ConverterError, match="keypoints.*shape"):
        prepare("posetrack", str(tmp_path / "bad"), str(tmp_path / "out"), "train")
    fx.write_posetrack(tmp_path / "bad2", drop_key="track_id")
    with pytest.raises(ConverterError, match="track_id"):
        prepare("posetrack", str(tmp_path / "bad2"), str(tmp_path / "out"), "train")


# --------------------------------------------------------------------------- AMASS

def test_amass(tmp_path):
    from lib.data_utils.amass import Z_UP_TO_Y_UP
    from lib.geometry.rotations import axis_angle_to_matrix

    truth = fx.write_amass(tmp_path / "raw")
    [out] = prepare("amass", str(tmp_path / "raw"), str(tmp_path / "out"))
    d, meta = _load(out)
    assert meta["fps"] == 30.0 and set(d["vid_name"]) == {"CMU-01-01-01-poses_0"}
    assert len(d["pose"]) == 12  # 48 frames at 120 fps -> 12 at 30 fps
    src = truth["poses"][::4]
    np.testing.assert_allclose(d["pose"][:, 3:66], src[:, 3:66], atol=1e-5)
    np.testing.assert_array_equal(d["pose"][:, 66:], 0)
    go = axis_angle_to_matrix(torch.from_numpy(src[:, :3])).numpy()
    got = axis_angle_to_matrix(torch.from_numpy(d["pose"][:, :3].astype(np.float64))).numpy()
    np.testing.assert_allclose(got, Z_UP_TO_Y_UP @ go, atol=1e-5)
    np.testing.assert_allclose(d["shape"][0], truth["betas"][:10], rtol=1e-5)
    fx.write_amass(tmp_path / "bad", drop_key="mocap_framerate")
    with pytest.raises(ConverterError, match="mocap_framerate"):
        prepare("amass", str(tmp_path / "bad"), str(tmp_path / "out"))
    fx.write_amass(tmp_path / "bad2", bad_shape=True)
    with pytest.raises(ConverterError, match="'poses' has shape"):
        prepare("amass", str(tmp_path / "bad2"), str(tmp_path / "out"))


def test_amass_object_array_is_refused(tmp_path):
    folder = tmp_path / "raw" / "X"
    folder.mkdir(parents=True)
    np.savez(folder / "m.npz", poses=np.array([{"a": 1}], dtype=object), mocap_framerate=np.array(30.0))
    with pytest.raises(ConverterError, match="poses"):
        prepare("amass", str(tmp_path / "raw"), str(tmp_path / "out"))


# --------------------------------------------------------------------------- VIBE db

def test_vibe_db(tmp_path):
    pytest.importorskip("joblib")
    truth = fx.write_vibe_db(tmp_path / "vibe_db")
    outs = prepare("vibe_db", str(tmp_path / "vibe_db"), str(tmp_path / "out"))
    assert sorted(o.parent.name + "/" + o.name for o in outs) == ["3dpw/test", "amass/train"]
    d, meta = _load(tmp_path / "out" / "3dpw" / "test")
    db = truth["3dpw"]
    np.testing.assert_allclose(d["joints3D"][:, 25:39, :3], db["joints3D"], rtol=1e-6)
    assert (d["joints3D"][:, 25:39, 3] == 1).all() and (d["joints3D"][:, :25, 3] == 0).all()
    np.testing.assert_allclose(d["features"], db["features"], rtol=1e-6)
    np.testing.assert_allclose(d["joints2D"][:, 25:39], db["joints2D"], rtol=1e-6)  # common-14 slots
    assert (d["joints2D"][:, :25] == 0).all()
    np.testing.assert_array_equal(d["vid_name"], db["vid_name"])
    a, _ = _load(tmp_path / "out" / "amass" / "train")
    np.testing.assert_allclose(a["pose"], truth["theta"][:, 3:75])
    np.testing.assert_allclose(a["shape"], truth["theta"][:, 75:])


def test_prepare_data_cli(tmp_path):
    import subprocess
    import sys
    fx.write_penn(tmp_path / "raw")
    ok = subprocess.run([sys.executable, "scripts/prepare_data.py", "penn_action", "--raw_dir", str(tmp_path / "raw"),
                         "--out_dir", str(tmp_path / "out")], capture_output=True, text=True)
    assert ok.returncode == 0, ok.stderr[-1000:]
    assert (tmp_path / "out" / "penn_action" / "all" / "joints2D.npy").is_file()
    bad = subprocess.run([sys.executable, "scripts/prepare_data.py", "penn_action", "--raw_dir", str(tmp_path / "nope")],
                         capture_output=True, text=True)
    assert bad.returncode == 2 and bad.stderr.strip().splitlines()[-1].startswith("error: penn_action raw_dir")
    assert "Traceback" not in bad.stderr


def test_mpii3d_train_with_fewer_cameras(tmp_path):
    truth = fx.write_mpii3d_train(tmp_path / "raw", num_cams=3)
    [out] = prepare("mpi_inf_3dhp", str(tmp_path / "raw"), str(tmp_path / "out"), "train")
    d, meta = _load(out)
    assert meta["num_videos"] == 3
    np.testing.assert_allclose(d["joints3D"][-10:, J("rknee"), :3], truth["annot3"][2][:, 24] / 1000, rtol=1e-5)


@pytest.mark.parametrize("protocol", [2, 4, 5])
def test_numpy_pickle_protocols(tmp_path, protocol):
    import pickle
    from lib.data_utils.common import load_numpy_pickle
    data = {"a": np.arange(6.0).reshape(2, 3), "b": [np.int64(3), "x", 1.5], "c": np.array(["m", "f"])}
    (tmp_path / "x.pkl").write_bytes(pickle.dumps(data, protocol=protocol))
    back = load_numpy_pickle(tmp_path / "x.pkl")
    np.testing.assert_array_equal(back["a"], data["a"])
    assert back["b"][0] == 3 and back["b"][1:] == ["x", 1.5] and list(back["c"]) == ["m", "f"]
