"""Miniature raw datasets in their exact on-disk formats, for the converter tests.

Each writer puts a tiny copy of a dataset's raw layout under a folder and
returns what it encoded, so tests can compare the converted arrays with it.
Formats follow the datasets' own documentation / reference loaders (see the
docstrings of the matching lib/data_utils modules).
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Dict

import numpy as np

from lib.body_models.pickle_io import dump_portable_pickle


def _rng(seed):
    return np.random.default_rng(seed)


def _rot(rng):
    from scipy.spatial.transform import Rotation

    return Rotation.from_rotvec(rng.normal(0, 0.3, 3)).as_matrix()


# --------------------------------------------------------------------------- 3DPW

def write_3dpw(root: Path, split: str = "test", seq: str = "downtown_test_00", n: int = 12, people: int = 2,
               seed: int = 0, drop_key: str = "", bad_shape: str = "") -> Dict:
    rng = _rng(seed)
    folder = Path(root) / "sequenceFiles" / {"val": "validation"}.get(split, split)
    folder.mkdir(parents=True, exist_ok=True)
    cam = np.tile(np.eye(4), (n, 1, 1))
    for i in range(n):
        cam[i, :3, :3] = _rot(rng)
        cam[i, :3, 3] = [0.1, 0.2, 4.0] + rng.normal(0, 0.05, 3)
    data = {
        "sequence": seq,
        "genders": ["m", "f"][:people],
        "poses": [rng.normal(0, 0.2, (n, 72)) for _ in range(people)],
        "trans": [rng.normal(0, 0.3, (n, 3)) for _ in range(people)],
        "betas": [rng.normal(0, 1, 10) for _ in range(people)],
        "poses2d": [np.concatenate([rng.uniform(100, 900, (n, 2, 18)), rng.uniform(0, 1, (n, 1, 18))], 1)
                    for _ in range(people)],
        "jointPositions": [rng.normal(0, 1, (n, 72)) for _ in range(people)],
        "campose_valid": [(rng.random(n) > 0.2).astype(np.int64) for _ in range(people)],
        "cam_poses": cam,
        "cam_intrinsics": np.array([[1960.0, 0, 540], [0, 1960, 960], [0, 0, 1]]),
        "img_frame_ids": np.arange(n),
    }
    if drop_key:
        del data[drop_key]
    if bad_shape:
        data[bad_shape] = [np.transpose(a, (0, 2, 1)) if a.ndim == 3 else a[:, :-1] for a in data[bad_shape]]
    dump_portable_pickle(data, folder / f"{seq}.pkl")
    return data


def write_evil_pickle(path: Path) -> None:
    """A pickle whose unpickling would call os.system."""
    import pickle

    class Evil:
        def __reduce__(self):
            import os
            return (os.system, ("echo pwned",))

    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(pickle.dumps({"poses": Evil()}, protocol=2))


# --------------------------------------------------------------------------- MPI-INF-3DHP

def write_mpii3d_train(root: Path, n: int = 10, seed: int = 0, num_cams: int = 14, drop_key: str = "",
                       bad_shape: bool = False) -> Dict:
    import scipy.io

    rng = _rng(seed)
    folder = Path(root) / "S1" / "Seq1"
    folder.mkdir(parents=True, exist_ok=True)
    a2 = np.empty((num_cams, 1), dtype=object)
    a3 = np.empty((num_cams, 1), dtype=object)
    truth2, truth3 = [], []
    for c in range(num_cams):
        j2 = rng.uniform(300, 1700, (n, 28, 2))
        if c == 0:
            j2[0, 9, 0] = 2100.0  # frame 0 of camera 0: left shoulder outside the 2048 image
        j3 = rng.normal(0, 500, (n, 28, 3)) + [0, 0, 4000]
        a2[c, 0] = j2.reshape(n, 56) if not bad_shape else j2.reshape(n, 28, 2)
        a3[c, 0] = j3.reshape(n, 84)
        truth2.append(j2)
        truth3.append(j3)
    mat = {"annot2": a2, "annot3": a3, "univ_annot3": a3, "frames": np.arange(n)[:, None],
           "cameras": np.arange(num_cams)[None]}
    if drop_key:
        del mat[drop_key]
    scipy.io.savemat(folder / "annot.mat", mat)
    return {"annot2": truth2, "annot3": truth3}


def write_mpii3d_test(root: Path, n: int = 9, seed: int = 0, drop_key: str = "") -> Dict:
    import h5py

    rng = _rng(seed)
    folder = Path(root) / "mpi_inf_3dhp_test_set" / "TS1"
    folder.mkdir(parents=True, exist_ok=True)
    annot2 = rng.uniform(200, 1800, (n, 1, 17, 2))
    annot3 = rng.normal(0, 400, (n, 1, 17, 3)) + [0, 0, 3500]
    valid = (np.arange(n) % 4 != 0).astype(np.float64)[:, None]
    # MATLAB v7.3 = HDF5 with a 512-byte user block holding the MATLAB header.
    with h5py.File(folder / "annot_data.mat", "w", userblock_size=512) as h5:
        for k, v in (("annot2", annot2), ("annot3", annot3), ("univ_annot3", annot3), ("valid_frame", valid)):
            if k != drop_key:
                h5.create_dataset(k, data=v)
    with open(folder / "annot_data.mat", "r+b") as fh:
        fh.write(b"MATLAB 7.3 MAT-file, Platform: GLNXA64, Created on: Mon Jan  1 00:00:00 2018 HDF5 schema 1.00 .")
    return {"annot2": annot2[:, 0], "annot3": annot3[:, 0], "valid": valid[:, 0]}


# --------------------------------------------------------------------------- Human3.6M

def _write_cdf(path: Path, data: np.ndarray) -> None:
    from cdflib.cdfwrite import CDF

    path.parent.mkdir(parents=True, exist_ok=True)
    w = CDF(str(path), delete=True)
    w.write_var({"Variable": "Pose", "Data_Type": CDF.CDF_FLOAT, "Num_Elements": 1, "Rec_Vary": True,
                 "Dim_Sizes": list(data.shape[1:])}, var_data=data.astype(np.float32))
    w.close()


def write_h36m(root: Path, subject: int = 1, action: str = "Walking", camera: str = "54138969", n: int = 12,
               seed: int = 0, bad_shape: bool = False) -> Dict:
    rng = _rng(seed)
    p3 = (rng.normal(0, 400, (n, 32, 3)) + [0, 0, 5000]).astype(np.float32)
    p2 = rng.uniform(100, 900, (n, 32, 2)).astype(np.float32)
    base = Path(root) / f"S{subject}" / "MyPoseFeatures"
    _write_cdf(base / "D3_Positions_mono" / f"{action}.{camera}.cdf",
               p3.reshape(1, n, 96) if not bad_shape else p3.reshape(1, n, 32, 3)[..., :2].reshape(1, n, 64))
    _write_cdf(base / "D2_Positions" / f"{action}.{camera}.cdf", p2.reshape(1, n, 64))
    return {"p3": p3, "p2": p2}


# --------------------------------------------------------------------------- InstaVariety

def write_insta(root: Path, split: str = "train", lengths=(6, 4), seed: int = 0, drop_key: str = "",
                bad_shape: bool = False, phis: bool = False) -> Dict:
    import cv2

    from lib.data_utils.tfrecord import encode_example, write_tfrecord

    rng = _rng(seed)
    folder = Path(root) / split
    folder.mkdir(parents=True, exist_ok=True)
    records, truth = [], []
    for r, n in enumerate(lengths):
        xys = rng.uniform(10, 200, (n, 2, 14)).astype(np.float32)
        if phis:
            xys = rng.uniform(-1, 1, (n, 2, 14)).astype(np.float32)
        vis = (rng.random((n, 1, 14)) > 0.2).astype(np.int64)
        face = np.concatenate([rng.uniform(10, 200, (n, 2, 5)), (rng.random((n, 1, 5)) > 0.3)], 1).astype(np.float32)
        toes = np.concatenate([rng.uniform(10, 200, (n, 2, 6)), (rng.random((n, 1, 6)) > 0.3)], 1).astype(np.float32)
        jpgs = [cv2.imencode(".jpg", np.full((16, 16, 3), 10 * i + r, np.uint8))[1].tobytes() for i in range(n)]
        feats = {"meta/N": np.array([n], np.int64), "image/encoded": jpgs, "image/xys": xys.ravel(),
                 "image/visibilities": vis.ravel(), "image/face_pts": face.ravel(), "image/toe_pts": toes.ravel(),
                 "image/centers": np.full(2 * n, 112, np.int64), "image/heightwidths": np.full(2 * n, 224, np.int64),
                 "image/scale_factors": np.ones(n, np.float32), "image/filenames": [b"f%d.jpg" % i for i in range(n)]}
        if phis:
            feats["image/phis"] = np.zeros(n, np.float32)
        if bad_shape:
            feats["image/xys"] = xys.ravel()[:-2]
        if drop_key:
            del feats[drop_key]
        records.append(encode_example(feats))
        truth.append({"xys": xys, "vis": vis, "face": face, "toes": toes, "jpgs": jpgs})
    write_tfrecord(folder / "insta_variety_00_copy00.tfrecord", records)
    return {"records": truth}


# --------------------------------------------------------------------------- PennAction

def write_penn(root: Path, vid: str = "0001", n: int = 8, seed: int = 0, train: int = 1, drop_key: str = "",
               bad_shape: bool = False) -> Dict:
    import scipy.io

    rng = _rng(seed)
    (Path(root) / "labels").mkdir(parents=True, exist_ok=True)
    x = rng.uniform(50, 400, (n, 13))
    y = rng.uniform(50, 300, (n, 13))
    vis = (rng.random((n, 13)) > 0.2).astype(np.uint8)
    bbox = np.stack([x.min(1) - 5, y.min(1) - 5, x.max(1) + 5, y.max(1) + 5], 1)[:-1]  # one row short
    mat = {"action": "baseball_pitch", "pose": "side", "x": x, "y": y if not bad_shape else y[:, :12],
           "visibility": vis, "train": np.array([[train]]), "bbox": bbox, "dimensions": np.array([[360, 480, n]]),
           "nframes": np.array([[n]])}
    if drop_key:
        del mat[drop_key]
    scipy.io.savemat(Path(root) / "labels" / f"{vid}.mat", mat)
    return {"x": x, "y": y, "vis": vis, "bbox": bbox}


# --------------------------------------------------------------------------- PoseTrack

def write_posetrack(root: Path, split: str = "train", video: str = "000001_bonn_train", n: int = 10, seed: int = 0,
                    drop_key: str = "", bad_shape: bool = False) -> Dict:
    rng = _rng(seed)
    folder = Path(root) / "annotations" / split
    folder.mkdir(parents=True, exist_ok=True)
    images, anns, truth = [], [], {}
    vid_num = 1
    for f in range(n):
        iid = 10000000000 + vid_num * 10000 + f
        images.append({"id": iid, "file_name": f"images/{split}/{video}/{f:06d}.jpg", "frame_id": iid,
                       "vid_id": f"{vid_num:06d}", "nframes": n, "is_labeled": True})
        for track in (0, 1):
            if track == 1 and f == 4:
                continue  # a gap: track 1 is unlabelled in frame 4
            kp = np.concatenate([rng.uniform(0, 600, (17, 2)), (rng.random((17, 1)) > 0.2)], 1)
            truth[(track, f)] = kp
            ann = {"id": len(anns), "image_id": iid, "track_id": track, "category_id": 1,
                   "keypoints": kp.ravel().tolist() if not bad_shape else kp[:16].ravel().tolist(),
                   "bbox": [0, 0, 10, 10]}
            if drop_key:
                ann.pop(drop_key, None)
            anns.append(ann)
    (folder / f"{video}.json").write_text(json.dumps({"images": images, "annotations": anns,
                                                      "categories": [{"id": 1, "name": "person"}]}))
    return truth


# --------------------------------------------------------------------------- AMASS

def write_amass(root: Path, n: int = 48, fps: float = 120.0, seed: int = 0, drop_key: str = "",
                bad_shape: bool = False) -> Dict:
    rng = _rng(seed)
    folder = Path(root) / "CMU" / "01"
    folder.mkdir(parents=True, exist_ok=True)
    t = np.arange(n)[:, None] / fps
    poses = 0.3 * np.sin(2 * np.pi * 0.5 * t + rng.uniform(0, 6, 156))  # smooth motion
    data = {"poses": poses if not bad_shape else poses[:, :100], "trans": rng.normal(0, 1, (n, 3)),
            "betas": rng.normal(0, 1, 16), "mocap_framerate": np.array(fps), "gender": np.array("male"),
            "dmpls": np.zeros((n, 8))}
    if drop_key:
        del data[drop_key]
    np.savez(folder / "01_01_poses.npz", **data)
    np.savez(folder / "shape.npz", betas=data["betas"], gender=np.array("male"))  # no motion: skipped
    return data


# --------------------------------------------------------------------------- VIBE databases

def write_vibe_db(root: Path, n: int = 20, seed: int = 0) -> Dict:
    import joblib

    rng = _rng(seed)
    Path(root).mkdir(parents=True, exist_ok=True)
    vid = np.array(["courtyard_basketball_00_0"] * 12 + ["courtyard_basketball_00_1"] * (n - 12))
    j3 = rng.normal(0, 0.3, (n, 14, 3)).astype(np.float32)
    db = {"vid_name": vid, "frame_id": np.r_[0:12, 0:n - 12], "img_name": np.array([f"img{i}.jpg" for i in range(n)]),
          "joints3D": j3, "joints2D": rng.uniform(0, 500, (n, 14, 3)).astype(np.float32),  # VIBE: common-14
          "shape": rng.normal(size=(n, 10)).astype(np.float32), "pose": rng.normal(size=(n, 72)).astype(np.float32),
          "bbox": rng.uniform(50, 300, (n, 4)).astype(np.float32),
          "features": rng.normal(size=(n, 2048)).astype(np.float32), "valid": np.ones(n)}
    joblib.dump(db, Path(root) / "3dpw_test_db.pt")
    theta = rng.normal(size=(30, 85)).astype(np.float32)
    joblib.dump({"vid_name": np.array(["ACCAD_a"] * 30), "theta": theta}, Path(root) / "amass_train_db.pt")
    return {"3dpw": db, "theta": theta}
