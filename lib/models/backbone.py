"""The HMR/SPIN image backbone (ResNet-50) and SPIN checkpoint loading.

The backbone turns ImageNet-normalised 224x224 person crops into one 2048-d
feature per crop (global average pool of ResNet-50's last stage). Its module
names follow torchvision's ResNet, which is also SPIN's layout, so a SPIN
checkpoint maps onto it by prefix only. Weights are never downloaded: the
backbone starts random and is initialised from a user-supplied
``spin_model_checkpoint.pth.tar`` with :func:`load_spin_checkpoint`.
"""
from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Tuple

import torch
from torch import nn
from torchvision.models import resnet50

from lib.errors import MissingAssetError, UserError

logger = logging.getLogger(__name__)

CROP_SIZE = 224  # pixels, side of the square crop the backbone sees
IMAGENET_MEAN = (0.485, 0.456, 0.406)  # RGB, images scaled to [0, 1]
IMAGENET_STD = (0.229, 0.224, 0.225)
FEATURE_DIM = 2048

# Top-level module names of each part in SPIN's HMR state dict.
_SPIN_BACKBONE = ("conv1", "bn1", "layer1", "layer2", "layer3", "layer4")
_SPIN_REGRESSOR = ("fc1", "fc2", "decpose", "decshape", "deccam", "init_pose", "init_shape", "init_cam")
MEAN_PARAM_BUFFERS = ("init_pose", "init_shape", "init_cam")


class ResNetBackbone(nn.Module):
    """ResNet-50 trunk in torchvision's layout without the classifier.

    ``forward(images)``: (N, 3, 224, 224) ImageNet-normalised RGB -> (N, 2048).
    """

    def __init__(self):
        super().__init__()
        net = resnet50(weights=None)  # never a download: SPIN weights come from load_spin_checkpoint
        self.conv1, self.bn1, self.relu, self.maxpool = net.conv1, net.bn1, net.relu, net.maxpool
        self.layer1, self.layer2, self.layer3, self.layer4 = net.layer1, net.layer2, net.layer3, net.layer4
        self.avgpool = net.avgpool

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        if images.dim() != 4 or images.shape[1:] != (3, CROP_SIZE, CROP_SIZE):
            raise UserError(
                f"backbone: images must be (N, 3, {CROP_SIZE}, {CROP_SIZE}) normalised crops, got {tuple(images.shape)}"
            )
        x = self.maxpool(self.relu(self.bn1(self.conv1(images))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return torch.flatten(self.avgpool(x), 1)  # (N, 2048)


def normalize_images(images: torch.Tensor) -> torch.Tensor:
    """(..., 3, H, W) RGB in [0, 1] -> ImageNet-normalised, same shape."""
    mean = torch.as_tensor(IMAGENET_MEAN, dtype=images.dtype, device=images.device)[:, None, None]
    std = torch.as_tensor(IMAGENET_STD, dtype=images.dtype, device=images.device)[:, None, None]
    return (images - mean) / std


def split_spin_state_dict(state: Dict[str, torch.Tensor]) -> Tuple[Dict[str, Dict[str, torch.Tensor]], List[str]]:
    """Sort SPIN HMR keys into our parts.

    Returns ``({"backbone": {...}, "regressor": {...}}, unused_keys)``: keys keep
    their names inside the part (SPIN and pbn share torchvision's and HMR's
    names); a DataParallel ``module.`` prefix is removed first.
    """
    parts: Dict[str, Dict[str, torch.Tensor]] = {"backbone": {}, "regressor": {}}
    unused = []
    for key, value in state.items():
        name = key[len("module."):] if key.startswith("module.") else key
        top = name.split(".", 1)[0]
        if top in _SPIN_BACKBONE:
            parts["backbone"][name] = value
        elif top in _SPIN_REGRESSOR:
            parts["regressor"][name] = value
        else:
            unused.append(key)
    return parts, unused


@dataclass
class SpinLoadReport:
    """What :func:`load_spin_checkpoint` did; keys are part-qualified (``backbone.conv1.weight``)."""

    loaded: List[str] = field(default_factory=list)
    missing: List[str] = field(default_factory=list)  # in the model, absent from the checkpoint
    unexpected: List[str] = field(default_factory=list)  # in the checkpoint, with no place in the model
    skipped: List[str] = field(default_factory=list)  # present and matching, deliberately not loaded


def _targets(model: nn.Module) -> Dict[str, nn.Module]:
    """The parts of ``model`` a SPIN checkpoint can fill."""
    if isinstance(model, ResNetBackbone):
        return {"backbone": model}
    targets = {}
    for part in ("backbone", "regressor"):
        sub = getattr(model, part, None)
        if isinstance(sub, nn.Module):
            targets[part] = sub
    if not targets and all(hasattr(model, n) for n in ("fc1", "decpose")):
        targets["regressor"] = model  # a bare HMR regressor
    if not targets:
        raise UserError(f"SPIN checkpoint: {type(model).__name__} has no backbone or regressor to load into")
    return targets


def load_spin_checkpoint(
    path: str | os.PathLike,
    model: nn.Module,
    load_mean_params: bool = False,
) -> SpinLoadReport:
    """Initialise the backbone and/or HMR regressor of ``model`` from a SPIN checkpoint.

    Args:
        path: ``spin_model_checkpoint.pth.tar``; its state dict is under ``'model'``
            (a bare state dict is accepted too).
        model: a :class:`ResNetBackbone`, an HMR regressor, or any module with
            ``backbone`` / ``regressor`` attributes (e.g. ``ParallelBranchNet``).
        load_mean_params: also copy SPIN's ``init_pose/init_shape/init_cam``
            buffers. Off by default so the regressor keeps the mean parameters
            of the active body model (for SMPL they are the same numbers).
    Returns:
        :class:`SpinLoadReport`; missing and unexpected keys are also logged.
    Raises:
        MissingAssetError: no file at ``path``.
        UserError: unreadable file, no state dict, or a tensor whose shape differs
            from the model's (the message names the key and both shapes).
    """
    path = Path(path)
    if not path.is_file():
        raise MissingAssetError(f"SPIN checkpoint not found: {path} (set PATHS.SPIN_CHECKPOINT or leave it empty)")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # corrupt file or non-tensor pickle content
        raise UserError(f"{path}: cannot read as a weights-only torch checkpoint: {str(err).splitlines()[0]}") from None
    state = ckpt.get("model", ckpt) if isinstance(ckpt, dict) else None
    if not isinstance(state, dict) or not any(torch.is_tensor(v) for v in state.values()):
        raise UserError(f"{path}: no state dict found (expected a dict with a 'model' entry of tensors)")

    parts, unused = split_spin_state_dict(state)
    report = SpinLoadReport(unexpected=list(unused))
    targets = _targets(model)
    for part, values in parts.items():
        if part not in targets:
            report.unexpected += [f"{part}.{k}" for k in values]
            continue
        module = targets[part]
        own = module.state_dict()
        to_load = {}
        mismatched = []
        for key, value in values.items():
            if key not in own:
                report.unexpected.append(f"{part}.{key}")
            elif own[key].shape != value.shape:
                mismatched.append(f"{part}.{key}: checkpoint {tuple(value.shape)} vs model {tuple(own[key].shape)}")
            elif key in MEAN_PARAM_BUFFERS and not load_mean_params:
                report.skipped.append(f"{part}.{key}")
            else:
                to_load[key] = value
        if mismatched:
            more = f" (and {len(mismatched) - 3} more)" if len(mismatched) > 3 else ""
            raise UserError(f"{path}: shape mismatch loading SPIN weights: {'; '.join(mismatched[:3])}{more}")
        module.load_state_dict(to_load, strict=False)
        report.loaded += [f"{part}.{k}" for k in to_load]
        report.missing += [f"{part}.{k}" for k in own if k not in values]

    logger.info("SPIN checkpoint %s: loaded %d tensors into %s", path, len(report.loaded), ", ".join(targets))
    if report.missing:
        logger.warning("SPIN checkpoint: %d model tensors not in the checkpoint: %s",
                       len(report.missing), ", ".join(report.missing[:10]))
    if report.unexpected:
        logger.warning("SPIN checkpoint: %d checkpoint tensors unused: %s",
                       len(report.unexpected), ", ".join(report.unexpected[:10]))
    return report
