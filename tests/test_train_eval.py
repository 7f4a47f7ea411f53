"""Training loop and evaluator on a tiny model, the toy body model and tiny
synthetic datasets written here in the schema (CPU, seconds)."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from lib.core import metrics
from lib.core.config import load_config
from lib.core.evaluator import (FramePredictions, collect_predictions, compute_metrics, format_table,
                                write_results)
from lib.core.trainer import (CHECKPOINT_BEST, CHECKPOINT_LAST, METRICS_FILE, HookBase, NonFiniteLossError,
                              atomic_torch_save, build_trainer, train)
from lib.errors import UserError
from lib.joints.conventions import H36M_TO_J14, SPIN49_TO_J14

ROOT = Path(__file__).resolve().parents[1]
SEQ = 8


@pytest.fixture(scope="module")
def data_root(tmp_path_factory, toy_body_model):
    """synthetic/{train,test}, synthetic_2d/train, synthetic_amass/train from the toy body model
    driven by the procedural walk; test features carry the frame index in feature 0."""
    from lib.data_utils.synthetic import make_motion_fields, make_people_fields, procedural_walk
    from lib.dataset.schema import write_dataset

    root = tmp_path_factory.mktemp("datasets")
    clips = [procedural_walk(seconds=3.0)]
    meta = {"fps": 30.0}
    for name, split, num, seed, with_3d in [("synthetic", "train", 6, 1, True), ("synthetic", "test", 3, 2, True),
                                            ("synthetic_2d", "train", 4, 3, False)]:
        fields = make_people_fields(toy_body_model, clips, num, np.random.default_rng(seed), min_len=20, max_len=36,
                                    with_3d=with_3d, prefix=f"{split}{seed}_")
        if split == "test":
            fields["valid"][:] = 1  # every frame counts: the evaluator checks below need them all
        write_dataset(root / name / split, fields, dict(meta, source=name))
    motion = make_motion_fields(clips, 2, np.random.default_rng(4))
    write_dataset(root / "synthetic_amass" / "train", motion, dict(meta, source="synthetic_amass"))
    return root


def tiny_cfg(toy_body_model_dir, data_root, out_dir, *extra):
    return load_config(ROOT / "configs" / "synthetic.yaml", tiny_opts(toy_body_model_dir, data_root, out_dir, *extra))


def tiny_opts(toy_body_model_dir, data_root, out_dir, *extra):
    opts = [
        "BODY_MODEL.DIR", str(toy_body_model_dir), "PATHS.DATASET_ROOT", str(data_root), "OUTPUT_DIR", str(out_dir),
        "EXP_NAME", "run", "DEVICE", "cpu", "NUM_WORKERS", "0", "SEED", "3",
        "DATASET.SEQ_LEN", str(SEQ), "DATASET.STRIDE", "4", "DATASET.EVAL_STRIDE", str(SEQ),
        "DATASET.MOTION_STRIDE", "4", "MODEL.MAX_SEQ_LEN", str(SEQ),
        "MODEL.ENCODER.TYPE", "gru", "MODEL.ENCODER.HIDDEN_SIZE", "32", "MODEL.ENCODER.NUM_LAYERS", "1",
        "MODEL.REGRESSOR.HIDDEN_SIZE", "32", "MODEL.STB.EMBED_DIM", "8", "MODEL.STB.TEMPORAL_DIM", "32",
        "MODEL.STB.SPATIAL_DEPTH", "1", "MODEL.STB.TEMPORAL_DEPTH", "1", "MODEL.STB.NUM_HEADS", "2",
        "MODEL.DISC.HIDDEN_SIZE", "16", "MODEL.DISC.NUM_LAYERS", "1", "MODEL.DISC.ATT_SIZE", "16",
        "TRAIN.BATCH_SIZE", "4", "TRAIN.LOG_EVERY", "1", "TRAIN.EVAL_EVERY", "1", "TRAIN.LR", "0.001", "TRAIN.LR_SCHEDULE", "plateau",
        "EVAL.BATCH_SIZE", "8",
    ]
    return opts + [str(x) for x in extra]


def losses(run_dir):
    rows = [json.loads(ln) for ln in (Path(run_dir) / METRICS_FILE).read_text().splitlines()]
    return {r["step"]: r["loss"] for r in rows if "loss" in r}


class _InterruptAt(HookBase):
    def __init__(self, step):
        self.at = step

    def after_step(self):
        if self.trainer.step == self.at:
            raise KeyboardInterrupt


def test_toy_training_lowers_the_loss_and_keeps_the_best(toy_body_model_dir, data_root, tmp_path):
    cfg = tiny_cfg(toy_body_model_dir, data_root, tmp_path, "TRAIN.NUM_EPOCHS", "3", "TRAIN.NUM_ITERS_PER_EPOCH", "15")
    summary = train(cfg, progress=False)
    run = tmp_path / "run"
    per_step = losses(run)
    assert sorted(per_step) == list(range(1, 46))
    first, last = np.mean([per_step[s] for s in range(1, 6)]), np.mean([per_step[s] for s in range(41, 46)])
    assert last < 0.6 * first, (first, last)
    # Evaluated each epoch; best.pt holds the lowest TRAIN.BEST_METRIC seen.
    evals = [json.loads(ln)["eval"] for ln in (run / METRICS_FILE).read_text().splitlines() if "eval" in ln]
    assert len(evals) == 3 and summary["best_metric"] == pytest.approx(min(e["smpl/pa_mpjpe"] for e in evals))
    assert (run / "config.yaml").is_file() and load_config(run / "config.yaml").TRAIN.NUM_ITERS_PER_EPOCH == 15


def test_checkpoints_are_weights_only_and_written_atomically(toy_body_model_dir, data_root, tmp_path):
    cfg = tiny_cfg(toy_body_model_dir, data_root, tmp_path, "TRAIN.NUM_EPOCHS", "1", "TRAIN.NUM_ITERS_PER_EPOCH", "2")
    train(cfg, progress=False)
    run = tmp_path / "run"
    last = torch.load(run / CHECKPOINT_LAST, map_location="cpu", weights_only=True)
    best = torch.load(run / CHECKPOINT_BEST, map_location="cpu", weights_only=True)
    assert last["step"] == best["step"] == 2 and last["iters_per_epoch"] == 2
    assert {"model", "optimizer", "scheduler", "discriminator", "disc_optimizer", "rng", "config"} <= set(last)
    assert {"model", "discriminator", "config"} <= set(best) and "optimizer" not in best  # weights for eval/demo
    for k, v in best["model"].items():
        assert torch.equal(v, last["model"][k])
    with pytest.raises(UserError, match="resume from last.pt"):
        build_trainer(cfg, progress=False).load_checkpoint(run / CHECKPOINT_BEST)
    assert not [p for p in run.iterdir() if p.name.endswith(".tmp")]
    # A save that fails half-way leaves the previous file untouched and no temp file behind.
    before = (run / CHECKPOINT_LAST).read_bytes()
    with pytest.raises(Exception):
        atomic_torch_save({"bad": lambda: 0}, run / CHECKPOINT_LAST)
    assert (run / CHECKPOINT_LAST).read_bytes() == before
    assert not [p for p in run.iterdir() if p.name.endswith(".tmp")]


@pytest.mark.parametrize("stop_at", [4, 6])  # at an epoch boundary and mid-epoch
def test_interrupted_run_resumes_to_the_same_losses(toy_body_model_dir, data_root, tmp_path, stop_at):
    args = ("TRAIN.NUM_EPOCHS", "2", "TRAIN.NUM_ITERS_PER_EPOCH", "4")
    full = train(tiny_cfg(toy_body_model_dir, data_root, tmp_path / "full", *args), progress=False)
    ref = losses(tmp_path / "full" / "run")

    cfg = tiny_cfg(toy_body_model_dir, data_root, tmp_path / "cut", *args)
    trainer = build_trainer(cfg, progress=False)
    trainer.register_hooks([_InterruptAt(stop_at)])
    with pytest.raises(KeyboardInterrupt):
        trainer.train()
    ckpt = torch.load(tmp_path / "cut" / "run" / CHECKPOINT_LAST, weights_only=True)
    assert ckpt["step"] == stop_at

    resumed = build_trainer(cfg, progress=False)
    assert resumed.resume_or_start("") and resumed.step == stop_at
    resumed.trim_metrics()
    summary = resumed.train()
    got = losses(tmp_path / "cut" / "run")
    assert summary["step"] == full["step"] == 8
    assert sorted(got) == sorted(ref)
    for step in range(stop_at + 1, 9):
        assert got[step] == pytest.approx(ref[step], rel=1e-5, abs=1e-6), step
    assert summary["best_metric"] == pytest.approx(full["best_metric"], rel=1e-5)


def test_nan_loss_raises(toy_body_model_dir, data_root, tmp_path):
    cfg = tiny_cfg(toy_body_model_dir, data_root, tmp_path, "TRAIN.NUM_EPOCHS", "1", "TRAIN.NUM_ITERS_PER_EPOCH", "3")
    trainer = build_trainer(cfg, progress=False)
    real = trainer.loss_fn

    def nan_loss(out, batch, disc=None):
        terms = real(out, batch, disc)
        terms["L_3d_STB"] = terms["L_3d_STB"] * float("nan")
        return terms

    trainer.loss_fn = nan_loss
    with pytest.raises(NonFiniteLossError, match=r"step 0 .*L_3d_STB=nan"):
        trainer.train()
    assert not (tmp_path / "run" / CHECKPOINT_LAST).exists()


# ---------------------------------------------------------------- evaluator
class _Oracle(torch.nn.Module):
    """Returns the ground truth of the frames it is given (feature 0 = frame index)."""

    def __init__(self, data, body_model, offset_by_position=0.0):
        super().__init__()
        self.data, self.bm, self.offset = data, body_model, offset_by_position

    def forward(self, features, joints2d, return_vertices=True):
        from lib.geometry.rotations import axis_angle_to_matrix
        from lib.models.pbn import PBNOutput

        b, t = features.shape[:2]
        idx = features[..., 0].round().long().numpy()  # (B, T)
        j3d = torch.from_numpy(np.asarray(self.data["joints3D"])[idx][..., :3].copy())  # (B, T, 49, 3)
        # Shift each frame by its distance from the window centre: only the centre-most
        # prediction of a frame is exact.
        dist = torch.abs(torch.arange(t) - (t - 1) / 2.0)
        j3d = j3d + self.offset * dist[None, :, None, None] * torch.tensor([1.0, 0, 0])
        rot = axis_angle_to_matrix(torch.from_numpy(np.asarray(self.data["pose"])[idx].copy()).reshape(b * t, 24, 3))
        betas = torch.from_numpy(np.asarray(self.data["shape"])[idx].copy()).reshape(b * t, 10)
        verts = self.bm(global_orient=rot[:, :1], body_pose=rot[:, 1:], betas=betas).vertices.reshape(b, t, -1, 3)
        stb = j3d - 0.5 * (j3d[..., [SPIN49_TO_J14[2]], :] + j3d[..., [SPIN49_TO_J14[3]], :])
        rot = rot.reshape(b, t, 24, 3, 3)
        return PBNOutput(rot[:, :, 0], rot[:, :, 1:], betas.reshape(b, t, 10), torch.zeros(b, t, 3), verts,
                         j3d, stb, None, torch.zeros(b, t, 49, 2), [])


def _gt_rotations(data, sel):
    from lib.geometry.rotations import axis_angle_to_matrix

    rot = axis_angle_to_matrix(torch.from_numpy(np.array(data["pose"][sel], np.float32)).reshape(-1, 24, 3))
    return rot[:, :1], rot[:, 1:]


def _indexed_eval_set(data_root, tmp_path):
    """The test split with feature 0 = global frame index (what the oracle reads)."""
    from lib.dataset import SequenceDataset, load_dataset
    from lib.dataset.schema import write_dataset

    src = load_dataset(data_root / "synthetic" / "test")
    fields = {k: np.asarray(src[k]) for k in ("vid_name", "frame_id", "bbox", "joints2D", "joints3D", "pose",
                                              "shape", "valid")}
    feats = np.zeros((len(src), 2048), np.float32)
    feats[:, 0] = np.arange(len(src))
    fields["features"] = feats
    folder = write_dataset(tmp_path / "indexed" / "test", fields, {"fps": 30.0, "source": "indexed"})
    return SequenceDataset(folder, seq_len=SEQ, stride=SEQ, cover_all=True)


def test_eval_of_ground_truth_is_zero_and_each_frame_is_scored_once(toy_body_model, data_root, tmp_path):
    ds = _indexed_eval_set(data_root, tmp_path)
    oracle = _Oracle(ds.data, toy_body_model)
    fp = collect_predictions(oracle, ds, toy_body_model, batch_size=3, progress=False)
    assert fp.covered.all() and fp.gt_ok.all()  # every frame of every video (all >= 8 frames)
    res = compute_metrics(fp)
    m = res["metrics"]
    for key in ("smpl/mpjpe", "smpl/pa_mpjpe", "smpl/pve", "smpl/accel", "stb/mpjpe", "stb/pa_mpjpe", "stb/accel",
                "smpl_h36m/mpjpe", "smpl_h36m/pa_mpjpe"):
        assert m[key] < 1e-2, (key, m[key])
    # The published protocol regresses the joints from the meshes with the H36M regressor.
    assert fp.branch_ok["smpl_h36m"].all()
    gt_mesh = toy_body_model(*_gt_rotations(ds.data, slice(0, 3)), betas=torch.from_numpy(
        np.array(ds.data["shape"][:3], np.float32))).vertices
    np.testing.assert_allclose(fp.branch_gt["smpl_h36m"][:3],
                               toy_body_model.h36m_joints(gt_mesh)[:, H36M_TO_J14].numpy(), atol=1e-5)
    assert res["num_frames_smpl"] == res["num_frames_3d"] == len(ds.data)
    assert "fused/mpjpe" not in m  # the oracle has no fusion output

    # Windows overlap at video ends; each frame must take its centre-most prediction.
    shifted = _Oracle(ds.data, toy_body_model, offset_by_position=0.01)
    fp2 = collect_predictions(shifted, ds, toy_body_model, batch_size=4, progress=False)
    best = np.full(len(ds.data), np.inf)
    for lo in ds.windows:
        d = np.abs(np.arange(SEQ) - (SEQ - 1) / 2.0)
        best[lo:lo + SEQ] = np.minimum(best[lo:lo + SEQ], d)
    err_x = fp2.pred_j14["smpl"][..., 0] - fp2.gt_j14[..., 0]  # (N, 14)
    np.testing.assert_allclose(err_x, 0.01 * best[:, None] * np.ones((1, 14)), atol=1e-5)

    # A rigidly rotated, scaled prediction: zero PA-MPJPE but not zero MPJPE.
    from scipy.spatial.transform import Rotation

    r = Rotation.from_euler("xyz", [0.3, -0.5, 0.2]).as_matrix().astype(np.float32)
    fp2.pred_j14 = {"smpl": 1.1 * fp.gt_j14 @ r.T + 0.2}
    m2 = compute_metrics(fp2)["metrics"]
    assert m2["smpl/pa_mpjpe"] < 1e-2 and m2["smpl/mpjpe"] > 50


def test_evaluator_numbers_match_lib_metrics_on_a_hand_made_case(tmp_path):
    rng = np.random.default_rng(0)
    n = 12
    gt = rng.normal(0, 0.3, (n, 14, 3))
    pred = gt + rng.normal(0, 0.02, (n, 14, 3))
    ok = np.ones(n, bool)
    ok[[2, 11]] = False  # e.g. missing 3D labels
    pve = np.full(n, np.nan)
    pve[:5] = [10, 20, 30, 40, 50]
    starts = np.array([0, 7, 12])
    fp = FramePredictions(gt.astype(np.float32), ok, {"smpl": pred.astype(np.float32)}, pve, np.ones(n, bool),
                          starts, ["a_0", "b_0"])
    res = compute_metrics(fp)
    m = res["metrics"]
    c = lambda x: metrics.centre_on_pelvis(x.astype(np.float32).astype(np.float64))  # noqa: E731
    assert m["smpl/mpjpe"] == pytest.approx(metrics.mpjpe(c(pred[ok]), c(gt[ok])).mean(), rel=1e-5)
    assert m["smpl/pa_mpjpe"] == pytest.approx(
        metrics.pa_mpjpe(pred[ok].astype(np.float32), gt[ok].astype(np.float32)).mean(), rel=1e-5)
    assert m["smpl/pve"] == pytest.approx(30.0)
    # Acceleration per video (never across the a/b boundary), skipping triples with an unlabelled frame.
    acc = []
    for lo, hi in [(0, 7), (7, 12)]:
        a = metrics.accel_error(c(pred[lo:hi]), c(gt[lo:hi]), valid=ok[lo:hi])
        acc.append(a[np.isfinite(a)])
    acc = np.concatenate(acc)
    assert len(acc) == 2 + 2  # video a: triples from frames 3, 4; video b: from 7, 8
    assert m["smpl/accel"] == pytest.approx(acc.mean(), rel=1e-5)
    assert res["num_frames_3d"] == 10 and res["num_frames_smpl"] == 5
    # Written as JSON (NaN -> null), and a readable table.
    write_results(tmp_path / "r.json", res, {"checkpoint": "x"})
    back = json.loads((tmp_path / "r.json").read_text())
    assert back["checkpoint"] == "x" and back["metrics"]["smpl/mpjpe"] == pytest.approx(m["smpl/mpjpe"])
    assert "smpl" in format_table(res) and "pa_mpjpe" in format_table(res)


def test_eval_script_on_a_trained_checkpoint(toy_body_model_dir, data_root, tmp_path):
    cfg = tiny_cfg(toy_body_model_dir, data_root, tmp_path, "TRAIN.NUM_EPOCHS", "1", "TRAIN.NUM_ITERS_PER_EPOCH", "2")
    train(cfg, progress=False)
    from lib.core.evaluator import evaluate_checkpoint

    results, path = evaluate_checkpoint(cfg, tmp_path / "run" / CHECKPOINT_BEST, progress=False)
    ckpt_eval = json.loads((tmp_path / "run" / "eval_001.json").read_text())
    assert results["metrics"]["smpl/pa_mpjpe"] == pytest.approx(ckpt_eval["metrics"]["smpl/pa_mpjpe"], rel=1e-5)
    assert path == tmp_path / "run" / "eval_synthetic_test.json" and path.is_file()


def _run(script, *args):
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    return subprocess.run([sys.executable, str(ROOT / script), *args], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=120)


def test_entry_scripts_give_one_clear_line_for_user_errors(tmp_path):
    r = _run("train.py", "--cfg", "configs/synthetic.yaml", "TRAIN.NOPE", "1")
    assert r.returncode == 2
    assert r.stderr.strip() == "error: unknown config key TRAIN.NOPE on the command line"
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a checkpoint")
    r = _run("eval.py", "--cfg", "configs/synthetic.yaml", "--checkpoint", str(bad))
    assert r.returncode == 2 and r.stderr.strip().startswith(f"error: {bad}: not a readable checkpoint")


def test_missing_checkpoint_is_a_user_error(tmp_path):
    from lib.core.evaluator import read_checkpoint

    with pytest.raises(UserError, match="checkpoint not found: .*missing.pt"):
        read_checkpoint(tmp_path / "missing.pt")


def test_torchrun_two_processes_on_cpu(toy_body_model_dir, data_root, tmp_path):
    """DDP (gloo) end to end: both processes train, rank 0 writes the run folder."""
    opts = tiny_opts(toy_body_model_dir, data_root, tmp_path, "TRAIN.NUM_EPOCHS", 1, "TRAIN.NUM_ITERS_PER_EPOCH", 3)
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    r = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                        str(ROOT / "train.py"), "--no_progress", "--cfg", "configs/synthetic.yaml", *opts],
                       cwd=ROOT, env=env, capture_output=True, text=True, timeout=240)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "done: 3 steps" in r.stdout and r.stdout.count("done:") == 1  # printed by rank 0 only
    ckpt = torch.load(tmp_path / "run" / CHECKPOINT_LAST, weights_only=True)
    assert ckpt["step"] == 3 and sorted(losses(tmp_path / "run")) == [1, 2, 3]
