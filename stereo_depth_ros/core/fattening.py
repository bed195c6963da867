"""Foreground fattening into textureless background: the pixels to withhold, from the left image
and the disparity alone (no second network pass). Pure numpy.

Beside the left edge of an object (in the left image) lies a band of background that the right
camera does not see: occluded, `d_fg - d_bg` px wide. A network has no match there and, when
that background is textureless (overexposed sky, a blank wall), it spreads the object's
disparity across it, with a narrow, confident distribution (sigma_d ~1-3 px, confidence up to
0.98 on the DrivingStereo samples: README "Which depth to trust"), so neither the confidence nor
sigma_d can tell. What gives it away is where the disparity edge lies: a real depth edge lies on
an image edge, while the edge of a fattened band lies inside textureless image, where nothing
could have located it. So a pixel is withheld when

1. it is textureless: the mean over a (2r+1)^2 window of |I(x+1) - I(x-1)| + |I(y+1) - I(y-1)|
   (I = the mean of the colour channels, grey levels) is below `TEXTURE_THRESHOLD`;
2. to its left in the same row, with nothing but textureless pixels in between, lies an
   *unsupported* disparity edge: a textureless pixel where the disparity rises to the right by
   more than `JUMP_PX` (d(x+k) - d(x-k), k = `JUMP_SPAN_PX`);
3. it is no farther from that edge than the edge's foreground disparity minus the disparity at
   infinity (cx_offset): the widest an occluded band can be (background at infinity).

Only the occlusion side (foreground on the right of the edge) is tested: that is where the
network has no match. Everything is computed at the matcher's resolution, in integers where it
is compared with a threshold, so `pipeline.device.fattened` (its torch twin) agrees exactly.
"""

from __future__ import annotations

import numpy as np

TEXTURE_RADIUS_PX = 2          # the texture window is 5 x 5
TEXTURE_THRESHOLD = 20         # grey levels: mean |dI/dx| + |dI/dy| (central differences)
JUMP_SPAN_PX = 2               # an edge is d(x+2) - d(x-2)
JUMP_PX = 3.0                  # ... rising by more than this


def texture_sum(left: np.ndarray, radius: int = TEXTURE_RADIUS_PX) -> np.ndarray:
    """(H, W) int64: the window sum of |G(x+1) - G(x-1)| + |G(y+1) - G(y-1)|, G = the sum of
    the colour channels (3 x a mono image); borders replicated. left: (H, W, 3) or (H, W)
    uint8."""
    image = np.asarray(left)
    grey = image.astype(np.int64).sum(axis=2) if image.ndim == 3 else image.astype(np.int64) * 3
    padded = np.pad(grey, 1, mode="edge")
    gradient = (np.abs(padded[1:-1, 2:] - padded[1:-1, :-2])
                + np.abs(padded[2:, 1:-1] - padded[:-2, 1:-1]))
    size = 2 * radius + 1
    integral = np.zeros((gradient.shape[0] + 2 * radius + 1, gradient.shape[1] + 2 * radius + 1),
                        np.int64)
    integral[1:, 1:] = np.pad(gradient, radius, mode="edge").cumsum(0).cumsum(1)
    return (integral[size:, size:] - integral[:-size, size:] - integral[size:, :-size]
            + integral[:-size, :-size])


def textureless(left: np.ndarray, radius: int = TEXTURE_RADIUS_PX,
                threshold: float = TEXTURE_THRESHOLD) -> np.ndarray:
    """(H, W) bool: the mean gradient (grey levels) over the window is below `threshold`."""
    limit = int(round(threshold * 3 * (2 * radius + 1) ** 2))
    return texture_sum(left, radius) < limit


def fattened(left: np.ndarray, disparity: np.ndarray, cx_offset: float = 0.0) -> np.ndarray:
    """(H, W) bool: the pixels of a fattened band (see the module docstring).

    left: (H, W, 3) or (H, W) uint8, the image the matcher saw. disparity: (H, W) float px, the
    matcher's raw output (NaN counts as 0). cx_offset: px, the disparity at infinity.
    """
    flat = textureless(left)
    d = np.nan_to_num(np.asarray(disparity, dtype=np.float32), nan=0.0)
    if flat.shape != d.shape:
        raise ValueError(f"left {flat.shape} and disparity {d.shape} differ in size")
    k = JUMP_SPAN_PX
    padded = np.pad(d, ((0, 0), (k, k)), mode="edge")
    right = padded[:, 2 * k:]
    edge = flat & (right - padded[:, :-2 * k] > np.float32(JUMP_PX))
    reach = right - np.float32(cx_offset)                # the band's widest, px
    height, width = d.shape
    columns = np.broadcast_to(np.arange(width), (height, width))
    # the last edge or textured pixel at or left of each pixel (-1: none)
    marker = np.where(edge | ~flat, columns, -1)
    last = np.maximum.accumulate(marker, axis=1)
    source = np.maximum(last, 0)
    from_edge = (last >= 0) & np.take_along_axis(edge, source, 1)
    within = (columns - source) <= np.take_along_axis(reach, source, 1)
    return flat & from_edge & within
