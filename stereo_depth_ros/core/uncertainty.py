"""Per-pixel uncertainty of stereo depth and the mask that decides which depth is published.

sigma_d (px) is the standard deviation of a matcher's disparity estimate (for PSMNet: of the
softmax whose mean is the disparity, `models.regression.disparity_std`). Depth is
Z = f*B / (d - cx_offset), so to first order (a linearisation about d; the true spread of Z is
skewed towards far depths and this underestimates it for large sigma_d / d):

    sigma_Z = |dZ/dd| * sigma_d = Z^2 * sigma_d / (f*B),    sigma_Z / Z = sigma_d / (d - cx_offset)

The relative uncertainty sigma_Z / Z therefore needs no metric calibration: it is the disparity
uncertainty over the (offset-corrected) disparity. Pure numpy.

The mask's limit on it is stated at the camera's full resolution. The matcher's sigma_d stays
about 1 px in its own pixels whatever the input_scale s, while disparities shrink with s, so the
physical sigma_Z / Z of a pixel grows as 1 / s; a fixed limit would then keep fewer pixels at
every step down of the scale (the rate governor changes it at run time). `trusted` therefore
compares sigma_d in the matcher's pixels with the disparity in full-resolution pixels,
s * sigma_d / (d - cx_offset) <= limit: it keeps the pixels matched as reliably as at full
resolution, and the coarser depth's larger spread (up to limit / s) is what `depth_std`
publishes. At s = 1 both are sigma_Z / Z.

The mask's second limit is on sigma_d itself (sigma_d <= limit, px): a bound on the disparity
error whatever the depth. Like the relative limit it is stated as at full resolution and applied
to the matcher's sigma_d in its own px at every scale, so it keeps the pixels matched as
reliably (at input_scale s the published depth's spread is 1 / s larger: `depth_std`). The
relative limit alone passes a wide distribution on a near surface (large d), and near surfaces
are where an error of a few px puts an obstacle in the wrong place; the absolute limit is what
lets the default mask meet bad-2 (error > 2 px) targets on the real pairs with ground truth
(README "Which depth to trust").
"""

from __future__ import annotations

import numpy as np


def depth_std(depth_m: np.ndarray, sigma_px: np.ndarray, fx: float, baseline_m: float
              ) -> np.ndarray:
    """First-order depth standard deviation sigma_Z = Z^2 * sigma_d / (fx * baseline_m).

    depth_m: (H, W) float metres, NaN invalid. sigma_px: (H, W) float sigma_d px >= 0.
    fx: px (> 0). baseline_m: metres (> 0).
    Returns (H, W) float32 metres, NaN wherever depth or sigma_d is not finite.
    """
    if not (fx > 0 and baseline_m > 0):
        raise ValueError(f"depth_std needs fx > 0 and baseline_m > 0, got fx={fx}, "
                         f"baseline_m={baseline_m}")
    depth = np.asarray(depth_m, dtype=np.float32)
    sigma = np.asarray(sigma_px, dtype=np.float32)
    if depth.shape != sigma.shape:
        raise ValueError(f"depth_m {depth.shape} and sigma_px {sigma.shape} differ in shape")
    with np.errstate(invalid="ignore"):
        out = depth * depth * sigma / np.float32(fx * baseline_m)
    out[~(np.isfinite(depth) & np.isfinite(sigma))] = np.nan
    return out.astype(np.float32, copy=False)


def relative_uncertainty(disparity: np.ndarray, sigma_px: np.ndarray,
                         cx_offset: float = 0.0) -> np.ndarray:
    """sigma_Z / Z = sigma_d / (d - cx_offset), (H, W) float32; inf where d - cx_offset <= 0,
    NaN where d or sigma_d is NaN."""
    adjusted = np.asarray(disparity, dtype=np.float32) - np.float32(cx_offset)
    sigma = np.asarray(sigma_px, dtype=np.float32)
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = np.where(adjusted > 0, sigma / adjusted, np.float32(np.inf))
    ratio[~(np.isfinite(adjusted) & np.isfinite(sigma))] = np.nan
    return ratio.astype(np.float32, copy=False)


def trusted(disparity: np.ndarray, confidence: np.ndarray | None, sigma_px: np.ndarray | None,
            *, confidence_threshold: float = 0.0, max_relative_uncertainty: float = 0.0,
            max_disparity_uncertainty: float = 0.0, cx_offset: float = 0.0,
            input_scale: float = 1.0) -> np.ndarray | None:
    """The pixels to keep: (H, W) bool, or None when no limit applies (keep everything).

    disparity, sigma_px, cx_offset: at the matcher's resolution (px).
    confidence_threshold: keep confidence >= it (0 = off; ignored without a confidence).
    max_relative_uncertainty: the limit at full resolution (module docstring): keep
    input_scale * sigma_d <= it * (d - cx_offset), i.e. sigma_d / (d - cx_offset) <= it at
    input_scale 1 (0 = off; ignored without sigma_d).
    max_disparity_uncertainty: px: keep sigma_d <= it, sigma_d in the matcher's px whatever the
    input_scale (module docstring; 0 = off; ignored without sigma_d). A pixel must pass every
    limit that applies.
    input_scale: the scale the matcher ran at, in (0, 1].
    """
    keep = None
    if confidence is not None and confidence_threshold > 0:
        keep = np.asarray(confidence) >= confidence_threshold
    if sigma_px is not None and max_relative_uncertainty > 0:
        adjusted = np.asarray(disparity, dtype=np.float32) - np.float32(cx_offset)
        sigma = np.asarray(sigma_px, dtype=np.float32)
        with np.errstate(invalid="ignore"):
            within = (adjusted > 0) & (sigma * np.float32(input_scale)
                                       <= adjusted * np.float32(max_relative_uncertainty))
        keep = within if keep is None else keep & within
    if sigma_px is not None and max_disparity_uncertainty > 0:
        sigma = np.asarray(sigma_px, dtype=np.float32)
        with np.errstate(invalid="ignore"):
            within = sigma <= np.float32(max_disparity_uncertainty)
        keep = within if keep is None else keep & within
    return keep


def calibration_stats(disparity: np.ndarray, sigma_px: np.ndarray, ground_truth: np.ndarray,
                      k: float = 2.0) -> dict[str, float]:
    """How well sigma_d predicts the actual error on one pair with ground truth.

    disparity, sigma_px, ground_truth: (H, W) px; the pixels used are those where all three are
    finite (ground truth NaN = unknown). Returns {"pixels", "coverage" (fraction of those with
    |d - d_gt| <= k * sigma_d), "half_ratio" (mean error of the half with the lower sigma_d over
    that of the upper half), "epe" (px), "bad_2" (% with error > 2 px)}; NaN values when no pixel
    qualifies.
    """
    d, s, g = (np.asarray(a, dtype=np.float64) for a in (disparity, sigma_px, ground_truth))
    used = np.isfinite(d) & np.isfinite(s) & np.isfinite(g)
    count = int(used.sum())
    if count < 2:
        nan = float("nan")
        return {"pixels": count, "coverage": nan, "half_ratio": nan, "epe": nan, "bad_2": nan}
    error = np.abs(d[used] - g[used])
    sigma = s[used]
    order = np.argsort(sigma, kind="stable")
    half = count // 2
    lower, upper = error[order[:half]].mean(), error[order[count - half:]].mean()
    return {"pixels": count,
            "coverage": float(np.mean(error <= k * sigma)),
            "half_ratio": float(lower / upper) if upper > 0 else float("nan"),
            "epe": float(error.mean()),
            "bad_2": float(100.0 * np.mean(error > 2.0))}


def mask_tradeoff(disparity: np.ndarray, confidence: np.ndarray | None, sigma_px: np.ndarray,
                  ground_truth: np.ndarray, *, confidence_threshold: float,
                  max_relative_uncertainty: float, max_disparity_uncertainty: float = 0.0,
                  cx_offset: float = 0.0, input_scale: float = 1.0,
                  withheld: np.ndarray | None = None) -> dict[str, float]:
    """What a mask keeps on one pair with ground truth: {"known" (pixels with ground truth and
    a disparity), "kept" (of those, published), "bad_2_kept" (pixels with error > 2 px among the
    kept ones)} as counts, so that pairs can be summed.

    At input_scale s < 1 the arrays are at the matcher's resolution and ground_truth may be
    (H, W) or (H, W, 2): the lowest and highest full-resolution truth (px at full resolution)
    inside each matcher pixel; the error is then the distance of d / s from that interval, in
    full-resolution px. withheld: (H, W) bool of pixels another test withholds (e.g.
    core.fattening, core.occlusion), or None."""
    d = np.asarray(disparity, dtype=np.float32)
    g = np.asarray(ground_truth, dtype=np.float32)
    low, high = (g[..., 0], g[..., 1]) if g.ndim == 3 else (g, g)
    known = np.isfinite(d) & np.isfinite(low) & np.isfinite(high)
    keep = trusted(d, confidence, sigma_px, confidence_threshold=confidence_threshold,
                   max_relative_uncertainty=max_relative_uncertainty,
                   max_disparity_uncertainty=max_disparity_uncertainty, cx_offset=cx_offset,
                   input_scale=input_scale)
    kept = known if keep is None else known & keep
    if withheld is not None:
        kept = kept & ~withheld          # not in place: kept may be `known` itself
    full = np.where(known, d / np.float32(input_scale), 0.0)
    error = np.maximum(np.where(known, low, 0.0) - full, 0.0) + np.maximum(
        full - np.where(known, high, 0.0), 0.0)
    bad = kept & (error > 2.0)
    return {"known": int(known.sum()), "kept": int(kept.sum()), "bad_2_kept": int(bad.sum())}
