"""Pixels of the left image that the right camera cannot see, from the left disparity alone (the
visibility constraint; no second network pass). Pure numpy.

Left pixel x (a row's column) is seen by the right camera at x - d(x). A surface nearer the
cameras hides it there when a pixel farther right in the same row lands at or left of that
place: x' > x with x' - d(x') <= x - d(x) - margin. Beside the left edge of every object lies
such a band, `d_fg - d_bg` px wide; a network has no match for it and fills it in from context,
right about half the time on the Middlebury pairs with ground truth (README "Which depth to
trust"). The margin keeps a disparity's sub-pixel noise on a slanted surface from counting.
Computed at the matcher's resolution, in float32, so `pipeline.device.occluded` (its torch
twin) agrees exactly.
"""

from __future__ import annotations

import numpy as np

OCCLUSION_MARGIN_PX = 1.0


def occluded(disparity: np.ndarray, margin_px: float = OCCLUSION_MARGIN_PX) -> np.ndarray:
    """(H, W) bool: pixels hidden from the right camera by a pixel to their right.

    disparity: (H, W) float px, x_left - x_right (NaN = no disparity: neither hidden nor
    hiding). margin_px: how far left of a pixel's match another must land to hide it.
    """
    d = np.asarray(disparity, dtype=np.float32)
    if d.ndim != 2:
        raise ValueError(f"occluded expects a (H, W) disparity, got shape {d.shape}")
    columns = np.arange(d.shape[1], dtype=np.float32)
    with np.errstate(invalid="ignore"):
        landing = np.where(np.isfinite(d), columns - d, np.float32(np.inf)).astype(np.float32)
    # the leftmost landing of the pixels strictly to the right of each pixel
    from_right = np.minimum.accumulate(landing[:, ::-1], axis=1)[:, ::-1]
    beyond = np.concatenate([from_right[:, 1:], np.full((d.shape[0], 1), np.inf, np.float32)],
                            axis=1)
    return np.isfinite(landing) & (beyond <= landing - np.float32(margin_px))
