"""The one strict configuration of pbn (yacs).

Order: these defaults -> a ``--cfg`` YAML file -> ``KEY VALUE`` command-line
overrides -> freeze. Unknown keys are an error naming the key; the resolved
config is saved in every run folder (:func:`save_config`). Defaults equal the
published setting (VIBE/PBN training recipe) unless a comment says otherwise.

Each section belongs to one part of the code; constructors take explicit
arguments and a ``from_config`` classmethod translates from here.
"""
from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import List, Optional, Sequence

import yaml
from yacs.config import CfgNode as CN

from lib.errors import ConfigError

_C = CN()
_C.EXP_NAME = "pbn"  # run name; the run folder is OUTPUT_DIR/<EXP_NAME>
_C.OUTPUT_DIR = "output"  # where run folders (logs, checkpoints, resolved config) go
_C.DEVICE = "auto"  # "auto" = CUDA when available else CPU; or "cpu", "cuda", "cuda:1"
_C.SEED = 1  # global random seed
_C.NUM_WORKERS = 2  # data-loader worker processes
_C.LOG_LEVEL = "INFO"  # logging level for entry scripts

# ---------------------------------------------------------------- paths
_C.PATHS = CN()
_C.PATHS.DATA_ROOT = "data"  # root of everything fetched or generated
_C.PATHS.BODY_MODEL_ROOT = "data/body_models"  # holds <kind>/ folders (open, smpl)
_C.PATHS.DATASET_ROOT = "data/datasets"  # converted datasets: <name>/<split>/*.npy
_C.PATHS.ASSET_ROOT = "data/assets"  # detector, keypoint model, motion clips, sample video
_C.PATHS.SPIN_CHECKPOINT = ""  # optional SPIN checkpoint (backbone + regressor init); "" = none

# ---------------------------------------------------------------- body model
_C.BODY_MODEL = CN()
_C.BODY_MODEL.KIND = "open"  # "open" (free, built from anny) or "smpl" (licence-gated files)
_C.BODY_MODEL.DIR = ""  # explicit model folder; "" = PATHS.BODY_MODEL_ROOT/<KIND>

# ---------------------------------------------------------------- datasets (lib/dataset)
_C.DATASET = CN()
_C.DATASET.SEQ_LEN = 16  # frames per training window (T)
_C.DATASET.STRIDE = 8  # frames between consecutive training windows of a video
_C.DATASET.TRAIN_2D = ["insta"]  # datasets with 2D labels only (names of converted datasets)
_C.DATASET.TRAIN_3D = ["mpi_inf_3dhp"]  # datasets with 3D labels
_C.DATASET.EVAL_SET = "3dpw"  # evaluation dataset name
_C.DATASET.EVAL_SPLIT = "test"  # evaluation split
_C.DATASET.RATIO_2D = 0.6  # fraction of each batch drawn from the 2D datasets (VIBE: 0.6)
_C.DATASET.MOTION = "amass"  # motion dataset for the discriminator ("" disables it)
_C.DATASET.EVAL_STRIDE = 16  # frames between evaluation windows (a last window covers each video's end)
_C.DATASET.MOTION_STRIDE = 4  # frames between motion-discriminator windows of the motion set
_C.DATASET.REQUIRE_FEATURES = True  # refuse datasets without features.npy (off: zero features, e.g. keypoint-only runs)
_C.DATASET.KP_NOISE = 0.0  # train-time 2D keypoint jitter, std in crop units ([-1, 1] crop; 0 = off)
_C.DATASET.KP_DROPOUT = 0.0  # train-time probability of dropping a visible 2D keypoint (0 = off)
_C.DATASET.MMAP_RELEASE_MB = 256.0  # drop mapped dataset pages from RSS when they exceed this many MB (per process)

# ---------------------------------------------------------------- model (lib/models)
_C.MODEL = CN()
_C.MODEL.FEATURE_DIM = 2048  # per-frame image feature size (ResNet-50 output) = d_model of the SMPL-branch encoder
_C.MODEL.MAX_SEQ_LEN = 16  # longest window (frames) the learned positional embeddings cover
_C.MODEL.USE_BACKBONE = False  # build the ResNet-50 so the model also takes 224x224 crops (demo); training uses stored features
# --- SMPL branch: temporal encoder over the T feature vectors
_C.MODEL.ENCODER = CN()
_C.MODEL.ENCODER.TYPE = "transformer"  # "transformer" (PBN), "gru" (VIBE) or "none" (per-frame, SPIN-like)
_C.MODEL.ENCODER.NUM_LAYERS = 2  # transformer or GRU layers
_C.MODEL.ENCODER.NUM_HEADS = 4  # transformer attention heads
_C.MODEL.ENCODER.FF_SIZE = 2048  # transformer feed-forward width (the seed code passed its hidden size 2048 here)
_C.MODEL.ENCODER.DROPOUT = 0.2  # transformer dropout (attention, feed-forward, residual)
_C.MODEL.ENCODER.HIDDEN_SIZE = 1024  # GRU hidden size
_C.MODEL.ENCODER.BIDIRECTIONAL = False  # GRU direction (VIBE: one-directional)
_C.MODEL.ENCODER.ADD_LINEAR = True  # GRU: ReLU + linear layer back to FEATURE_DIM (VIBE: on)
_C.MODEL.ENCODER.RESIDUAL = True  # add the encoder input to its output (both encoders)
# --- SMPL branch: HMR iterative regressor (SPIN layout, loads SPIN weights)
_C.MODEL.REGRESSOR = CN()
_C.MODEL.REGRESSOR.NUM_ITERS = 3  # iterative error feedback steps
_C.MODEL.REGRESSOR.HIDDEN_SIZE = 1024  # width of fc1/fc2 (SPIN: 1024; other values cannot load SPIN weights)
_C.MODEL.REGRESSOR.DROPOUT = 0.5  # dropout after fc1 and fc2 (SPIN: 0.5)
# --- ST branch: PoseFormer-style spatio-temporal transformer lifting 2D keypoints to 3D joints
_C.MODEL.STB = CN()
_C.MODEL.STB.ENABLED = True  # build the ST branch (off = VIBE-like single branch)
_C.MODEL.STB.EMBED_DIM = 32  # embedding size per joint
_C.MODEL.STB.TEMPORAL_DIM = 0  # temporal transformer width; 0 = 49 x EMBED_DIM (PoseFormer), else a linear projection to it
_C.MODEL.STB.SPATIAL_DEPTH = 4  # spatial transformer blocks (over the 49 joints of a frame)
_C.MODEL.STB.TEMPORAL_DEPTH = 4  # temporal transformer blocks (over the T frames)
_C.MODEL.STB.NUM_HEADS = 8  # attention heads in both transformers
_C.MODEL.STB.MLP_RATIO = 2.0  # feed-forward width / embedding width
_C.MODEL.STB.DROPOUT = 0.0  # dropout on embeddings, attention and feed-forward
_C.MODEL.STB.DROP_PATH = 0.1  # stochastic-depth rate, rising linearly to this over the blocks
# --- fusion of STB and SMPL-branch 3D joints
_C.MODEL.FUSION = "none"  # "none" (published PBN: parallel branches) or "gate" (learned per-joint weights)
# --- motion discriminator (VIBE-style) and its own optimiser
_C.MODEL.DISC = CN()
_C.MODEL.DISC.HIDDEN_SIZE = 1024  # GRU hidden size
_C.MODEL.DISC.NUM_LAYERS = 2  # GRU layers
_C.MODEL.DISC.FEATURE_POOL = "attention"  # pooling over frames: "attention" or "mean"
_C.MODEL.DISC.ATT_SIZE = 1024  # width of the attention scorer's hidden layers
_C.MODEL.DISC.ATT_LAYERS = 3  # layers of the attention scorer
_C.MODEL.DISC.ATT_DROPOUT = 0.2  # dropout inside the attention scorer
_C.MODEL.DISC.OPTIM = "adam"  # discriminator optimiser: "adam" or "sgd"
_C.MODEL.DISC.LR = 1e-4  # discriminator learning rate
_C.MODEL.DISC.WD = 1e-4  # discriminator weight decay
_C.MODEL.DISC.MOMENTUM = 0.9  # SGD momentum (unused by Adam)
_C.MODEL.DISC.UPDATE_STEPS = 1  # discriminator steps per generator step

# ---------------------------------------------------------------- losses (lib/core/loss.py)
_C.LOSS = CN()
_C.LOSS.KP_2D_W = 300.0  # L_2d: SMPL-branch 2D reprojection (crop units, confidence weighted)
_C.LOSS.KP_3D_W = 300.0  # L_3d_SMPL: SMPL-branch 3D joints, 14 common joints, pelvis-centred (metres)
_C.LOSS.STB_3D_W = 300.0  # L_3d_STB: ST-branch 3D joints, 14 common joints, pelvis-centred (metres)
_C.LOSS.FUSED_3D_W = 300.0  # L_fused: fused 3D joints (only with MODEL.FUSION "gate")
_C.LOSS.POSE_W = 60.0  # L_smpl, pose part: squared error of the 24 rotation matrices
_C.LOSS.SHAPE_W = 0.06  # L_smpl, shape part: squared error of the 10 betas
_C.LOSS.MOTION_W = 0.5  # L_adv (generator) and the discriminator loss (least-squares GAN)
_C.LOSS.ADV_ITERS = "last"  # regressor iterations the discriminator judges: "last" (VIBE) or "all"

# ---------------------------------------------------------------- training (lib/core/trainer.py)
_C.TRAIN = CN()
_C.TRAIN.BATCH_SIZE = 32  # windows per batch
_C.TRAIN.NUM_EPOCHS = 30  # epochs
_C.TRAIN.NUM_ITERS_PER_EPOCH = 500  # generator steps per epoch
_C.TRAIN.RESUME = ""  # checkpoint to resume from; "" = latest in the run folder if any
_C.TRAIN.CHECKPOINT_EVERY = 1  # epochs between checkpoints (the best and the final epoch are always written)
_C.TRAIN.OPTIM = "adam"  # generator optimiser: "adam" (VIBE/PBN) or "adamw" (decoupled weight decay)
_C.TRAIN.LR = 5e-5  # generator learning rate (VIBE/PBN 3DPW recipe)
_C.TRAIN.WD = 0.0  # generator weight decay (VIBE: 0; the discriminator's is MODEL.DISC.WD = 1e-4)
_C.TRAIN.LR_SCHEDULE = "plateau"  # "plateau" (x LR_FACTOR after LR_PATIENCE epochs without a better BEST_METRIC, VIBE), "cosine" (to MIN_LR over NUM_EPOCHS) or "none"; applies to both optimisers
_C.TRAIN.LR_PATIENCE = 5  # plateau: epochs without improvement before the learning rate drops
_C.TRAIN.LR_FACTOR = 0.1  # plateau: learning-rate multiplier at each drop
_C.TRAIN.MIN_LR = 0.0  # cosine: final learning rate; plateau: floor
_C.TRAIN.GRAD_CLIP = 0.0  # clip the generator's gradient norm to this (L2 over all parameters); 0 = off (VIBE)
_C.TRAIN.LOG_EVERY = 50  # generator steps between log lines and metrics.jsonl rows
_C.TRAIN.EVAL_EVERY = 1  # epochs between evaluations on DATASET.EVAL_SET (keeps best.pt); 0 = never evaluate
_C.TRAIN.BEST_METRIC = "smpl/pa_mpjpe"  # evaluation result (lower is better, mm) that selects best.pt and drives "plateau"

# ---------------------------------------------------------------- evaluation (lib/core/evaluator.py)
_C.EVAL = CN()
_C.EVAL.BATCH_SIZE = 32  # windows per evaluation batch
_C.EVAL.MAX_WINDOWS = 0  # evaluate only the first N windows (quick checks during training); 0 = all
_C.EVAL.OUT_FILE = ""  # results JSON of eval.py; "" = OUTPUT_DIR/EXP_NAME/eval_<EVAL_SET>_<EVAL_SPLIT>.json

# ---------------------------------------------------------------- demo (lib/demo)
_C.DEMO = CN()
# --- front-end
_C.DEMO.DETECTOR = "ssdlite"  # person detector: "ssdlite" (OpenCV DNN) or "hog" (OpenCV 4.x only)
_C.DEMO.KEYPOINT_MODEL = "blazepose"  # 2D keypoints: "blazepose" (full) or "blazepose_lite" (~30% faster per person)
_C.DEMO.TILE_EVERY = 3  # each of the 2x2 small-people tiles runs every N frames, staggered (~4/N extra passes a frame); 0 = never
_C.DEMO.DETECT_THRESHOLD = 0.15  # lowest detection score kept; scores below NEW_TRACK_THRESHOLD only extend tracks
_C.DEMO.NEW_TRACK_THRESHOLD = 0.5  # lowest detection score that starts a new track
_C.DEMO.MAX_LOST_SECONDS = 1.5  # a track unseen this long ends; shorter occlusions keep the id
_C.DEMO.STITCH_SECONDS = 2.0  # after tracking, join pieces of one person's track across gaps up to this long; 0 = off
_C.DEMO.MIN_TRACK_LEN = None  # drop tracks shorter than this many frames; None = half a second of video
_C.DEMO.NUM_THREADS = 0  # OpenCV/TFLite threads for the front-end; 0 = library defaults
# --- back-end
_C.DEMO.ESTIMATOR = "fit"  # "fit" (Temporal SMPLify on keypoints) or "pbn" (network; needs DEMO.CHECKPOINT)
_C.DEMO.CHECKPOINT = ""  # pbn checkpoint for the "pbn" estimator; "" = none
_C.DEMO.RUN_SMPLIFY = False  # refine the network output with Temporal SMPLify ("pbn" estimator only)
_C.DEMO.BATCH_SIZE = 64  # crops per network batch for the "pbn" estimator
_C.DEMO.RENDER = True  # render the overlay video (demo.py --no_render turns it off)
_C.DEMO.SIDE_VIEW = False  # add a side view (bodies turned 90 deg about the vertical) next to the overlay
_C.DEMO.EXPORT = ["glb"]  # exports after the run: any of "glb", "fbx", "obj", "bvh" (demo.py --export none: none)

# ---------------------------------------------------------------- Temporal SMPLify (lib/smplify)
_C.SMPLIFY = CN()
_C.SMPLIFY.OPTIMIZER = "lbfgs"  # "lbfgs" (few, costly steps; converges fastest here) or "adam"
_C.SMPLIFY.NUM_ITERS = 20  # optimiser steps of the full (pose + shape + camera) stage per window
_C.SMPLIFY.NUM_CAMERA_ITERS = 5  # steps of the first stage (camera translation + global orientation only)
_C.SMPLIFY.LR = 1.0  # step size (LBFGS: initial step; Adam: use ~0.02)
_C.SMPLIFY.WINDOW = 200  # frames per optimisation window (all tracks of a window in one batch)
_C.SMPLIFY.SIGMA = 0.1  # Geman-McClure scale of the 2D residual, as a fraction of the box height
_C.SMPLIFY.HIP_WEIGHT = 0.3  # 2D weight of detector hips (not SMPL hip joints), relative to other joints
_C.SMPLIFY.W_KP2D = 1.0  # weight of the robust 2D reprojection term
_C.SMPLIFY.W_BONE3D = 0.5  # weight of the 3D-landmark bone-direction cue (1 - cosine)
_C.SMPLIFY.W_POSE_PRIOR = 0.002  # weight of the pose prior (motion prior or GMM penalty)
_C.SMPLIFY.W_JOINT_LIMIT = 0.1  # weight of the joint-angle limit penalty
_C.SMPLIFY.W_SHAPE = 0.005  # weight of the shape prior (squared betas)
_C.SMPLIFY.W_SMOOTH_JOINTS = 50.0  # weight of temporal smoothness (acceleration) of camera-space joints, metres per frame^2
_C.SMPLIFY.W_SMOOTH_POSE = 2.0  # weight of temporal smoothness (velocity) of body pose and global orientation
_C.SMPLIFY.W_DEPTH = 0.01  # weight keeping the camera depth near its box-height estimate (log ratio squared)
_C.SMPLIFY.PRIOR = "motion"  # pose prior: "motion" (DeepMimic-built), "smplify_gmm" (user's SMPLify file) or "quadratic"
_C.SMPLIFY.PRIOR_PATH = ""  # prior file; "" = the default path of the chosen prior
_C.SMPLIFY.BODY_HEIGHT = 1.7  # assumed body height in metres for the initial camera depth
_C.SMPLIFY.INIT_SMOOTHING = 15  # frames of moving average on box heights/hips (depth init) and, /3, on 3D landmarks

# ---------------------------------------------------------------- export (lib/export)
_C.EXPORT = CN()
_C.EXPORT.COMBINED = False  # GLB: all tracks in one scene on the video time line instead of one file per track


def get_cfg_defaults() -> CN:
    """A fresh, mutable copy of the defaults."""
    return _C.clone()


def _full_key(err: Exception) -> str:
    msg = str(err.args[0]) if err.args else str(err)
    return msg.split(":", 1)[-1].strip() if "Non-existent config key" in msg else msg


def load_config(cfg_file: Optional[str | os.PathLike] = None, opts: Sequence[str] = ()) -> CN:
    """Defaults -> ``cfg_file`` -> ``opts`` (flat ``KEY VALUE`` list) -> frozen config.

    Raises:
        ConfigError: the file is missing or not valid YAML, a key is unknown, an
            override has no value, or a value has the wrong type.
    """
    cfg = get_cfg_defaults()
    if cfg_file:
        path = Path(cfg_file)
        if not path.is_file():
            raise ConfigError(f"config file not found: {path}")
        try:
            with open(path, "r", encoding="utf-8") as fh:
                loaded = yaml.safe_load(fh)
        except yaml.YAMLError as err:
            where = getattr(err, "problem_mark", None)
            line = f" (line {where.line + 1})" if where is not None else ""
            raise ConfigError(f"{path}: malformed YAML{line}: {getattr(err, 'problem', err)}") from None
        if loaded is None:
            loaded = {}
        if not isinstance(loaded, dict):
            raise ConfigError(f"{path}: expected a mapping of config keys, got {type(loaded).__name__}")
        try:
            cfg.merge_from_other_cfg(CN(loaded))
        except KeyError as err:
            raise ConfigError(f"{path}: unknown config key {_full_key(err)}") from None
        except ValueError as err:
            raise ConfigError(f"{path}: {err}") from None
    opts = list(opts)
    if len(opts) % 2:
        raise ConfigError(f"command-line overrides must be KEY VALUE pairs; {opts[-1]!r} has no value")
    try:
        cfg.merge_from_list(opts)
    except (KeyError, AssertionError) as err:
        msg = str(err.args[0]) if err.args else str(err)
        if "Non-existent" in msg:
            raise ConfigError(f"unknown config key {msg.split(':', 1)[-1].strip()} on the command line") from None
        raise ConfigError(f"bad command-line override: {msg}") from None
    except ValueError as err:
        raise ConfigError(f"bad command-line override: {err}") from None
    cfg.freeze()
    return cfg


def save_config(cfg: CN, folder: str | os.PathLike, name: str = "config.yaml") -> Path:
    """Atomically write the resolved ``cfg`` as YAML into ``folder``; returns the path."""
    from lib.atomic_io import atomic_write_bytes

    path = Path(folder) / name
    atomic_write_bytes(path, cfg.dump().encode("utf-8"))
    return path


def body_model_dir(cfg: CN) -> Path:
    """The folder of the configured body model."""
    return Path(cfg.BODY_MODEL.DIR) if cfg.BODY_MODEL.DIR else Path(cfg.PATHS.BODY_MODEL_ROOT) / cfg.BODY_MODEL.KIND


def resolve_device(name: str = "auto") -> str:
    """"auto" -> "cuda" when available else "cpu"; other names pass through."""
    if name == "auto":
        import torch

        return "cuda" if torch.cuda.is_available() else "cpu"
    return name


def add_config_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Add ``--cfg FILE`` and trailing ``KEY VALUE`` overrides to an entry-script parser."""
    parser.add_argument("--cfg", type=str, default=None, help="YAML config file (see configs/)")
    # "*" rather than REMAINDER so the script's own options may come before or after.
    parser.add_argument("opts", nargs="*", default=[],
                        help="config overrides as KEY VALUE pairs, e.g. TRAIN.BATCH_SIZE 8")
    return parser


def config_from_args(args: argparse.Namespace) -> CN:
    """The frozen config for parsed entry-script arguments."""
    return load_config(args.cfg, args.opts)


def config_keys(cfg: Optional[CN] = None, prefix: str = "") -> List[str]:
    """All leaf keys of ``cfg`` (dotted), for docs and tests."""
    cfg = cfg if cfg is not None else _C
    keys = []
    for k, v in cfg.items():
        if isinstance(v, CN):
            keys += config_keys(v, f"{prefix}{k}.")
        else:
            keys.append(prefix + k)
    return keys
