"""Training of the Parallel-Branch Network: a small explicit loop with hooks.

:class:`Trainer` owns the loop; one call of :meth:`Trainer.run_step` is one
generator step (forward, named loss terms summed in one place, backward,
optional gradient clipping, optimiser step) followed by the motion
discriminator's step(s) on the detached predicted motion against real motion
windows. Hooks (:class:`HookBase`) run before/after training, each epoch and
each step, as in detectron2's ``TrainerBase``; logging, evaluation and
checkpoints are built-in hooks.

Run folder (``OUTPUT_DIR/EXP_NAME``): ``config.yaml`` (resolved config),
``train.log``, ``metrics.jsonl`` (one JSON object per logged step or
evaluation), ``last.pt`` (latest checkpoint), ``best.pt`` (best
``TRAIN.BEST_METRIC``), ``eval_<epoch>.json``.

Checkpoints hold only tensors and plain Python values (loadable with
``torch.load(..., weights_only=True)``) and are written to a temporary file
and renamed, so a crash never leaves a half-written checkpoint. Resuming
restores model, discriminator, optimisers, schedulers, step, best metric and
the RNG states; the training batches of an epoch are a function of
``(SEED, epoch, rank)`` and batches already used in the interrupted epoch are
skipped, so a resumed run continues with the same batches and, at epoch
boundaries (or with augmentation off), the same losses as an uninterrupted one.

Multi-GPU: launched by ``torchrun`` (``WORLD_SIZE`` > 1) every process trains
on its own batches (``TRAIN.BATCH_SIZE`` per process; the mixed 2D/3D sampler
draws with replacement, seeded per rank, which plays the role of a
``DistributedSampler``); the generator is wrapped in DistributedDataParallel
and the discriminator's gradients are averaged explicitly. Rank 0 logs,
evaluates and writes checkpoints.
"""
from __future__ import annotations

import json
import logging
import math
import os
import random
import time
from pathlib import Path
from typing import Callable, Dict, Iterator, List, Mapping, Optional, Sequence

import numpy as np
import torch
import torch.distributed as dist
from torch import nn
from torch.utils.data import DataLoader, Dataset, Sampler
from tqdm import tqdm

from lib.atomic_io import atomic_write
from lib.core.evaluator import load_model_weights, read_checkpoint  # noqa: F401 (re-exported)
from lib.errors import UserError

logger = logging.getLogger(__name__)

CHECKPOINT_LAST = "last.pt"
CHECKPOINT_BEST = "best.pt"
METRICS_FILE = "metrics.jsonl"
CHECKPOINT_FORMAT = "pbn-checkpoint-v1"
OPTIMIZERS = ("adam", "adamw")
SCHEDULES = ("plateau", "cosine", "none")


class NonFiniteLossError(FloatingPointError):
    """A loss became NaN or inf; the message names the step and the terms."""


# ---------------------------------------------------------------- hooks
class HookBase:
    """Override any of these; ``self.trainer`` is set when registered."""

    trainer: "Trainer"

    def before_train(self) -> None: ...

    def after_train(self) -> None: ...

    def before_epoch(self) -> None: ...

    def after_epoch(self) -> None: ...

    def before_step(self) -> None: ...

    def after_step(self) -> None: ...


# ---------------------------------------------------------------- small utilities
def seed_everything(seed: int) -> None:
    """Seed Python, numpy and torch (all devices)."""
    random.seed(seed)
    np.random.seed(seed % (2 ** 32))
    torch.manual_seed(seed)


def get_rng_state() -> Dict[str, object]:
    """RNG states as tensors / plain values (safe for ``weights_only`` loading)."""
    _, keys, pos, has_gauss, cached = np.random.get_state()
    state = {
        "torch": torch.get_rng_state(),
        "numpy": {"keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                  "has_gauss": int(has_gauss), "cached": float(cached)},
        "python": torch.tensor(random.getstate()[1], dtype=torch.int64),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: Mapping[str, object]) -> None:
    """Inverse of :func:`get_rng_state`."""
    torch.set_rng_state(state["torch"])
    n = state["numpy"]
    np.random.set_state(("MT19937", n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["cached"]))
    random.setstate((3, tuple(int(x) for x in state["python"].tolist()), None))
    if "cuda" in state and torch.cuda.is_available() and len(state["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(state["cuda"])


def atomic_torch_save(obj: object, path: str | os.PathLike) -> Path:
    """``torch.save`` into a temporary file next to ``path``, fsync, then rename."""
    return atomic_write(path, lambda tmp: torch.save(obj, tmp))


def build_optimizer(kind: str, params, lr: float, weight_decay: float) -> torch.optim.Optimizer:
    """"adam" (L2 weight decay, VIBE) or "adamw" (decoupled weight decay)."""
    kind = kind.lower()
    if kind == "adam":
        return torch.optim.Adam(params, lr=lr, weight_decay=weight_decay)
    if kind == "adamw":
        return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)
    raise UserError(f"unknown TRAIN.OPTIM {kind!r}; choose one of {', '.join(OPTIMIZERS)}")


def build_scheduler(kind: str, optimizer: torch.optim.Optimizer, num_epochs: int, patience: int = 5,
                    factor: float = 0.1, min_lr: float = 0.0):
    """Per-epoch learning-rate schedule: "plateau", "cosine" or "none" (returns None)."""
    kind = kind.lower()
    if kind == "plateau":
        return torch.optim.lr_scheduler.ReduceLROnPlateau(optimizer, mode="min", factor=factor, patience=patience,
                                                          min_lr=min_lr)
    if kind == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=max(1, num_epochs), eta_min=min_lr)
    if kind == "none":
        return None
    raise UserError(f"unknown TRAIN.LR_SCHEDULE {kind!r}; choose one of {', '.join(SCHEDULES)}")


def _step_scheduler(sched, metric: float) -> None:
    if sched is None:
        return
    if isinstance(sched, torch.optim.lr_scheduler.ReduceLROnPlateau):
        if math.isfinite(metric):
            sched.step(metric)
    else:
        sched.step()


class _SkipBatches(Sampler[List[int]]):
    """The batches of ``batch_sampler`` after the first ``skip`` (mid-epoch resume)."""

    def __init__(self, batch_sampler, skip: int):
        self.inner, self.skip = batch_sampler, int(skip)

    def __len__(self) -> int:
        return max(0, len(self.inner) - self.skip)

    def __iter__(self) -> Iterator[List[int]]:
        for i, batch in enumerate(self.inner):
            if i >= self.skip:
                yield batch


def _datasets_of(dataset: Dataset) -> List[Dataset]:
    return list(getattr(dataset, "datasets", [dataset]))


def _reseed_augmentation(dataset: Dataset, key: Sequence[int]) -> None:
    """Reseed every member dataset's augmentation (``SequenceDataset.reseed``) from ``key``,
    so augmentation depends on (seed, epoch, rank, worker) and not on how many items a
    process happened to read before."""
    for i, ds in enumerate(_datasets_of(dataset)):
        if hasattr(ds, "reseed"):
            ds.reseed(tuple(key) + (i,))


class _WorkerInit:
    """Picklable worker_init_fn: reseeds the augmentation of the worker's dataset copy."""

    def __init__(self, key: Sequence[int]):
        self.key = tuple(key)

    def __call__(self, worker_id: int) -> None:
        info = torch.utils.data.get_worker_info()
        _reseed_augmentation(info.dataset, self.key + (worker_id + 1,))


def _to_device(batch: Mapping[str, object], device) -> Dict[str, object]:
    return {k: (v.to(device, non_blocking=True) if torch.is_tensor(v) else v) for k, v in batch.items()}


def _unwrap(model: nn.Module) -> nn.Module:
    return model.module if isinstance(model, nn.parallel.DistributedDataParallel) else model


# ---------------------------------------------------------------- distributed
def init_distributed(device_name: str = "auto"):
    """Set up torch.distributed when launched by torchrun (WORLD_SIZE > 1).

    Returns:
        (rank, world_size, device): device is ``cuda:<LOCAL_RANK>`` under DDP with
        CUDA, otherwise :func:`lib.core.config.resolve_device` of ``device_name``.
    """
    from lib.core.config import resolve_device

    world = int(os.environ.get("WORLD_SIZE", "1"))
    device = resolve_device(device_name)
    if world <= 1:
        return 0, 1, torch.device(device)
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    use_cuda = device.startswith("cuda")
    if use_cuda:
        torch.cuda.set_device(local_rank)
        device = f"cuda:{local_rank}"
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if use_cuda else "gloo")
    return dist.get_rank(), dist.get_world_size(), torch.device(device)


# ---------------------------------------------------------------- the trainer
class Trainer:
    """The PBN training loop.

    Args:
        model: the generator (:class:`lib.models.pbn.ParallelBranchNet`), on ``device``
            (wrapped in DDP here when ``world_size`` > 1).
        loss_fn: :class:`lib.core.loss.PBNLoss`; called ``loss_fn(out, batch, discriminator)``
            -> {name: weighted scalar}.
        optimizer: the generator's optimiser; ``scheduler`` its per-epoch schedule (or None).
        train_set, batch_sampler: the training dataset and a batch sampler with
            ``set_epoch`` whose ``len`` is the steps per epoch (MixedBatchSampler).
        run_dir: the run folder.
        discriminator, disc_optimizer, disc_scheduler, motion_set: the motion
            discriminator, its optimiser/schedule and the real-motion windows
            (items with ``pose`` (T, 72)); all None to train without it.
        disc_loss_fn: ``disc_loss_fn(discriminator, real (B,T,72), fake (B',T,72))``
            -> {"L_disc": scalar, ...}.
        fake_motion_fn: PBNOutput -> (B', T, 72) predicted motion for the discriminator.
        eval_fn: model -> results dict with a "metrics" mapping (rank 0 only), or None.
        num_epochs, disc_update_steps, grad_clip, log_every, eval_every,
        checkpoint_every, best_metric: see ``TRAIN``/``MODEL.DISC`` in lib/core/config.py.
        seed: base seed; rank, world_size: DDP placement.
        num_workers: data-loader workers.
        config_text: the resolved config (YAML), stored in every checkpoint.
    """

    def __init__(
        self,
        model: nn.Module,
        loss_fn: Callable,
        optimizer: torch.optim.Optimizer,
        train_set: Dataset,
        batch_sampler,
        run_dir: str | os.PathLike,
        *,
        scheduler=None,
        discriminator: Optional[nn.Module] = None,
        disc_optimizer: Optional[torch.optim.Optimizer] = None,
        disc_scheduler=None,
        motion_set: Optional[Dataset] = None,
        disc_loss_fn: Optional[Callable] = None,
        fake_motion_fn: Optional[Callable] = None,
        eval_fn: Optional[Callable[[nn.Module], Dict]] = None,
        num_epochs: int = 30,
        disc_update_steps: int = 1,
        grad_clip: float = 0.0,
        log_every: int = 50,
        eval_every: int = 1,
        checkpoint_every: int = 1,
        best_metric: str = "smpl/pa_mpjpe",
        seed: int = 1,
        rank: int = 0,
        world_size: int = 1,
        device: str | torch.device = "cpu",
        num_workers: int = 0,
        config_text: str = "",
        progress: bool = True,
    ):
        self.device = torch.device(device)
        self.rank, self.world_size = int(rank), int(world_size)
        if self.world_size > 1:
            ids = [self.device.index] if self.device.type == "cuda" else None
            # Training feeds stored features, so an image backbone (MODEL.USE_BACKBONE) gets no gradient.
            unused = getattr(model, "backbone", None) is not None
            model = nn.parallel.DistributedDataParallel(model, device_ids=ids, find_unused_parameters=unused)
        self.model = model
        self.loss_fn, self.optimizer, self.scheduler = loss_fn, optimizer, scheduler
        self.train_set, self.batch_sampler = train_set, batch_sampler
        self.run_dir = Path(run_dir)
        self.discriminator, self.disc_optimizer, self.disc_scheduler = discriminator, disc_optimizer, disc_scheduler
        self.motion_set, self.disc_loss_fn, self.fake_motion_fn = motion_set, disc_loss_fn, fake_motion_fn
        self.use_disc = all(x is not None for x in (discriminator, disc_optimizer, motion_set, disc_loss_fn,
                                                     fake_motion_fn))
        if discriminator is not None and not self.use_disc:
            raise ValueError("a discriminator needs disc_optimizer, motion_set, disc_loss_fn and fake_motion_fn")
        if self.use_disc and len(motion_set) == 0:
            raise UserError("the motion dataset has no windows (too short for DATASET.SEQ_LEN)")
        self.eval_fn = eval_fn
        self.num_epochs, self.iters_per_epoch = int(num_epochs), len(batch_sampler)
        self.max_steps = self.num_epochs * self.iters_per_epoch
        self.disc_update_steps = int(disc_update_steps)
        self.grad_clip, self.log_every = float(grad_clip), max(1, int(log_every))
        self.eval_every, self.checkpoint_every = int(eval_every), max(1, int(checkpoint_every))
        self.best_metric_name = best_metric
        self.best_metric = math.inf
        self.seed, self.num_workers = int(seed), int(num_workers)
        self.config_text, self.progress = config_text, progress
        self.step = 0  # generator steps done
        self.epoch_end_step = 0  # step at which the epoch-end hooks last ran
        self.epoch = 0  # current epoch (0-based)
        self.last_terms: Dict[str, float] = {}
        self.last_eval: Optional[Dict] = None
        self.epoch_losses: List[float] = []
        self.hooks: List[HookBase] = []
        self._motion_rng = np.random.default_rng(0)
        self._batch_size = int(getattr(batch_sampler, "batch_size", 32))
        self.register_hooks([_LoggingHook(), _EvalCheckpointHook()])

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def register_hooks(self, hooks: Sequence[HookBase]) -> None:
        for h in hooks:
            h.trainer = self
            self.hooks.append(h)

    def _call(self, name: str) -> None:
        for h in self.hooks:
            getattr(h, name)()

    # ------------------------------------------------------------ data
    def _epoch_key(self, *extra: int) -> tuple:
        return (self.seed, self.epoch, self.rank) + tuple(extra)

    def _epoch_loader(self, skip: int) -> Iterator[Dict[str, object]]:
        """The training batches of the current epoch after ``skip`` already used ones."""
        if hasattr(self.batch_sampler, "set_epoch"):
            self.batch_sampler.set_epoch(self.epoch)
        _reseed_augmentation(self.train_set, self._epoch_key(0))
        # Own generator: creating the loader must not consume the global RNG, whose state
        # (dropout) is part of the checkpoint.
        gen = torch.Generator().manual_seed(hash(self._epoch_key()) % (2 ** 62))
        loader = DataLoader(self.train_set, batch_sampler=_SkipBatches(self.batch_sampler, skip),
                            num_workers=self.num_workers, pin_memory=self.device.type == "cuda",
                            worker_init_fn=_WorkerInit(self._epoch_key()) if self.num_workers else None,
                            generator=gen, persistent_workers=False)
        return iter(loader)

    def _motion_batch(self) -> torch.Tensor:
        """(B, T, 72) real motion windows drawn with replacement."""
        idx = self._motion_rng.integers(0, len(self.motion_set), self._batch_size)
        pose = np.stack([np.asarray(self.motion_set[int(i)]["pose"], np.float32) for i in idx])
        return torch.from_numpy(pose).to(self.device)

    def _start_motion_stream(self, skip_steps: int) -> None:
        self._motion_rng = np.random.default_rng(self._epoch_key(1))
        if self.use_disc and skip_steps:  # advance as the skipped steps did
            self._motion_rng.integers(0, len(self.motion_set), (skip_steps * self.disc_update_steps,
                                                                self._batch_size))

    # ------------------------------------------------------------ one step
    def _check_finite(self, total: torch.Tensor, terms: Mapping[str, torch.Tensor], what: str) -> None:
        bad = torch.tensor([0.0 if bool(torch.isfinite(total.detach())) else 1.0], device=total.device)
        if self.world_size > 1:  # every rank stops together instead of hanging in the next all-reduce
            dist.all_reduce(bad)
        if bad.item() > 0:
            shown = ", ".join(f"{k}={float(v.detach()):.4g}" for k, v in terms.items())
            raise NonFiniteLossError(f"non-finite {what} loss at step {self.step} (epoch {self.epoch}): {shown}")

    def run_step(self, batch: Mapping[str, object]) -> Dict[str, float]:
        """One generator step and the discriminator step(s); returns the logged scalars."""
        batch = _to_device(batch, self.device)
        self.model.train()
        # ---- generator
        out = self.model(features=batch["features"].float(), joints2d=batch["joints2d"].float(),
                         return_vertices=False)
        terms = self.loss_fn(out, batch, self.discriminator if self.use_disc else None)
        total = sum(terms.values())  # the one place the loss terms are summed
        self._check_finite(total, terms, "generator")
        self.optimizer.zero_grad(set_to_none=True)
        total.backward()
        logged = {k: float(v.detach()) for k, v in terms.items()}
        logged["loss"] = float(total.detach())
        if self.grad_clip > 0:
            logged["grad_norm"] = float(nn.utils.clip_grad_norm_(self.model.parameters(), self.grad_clip))
        self.optimizer.step()
        # ---- motion discriminator: real windows vs the detached predicted motion
        if self.use_disc:
            fake = self.fake_motion_fn(out).detach()
            for _ in range(self.disc_update_steps):
                d_terms = self.disc_loss_fn(self.discriminator, self._motion_batch(), fake)
                self._check_finite(d_terms["L_disc"], d_terms, "discriminator")
                self.disc_optimizer.zero_grad(set_to_none=True)  # also drops grads L_adv left here
                d_terms["L_disc"].backward()
                if self.world_size > 1:
                    for p in self.discriminator.parameters():
                        if p.grad is not None:
                            dist.all_reduce(p.grad)
                            p.grad /= self.world_size
                self.disc_optimizer.step()
            logged.update({k: float(v.detach()) for k, v in d_terms.items()})
        logged["lr"] = float(self.optimizer.param_groups[0]["lr"])
        return logged

    # ------------------------------------------------------------ the loop
    def train(self) -> Dict[str, object]:
        """Train from ``self.step`` to ``num_epochs * iters_per_epoch``; returns a summary."""
        self._call("before_train")
        try:
            if self.step % self.iters_per_epoch == 0 and self.epoch_end_step != self.step and self.step > 0:
                # Interrupted right after an epoch's last step, before its evaluation/checkpoint.
                self.epoch = self.step // self.iters_per_epoch - 1
                self._end_epoch()
            while self.step < self.max_steps:
                self.epoch = self.step // self.iters_per_epoch
                skip = self.step % self.iters_per_epoch
                self.epoch_losses = []
                self._start_motion_stream(skip)
                self._call("before_epoch")
                bar = tqdm(total=self.iters_per_epoch, initial=skip, desc=f"epoch {self.epoch + 1}/{self.num_epochs}",
                           disable=not (self.progress and self.is_main), leave=False, dynamic_ncols=True)
                for batch in self._epoch_loader(skip):
                    self._call("before_step")
                    self.last_terms = self.run_step(batch)
                    self.epoch_losses.append(self.last_terms["loss"])
                    self.step += 1
                    bar.update(1)
                    bar.set_postfix(loss=f"{self.last_terms['loss']:.4g}")
                    self._call("after_step")
                bar.close()
                self._end_epoch()
        except KeyboardInterrupt:
            if self.is_main and self.step > 0:
                path = self.save_checkpoint(CHECKPOINT_LAST)
                logger.info("interrupted at step %d; resume with the same command (%s)", self.step, path)
            raise
        self._call("after_train")
        return {"step": self.step, "epoch": self.epoch + 1, "best_metric": self.best_metric,
                "best_metric_name": self.best_metric_name, "last_eval": self.last_eval}

    def _end_epoch(self) -> None:
        self.epoch_end_step = self.step  # set first: the hooks write it into last.pt
        self._call("after_epoch")

    # ------------------------------------------------------------ checkpoints
    def state_dict(self, full: bool = True) -> Dict[str, object]:
        """Everything a resume needs (``full``) or only the weights and bookkeeping
        (best.pt: a third of the size, no optimiser moments); tensors and plain values only."""
        state = {
            "format": CHECKPOINT_FORMAT,
            "full": bool(full),
            "model": _unwrap(self.model).state_dict(),
            "step": int(self.step),
            "epoch_end_step": int(self.epoch_end_step),
            "epoch": int(self.step // self.iters_per_epoch),  # completed epochs
            "iters_per_epoch": int(self.iters_per_epoch),
            "best_metric": float(self.best_metric),
            "best_metric_name": self.best_metric_name,
            "rng": get_rng_state(),
            "config": self.config_text,
        }
        if self.use_disc:
            state["discriminator"] = self.discriminator.state_dict()
        if full:
            state["optimizer"] = self.optimizer.state_dict()
            state["scheduler"] = self.scheduler.state_dict() if self.scheduler is not None else None
            if self.use_disc:
                state["disc_optimizer"] = self.disc_optimizer.state_dict()
                state["disc_scheduler"] = (self.disc_scheduler.state_dict() if self.disc_scheduler is not None
                                           else None)
        return state

    def save_checkpoint(self, name: str = CHECKPOINT_LAST, full: bool = True) -> Path:
        """Write ``run_dir/name`` atomically (rank 0 only); returns the path."""
        path = atomic_torch_save(self.state_dict(full), self.run_dir / name)
        logger.debug("saved %s (step %d)", path, self.step)
        return path

    def load_checkpoint(self, path: str | os.PathLike) -> None:
        """Restore a checkpoint written by :meth:`save_checkpoint` (on every rank)."""
        ckpt = read_checkpoint(path, map_location="cpu")  # load_state_dict moves tensors to their parameters
        if ckpt.get("format") != CHECKPOINT_FORMAT:
            raise UserError(f"{path}: not a pbn training checkpoint (format {ckpt.get('format')!r})")
        if not ckpt.get("full", True) or "optimizer" not in ckpt:
            raise UserError(f"{path}: holds only the model weights (like best.pt); resume from {CHECKPOINT_LAST}")
        if int(ckpt["iters_per_epoch"]) != self.iters_per_epoch:
            raise UserError(f"{path}: written with TRAIN.NUM_ITERS_PER_EPOCH {ckpt['iters_per_epoch']}, "
                            f"now {self.iters_per_epoch}; resume with the same value")
        try:
            _unwrap(self.model).load_state_dict(ckpt["model"])
        except RuntimeError as err:
            raise UserError(f"{path}: does not fit the configured model ({str(err).splitlines()[0]})") from None
        self.optimizer.load_state_dict(ckpt["optimizer"])
        if self.scheduler is not None and ckpt.get("scheduler") is not None:
            self.scheduler.load_state_dict(ckpt["scheduler"])
        if self.use_disc:
            if "discriminator" not in ckpt:
                raise UserError(f"{path}: has no discriminator state but the config trains one (LOSS.MOTION_W > 0)")
            self.discriminator.load_state_dict(ckpt["discriminator"])
            self.disc_optimizer.load_state_dict(ckpt["disc_optimizer"])
            if self.disc_scheduler is not None and ckpt.get("disc_scheduler") is not None:
                self.disc_scheduler.load_state_dict(ckpt["disc_scheduler"])
        self.step = int(ckpt["step"])
        self.epoch_end_step = int(ckpt.get("epoch_end_step", self.step))
        self.epoch = self.step // self.iters_per_epoch
        self.best_metric = float(ckpt["best_metric"])
        set_rng_state(ckpt["rng"])
        logger.info("resumed from %s at step %d (epoch %d)", path, self.step, self.epoch + 1)

    def resume_or_start(self, resume: str = "") -> bool:
        """Resume from ``resume`` or, when empty, from ``run_dir/last.pt`` if present.
        Returns True when a checkpoint was loaded."""
        path = Path(resume) if resume else self.run_dir / CHECKPOINT_LAST
        if resume and not path.is_file():
            raise UserError(f"TRAIN.RESUME: checkpoint not found: {path}")
        if not path.is_file():
            return False
        self.load_checkpoint(path)
        return True

    # ------------------------------------------------------------ log file
    def write_metrics(self, row: Mapping[str, object]) -> None:
        """Append one JSON line to ``run_dir/metrics.jsonl`` (rank 0)."""
        if not self.is_main:
            return
        self.run_dir.mkdir(parents=True, exist_ok=True)
        with open(self.run_dir / METRICS_FILE, "a", encoding="utf-8") as fh:
            fh.write(json.dumps(_finite(dict(row))) + "\n")

    def trim_metrics(self) -> None:
        """After a resume: drop rows logged after the checkpoint's step (they will be redone)."""
        path = self.run_dir / METRICS_FILE
        if not self.is_main or not path.is_file():
            return
        from lib.atomic_io import atomic_write_bytes

        keep = [ln for ln in path.read_text(encoding="utf-8").splitlines()
                if ln.strip() and json.loads(ln).get("step", 0) <= self.step]
        atomic_write_bytes(path, ("\n".join(keep) + ("\n" if keep else "")).encode("utf-8"))


def _finite(x):
    if isinstance(x, dict):
        return {k: _finite(v) for k, v in x.items()}
    if isinstance(x, float) and not math.isfinite(x):
        return None
    return x


class _LoggingHook(HookBase):
    """Every ``log_every`` steps: a log line and a metrics.jsonl row (means since the last row)."""

    def before_train(self) -> None:
        self._sums: Dict[str, float] = {}
        self._count = 0
        self._t0 = time.perf_counter()

    def after_step(self) -> None:
        t = self.trainer
        for k, v in t.last_terms.items():
            self._sums[k] = self._sums.get(k, 0.0) + v
        self._count += 1
        if t.step % t.log_every and t.step != t.max_steps:
            return
        mean = {k: v / self._count for k, v in self._sums.items()}
        mean["lr"] = t.last_terms.get("lr", float("nan"))
        sec = (time.perf_counter() - self._t0) / self._count
        if t.is_main:
            terms = " ".join(f"{k} {v:.4g}" for k, v in mean.items() if k not in ("lr", "loss"))
            logger.info("epoch %d step %d/%d loss %.4g | %s | lr %.2e | %.3f s/it", t.epoch + 1, t.step,
                        t.max_steps, mean.get("loss", float("nan")), terms, mean["lr"], sec)
            t.write_metrics({"step": t.step, "epoch": t.epoch + 1, "time_per_iter": sec, **mean})
        self._sums, self._count, self._t0 = {}, 0, time.perf_counter()


class _EvalCheckpointHook(HookBase):
    """At the end of an epoch: evaluate (rank 0), step the schedules, keep best.pt, write last.pt."""

    def after_epoch(self) -> None:
        t = self.trainer
        epoch_done = t.step // t.iters_per_epoch  # 1-based number of the finished epoch
        last = t.step >= t.max_steps
        metric = math.nan
        if t.eval_fn is not None and t.eval_every > 0 and (epoch_done % t.eval_every == 0 or last):
            if t.is_main:
                # Evaluation must not move the training RNG (its data loader draws a seed).
                devices = [t.device] if t.device.type == "cuda" else []
                with torch.random.fork_rng(devices=devices):
                    results = t.eval_fn(_unwrap(t.model))
                t.last_eval = results
                metric = float(results["metrics"].get(t.best_metric_name, math.nan))
                if t.best_metric_name not in results["metrics"]:
                    logger.warning("TRAIN.BEST_METRIC %r is not among the evaluation results (%s)",
                                   t.best_metric_name, ", ".join(results["metrics"]))
                t.write_metrics({"step": t.step, "epoch": epoch_done, "eval": results["metrics"]})
                from lib.core.evaluator import format_table, write_results

                logger.info("evaluation after epoch %d:\n%s", epoch_done, format_table(results))
                write_results(t.run_dir / f"eval_{epoch_done:03d}.json", results, {"step": t.step})
            if t.world_size > 1:  # everyone steps the plateau schedule with the same number
                m = torch.tensor([metric], device=t.device, dtype=torch.float64)
                dist.broadcast(m, 0)
                metric = float(m.item())
        # The plateau schedule follows the evaluation metric; without one, the mean training loss.
        if t.eval_fn is not None and t.eval_every > 0:
            sched_metric = metric
        else:
            sched_metric = float(np.mean(t.epoch_losses or [math.nan]))
            if t.world_size > 1:  # the same number on every rank, or their learning rates drift apart
                m = torch.tensor([sched_metric], device=t.device, dtype=torch.float64)
                dist.all_reduce(m)
                sched_metric = float(m.item()) / t.world_size
        _step_scheduler(t.scheduler, sched_metric)
        _step_scheduler(t.disc_scheduler, sched_metric)
        improved = math.isfinite(metric) and metric < t.best_metric
        if improved:
            t.best_metric = metric
        if t.is_main:
            if improved:
                t.save_checkpoint(CHECKPOINT_BEST, full=False)
                logger.info("epoch %d: %s %.2f (best so far) -> %s", epoch_done, t.best_metric_name, metric,
                            t.run_dir / CHECKPOINT_BEST)
            if epoch_done % t.checkpoint_every == 0 or last or improved:
                t.save_checkpoint(CHECKPOINT_LAST)
        if t.world_size > 1:
            dist.barrier()


# ---------------------------------------------------------------- from the config
def run_dir_of(cfg) -> Path:
    """``OUTPUT_DIR/EXP_NAME``."""
    return Path(cfg.OUTPUT_DIR) / cfg.EXP_NAME


def build_trainer(cfg, progress: bool = True) -> Trainer:
    """Everything :func:`train` needs from the config: body model, model, losses,
    datasets, optimisers, schedules, evaluation; DDP set up when launched by torchrun."""
    from lib.body_models import load_body_model
    from lib.core.config import save_config
    from lib.core.evaluator import evaluate
    from lib.core.loss import PBNLoss, discriminator_loss, motion_for_discriminator
    from lib.dataset import MotionWindowDataset, SequenceDataset, build_mixed_train_set
    from lib.models.discriminator import MotionDiscriminator, build_discriminator_optimizer
    from lib.models.pbn import ParallelBranchNet

    rank, world, device = init_distributed(cfg.DEVICE)
    seed_everything(cfg.SEED + rank)
    run_dir = run_dir_of(cfg)
    if rank == 0:
        run_dir.mkdir(parents=True, exist_ok=True)
        save_config(cfg, run_dir)
    t = cfg.TRAIN
    body_model = load_body_model(cfg.BODY_MODEL.KIND, model_dir=cfg.BODY_MODEL.DIR or None,
                                 root=cfg.PATHS.BODY_MODEL_ROOT)
    model = ParallelBranchNet.from_config(cfg, body_model).to(device)
    loss_fn = PBNLoss.from_config(cfg)
    optimizer = build_optimizer(t.OPTIM, model.parameters(), t.LR, t.WD)
    scheduler = build_scheduler(t.LR_SCHEDULE, optimizer, t.NUM_EPOCHS, t.LR_PATIENCE, t.LR_FACTOR, t.MIN_LR)

    train_set, sampler = build_mixed_train_set(cfg)
    sampler.seed = cfg.SEED + 100_003 * rank  # different batches on every process

    disc = disc_opt = disc_sched = motion_set = None
    if cfg.LOSS.MOTION_W > 0 and cfg.DATASET.MOTION:
        motion_set = MotionWindowDataset.from_config(cfg)
        disc = MotionDiscriminator.from_config(cfg).to(device)
        disc_opt = build_discriminator_optimizer(cfg, disc)
        disc_sched = build_scheduler(t.LR_SCHEDULE, disc_opt, t.NUM_EPOCHS, t.LR_PATIENCE, t.LR_FACTOR, t.MIN_LR)
    elif cfg.LOSS.MOTION_W > 0:
        logger.info("DATASET.MOTION is empty: training without the motion discriminator")

    eval_fn = None
    if t.EVAL_EVERY > 0 and cfg.DATASET.EVAL_SET and rank == 0:
        eval_set = SequenceDataset.from_config(cfg, cfg.DATASET.EVAL_SET, cfg.DATASET.EVAL_SPLIT, train=False)
        e = cfg.EVAL

        def eval_fn(net: nn.Module) -> Dict:
            return evaluate(net, eval_set, net.body_model, batch_size=e.BATCH_SIZE, device=device,
                            max_windows=e.MAX_WINDOWS, num_workers=0, progress=progress)
    elif t.EVAL_EVERY > 0 and cfg.DATASET.EVAL_SET:
        eval_fn = _no_eval  # other ranks: a placeholder so everyone takes the same path

    adv_iters, motion_w = cfg.LOSS.ADV_ITERS, cfg.LOSS.MOTION_W
    trainer = Trainer(
        model, loss_fn, optimizer, train_set, sampler, run_dir,
        scheduler=scheduler, discriminator=disc, disc_optimizer=disc_opt, disc_scheduler=disc_sched,
        motion_set=motion_set,
        disc_loss_fn=(lambda d, real, fake: discriminator_loss(d, real, fake, motion_w)) if disc is not None else None,
        fake_motion_fn=(lambda out: motion_for_discriminator(out.thetas, adv_iters)) if disc is not None else None,
        eval_fn=eval_fn, num_epochs=t.NUM_EPOCHS, disc_update_steps=cfg.MODEL.DISC.UPDATE_STEPS,
        grad_clip=t.GRAD_CLIP, log_every=t.LOG_EVERY, eval_every=t.EVAL_EVERY, checkpoint_every=t.CHECKPOINT_EVERY,
        best_metric=t.BEST_METRIC, seed=cfg.SEED, rank=rank, world_size=world, device=device,
        num_workers=cfg.NUM_WORKERS, config_text=cfg.dump(), progress=progress,
    )
    return trainer


def _no_eval(net: nn.Module) -> Dict:  # pragma: no cover - only on ranks > 0, which never call it
    return {"metrics": {}}


def train(cfg, progress: bool = True) -> Dict[str, object]:
    """Build, resume (``TRAIN.RESUME`` or the run folder's last.pt) and train; returns a summary."""
    trainer = build_trainer(cfg, progress=progress)
    n_params = sum(p.numel() for p in _unwrap(trainer.model).parameters())
    if trainer.is_main:
        logger.info("run folder %s | device %s | %d process(es) | %.1f M parameters | %d epochs x %d steps",
                    trainer.run_dir, trainer.device, trainer.world_size, n_params / 1e6, trainer.num_epochs,
                    trainer.iters_per_epoch)
    if trainer.resume_or_start(cfg.TRAIN.RESUME):
        trainer.trim_metrics()
    try:
        return trainer.train()
    finally:
        if trainer.world_size > 1 and dist.is_initialized():
            dist.destroy_process_group()
