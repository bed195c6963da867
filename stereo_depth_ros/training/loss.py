"""The official PSMNet training loss: masks per dataset and the weighted smooth-L1."""

from __future__ import annotations

import torch
import torch.nn.functional as F

LOSS_WEIGHTS = (0.5, 0.7, 1.0)
"""Weights of the stacked-hourglass outputs pred1, pred2, pred3 (official main.py)."""

MASK_MODES = ("gt>0", "gt<max", "both")


def mask_mode_for(dataset: str) -> str:
    """Official loss mask per dataset: "gt>0" (KITTI), "gt<max" (SceneFlow) or "both"."""
    if dataset.startswith("kitti"):
        return "gt>0"
    if dataset == "sceneflow":
        return "gt<max"
    return "both"


def loss_mask(gt: torch.Tensor, mode: str, max_disparity: float) -> torch.Tensor:
    """Bool mask of the pixels that enter the loss; gt: (B, H, W) px, NaN = no ground truth."""
    mask = torch.isfinite(gt)
    if mode in ("gt>0", "both"):
        mask &= gt > 0
    if mode in ("gt<max", "both"):
        mask &= gt < max_disparity
    if mode not in MASK_MODES:
        raise ValueError(f"unknown mask mode {mode!r}")
    return mask


def as_outputs(outputs) -> tuple[torch.Tensor, ...]:
    """The model's training output as a tuple: (pred1, pred2, pred3) or (pred,) for basic."""
    return (outputs,) if isinstance(outputs, torch.Tensor) else tuple(outputs)


def loss_weights_for(outputs) -> tuple[float, ...]:
    """LOSS_WEIGHTS for stackhourglass's three outputs, (1.0,) for basic's one."""
    return (1.0,) if isinstance(outputs, torch.Tensor) else LOSS_WEIGHTS


def output_losses(outputs, gt: torch.Tensor, mask: torch.Tensor) -> list[torch.Tensor]:
    """Smooth-L1 (beta 1), averaged over the masked px, of each output.

    outputs: one (B, 1, H, W) or (B, H, W) tensor px, or a sequence of them. gt: (B, H, W) px.
    mask: (B, H, W) bool, not empty. Returns one float32 scalar per output, in output order.
    """
    target = gt[mask]
    terms = []
    for output in as_outputs(outputs):
        if output.dim() == 4:
            output = output.squeeze(1)
        terms.append(F.smooth_l1_loss(output[mask], target, reduction="mean"))
    return terms


def weighted_sum(terms, weights) -> torch.Tensor:
    """sum(weight * term), accumulated from a zero scalar in output order."""
    if len(terms) != len(weights):
        raise ValueError(f"{len(terms)} outputs but {len(weights)} loss weights")
    total = terms[0].new_zeros(())
    for weight, term in zip(weights, terms):
        total = total + weight * term
    return total


def psmnet_loss(outputs, gt: torch.Tensor, mask: torch.Tensor,
                weights: tuple[float, ...] = LOSS_WEIGHTS) -> torch.Tensor:
    """Weighted smooth-L1 over masked px.

    outputs: (pred1, pred2, pred3) from stackhourglass in train mode, or one tensor (basic);
    each (B, 1, H, W) or (B, H, W) px. gt: (B, H, W) px. mask: (B, H, W) bool, not empty.
    """
    if isinstance(outputs, torch.Tensor):
        weights = (1.0,)
    if len(as_outputs(outputs)) != len(weights):
        raise ValueError(f"{len(as_outputs(outputs))} outputs but {len(weights)} loss weights")
    return weighted_sum(output_losses(outputs, gt, mask), weights)
