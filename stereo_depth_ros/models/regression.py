"""Cost -> disparity: trilinear upsampling, softmax over disparity, soft-argmin, confidence and
uncertainty (the standard deviation of the same softmax)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from stereo_depth_ros.models.layers import upsample

CONFIDENCE_RADIUS_PX = 2.0
"""Half-width (px) of the window around the regressed disparity whose mass is the confidence."""


def disparity_regression(probability: torch.Tensor) -> torch.Tensor:
    """Soft-argmin: expected disparity under a distribution over integer levels 0 .. D-1.

    probability: (B, D, H, W) float, sums to 1 over dim 1.
    Returns (B, 1, H, W) of the same dtype, px in [0, D-1].
    The level values are made on the input's device and dtype (no .cuda(), not a buffer).
    """
    levels = torch.arange(probability.shape[1], device=probability.device,
                          dtype=probability.dtype).view(1, -1, 1, 1)
    return torch.sum(probability * levels, dim=1, keepdim=True)


def window_confidence(probability: torch.Tensor, disparity: torch.Tensor,
                      radius: float = CONFIDENCE_RADIUS_PX) -> torch.Tensor:
    """Probability mass of the integer levels d with |d - disparity| <= radius.

    probability: (B, D, H, W) float, sums to 1 over dim 1.
    disparity: (B, 1, H, W) float px, normally the soft-argmin of `probability`.
    Returns (B, 1, H, W) float in [0, 1]: 1 for a sharp unimodal match, low for a flat or
    multi-modal distribution (textureless or occluded pixels).
    Only the floor(2*radius)+1 levels around each pixel are gathered, so no extra volume of the
    size of `probability` is allocated.
    """
    num_levels = probability.shape[1]
    width = int(2 * radius) + 1
    first = torch.ceil(disparity - radius)                              # (B, 1, H, W)
    offsets = torch.arange(width, device=disparity.device,
                           dtype=disparity.dtype).view(1, -1, 1, 1)
    candidates = first + offsets                                        # (B, width, H, W)
    inside = ((candidates <= disparity + radius) & (candidates >= 0)
              & (candidates <= num_levels - 1))
    index = candidates.clamp(0, num_levels - 1).long()
    mass = torch.gather(probability, 1, index) * inside
    return mass.sum(dim=1, keepdim=True).clamp_(0.0, 1.0)


def disparity_std(probability: torch.Tensor, disparity: torch.Tensor) -> torch.Tensor:
    """Standard deviation (px) of the distribution whose mean is `disparity`.

    probability: (B, D, H, W) float, sums to 1 over dim 1 (levels 0 .. D-1 px).
    disparity: (B, 1, H, W) float px, the soft-argmin (mean) of `probability`.
    Returns (B, 1, H, W) float, px >= 0: sqrt(sum_d p(d) (d - mean)^2), computed about the mean
    (not E[d^2] - mean^2, which loses the small variances of sharp matches to rounding).
    """
    levels = torch.arange(probability.shape[1], device=probability.device,
                          dtype=probability.dtype).view(1, -1, 1, 1)
    variance = torch.sum(probability * (levels - disparity).square(), dim=1, keepdim=True)
    return variance.clamp_(min=0.0).sqrt_()


def regress_disparity(cost: torch.Tensor, max_disparity: int, size: tuple[int, int], *,
                      align_corners: bool, with_confidence: bool = False,
                      with_uncertainty: bool = False) -> tuple:
    """Upsample a low-resolution cost to (max_disparity, H, W), softmax it and regress disparity.

    cost: (B, 1, D/4, H/4, W/4) float, matching score (higher = more likely; the official code
        applies softmax(+cost)).
    max_disparity: number of full-resolution disparity levels D.
    size: (H, W) of the network input.
    Returns (disparity (B, 1, H, W) float32 px in [0, D-1], confidence (B, 1, H, W) float32 in
    [0, 1] or None), and with `with_uncertainty` a third tensor: sigma_d (B, 1, H, W) float32 px,
    the standard deviation of the same softmax (`disparity_std`). This stage always runs in
    float32, also under autocast: a bf16 soft-argmin would round disparities near 190 px to
    steps of 1 px.
    """
    with torch.autocast(device_type=cost.device.type, enabled=False):
        full = upsample(cost.float(), (max_disparity, *size), align_corners)
        probability = F.softmax(full.squeeze(1), dim=1)
        del full
        disparity = disparity_regression(probability)
        confidence = window_confidence(probability, disparity) if with_confidence else None
        if with_uncertainty:
            return disparity, confidence, disparity_std(probability, disparity)
    return disparity, confidence
