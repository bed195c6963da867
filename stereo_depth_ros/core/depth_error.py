"""Depth error statistics against sparse ground truth (LiDAR), overall and per range band.

Pure (numpy only). For each compared point, with z the ground-truth depth (m, along the optical
axis) and z_hat the estimate: error |z_hat - z|. Reported per group of points:

* `n`: points compared;
* `mae_m`, `rmse_m`: mean absolute and root-mean-square error in metres;
* `rel_err`: mean of |z_hat - z| / z (a fraction; 0.05 = 5 %);
* `over_1m_pct`: share of points with |z_hat - z| > 1 m, in %;
* `over_5pct_pct`: share of points with |z_hat - z| > 5 % of z, in %.

Groups: "all" and the range bands of RANGE_BANDS_M, by the *ground-truth* depth z (lo <= z < hi;
points beyond the last band count in "all" only). `ErrorSums` keep running sums, so frames add
up exactly (pooled over points, as the KITTI devkit pools pixels). `RangeProfile` keeps the
error per 1 m of range for an error-vs-range plot.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

RANGE_BANDS_M = ((0.0, 10.0), (10.0, 20.0), (20.0, 40.0), (40.0, 80.0))
"""Range bands (m) of the report."""
ABS_THRESHOLD_M = 1.0
REL_THRESHOLD = 0.05
METRICS = ("n", "mae_m", "rmse_m", "rel_err", "over_1m_pct", "over_5pct_pct")
"""Metric names, in table order."""
ALL = "all"


def band_label(band: tuple[float, float]) -> str:
    """(10.0, 20.0) -> '10-20m'."""
    return f"{band[0]:g}-{band[1]:g}m"


def _check_pair(truth_m: np.ndarray, estimate_m: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    truth_m = np.asarray(truth_m, dtype=np.float64).reshape(-1)
    estimate_m = np.asarray(estimate_m, dtype=np.float64).reshape(-1)
    if truth_m.shape != estimate_m.shape:
        raise ValueError(f"truth has {truth_m.size} values, estimate {estimate_m.size}")
    if not np.all(np.isfinite(truth_m) & (truth_m > 0)):
        raise ValueError("ground-truth depths must be finite and > 0")
    if not np.all(np.isfinite(estimate_m)):
        raise ValueError("estimates must be finite (leave out points without depth first)")
    return truth_m, estimate_m


@dataclass
class ErrorSums:
    """Running sums over compared points; `summary()` turns them into METRICS."""

    n: int = 0
    sum_abs: float = 0.0
    sum_sq: float = 0.0
    sum_rel: float = 0.0
    over_abs: int = 0
    over_rel: int = 0

    def add(self, truth_m: np.ndarray, estimate_m: np.ndarray) -> None:
        truth_m, estimate_m = _check_pair(truth_m, estimate_m)
        error = np.abs(estimate_m - truth_m)
        self.n += int(error.size)
        self.sum_abs += float(error.sum())
        self.sum_sq += float(np.square(error).sum())
        self.sum_rel += float((error / truth_m).sum())
        self.over_abs += int(np.count_nonzero(error > ABS_THRESHOLD_M))
        self.over_rel += int(np.count_nonzero(error > REL_THRESHOLD * truth_m))

    def __add__(self, other: "ErrorSums") -> "ErrorSums":
        return ErrorSums(self.n + other.n, self.sum_abs + other.sum_abs,
                         self.sum_sq + other.sum_sq, self.sum_rel + other.sum_rel,
                         self.over_abs + other.over_abs, self.over_rel + other.over_rel)

    def summary(self) -> dict[str, float]:
        """METRICS as a dict (NaN for the error metrics when n = 0)."""
        if self.n == 0:
            return {"n": 0, **{name: math.nan for name in METRICS[1:]}}
        return {"n": self.n, "mae_m": self.sum_abs / self.n,
                "rmse_m": math.sqrt(self.sum_sq / self.n), "rel_err": self.sum_rel / self.n,
                "over_1m_pct": 100.0 * self.over_abs / self.n,
                "over_5pct_pct": 100.0 * self.over_rel / self.n}


@dataclass
class BandedErrors:
    """ErrorSums for "all" and for each range band (labels from `band_label`)."""

    bands: tuple[tuple[float, float], ...] = RANGE_BANDS_M
    groups: dict[str, ErrorSums] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for label in self.labels():
            self.groups.setdefault(label, ErrorSums())

    def labels(self) -> list[str]:
        return [ALL] + [band_label(b) for b in self.bands]

    def add(self, truth_m: np.ndarray, estimate_m: np.ndarray) -> None:
        truth_m, estimate_m = _check_pair(truth_m, estimate_m)
        self.groups[ALL].add(truth_m, estimate_m)
        for band in self.bands:
            inside = (truth_m >= band[0]) & (truth_m < band[1])
            self.groups[band_label(band)].add(truth_m[inside], estimate_m[inside])

    def __iadd__(self, other: "BandedErrors") -> "BandedErrors":
        if other.bands != self.bands:
            raise ValueError(f"different range bands: {self.bands} vs {other.bands}")
        for label in self.labels():
            self.groups[label] = self.groups[label] + other.groups[label]
        return self

    def summary(self) -> dict[str, dict[str, float]]:
        """{group label: METRICS dict}, "all" first."""
        return {label: self.groups[label].summary() for label in self.labels()}


def banded_errors(truth_m: np.ndarray, estimate_m: np.ndarray,
                  bands: tuple[tuple[float, float], ...] = RANGE_BANDS_M) -> BandedErrors:
    """BandedErrors of one set of compared points."""
    result = BandedErrors(bands=bands)
    result.add(truth_m, estimate_m)
    return result


@dataclass
class RangeProfile:
    """Error sums per `bin_m` of ground-truth depth (for the error-vs-range plot)."""

    bin_m: float = 1.0
    max_range_m: float = 80.0
    count: np.ndarray = field(init=False)
    sum_abs: np.ndarray = field(init=False)
    sum_sq: np.ndarray = field(init=False)

    def __post_init__(self) -> None:
        bins = int(math.ceil(self.max_range_m / self.bin_m))
        self.count = np.zeros(bins, dtype=np.int64)
        self.sum_abs = np.zeros(bins)
        self.sum_sq = np.zeros(bins)

    def add(self, truth_m: np.ndarray, estimate_m: np.ndarray) -> None:
        truth_m, estimate_m = _check_pair(truth_m, estimate_m)
        index = np.floor(truth_m / self.bin_m).astype(np.int64)
        keep = index < self.count.size
        error = np.abs(estimate_m - truth_m)[keep]
        np.add.at(self.count, index[keep], 1)
        np.add.at(self.sum_abs, index[keep], error)
        np.add.at(self.sum_sq, index[keep], np.square(error))

    def rows(self) -> list[dict[str, float]]:
        """One dict per non-empty bin: range_m (bin centre), n, mae_m, rmse_m."""
        out = []
        for i in np.flatnonzero(self.count):
            n = int(self.count[i])
            out.append({"range_m": (i + 0.5) * self.bin_m, "n": n,
                        "mae_m": float(self.sum_abs[i] / n),
                        "rmse_m": float(math.sqrt(self.sum_sq[i] / n))})
        return out
