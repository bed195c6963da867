"""One epoch of optimiser steps, and validation on full images.

A step takes one batch of this process, splits it into `accumulate` micro-batches (strided, see
sampling.micro_batches), runs forward and backward on each and then one optimiser step. The
loss of a step is the official smooth-L1 averaged over every masked pixel of the global batch
(all processes, all micro-batches): each micro-batch's mean is weighted by its share of the
masked pixels, and multiplied by world_size because DistributedDataParallel averages gradients
over processes. In one process with one micro-batch the weight is exactly 1 and the step is the
official one, operation for operation.
"""

from __future__ import annotations

import contextlib
import math
import time
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

from stereo_depth_ros.core.metrics import MetricCounts, count_metrics
from stereo_depth_ros.core.padding import InputPadder
from stereo_depth_ros.training.data import normalize_image
from stereo_depth_ros.training.distributed import (SINGLE_PROCESS, DistContext, all_reduce_sum,
                                                   gather_objects)
from stereo_depth_ros.training.errors import TrainingError
from stereo_depth_ros.training.loss import (as_outputs, loss_mask, loss_weights_for,
                                            output_losses, weighted_sum)
from stereo_depth_ros.training.sampling import micro_batches

VAL_METRICS = ("epe", "bad_1", "bad_3", "d1_all")


@dataclass
class StepRecord:
    """One optimiser step as every process sees it (values reduced over all processes).

    iteration: 1-based batch number in the epoch (skipped batches count). loss: the step's
    total loss. output_losses: the smooth-L1 of each output (pred1..3, or the one of basic).
    pairs: pairs in the global batch. seconds: wall time since the previous step ended
    (data loading included). example: this process's first pair of the step's last
    micro-batch, (left (3, H, W) normalised, final prediction (H, W) px, gt (H, W) px), detached
    on the training device, for image summaries.
    """

    iteration: int
    loss: float
    output_losses: tuple[float, ...]
    pairs: int
    seconds: float
    example: tuple | None = None


@dataclass
class EpochStats:
    """Mean loss and counts of one epoch; losses: per-iteration values."""

    mean_loss: float
    iterations: int
    skipped: int
    seconds: float
    losses: list[float]
    output_losses: list[float] = field(default_factory=list)
    pairs: int = 0

    @property
    def pairs_per_second(self) -> float:
        """Global training pairs per second of the epoch (NaN for an empty epoch)."""
        return self.pairs / self.seconds if self.pairs and self.seconds > 0 else math.nan


def _no_sync(model: nn.Module, last: bool):
    """DistributedDataParallel.no_sync() for all but the last micro-batch of a step."""
    if last or not hasattr(model, "no_sync"):
        return contextlib.nullcontext()
    return model.no_sync()


def _backward_micro_batches(model: nn.Module, chunks, counts: list[int], global_count: float,
                            autocast, context: DistContext, scaler):
    """Forward and backward of each micro-batch of one step (gradients accumulate), each loss
    weighted by its share of the global batch's masked pixels (see the module docstring).

    Returns ([total, output 1, output 2, ...] pixel-weighted float64 on this process, the last
    micro-batch's outputs, (its left, its gt))."""
    reduced = None
    for j, (left_j, right_j, gt_j, mask_j) in enumerate(chunks):
        with _no_sync(model, j == len(chunks) - 1):
            with autocast():
                outputs = model(left_j, right_j)
            if counts[j]:
                terms = output_losses(outputs, gt_j, mask_j)
                loss = weighted_sum(terms, loss_weights_for(outputs))
                share = counts[j] / global_count
            else:                        # no gt here, but DDP needs every gradient
                terms = [output.new_zeros(()) for output in as_outputs(outputs)]
                loss = sum(output.sum() for output in as_outputs(outputs)) * 0.0
                share = 0.0
            scale = share * context.world_size
            backward_loss = loss if scale == 1.0 else loss * scale
            (scaler.scale(backward_loss) if scaler is not None else backward_loss).backward()
            values = torch.stack([loss.detach(), *(t.detach() for t in terms)]).double()
            reduced = values * share if reduced is None else reduced + values * share
    return reduced, outputs, (left_j, gt_j)


def train_one_epoch(model: nn.Module, loader, optimizer: torch.optim.Optimizer, *,
                    device: torch.device, max_disparity: float, mask_mode: str,
                    max_iterations: int | None = None, precision=None,
                    accumulate: int = 1, context: DistContext = SINGLE_PROCESS, scaler=None,
                    on_step=None) -> EpochStats:
    """One pass over `loader` ((left, right, gt) batches of this process); returns EpochStats.

    model: PSMNet, or DistributedDataParallel around it. precision: a precision.Precision (None:
    fp32). accumulate: micro-batches per step. scaler: a GradScaler (fp16) or None.
    Batches whose mask is empty on every process are skipped (counted in `skipped`).
    on_step: optional callable (StepRecord), called after every optimiser step.
    """
    model.train()
    autocast = precision.autocast if precision is not None else contextlib.nullcontext
    losses: list[float] = []
    output_sums: list[float] = []
    skipped = 0
    pairs = 0
    start = last_end = time.perf_counter()
    for iteration, (left, right, gt) in enumerate(loader, start=1):
        if max_iterations is not None and iteration > max_iterations:
            break
        left, right, gt = left.to(device), right.to(device), gt.to(device)
        mask = loss_mask(gt, mask_mode, max_disparity)
        chunks = micro_batches((left, right, gt, mask), accumulate)
        counts = [int(chunk[3].sum()) for chunk in chunks]
        global_count = all_reduce_sum(
            torch.tensor([float(sum(counts))], dtype=torch.float64, device=device), context)
        if not float(global_count[0]):
            skipped += 1
            continue
        optimizer.zero_grad(set_to_none=True)
        reduced, outputs, (left_j, gt_j) = _backward_micro_batches(
            model, chunks, counts, float(global_count[0]), autocast, context, scaler)
        all_reduce_sum(reduced, context)
        step_loss = float(reduced[0])
        if not math.isfinite(step_loss):
            raise TrainingError(f"loss became {step_loss} at iteration {iteration}; lower --lr")
        if scaler is not None:
            scaler.step(optimizer)
            scaler.update()
        else:
            optimizer.step()
        now = time.perf_counter()
        final = as_outputs(outputs)[-1].detach()
        example = (left_j[0].detach(), final.reshape(final.shape[0], *final.shape[-2:])[0],
                   gt_j[0])
        record = StepRecord(iteration, step_loss, tuple(float(v) for v in reduced[1:]),
                            len(left) * context.world_size, now - last_end, example)
        last_end = now
        losses.append(step_loss)
        output_sums = ([a + b for a, b in zip(output_sums, record.output_losses)]
                       if output_sums else list(record.output_losses))
        pairs += record.pairs
        if on_step is not None:
            on_step(record)
    mean_loss = float(np.mean(losses)) if losses else math.nan
    output_means = [value / len(losses) for value in output_sums]
    return EpochStats(mean_loss, len(losses), skipped, time.perf_counter() - start, losses,
                      output_means, pairs)


@torch.no_grad()
def predict_disparity(model: nn.Module, left: np.ndarray, right: np.ndarray,
                      device: torch.device, autocast=None) -> np.ndarray:
    """Eval-mode disparity of one full pair: (H, W, 3) uint8 RGB -> (H, W) float32 px.

    Pads top/right to a multiple of 16 (>= 256 px) as the official test scripts do, crops back.
    autocast: a context factory for the forward pass (None: fp32).
    """
    model.eval()
    padder = InputPadder(left.shape[:2])
    left_t, right_t = (padder.pad(normalize_image(image)[None]).to(device)
                       for image in (left, right))
    with (autocast or contextlib.nullcontext)():
        output = model(left_t, right_t)
    return padder.unpad(output[0, 0]).float().cpu().numpy().astype(np.float32)


def validate(model: nn.Module, dataset, *, device: torch.device, indices: list[int] | None = None,
             names: tuple[str, ...] = VAL_METRICS, context: DistContext = SINGLE_PROCESS,
             autocast=None, on_prediction=None) -> dict[str, float]:
    """Pooled metrics (core.metrics, pixel-weighted) of `model` on full images of `dataset`.

    With several processes each predicts every world_size-th image and the counts are pooled,
    so every process returns the same metrics. on_prediction: optional callable (sample,
    prediction (H, W) float32 px), called for the images this process predicts.
    Returns {metric: value} on the "all" ground truth, plus `<metric>_noc` where the dataset has
    non-occluded ground truth.
    """
    indices = list(range(len(dataset))) if indices is None else list(indices)
    counts = {"all": MetricCounts(), "noc": MetricCounts()}
    for index in indices[context.rank::context.world_size]:
        sample = dataset[index]
        if sample.disparity is None:
            raise TrainingError(f"{sample.name}: no ground truth to validate against")
        prediction = predict_disparity(model, sample.left, sample.right, device, autocast)
        if on_prediction is not None:
            on_prediction(sample, prediction)
        counts["all"] = counts["all"] + count_metrics(prediction, sample.disparity)
        if sample.disparity_noc is not None:
            counts["noc"] = counts["noc"] + count_metrics(prediction, sample.disparity_noc)
    pooled = {"all": MetricCounts(), "noc": MetricCounts()}
    for part in gather_objects(counts, context):
        pooled = {key: pooled[key] + part[key] for key in pooled}
    metrics = pooled["all"].finalize(names)
    if pooled["noc"].n_valid:
        metrics.update({f"{k}_noc": v for k, v in pooled["noc"].finalize(names).items()})
    return metrics
