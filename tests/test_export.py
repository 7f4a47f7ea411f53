"""Export (lib/export): every format is read back independently of the writer and
compared with the body model itself.

- GLB: Khronos glTF validator (node) reports 0 errors; a numpy LBS written here
  from the file's own accessors (inverse bind matrices, animated node TRS,
  JOINTS_n/WEIGHTS_n) reproduces the body model's vertices within 1 mm.
- FBX: read with ufbx (skinning evaluated) -> 24 bones, frame count, vertices.
- BVH: parsed + forward kinematics reproduces the body model's 24 joints.
- OBJ: vertices and faces equal the body model's.
- Bad input: one clear UserError naming the file/key.
"""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pygltflib as gl
import pytest
import torch

from lib.errors import UserError
from lib.export import export_results
from lib.export.common import JOINT_NAMES, load_results
from lib.geometry.rotations import axis_angle_to_matrix

REPO = Path(__file__).resolve().parents[1]
FPS = 25.0
FLIP = np.diag([1.0, -1.0, -1.0])  # OpenCV camera space -> y-up export frame
TOL = 1e-3  # 1 mm


# ----------------------------------------------------------------- fixtures
def _fake_tracks(rng, n: int):
    """Smooth random motion: every joint sweeps a random axis; the root walks away."""
    t = np.linspace(0, 1, n)[:, None, None]
    axes = rng.normal(0, 1, (1, 24, 3))
    axes /= np.linalg.norm(axes, axis=-1, keepdims=True)
    amp = rng.uniform(0.2, 1.2, (1, 24, 1))
    pose = (axes * amp * np.sin(2 * np.pi * t + rng.uniform(0, 6, (1, 24, 1)))).reshape(n, 72)
    pose[:, :3] += np.array([np.pi, 0, 0])  # camera space: the person stands upright (y down)
    # Joint 1 spins through pi about z: its canonical quaternion changes sign mid-sequence.
    pose[:, 3:6] = np.stack([np.zeros(n), np.zeros(n), np.linspace(0.2, 1.8 * np.pi, n)], 1)
    transl = np.stack([np.linspace(-0.5, 0.5, n), np.full(n, 0.3), np.linspace(4.0, 6.0, n)], 1)
    return pose, transl


def write_fake_results(path: Path, bm, seed: int = 0, n: int = 30, **overrides) -> Path:
    """Two tracks: '0' (frames 0..n-1) and '5' (starts at frame 4, with a 3-frame gap)."""
    rng = np.random.default_rng(seed)
    pose, transl = _fake_tracks(rng, n)
    ids5 = np.r_[np.arange(4, 12), np.arange(15, 22)]
    pose5, transl5 = _fake_tracks(rng, len(ids5))
    data = {
        "0/frame_ids": np.arange(n), "0/pose": pose.astype(np.float32), "0/betas": rng.normal(0, 1, 10),
        "0/transl": transl.astype(np.float32), "0/bboxes": np.zeros((n, 4)),
        "5/frame_ids": ids5, "5/pose": pose5, "5/betas": rng.normal(0, 1, 10), "5/transl": transl5,
        "5/bboxes": np.zeros((len(ids5), 4)),
        "detections": np.zeros((0, 6)),
        "fps": np.float64(FPS), "body_model": np.array(bm.kind), "num_vertices": np.int64(bm.num_vertices),
        "image_size": np.array([768, 576]), "focal_length": np.float64(800.0),
    }
    data.update(overrides)
    data = {k: v for k, v in data.items() if v is not None}
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez(path, **data)
    return path


@pytest.fixture(scope="module")
def results(tmp_path_factory, toy_body_model):
    return write_fake_results(tmp_path_factory.mktemp("res") / "vid" / "results.npz", toy_body_model)


@pytest.fixture(scope="module")
def exported(results, toy_body_model, tmp_path_factory):
    out = tmp_path_factory.mktemp("export")
    written = export_results(results, "glb,bvh,obj", out, body_model=toy_body_model)
    written["glb_combined"] = export_results(results, "glb", out / "combined", body_model=toy_body_model,
                                             combined=True)["glb"]
    return written


@torch.no_grad()
def reference(bm, results_path: Path, tid: str):
    """Body-model vertices (N,V,3) and SMPL joints (N,24,3), export frame, straight from the layer."""
    with np.load(results_path) as npz:
        pose = torch.as_tensor(npz[f"{tid}/pose"], dtype=torch.float32)
        betas = torch.as_tensor(npz[f"{tid}/betas"], dtype=torch.float32)[None]
        transl = torch.as_tensor(npz[f"{tid}/transl"], dtype=torch.float32)
        frame_ids = npz[f"{tid}/frame_ids"]
    rot = axis_angle_to_matrix(pose.reshape(-1, 24, 3))
    out = bm(global_orient=rot[:, :1], body_pose=rot[:, 1:], betas=betas, transl=transl)
    return out.vertices.numpy() @ FLIP.T, out.smpl_joints.numpy() @ FLIP.T, frame_ids


# ----------------------------------------------------------------- independent GLB reader + LBS
_DTYPES = {gl.FLOAT: np.float32, gl.UNSIGNED_BYTE: np.uint8, gl.UNSIGNED_SHORT: np.uint16,
           gl.UNSIGNED_INT: np.uint32}
_NCOMP = {"SCALAR": 1, "VEC2": 2, "VEC3": 3, "VEC4": 4, "MAT4": 16}


def read_accessor(g: gl.GLTF2, blob: bytes, idx: int) -> np.ndarray:
    acc = g.accessors[idx]
    view = g.bufferViews[acc.bufferView]
    dt, nc = np.dtype(_DTYPES[acc.componentType]), _NCOMP[acc.type]
    start = (view.byteOffset or 0) + (acc.byteOffset or 0)
    stride = view.byteStride or dt.itemsize * nc
    rows = [np.frombuffer(blob, dtype=dt, count=nc, offset=start + i * stride) for i in range(acc.count)]
    return np.stack(rows) if rows else np.zeros((0, nc), dt)


def _quat_matrix(q):
    x, y, z, w = q / np.linalg.norm(q)
    return np.array([
        [1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
        [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
        [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)],
    ])


def _sample(times, values, t, interpolation):
    k = np.searchsorted(times, t, side="right") - 1
    if k < 0:
        return values[0]
    if k >= len(times) - 1 or interpolation == "STEP":
        return values[min(k, len(times) - 1)]
    a = (t - times[k]) / (times[k + 1] - times[k])
    return (1 - a) * values[k] + a * values[k + 1]


class GlbReader:
    def __init__(self, path):
        self.g = gl.GLTF2.load(str(path))
        self.blob = self.g.binary_blob()
        self.channels = []
        for an in self.g.animations:
            for ch in an.channels:
                s = an.samplers[ch.sampler]
                self.channels.append((ch.target.node, ch.target.path, s.interpolation,
                                      read_accessor(self.g, self.blob, s.input)[:, 0].astype(np.float64),
                                      read_accessor(self.g, self.blob, s.output).astype(np.float64)))

    def key_times(self, node: int) -> np.ndarray:
        return next(c[3] for c in self.channels if c[0] == node and c[1] == "rotation")

    def skinned(self, t: float):
        """LBS of every skinned mesh node at time t -> list of (V, 3)."""
        g = self.g
        trs = [{"translation": np.array(n.translation or [0.0, 0, 0]), "rotation": np.array(n.rotation or [0.0, 0, 0, 1]),
                "scale": np.array(n.scale or [1.0, 1, 1])} for n in g.nodes]
        for node, path, interp, times, values in self.channels:
            trs[node][path] = _sample(times, values, t, interp)
        local = []
        for d in trs:
            m = np.eye(4)
            m[:3, :3] = _quat_matrix(d["rotation"]) * d["scale"][None]
            m[:3, 3] = d["translation"]
            local.append(m)
        world = [None] * len(g.nodes)

        def visit(i, parent):
            world[i] = parent @ local[i]
            for c in g.nodes[i].children or []:
                visit(c, world[i])

        for r in g.scenes[g.scene or 0].nodes:
            visit(r, np.eye(4))
        out = []
        for n in g.nodes:
            if n.skin is None:
                continue
            skin = g.skins[n.skin]
            ibm = read_accessor(g, self.blob, skin.inverseBindMatrices).reshape(-1, 4, 4).transpose(0, 2, 1)
            joint_mats = np.stack([world[j] for j in skin.joints]) @ ibm
            prim = g.meshes[n.mesh].primitives[0]
            pos = read_accessor(g, self.blob, prim.attributes.POSITION).astype(np.float64)
            blend = np.zeros((len(pos), 4, 4))
            s = 0
            while getattr(prim.attributes, f"JOINTS_{s}", None) is not None:
                jj = read_accessor(g, self.blob, getattr(prim.attributes, f"JOINTS_{s}")).astype(np.int64)
                ww = read_accessor(g, self.blob, getattr(prim.attributes, f"WEIGHTS_{s}")).astype(np.float64)
                blend += (ww[..., None, None] * joint_mats[jj]).sum(1)
                s += 1
            assert s >= 1, "mesh has no JOINTS_0/WEIGHTS_0"
            out.append(np.einsum("vij,vj->vi", blend, np.c_[pos, np.ones(len(pos))])[:, :3])
        return out


# ----------------------------------------------------------------- glTF validator
def _validator():
    node = shutil.which("node")
    pkg = REPO / ".node" / "node_modules" / "gltf-validator" / "package.json"
    if node is None or not pkg.is_file():
        pytest.skip("gltf-validator (node package) not installed: run bash scripts/install_node_tools.sh")
    return node


def validate(paths):
    node = _validator()
    res = subprocess.run([node, str(REPO / "scripts" / "validate_gltf.js"), *map(str, paths)],
                         capture_output=True, text=True, timeout=300)
    reports = [json.loads(line) for line in res.stdout.splitlines() if line.startswith("{")]
    assert len(reports) == len(paths), res.stderr
    return reports


def test_glb_passes_khronos_validator(exported, results):
    files = exported["glb"] + exported["glb_combined"]
    assert len(exported["glb"]) == 2 and len(exported["glb_combined"]) == 1
    for rep in validate(files):
        assert rep["numErrors"] == 0, rep["messages"]
        assert rep["numWarnings"] == 0, rep["messages"]


# ----------------------------------------------------------------- GLB re-skinning
def test_glb_reskinning_reproduces_body_model(exported, results, toy_body_model):
    by_name = {p.name: p for p in exported["glb"]}
    for tid in ("0", "5"):
        verts, _, frame_ids = reference(toy_body_model, results, tid)
        reader = GlbReader(by_name[f"vid_track{tid}.glb"])
        root = reader.g.scenes[0].nodes[1]
        times = reader.key_times(root)
        assert len(times) == len(frame_ids)
        np.testing.assert_allclose(times, (frame_ids - frame_ids[0]) / FPS, atol=1e-6)
        for k in (0, len(frame_ids) // 2, len(frame_ids) - 1):
            (got,) = reader.skinned(times[k])
            err = np.abs(got - verts[k]).max()
            assert err < TOL, f"track {tid} sample {k}: {err * 1000:.3f} mm"
        # Half-way between two keys the player interpolates: still a valid, near-by body.
        mid = reader.skinned(0.5 * (times[1] + times[2]))[0]
        assert np.abs(mid - 0.5 * (verts[1] + verts[2])).max() < 0.05


def test_glb_combined_scene_follows_video_time(exported, results, toy_body_model):
    reader = GlbReader(exported["glb_combined"][0])
    ref = {tid: reference(toy_body_model, results, tid) for tid in ("0", "5")}
    for frame in (4, 10, 15, 21):  # both tracks visible
        meshes = reader.skinned(frame / FPS)
        for mesh, tid in zip(meshes, ("0", "5")):
            verts, _, ids = ref[tid]
            k = int(np.nonzero(ids == frame)[0][0])
            assert np.abs(mesh - verts[k]).max() < TOL, (frame, tid)
    # Track 5 is hidden (scale 0: collapsed) before its first and after its last frame.
    for frame in (1, 25):
        track5 = reader.skinned(frame / FPS)[1]
        assert np.ptp(track5, axis=0).max() < 1e-6, frame
    assert np.ptp(reader.skinned(1 / FPS)[0], axis=0).max() > 0.5  # track 0 is there


def test_glb_has_video_camera(exported):
    g = GlbReader(exported["glb_combined"][0]).g
    (cam,) = g.cameras
    assert cam.perspective.aspectRatio == pytest.approx(768 / 576)
    assert cam.perspective.yfov == pytest.approx(2 * np.arctan(288 / 800.0))
    node = next(n for n in g.nodes if n.camera == 0)
    assert node.translation is None and node.rotation is None  # at the origin, looking down -z


def test_glb_quaternions_sign_continuous(exported):
    for path in exported["glb"] + exported["glb_combined"]:
        reader = GlbReader(path)
        rot = [c for c in reader.channels if c[1] == "rotation"]
        assert len(rot) == 24 * len(reader.g.skins)
        for _, _, _, _, q in rot:
            np.testing.assert_allclose(np.linalg.norm(q, axis=1), 1.0, atol=1e-5)
            assert np.all((q[1:] * q[:-1]).sum(1) > 0), path.name


def test_glb_skeleton_is_smpl_tree(exported, toy_body_model):
    reader = GlbReader(exported["glb"][0])
    g = reader.g
    skin = g.skins[0]
    assert len(skin.joints) == 24
    parent = {c: i for i, n in enumerate(g.nodes) for c in (n.children or [])}
    for j, node in enumerate(skin.joints):
        p = toy_body_model.parents[j]
        assert parent.get(node) == (skin.joints[p] if p >= 0 else None)


# ----------------------------------------------------------------- BVH
def parse_bvh(path: Path):
    """Minimal BVH reader -> (names, parents, offsets, channels per joint, frame_time, motion)."""
    tokens = path.read_text().split()
    names, parents, offsets, channels = [], [], [], []
    stack, i, end_site = [], 0, False
    while tokens[i] != "MOTION":
        tok = tokens[i]
        if tok in ("ROOT", "JOINT"):
            names.append(tokens[i + 1])
            parents.append(stack[-1] if stack else -1)
            i += 2
        elif tok == "End":
            end_site = True
            i += 2
        elif tok == "{":
            stack.append(None if end_site else len(names) - 1)
            end_site = False
            i += 1
        elif tok == "}":
            stack.pop()
            i += 1
        elif tok == "OFFSET":
            if stack[-1] is not None:
                offsets.append([float(x) for x in tokens[i + 1:i + 4]])
            i += 4
        elif tok == "CHANNELS":
            n = int(tokens[i + 1])
            channels.append(tokens[i + 2:i + 2 + n])
            i += 2 + n
        else:
            i += 1
    frames = int(tokens[i + 2])
    frame_time = float(tokens[i + 5])
    motion = np.array(tokens[i + 6:], dtype=np.float64).reshape(frames, -1)
    return names, parents, np.array(offsets), channels, frame_time, motion


def _axis_rot(axis: str, deg: np.ndarray) -> np.ndarray:
    a = np.radians(deg)
    c, s = np.cos(a), np.sin(a)
    m = np.zeros(a.shape + (3, 3))
    i = "XYZ".index(axis[0])
    j, k = (i + 1) % 3, (i + 2) % 3
    m[..., i, i] = 1
    m[..., j, j], m[..., j, k], m[..., k, j], m[..., k, k] = c, -s, s, c
    return m


def bvh_joint_positions(path: Path) -> np.ndarray:
    names, parents, offsets, channels, _, motion = parse_bvh(path)
    n = motion.shape[0]
    col, glob_r, glob_p = 0, [], []
    for j in range(len(names)):
        rot, pos = np.tile(np.eye(3), (n, 1, 1)), np.tile(offsets[j], (n, 1))
        for ch in channels[j]:
            v = motion[:, col]
            col += 1
            if ch.endswith("position"):
                pos[:, "XYZ".index(ch[0])] = v if parents[j] < 0 else pos[:, "XYZ".index(ch[0])] + v
            else:
                rot = rot @ _axis_rot(ch, v)  # channels apply in listed order (intrinsic)
        if parents[j] < 0:
            glob_r.append(rot), glob_p.append(pos)
        else:
            p = parents[j]
            glob_p.append(glob_p[p] + np.einsum("nij,nj->ni", glob_r[p], offsets[j][None].repeat(n, 0)))
            glob_r.append(glob_r[p] @ rot)
    return names, np.stack(glob_p, 1)


def test_bvh_round_trip_joints(exported, results, toy_body_model):
    by_name = {p.name: p for p in exported["bvh"]}
    for tid in ("0", "5"):
        _, joints, frame_ids = reference(toy_body_model, results, tid)
        path = by_name[f"vid_track{tid}.bvh"]
        names, parents, _, _, frame_time, motion = parse_bvh(path)
        assert sorted(names) == sorted(JOINT_NAMES)
        idx = [JOINT_NAMES.index(n) for n in names]  # BVH order -> SMPL index
        assert [idx[p] if p >= 0 else -1 for p in parents] == [toy_body_model.parents[i] for i in idx]
        assert frame_time == pytest.approx(1 / FPS)
        assert motion.shape[0] == frame_ids[-1] - frame_ids[0] + 1  # gaps filled
        bvh_names, pos = bvh_joint_positions(path)
        order = [bvh_names.index(n) for n in JOINT_NAMES]
        pos = pos[:, order][frame_ids - frame_ids[0]]  # the frames the track really has
        err = np.abs(pos - joints).max()
        assert err < TOL, f"track {tid}: {err * 1000:.3f} mm"


# ----------------------------------------------------------------- OBJ
def test_obj_sequence_round_trip(exported, results, toy_body_model):
    import trimesh

    folder = next(p for p in exported["obj"] if p.name == "vid_track5_obj")
    verts, _, frame_ids = reference(toy_body_model, results, "5")
    files = sorted(folder.glob("*.obj"))
    assert [f.name for f in files] == [f"frame_{i:06d}.obj" for i in frame_ids]
    for k in (0, 9):
        mesh = trimesh.load(files[k], process=False)
        np.testing.assert_allclose(mesh.vertices, verts[k], atol=2e-6)
        np.testing.assert_array_equal(mesh.faces, toy_body_model.faces)
    assert not list(folder.parent.glob(".vid_track5_obj*")), "temporary folder left behind"


# ----------------------------------------------------------------- bad input
@pytest.mark.parametrize("override,needle", [
    ({"0/transl": None}, "'0/transl'"),
    ({"0/pose": np.zeros((30, 69))}, "'0/pose' has shape (30, 69)"),
    ({"body_model": np.array("smpl")}, "made with body model 'smpl'"),
    ({"num_vertices": np.int64(6890)}, "6890 vertices"),
    ({"0/frame_ids": np.arange(30)[::-1].copy()}, "strictly increasing"),
])
def test_bad_results_give_clear_message(tmp_path, toy_body_model, override, needle):
    path = write_fake_results(tmp_path / "results.npz", toy_body_model, **override)
    with pytest.raises(UserError) as err:
        export_results(path, "glb", tmp_path / "out", body_model=toy_body_model)
    assert needle in str(err.value) and str(path) in str(err.value)
    assert not list((tmp_path / "out").glob("*.glb"))


def test_bad_files_and_options(tmp_path, results, toy_body_model):
    with pytest.raises(UserError, match="not found"):
        load_results(tmp_path / "missing.npz")
    junk = tmp_path / "junk.npz"
    junk.write_bytes(b"not a zip")
    with pytest.raises(UserError, match="not a readable"):
        load_results(junk)
    empty = tmp_path / "empty.npz"
    np.savez(empty, fps=25.0)
    with pytest.raises(UserError, match="no tracks"):
        load_results(empty)
    nobody = tmp_path / "nobody" / "results.npz"
    nobody.parent.mkdir()
    np.savez(nobody, fps=25.0, detections=np.zeros((0, 6)), track_ids=np.zeros(0, np.int64),
             body_model=np.array(toy_body_model.kind), num_vertices=np.int64(toy_body_model.num_vertices))
    assert export_results(nobody, "glb,bvh", tmp_path / "o", body_model=toy_body_model) == {"glb": [], "bvh": []}
    with pytest.raises(UserError, match="no track.s. 9; available: 0, 5"):
        export_results(results, "glb", tmp_path, tracks=["9"], body_model=toy_body_model)
    with pytest.raises(UserError, match="unknown export format"):
        export_results(results, "glb,usdz", tmp_path, body_model=toy_body_model)


def test_cli_reports_bad_input_on_one_line(tmp_path, toy_body_model, toy_body_model_dir):
    path = write_fake_results(tmp_path / "results.npz", toy_body_model, **{"5/betas": None})
    res = subprocess.run([sys.executable, "-m", "scripts.export", str(path), "--format", "glb",
                          "--model_dir", str(toy_body_model_dir), "--out", str(tmp_path / "o")],
                         capture_output=True, text=True, cwd=REPO, timeout=300)
    assert res.returncode == 2
    assert res.stderr.strip().splitlines()[-1].startswith("error:") and "'5/betas'" in res.stderr
    assert "Traceback" not in res.stderr


# ----------------------------------------------------------------- FBX (needs bpy in .venv-fbx)
# ufbx's Python binding points into native scene memory and has crashed the
# interpreter on rare garbage-collection orders; reading in a child process keeps
# such a crash from taking the whole pytest session down with it.
_UFBX_READ = r"""
import json, sys
import numpy as np
import ufbx
path, out, frames = sys.argv[1], sys.argv[2], [int(f) for f in sys.argv[3].split(",")]
scene = ufbx.load_file(path, target_axes=ufbx.axes_right_handed_y_up, target_unit_meters=1.0)
bones = scene.bones
stacks = scene.anim_stacks
stack = stacks[0]
anim = stack.anim
fps = scene.settings.frames_per_second
res = {"num_bones": np.int64(len(bones)), "fps": np.float64(fps),
       "time_begin": np.float64(stack.time_begin), "time_end": np.float64(stack.time_end)}
for f in frames:
    ev = ufbx.evaluate_scene(scene, anim, stack.time_begin + f / fps, evaluate_skinning=True)
    meshes = ev.meshes
    mesh = meshes[0]
    res[f"local{f}"] = np.bool_(mesh.skinned_is_local)
    pos = mesh.skinned_position
    values = pos.values
    res[f"verts{f}"] = np.array([[v.x, v.y, v.z] for v in values])
    del values, pos, mesh, meshes
    ev.free()
    del ev
np.savez(out, **res)
"""


def read_fbx(path: Path, frames, tmp_path: Path) -> dict:
    """Bones, timing and world-space skinned vertices at ``frames`` (counted from the first key)."""
    pytest.importorskip("ufbx")
    script, out = tmp_path / "read_fbx.py", tmp_path / f"{path.stem}_ufbx.npz"
    script.write_text(_UFBX_READ)
    res = subprocess.run([sys.executable, str(script), str(path), str(out), ",".join(map(str, frames))],
                         capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, f"ufbx reader failed ({res.returncode}): {res.stderr[-1500:]}"
    with np.load(out) as npz:
        return {k: npz[k] for k in npz.files}


def test_fbx_read_back_with_ufbx(results, toy_body_model, tmp_path):
    from lib.export.fbx import fbx_available

    if not fbx_available():
        pytest.skip("bpy (Blender as a module) not installed in .venv-fbx: run bash scripts/install_fbx.sh")
    written = export_results(results, "fbx", tmp_path, body_model=toy_body_model)
    by_name = {p.name: p for p in written["fbx"]}
    for tid in ("0", "5"):
        verts, _, frame_ids = reference(toy_body_model, results, tid)
        samples = [0, len(frame_ids) // 2, len(frame_ids) - 1]
        got = read_fbx(by_name[f"vid_track{tid}.fbx"], [int(frame_ids[k] - frame_ids[0]) for k in samples], tmp_path)
        assert got["num_bones"] == 24
        assert got["fps"] == pytest.approx(FPS)
        n_frames = int(round((got["time_end"] - got["time_begin"]) * FPS)) + 1
        assert n_frames == frame_ids[-1] - frame_ids[0] + 1  # gaps filled
        for k in samples:
            f = int(frame_ids[k] - frame_ids[0])
            assert not got[f"local{f}"], "expected world-space skinned positions"
            err = np.abs(got[f"verts{f}"] - verts[k]).max()
            assert err < TOL, f"track {tid} sample {k}: {err * 1000:.3f} mm"


# ----------------------------------------------------------------- the open body model
OPEN_DIR = REPO / "data" / "body_models" / "open"


def test_open_model_glb_valid_and_reskins(tmp_path):
    if not (OPEN_DIR / "SMPL_NEUTRAL.pkl").is_file():
        pytest.skip("data/body_models/open not built: run python scripts/build_open_body_model.py")
    from lib.body_models import load_body_model

    bm = load_body_model("open", model_dir=OPEN_DIR)
    path = write_fake_results(tmp_path / "clip" / "results.npz", bm, n=12)
    written = export_results(path, "glb", tmp_path / "out", tracks=["0"], body_model=bm)
    verts, _, frame_ids = reference(bm, path, "0")
    reader = GlbReader(written["glb"][0])
    times = reader.key_times(reader.g.scenes[0].nodes[1])
    for k in (0, 6, 11):
        (got,) = reader.skinned(times[k])
        err = np.abs(got - verts[k]).max()
        assert err < TOL, f"open model sample {k}: {err * 1000:.3f} mm"
    if shutil.which("node") and (REPO / ".node" / "node_modules" / "gltf-validator").is_dir():
        (rep,) = validate(written["glb"])
        assert rep["numErrors"] == 0, rep["messages"]

    from lib.export.fbx import fbx_available

    if fbx_available():  # the FBX path on the real mesh (7k vertices, up to 7 weights each)
        (fbx,) = export_results(path, "fbx", tmp_path / "out", tracks=["0"], body_model=bm)["fbx"]
        got = read_fbx(fbx, [6], tmp_path)
        assert got["num_bones"] == 24
        assert np.abs(got["verts6"] - verts[6]).max() < TOL


# ----------------------------------------------------------------- preview
def test_glb_poser_matches_body_model(exported, results, toy_body_model):
    from lib.export.preview import GlbPoser

    verts, _, frame_ids = reference(toy_body_model, results, "0")
    poser = GlbPoser(next(p for p in exported["glb"] if p.name == "vid_track0.glb"))
    assert poser.duration == pytest.approx((frame_ids[-1] - frame_ids[0]) / FPS, abs=1e-5)
    for k in (3, 17):
        ((got, faces, _),) = poser.pose(k / FPS)
        assert np.abs(got - verts[k]).max() < TOL
        np.testing.assert_array_equal(faces, toy_body_model.faces)


def test_preview_renders_bodies(exported, tmp_path):
    pytest.importorskip("pyrender")
    from PIL import Image

    from lib.export.preview import render_glb_preview

    try:
        png = render_glb_preview(exported["glb_combined"][0], tmp_path / "p.png", times=[0.4, 0.7], size=(96, 120))
    except Exception as err:  # no EGL/OpenGL on this machine
        pytest.skip(f"offscreen rendering unavailable: {err}")
    img = np.asarray(Image.open(png).convert("RGB")).astype(int)
    assert img.shape == (120, 194, 3)  # two panels and a 2-pixel separator
    for panel in (img[:, :96], img[:, 98:]):
        tinted = np.abs(panel[..., 0] - panel[..., 2]) > 20  # body colours; background and floor are grey
        assert tinted.mean() > 0.005


# ----------------------------------------------------------------- Blender's own importers (needs bpy)
_BLENDER_IMPORT = r'''
import sys, numpy as np, bpy
glb, bvh, out, fps = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
frames = [int(f) for f in sys.argv[5].split(",")]
res = {}
bpy.ops.wm.read_factory_settings(use_empty=True)
bpy.context.scene.render.fps = fps  # the glTF importer maps seconds to frames with the scene rate
bpy.ops.import_scene.gltf(filepath=glb)
body = next(o for o in bpy.context.scene.objects if o.type == "MESH" and o.name.endswith("_body"))
for f in frames:
    bpy.context.scene.frame_set(f)
    ev = body.evaluated_get(bpy.context.evaluated_depsgraph_get())
    me = ev.to_mesh()
    co = np.zeros(len(me.vertices) * 3)
    me.vertices.foreach_get("co", co)
    m = np.array(ev.matrix_world)
    res[f"glb{f}"] = co.reshape(-1, 3) @ m[:3, :3].T + m[:3, 3]
    ev.to_mesh_clear()
bpy.ops.wm.read_factory_settings(use_empty=True)
bpy.ops.import_anim.bvh(filepath=bvh, global_scale=1.0)
arm = next(o for o in bpy.context.scene.objects if o.type == "ARMATURE")
res["names"] = np.array([pb.name for pb in arm.pose.bones])
for f in frames:
    bpy.context.scene.frame_set(f + 1)  # BVH frames start at 1
    m = np.array(arm.matrix_world)
    res[f"bvh{f}"] = np.array([m[:3, :3] @ np.array(pb.head) + m[:3, 3] for pb in arm.pose.bones])
np.savez(out, **res)
'''


def test_blender_importers_reproduce_glb_and_bvh(exported, results, toy_body_model, tmp_path):
    from lib.export.fbx import fbx_available, fbx_python

    if not fbx_available():
        pytest.skip("bpy (Blender as a module) not installed in .venv-fbx: run bash scripts/install_fbx.sh")
    glb = next(p for p in exported["glb"] if p.name == "vid_track0.glb")
    bvh = next(p for p in exported["bvh"] if p.name == "vid_track0.bvh")
    script, out = tmp_path / "imp.py", tmp_path / "imp.npz"
    script.write_text(_BLENDER_IMPORT)
    frames = [0, 11, 29]
    res = subprocess.run([str(fbx_python()), str(script), str(glb), str(bvh), str(out), str(int(FPS)),
                          ",".join(map(str, frames))], capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr[-2000:]
    verts, joints, _ = reference(toy_body_model, results, "0")
    z_up_to_y_up = np.array([[1.0, 0, 0], [0, 0, 1], [0, -1, 0]])  # Blender is z up
    with np.load(out) as got:
        order = [list(got["names"]).index(n) for n in JOINT_NAMES]
        for f in frames:
            assert np.abs(got[f"glb{f}"] @ z_up_to_y_up.T - verts[f]).max() < TOL, f
            assert np.abs(got[f"bvh{f}"][order] @ z_up_to_y_up.T - joints[f]).max() < TOL, f
