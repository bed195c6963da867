"""Training checkpoints: the official layout plus what a resume needs.

Layout: {'epoch', 'state_dict' (keys prefixed 'module.', as nn.DataParallel writes them),
'train_loss'} as the official main.py / finetune.py save, so `models.load_checkpoint` and the
official code (`nn.DataParallel(model).load_state_dict(ckpt['state_dict'])`) load them strictly.
Added for resuming: 'optimizer', 'max_disparity', 'model', 'val_metrics', and in a 'training'
entry the global optimiser step, the sampling order and its RNG state, the process count and
micro-batches, the precision and the fp16 GradScaler state.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from stereo_depth_ros.models import load_checkpoint
from stereo_depth_ros.training.errors import TrainingError

MODULE_PREFIX = "module."


def unwrap(model: nn.Module) -> nn.Module:
    """The PSMNet inside a DistributedDataParallel / DataParallel wrapper (or model itself)."""
    return model.module if hasattr(model, "module") else model


def save_checkpoint(path: Path, model: nn.Module, optimizer: torch.optim.Optimizer | None, *,
                    epoch: int, train_loss: float, val_metrics: dict | None = None,
                    training: dict | None = None) -> Path:
    """Write an official-layout checkpoint ('module.' keys) plus resume state; returns path.

    model: PSMNet, or a wrapper around it (its keys are written without the wrapper's own
    prefix, then prefixed 'module.' once). training: the resume state (TrainingState.to_dict()).
    The file is written next to `path` and renamed, so a crash never leaves half a checkpoint.
    """
    model = unwrap(model)
    state = {MODULE_PREFIX + key: value.detach().cpu()
             for key, value in model.state_dict().items()}
    payload = {"epoch": int(epoch), "state_dict": state, "train_loss": float(train_loss),
               "max_disparity": int(model.max_disparity), "model": str(model.variant),
               "val_metrics": {k: float(v) for k, v in (val_metrics or {}).items()}}
    if optimizer is not None:
        payload["optimizer"] = optimizer.state_dict()
    if training is not None:
        payload["training"] = training
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    torch.save(payload, tmp)
    tmp.replace(path)
    return path


@dataclass
class TrainingState:
    """Where a run stands after an epoch, beyond weights and optimiser.

    step: optimiser steps taken so far. order: the sampling order (sampling.GENERATOR_ORDER or
    EPOCH_SEEDED_ORDER) with its seed, global batch and shard count (processes x micro-batches);
    rng: the generator order's RNG state (None otherwise). scaler: GradScaler.state_dict()
    (fp16) or None.
    """

    step: int = 0
    order: dict = field(default_factory=dict)
    rng: dict | None = None
    precision: str = "fp32"
    world_size: int = 1
    accumulate: int = 1
    scaler: dict | None = None

    def to_dict(self) -> dict:
        """Plain containers and tensors only (readable with weights_only=True)."""
        return {"step": int(self.step), "order": dict(self.order), "rng": self.rng,
                "precision": self.precision, "world_size": int(self.world_size),
                "accumulate": int(self.accumulate), "scaler": self.scaler}

    @classmethod
    def from_dict(cls, data: dict | None) -> TrainingState:
        """The state a checkpoint holds; an older checkpoint without one gives the defaults."""
        data = data or {}
        return cls(step=int(data.get("step", 0)), order=dict(data.get("order") or {}),
                   rng=data.get("rng"), precision=str(data.get("precision", "fp32")),
                   world_size=int(data.get("world_size", 1)),
                   accumulate=int(data.get("accumulate", 1)), scaler=data.get("scaler"))


def resume_from(path: Path, model: nn.Module, optimizer: torch.optim.Optimizer
                ) -> tuple[int, TrainingState]:
    """Load model and optimizer state saved by save_checkpoint.

    Returns (the last finished epoch, the TrainingState stored with it). Every process of a
    distributed run calls this on the same file, before wrapping the model.
    """
    model = unwrap(model)
    extra = load_checkpoint(model, path)
    if "optimizer" not in extra or "epoch" not in extra:
        raise TrainingError(f"{path} has no optimizer state or epoch: it was not written by "
                            "stereo_depth_train; use --init to start from its weights instead")
    if extra.get("model") not in (None, model.variant):
        raise TrainingError(f"{path} holds a '{extra['model']}' model, --model is "
                            f"'{model.variant}'")
    try:
        optimizer.load_state_dict(extra["optimizer"])
    except (ValueError, KeyError) as error:
        raise TrainingError(f"{path}: optimizer state does not fit: {error}") from None
    return int(extra["epoch"]), TrainingState.from_dict(extra.get("training"))
