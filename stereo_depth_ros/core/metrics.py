"""Disparity error metrics over valid ground truth, KITTI-compatible.

All maps are (H, W) disparities in px, NaN = invalid. `valid` is an (H, W) bool mask of pixels
that have ground truth (by default: finite ground truth). Per valid pixel, `err = |pred - gt|`:

- `epe`: mean `err`, px.  `rmse`: sqrt(mean err^2), px.
- `bad_N` (`bad_1`, `bad_2`, `bad_3`, `bad_0.5`, any N): % of valid px with `err > N`.
- `d1_all`: KITTI 2015 outlier rate, % of valid px with `err > 3` **and** `err > 0.05 * |gt|`
  (strict inequalities, as in the KITTI devkit).
- `density`: % of valid px where the prediction is finite (before any hole filling).
- `n_valid`: number of valid px.

Holes (non-finite predictions) are handled by `holes=`:

- `"interpolate"` (default, KITTI devkit behaviour): holes are filled row by row with the smaller
  (background) of the nearest finite disparities left and right, rows are extrapolated at their
  ends and columns at the top and bottom; what stays empty counts as disparity 0. Every valid
  pixel is then scored, so a sparse method pays for its holes; `density` says how sparse it is.
- `"exclude"`: only valid px with a finite prediction are scored.

Empty masks (no valid px, or with "exclude" no finite prediction on them) give NaN for every rate
and error metric, never 0 and never an exception; `n_valid` is then 0.

`MetricCounts` holds the sums behind the metrics, so several images can be pooled pixel-weighted
(the way the KITTI devkit totals a benchmark) with `+` before `finalize()`.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field

import numpy as np

D1_ABS_PX = 3.0
D1_REL = 0.05
DEFAULT_METRICS = ("epe", "bad_1", "bad_2", "bad_3", "d1_all", "density")
HOLE_POLICIES = ("interpolate", "exclude")

_BAD_RE = re.compile(r"^bad_(\d+(?:\.\d+)?)$")

__all__ = [
    "D1_ABS_PX", "D1_REL", "DEFAULT_METRICS", "HOLE_POLICIES", "MetricCounts", "bad_n",
    "compute_metrics", "count_metrics", "d1_all", "density", "epe", "fill_holes_background",
    "parse_metric_names", "rmse",
]


def _mask(err: np.ndarray, valid: np.ndarray) -> np.ndarray:
    err = np.asarray(err)
    valid = np.asarray(valid, dtype=bool)
    if err.shape != valid.shape:
        raise ValueError(f"error map {err.shape} and valid mask {valid.shape} differ in shape")
    return valid & ~np.isnan(err)


def epe(err: np.ndarray, valid: np.ndarray) -> float:
    """Mean absolute error in px over `valid` px (NaN errors are skipped); NaN if none."""
    mask = _mask(err, valid)
    if not mask.any():
        return math.nan
    return float(np.mean(np.abs(np.asarray(err, dtype=np.float64)[mask])))


def rmse(err: np.ndarray, valid: np.ndarray) -> float:
    """Root mean square error in px over `valid` px; NaN if none."""
    mask = _mask(err, valid)
    if not mask.any():
        return math.nan
    return float(np.sqrt(np.mean(np.square(np.asarray(err, dtype=np.float64)[mask]))))


def bad_n(err: np.ndarray, valid: np.ndarray, n: float) -> float:
    """Percentage of `valid` px with `|err| > n` px (strictly); NaN if there are none."""
    mask = _mask(err, valid)
    if not mask.any():
        return math.nan
    return float(100.0 * np.mean(np.abs(err[mask]) > n))


def d1_all(err: np.ndarray, gt: np.ndarray, valid: np.ndarray) -> float:
    """KITTI D1: % of `valid` px with `|err| > 3` px and `|err| > 5 %` of `|gt|`; NaN if none."""
    mask = _mask(err, valid)
    gt = np.asarray(gt)
    if gt.shape != mask.shape:
        raise ValueError(f"ground truth {gt.shape} and error map {mask.shape} differ in shape")
    if not mask.any():
        return math.nan
    abs_err = np.abs(err[mask])
    outlier = (abs_err > D1_ABS_PX) & (abs_err > D1_REL * np.abs(gt[mask]))
    return float(100.0 * np.mean(outlier))


def density(pred: np.ndarray, valid: np.ndarray) -> float:
    """Percentage of `valid` px where `pred` is finite; NaN if there are no valid px."""
    pred = np.asarray(pred)
    valid = np.asarray(valid, dtype=bool)
    if pred.shape != valid.shape:
        raise ValueError(f"prediction {pred.shape} and valid mask {valid.shape} differ in shape")
    if not valid.any():
        return math.nan
    return float(100.0 * np.mean(np.isfinite(pred[valid])))


def _fill_along_rows(values: np.ndarray, known: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Fill unknown entries per row with min(left, right known neighbour), or the one there is."""
    height, width = values.shape
    cols = np.broadcast_to(np.arange(width), (height, width))
    left_idx = np.maximum.accumulate(np.where(known, cols, -1), axis=1)
    right_idx = np.minimum.accumulate(np.where(known, cols, width)[:, ::-1], axis=1)[:, ::-1]
    has_left = left_idx >= 0
    has_right = right_idx < width
    left_val = np.take_along_axis(values, np.clip(left_idx, 0, width - 1), axis=1)
    right_val = np.take_along_axis(values, np.clip(right_idx, 0, width - 1), axis=1)
    filled = np.where(has_left & has_right, np.minimum(left_val, right_val),
                      np.where(has_left, left_val, right_val))
    filled = np.where(known, values, filled)
    return filled, has_left | has_right


DEVKIT_INVALID = np.float32(-1.0)
"""The value the KITTI devkit's disparity images hold (and score) where nothing is known."""


def fill_holes_background(pred: np.ndarray) -> np.ndarray:
    """KITTI devkit hole filling of an (H, W) disparity map; returns float32 with no NaN.

    Per row, a run of holes between two finite values takes the smaller one; runs at a row's ends
    take the nearest finite value. Rows without any finite value are then filled from the nearest
    filled row, but only at the top and the bottom of the image (as the devkit does); anything
    left (rows with no valid pixel between filled rows, or an all-empty prediction) stays invalid
    and, as in the devkit, is scored as the disparity DEVKIT_INVALID (-1).
    """
    pred = np.asarray(pred, dtype=np.float32)
    if pred.ndim != 2:
        raise ValueError(f"expected an (H, W) disparity map, got shape {pred.shape}")
    known = np.isfinite(pred)
    if known.all() or not known.any():
        return np.where(known, pred, DEVKIT_INVALID).astype(np.float32)
    values = np.where(known, pred, np.float32(0.0))
    filled, row_known = _fill_along_rows(values, known)
    # Rows now are either fully known or fully unknown; extrapolate to the top and the bottom only.
    row_ok = row_known.all(axis=1)
    first, last = int(np.argmax(row_ok)), len(row_ok) - 1 - int(np.argmax(row_ok[::-1]))
    filled[:first] = filled[first]
    filled[last + 1:] = filled[last]
    inner_empty = ~row_ok
    inner_empty[:first] = False
    inner_empty[last + 1:] = False
    filled[inner_empty] = DEVKIT_INVALID
    return filled.astype(np.float32)


def parse_metric_names(names: str | tuple[str, ...] | list[str]) -> tuple[str, ...]:
    """Normalize metric names ("epe,bad_3" or a sequence); ValueError on unknown names."""
    if isinstance(names, str):
        names = [n.strip() for n in names.split(",") if n.strip()]
    names = tuple(names)
    known = ("epe", "rmse", "d1_all", "density", "n_valid")
    for name in names:
        if name not in known and not _BAD_RE.match(name):
            raise ValueError(f"unknown metric {name!r}: expected {', '.join(known)} or bad_N "
                             "(e.g. bad_0.5, bad_3)")
    if not names:
        raise ValueError("no metric names given")
    return names


def _bad_threshold(name: str) -> float:
    return float(_BAD_RE.match(name).group(1))


@dataclass
class MetricCounts:
    """Sums over the scored pixels of one or more images; `a + b` pools two of them.

    n_valid: valid-GT px; n_finite: valid px with a finite prediction; n_scored: px entering the
    error metrics; sum_abs / sum_sq: sums of |err| and err^2 (px, px^2); n_bad: threshold ->
    count of |err| > threshold; n_d1: KITTI outliers.
    """

    n_valid: int = 0
    n_finite: int = 0
    n_scored: int = 0
    sum_abs: float = 0.0
    sum_sq: float = 0.0
    n_bad: dict[float, int] = field(default_factory=dict)
    n_d1: int = 0

    def __add__(self, other: MetricCounts) -> MetricCounts:
        if set(self.n_bad) != set(other.n_bad) and self.n_scored and other.n_scored:
            raise ValueError("cannot pool metric counts made with different bad_N thresholds")
        bad = dict(self.n_bad)
        for key, value in other.n_bad.items():
            bad[key] = bad.get(key, 0) + value
        return MetricCounts(self.n_valid + other.n_valid, self.n_finite + other.n_finite,
                            self.n_scored + other.n_scored, self.sum_abs + other.sum_abs,
                            self.sum_sq + other.sum_sq, bad, self.n_d1 + other.n_d1)

    def finalize(self, names: tuple[str, ...] | list[str] | str = DEFAULT_METRICS
                 ) -> dict[str, float]:
        """Turn the sums into metrics (see the module docstring); NaN where nothing was scored."""
        out: dict[str, float] = {}
        scored = self.n_scored
        for name in parse_metric_names(names):
            if name == "n_valid":
                out[name] = float(self.n_valid)
            elif name == "density":
                out[name] = 100.0 * self.n_finite / self.n_valid if self.n_valid else math.nan
            elif not scored:
                out[name] = math.nan
            elif name == "epe":
                out[name] = self.sum_abs / scored
            elif name == "rmse":
                out[name] = math.sqrt(self.sum_sq / scored)
            elif name == "d1_all":
                out[name] = 100.0 * self.n_d1 / scored
            else:
                threshold = _bad_threshold(name)
                if threshold not in self.n_bad:
                    raise ValueError(f"{name} was not counted (thresholds: {sorted(self.n_bad)})")
                out[name] = 100.0 * self.n_bad[threshold] / scored
        return out


def _default_valid(gt: np.ndarray, valid: np.ndarray | None) -> np.ndarray:
    finite_gt = np.isfinite(gt)
    if valid is None:
        return finite_gt
    valid = np.asarray(valid, dtype=bool)
    if valid.shape != gt.shape:
        raise ValueError(f"valid mask {valid.shape} and ground truth {gt.shape} differ in shape")
    return valid & finite_gt


def count_metrics(pred: np.ndarray, gt: np.ndarray, valid: np.ndarray | None = None, *,
                  holes: str = "interpolate",
                  bad_thresholds: tuple[float, ...] = (0.5, 1.0, 2.0, 3.0, 4.0, 5.0)
                  ) -> MetricCounts:
    """Sums for the metrics of one image.

    pred, gt: (H, W) disparity px, NaN invalid. valid: (H, W) bool or None (= finite gt); it is
    always intersected with finite gt. holes: "interpolate" or "exclude" (module docstring).
    """
    pred = np.asarray(pred, dtype=np.float32)
    gt = np.asarray(gt, dtype=np.float32)
    if pred.shape != gt.shape or pred.ndim != 2:
        raise ValueError(f"prediction {pred.shape} and ground truth {gt.shape} must be the same "
                         "(H, W) shape")
    if holes not in HOLE_POLICIES:
        raise ValueError(f"unknown hole policy {holes!r}: expected one of "
                         f"{', '.join(HOLE_POLICIES)}")
    valid = _default_valid(gt, valid)
    finite = np.isfinite(pred)
    if holes == "interpolate":
        scored_mask = valid
        pred_used = pred if finite[valid].all() else fill_holes_background(pred)
    else:
        scored_mask = valid & finite
        pred_used = pred
    err = np.abs(pred_used[scored_mask].astype(np.float64) - gt[scored_mask])
    gt_scored = np.abs(gt[scored_mask].astype(np.float64))
    return MetricCounts(
        n_valid=int(valid.sum()),
        n_finite=int((valid & finite).sum()),
        n_scored=int(err.size),
        sum_abs=float(err.sum()),
        sum_sq=float(np.square(err).sum()),
        n_bad={float(t): int((err > t).sum()) for t in bad_thresholds},
        n_d1=int(((err > D1_ABS_PX) & (err > D1_REL * gt_scored)).sum()),
    )


def _thresholds_for(names: tuple[str, ...]) -> tuple[float, ...]:
    return tuple(sorted({_bad_threshold(n) for n in names if _BAD_RE.match(n)}))


def compute_metrics(pred: np.ndarray, gt: np.ndarray, valid: np.ndarray | None = None, *,
                    names: tuple[str, ...] | list[str] | str = DEFAULT_METRICS,
                    holes: str = "interpolate") -> dict[str, float]:
    """The one entry point: metrics of one prediction against ground truth.

    pred, gt: (H, W) disparity px, NaN invalid. valid: (H, W) bool or None (= finite gt),
    intersected with finite gt. names: metric names (module docstring). Returns {name: value};
    rates in %, errors in px, NaN when no pixel is scored.
    """
    names = parse_metric_names(names)
    counts = count_metrics(pred, gt, valid, holes=holes, bad_thresholds=_thresholds_for(names))
    return counts.finalize(names)
