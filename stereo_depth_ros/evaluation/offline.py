"""Scoring a matcher, or saved disparities, on a stereo dataset (`stereo_depth_eval`'s
library): predictions found by sample name, each pair scored with `core.metrics` on the "all"
and "noc" masks, pooled over pixels and averaged per image, written as per_image.csv and
summary.json, and the text table."""

from __future__ import annotations

import csv
import json
import math
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from stereo_depth_ros.core.disparity_io import write_disparity
from stereo_depth_ros.core.geometry import resize_disparity
from stereo_depth_ros.core.json_values import json_safe
from stereo_depth_ros.core.metrics import DEFAULT_METRICS, MetricCounts, count_metrics
from stereo_depth_ros.data import StereoSample


class EvaluationError(ValueError):
    """Predictions that cannot be scored (missing files, a wrong size): a user error."""


PREDICTION_SUFFIXES = (".png", ".pfm", ".npy")
BAD_THRESHOLDS = (0.5, 1.0, 2.0, 3.0, 4.0, 5.0)


# --------------------------------------------------------------------------- matching

def match_at_scale(pipeline, left: np.ndarray, right: np.ndarray
                   ) -> tuple[np.ndarray, dict[str, float]]:
    """Disparity of a rectified pair through the pipeline (its input_scale applied), brought back
    to the pair's full resolution.

    left, right: (H, W, 3) uint8 RGB. With input_scale < 1 the disparity is resized back to
    (H, W) (bilinear over the valid values) and multiplied by the width ratio.
    Returns (disparity (H, W) float32 NaN invalid, timings_s).
    """
    height, width = left.shape[:2]
    result = pipeline.process(left, right, None)
    timings = {name: seconds for name, seconds in result.timings_s.items() if name != "total"}
    disparity = result.disparity
    if disparity.shape != (height, width):
        start = time.perf_counter()
        disparity = resize_disparity(disparity, width, height, interpolation="linear")
        timings["resize"] = timings.get("scale", 0.0) + time.perf_counter() - start
    return disparity, timings


# --------------------------------------------------------------------------- predictions

def find_prediction(directory: Path, name: str) -> Path | None:
    """The first of `directory/<name>.png|.pfm|.npy` that exists, else None."""
    for suffix in PREDICTION_SUFFIXES:
        path = directory / f"{name}{suffix}"
        if path.is_file():
            return path
    return None


def check_predictions(directory: Path, names: list[str]) -> dict[str, Path]:
    """Map every sample name to its prediction file; EvaluationError listing the missing ones."""
    if not directory.is_dir():
        raise EvaluationError(f"predictions directory not found: {directory}")
    found, missing = {}, []
    for name in names:
        path = find_prediction(directory, name)
        if path is None:
            missing.append(name)
        else:
            found[name] = path
    if missing:
        shown = ", ".join(f"{n}.png" for n in missing[:8])
        more = f", ... and {len(missing) - 8} more" if len(missing) > 8 else ""
        raise EvaluationError(f"{len(missing)} of {len(names)} predictions missing in "
                              f"{directory} (looked for <name>"
                              f"{'|'.join(PREDICTION_SUFFIXES)}): {shown}{more}")
    return found


# --------------------------------------------------------------------------- evaluation

@dataclass
class EvalResult:
    """Per-image rows and dataset totals.

    rows: one dict per pair (name, size, time_s, metrics, `<metric>_noc`). counts: mask name ->
    pooled MetricCounts. times_s: seconds per pair (empty for precomputed predictions).
    stage_times_s: stage name -> seconds per pair.
    """

    rows: list[dict] = field(default_factory=list)
    counts: dict[str, MetricCounts] = field(default_factory=dict)
    times_s: list[float] = field(default_factory=list)
    stage_times_s: dict[str, list[float]] = field(default_factory=dict)
    interrupted: bool = False      # Ctrl-C stopped it: rows and counts are the pairs done before

    def add(self, row: dict, counts: dict[str, MetricCounts], timings: dict | None) -> None:
        """Record one scored pair (row, its counts per mask, its timings_s or None)."""
        if timings is not None:
            self.times_s.append(row["time_s"])
            for stage, seconds in timings.items():
                self.stage_times_s.setdefault(stage, []).append(float(seconds))
        for mask_name, mask_counts in counts.items():
            self.counts[mask_name] = self.counts.get(mask_name, MetricCounts()) + mask_counts
        self.rows.append(row)


class Progress:
    """Progress lines on stderr: every pair on a terminal, else at most every `every_s` seconds."""

    def __init__(self, total: int, enabled: bool = True, every_s: float = 5.0, stream=None):
        self.total = total
        self.stream = stream if stream is not None else sys.stderr
        self.enabled = enabled
        self.every_s = every_s
        self.start = time.perf_counter()
        self.last = -math.inf
        self.tty = bool(getattr(self.stream, "isatty", lambda: False)())

    def update(self, done: int, label: str) -> None:
        if not self.enabled:
            return
        now = time.perf_counter()
        if not (self.tty or done == self.total or done == 1 or now - self.last >= self.every_s):
            return
        self.last = now
        elapsed = now - self.start
        eta = elapsed / done * (self.total - done) if done else 0.0
        line = (f"[{done}/{self.total}] {label}  elapsed {elapsed:.1f} s, "
                f"eta {eta:.1f} s")
        end = "\r" if self.tty and done < self.total else "\n"
        self.stream.write(("\r" if self.tty else "") + line[:120] + end)
        self.stream.flush()


def evaluate(dataset, predict: Callable[[StereoSample], tuple[np.ndarray, dict | None]], *,
             names: tuple[str, ...] = DEFAULT_METRICS, holes: str = "interpolate",
             limit: int | None = None, max_gt_disparity: float | None = None,
             save_dir: Path | None = None, progress: Progress | None = None) -> EvalResult:
    """Score `predict(sample) -> (disparity (H, W) px NaN invalid, timings_s or None)`.

    Ground truth is `sample.disparity` ("all") and `sample.disparity_noc` ("noc") when present;
    pixels with gt >= max_gt_disparity are left out when it is given. save_dir: also write each
    prediction as `<save_dir>/<name>.png` (KITTI uint16). Ctrl-C (KeyboardInterrupt) stops the
    loop: the result holds the pairs scored before it, with `interrupted` set.
    """
    count = len(dataset) if limit is None else min(limit, len(dataset))
    result = EvalResult()
    extra = {float(n[4:]) for n in names if n.startswith("bad_")}
    thresholds = tuple(sorted(set(BAD_THRESHOLDS) | extra))
    for index in range(count):
        try:
            sample = dataset[index]
            disparity, timings = predict(sample)
            row, counts = _score_pair(sample, disparity, timings, names, holes, thresholds,
                                      max_gt_disparity, save_dir)
        except KeyboardInterrupt:
            result.interrupted = True
            break
        result.add(row, counts, timings)
        if progress is not None:
            label = f"{sample.name}"
            if "d1_all" in row:
                label += f" d1_all {row['d1_all']:.2f} %"
            elif "epe" in row:
                label += f" epe {row['epe']:.3f}"
            progress.update(index + 1, label)
    return result


def _score_pair(sample: StereoSample, disparity, timings: dict | None, names, holes: str,
                thresholds: tuple[float, ...], max_gt_disparity: float | None,
                save_dir: Path | None) -> tuple[dict, dict[str, MetricCounts]]:
    """(the pair's row, its MetricCounts per mask); the prediction saved when save_dir is set."""
    disparity = np.asarray(disparity, dtype=np.float32)
    height, width = sample.left.shape[:2]
    if disparity.shape != (height, width):
        raise EvaluationError(f"{sample.name}: prediction is {disparity.shape[1]}x"
                              f"{disparity.shape[0]}, the images are {width}x{height}")
    if save_dir is not None:
        path = save_dir / f"{sample.name}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        write_disparity(path, disparity)
    row: dict = {"name": sample.name, "width": width, "height": height}
    if timings is not None:
        row["time_s"] = float(timings.get("total", sum(timings.values())))
    pair_counts = {}
    for mask_name, gt in (("all", sample.disparity), ("noc", sample.disparity_noc)):
        if gt is None:
            continue
        valid = np.isfinite(gt)
        if max_gt_disparity is not None:
            valid &= gt < max_gt_disparity
        counts = count_metrics(disparity, gt, valid, holes=holes, bad_thresholds=thresholds)
        pair_counts[mask_name] = counts
        suffix = "" if mask_name == "all" else "_noc"
        for key, value in counts.finalize(names).items():
            row[key + suffix] = value
    return row, pair_counts


def _nanmean(values: list[float]) -> float:
    finite = [v for v in values if v is not None and math.isfinite(v)]
    return float(np.mean(finite)) if finite else math.nan


def summarize(result: EvalResult, names: tuple[str, ...]) -> dict:
    """Pooled (pixel-weighted) and per-image-mean metrics per mask, timing means."""
    masks = {}
    for mask_name, counts in result.counts.items():
        suffix = "" if mask_name == "all" else "_noc"
        masks[mask_name] = {
            "pooled": counts.finalize(names),
            "mean": {n: _nanmean([row.get(n + suffix, math.nan) for row in result.rows])
                     for n in names},
            "pixels": counts.n_valid,
        }
    summary = {"pairs": len(result.rows), "metrics": masks}
    if result.times_s:
        summary["mean_time_s"] = float(np.mean(result.times_s))
        summary["mean_stage_times_s"] = {k: float(np.mean(v))
                                         for k, v in result.stage_times_s.items()}
    return summary


def write_outputs(out_dir: Path, result: EvalResult, summary: dict) -> tuple[Path, Path]:
    """Write `per_image.csv` and `summary.json` into out_dir; return their paths."""
    out_dir.mkdir(parents=True, exist_ok=True)
    csv_path, json_path = out_dir / "per_image.csv", out_dir / "summary.json"
    columns: list[str] = []
    for row in result.rows:
        columns.extend(k for k in row if k not in columns)
    with csv_path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns)
        writer.writeheader()
        for row in result.rows:
            writer.writerow({k: (f"{v:.6g}" if isinstance(v, float) else v)
                             for k, v in row.items()})
    json_path.write_text(json.dumps(json_safe(summary), indent=2) + "\n")
    return csv_path, json_path


def format_table(summary: dict, names: tuple[str, ...]) -> str:
    """The printed table: one row per mask (pooled values), then the timing line."""
    header = ["mask", "pixels"] + list(names)
    lines = []
    for mask_name, block in summary["metrics"].items():
        cells = [mask_name, str(block["pixels"])]
        for name in names:
            value = block["pooled"][name]
            if not math.isfinite(value):
                cells.append("nan")
            elif name in ("epe", "rmse"):
                cells.append(f"{value:.3f}")
            elif name == "n_valid":
                cells.append(f"{value:.0f}")
            else:
                cells.append(f"{value:.2f}%")
        lines.append(cells)
    widths = [max(len(h), *(len(c[i]) for c in lines)) if lines else len(h)
              for i, h in enumerate(header)]
    text = ["  ".join(h.rjust(w) for h, w in zip(header, widths))]
    text += ["  ".join(c.rjust(w) for c, w in zip(cells, widths)) for cells in lines]
    if "mean_time_s" in summary:
        stages = ", ".join(f"{k} {v:.4f} s" for k, v in summary["mean_stage_times_s"].items()
                           if k != "total")
        text.append(f"mean time per pair: {summary['mean_time_s']:.4f} s"
                    + (f" ({stages})" if stages else ""))
    return "\n".join(text)


# --------------------------------------------------------------------------- command line
