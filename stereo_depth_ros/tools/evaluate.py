"""`stereo_depth_eval`: score a matcher (or precomputed disparities) on a stereo dataset.

Examples:

    stereo_depth_eval --dataset kitti2015 --root data_scene_flow/training \\
        --backend psmnet --weights pretrained_model_KITTI2015.tar --out out/eval_kitti
    stereo_depth_eval --dataset synthetic --count 20 --backend sgbm --max-disparity 64
    stereo_depth_eval --dataset kitti2015 --root data_scene_flow/training \\
        --predictions my_method/disp_0 --out out/eval_mine

Predictions (`--predictions DIR`) are looked up as `DIR/<name>.png` (KITTI uint16, value / 256,
0 = invalid; the KITTI devkit's format and naming, e.g. `000123_10.png`), else `<name>.pfm` or
`<name>.npy`, where `<name>` is the sample name of the dataset reader (KITTI: the ground-truth
file stem; Middlebury/ETH3D: the scene folder; SceneFlow: `<rel>/<frame>`).

Metrics (core.metrics) are computed over valid ground truth on the "all" mask and, where the
dataset has one, on the non-occluded mask ("noc" columns). Holes in predictions are filled as the
KITTI devkit does (`--holes interpolate`, default) or left out (`--holes exclude`); `density`
reports how much was predicted. The printed table and the "pooled" summary are pixel-weighted
over the whole dataset (as the KITTI devkit totals); "mean" is the average of per-image values.

Outputs with `--out DIR`: `per_image.csv` (one row per pair) and `summary.json`. Progress goes to
stderr. Ctrl-C stops it after printing (and with --out writing) the pairs scored so far, marked
`"interrupted": true` in summary.json. Exit status: 0 ok, 1 error (message on stderr), 2 bad
command line, 130 interrupted.

`stereo_depth_eval --live ...` is the other mode: the running node's depth against LiDAR scans
while a bag plays (tools.live_eval; `stereo_depth_eval --live --help` lists its options).
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from stereo_depth_ros.core.disparity_io import read_disparity, write_disparity
from stereo_depth_ros.core.geometry import resize_disparity
from stereo_depth_ros.core.json_values import json_safe
from stereo_depth_ros.core.metrics import (
    DEFAULT_METRICS, HOLE_POLICIES, MetricCounts, count_metrics, parse_metric_names)
from stereo_depth_ros.data import StereoSample
from stereo_depth_ros.tools._cli import (
    ToolError, add_backend_arguments, add_dataset_arguments, backend_from_args,
    dataset_from_args, hxw_size, run_tool, spec_type)

PROG = "stereo_depth_eval"
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
    """Map every sample name to its prediction file; ToolError listing the missing ones."""
    if not directory.is_dir():
        raise ToolError(f"predictions directory not found: {directory}")
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
        raise ToolError(f"{len(missing)} of {len(names)} predictions missing in {directory} "
                        f"(looked for <name>{'|'.join(PREDICTION_SUFFIXES)}): {shown}{more}")
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
        raise ToolError(f"{sample.name}: prediction is {disparity.shape[1]}x"
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

def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG, description="Evaluate a stereo matcher or precomputed disparities on a "
        "dataset with ground truth (EPE, bad-N, KITTI D1-all, density, time per pair).",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    add_dataset_arguments(
        parser.add_argument_group("dataset"), size_type=hxw_size("256x320", minimum=8),
        size_default=(256, 320), size_help="synthetic: HxW px",
        limit_help="evaluate only the first N pairs",
        split_help="KITTI split folder under --root", pass_help="SceneFlow render pass",
        synthetic_extra=[("--scene-max-disparity", dict(
            type=float, default=64.0,
            help="synthetic: scene disparities stay below 0.85 of this (px)"))])
    source = parser.add_argument_group("what to score (one of)")
    exclusive = source.add_mutually_exclusive_group(required=True)
    exclusive.add_argument("--predictions", type=Path,
                           help="folder of precomputed disparities named <name>.png (KITTI "
                           "uint16), .pfm or .npy")
    backend = parser.add_argument_group("backend options")
    add_backend_arguments(backend, default=None, backend_group=exclusive)
    backend.add_argument("--input-scale", type=spec_type("input_scale"), default=1.0,
                         help="resize the pair by this factor before matching (the node's "
                         "input_scale); the disparity is resized back and multiplied by 1/scale")
    backend.add_argument("--warmup", type=int, default=1,
                         help="untimed runs on the first pair before timing")
    scoring = parser.add_argument_group("scoring and output")
    scoring.add_argument("--metrics", default=",".join(DEFAULT_METRICS),
                         help="comma-separated: epe, rmse, bad_N (e.g. bad_0.5), d1_all, "
                         "density, n_valid")
    scoring.add_argument("--holes", default="interpolate", choices=HOLE_POLICIES,
                         help="prediction holes: fill like the KITTI devkit, or score only "
                         "predicted pixels")
    scoring.add_argument("--max-gt-disparity", type=float,
                         help="ignore ground truth >= this (px); SceneFlow papers use 192")
    scoring.add_argument("--out", type=Path, help="write per_image.csv and summary.json here")
    scoring.add_argument("--save-disparities", action="store_true",
                         help="also write each prediction as <out>/disparity/<name>.png")
    scoring.add_argument("--quiet", action="store_true", help="no progress on stderr")
    parser.add_argument("--live", action="store_true",
                        help="instead: compare the running node's depth/image_rect with LiDAR "
                        "scans while a bag plays (see stereo_depth_eval --live --help)")
    return parser


def run(args: argparse.Namespace, stdout=None, stderr=None) -> dict:
    """Evaluate as the command line says; returns the summary dict (also printed)."""
    stdout = stdout if stdout is not None else sys.stdout
    stderr = stderr if stderr is not None else sys.stderr
    names = parse_metric_names(args.metrics)
    if args.limit is not None and args.limit < 1:
        raise ToolError(f"--limit must be >= 1, got {args.limit}")
    if args.save_disparities and args.out is None:
        raise ToolError("--save-disparities needs --out DIR")
    dataset = dataset_from_args(args, seed=args.seed, size=args.size,
                                max_disparity=args.scene_max_disparity, error=ToolError)
    if len(dataset) == 0:
        raise ToolError(f"{args.dataset}: no samples")
    if not dataset.has_ground_truth:
        raise ToolError(f"{args.dataset}: this split has no ground truth to evaluate against")
    count = len(dataset) if args.limit is None else min(args.limit, len(dataset))
    sample_names = dataset.names()[:count]

    if args.predictions is not None:
        files = check_predictions(args.predictions, sample_names)

        def predict(sample: StereoSample):
            try:
                return read_disparity(files[sample.name]), None
            except ValueError as error:
                raise ToolError(str(error)) from None
        source = {"predictions": str(args.predictions)}
    else:
        from stereo_depth_ros.pipeline import PipelineOptions, StereoPipeline
        backend = backend_from_args(args)
        scale = float(args.input_scale)
        pipeline = StereoPipeline(backend, PipelineOptions(rectify="false", input_scale=scale))
        if args.warmup > 0:
            first = dataset[0]
            for _ in range(args.warmup):
                match_at_scale(pipeline, first.left, first.right)

        def predict(sample: StereoSample):
            start = time.perf_counter()
            disparity, timings = match_at_scale(pipeline, sample.left, sample.right)
            timings["total"] = time.perf_counter() - start
            return disparity, timings
        source = {"backend": args.backend, "input_scale": scale,
                  "max_disparity": float(backend.max_disparity),
                  "matcher": backend.describe()}
        if args.backend == "psmnet":
            source.update(weights=str(getattr(backend, "weights_path", None)), model=args.model,
                          device=args.device, precision=args.precision, engine=args.engine)

    progress = Progress(count, enabled=not args.quiet, stream=stderr)
    save_dir = args.out / "disparity" if args.save_disparities else None
    result = evaluate(dataset, predict, names=names, holes=args.holes, limit=count,
                      max_gt_disparity=args.max_gt_disparity, save_dir=save_dir,
                      progress=progress)
    if result.interrupted and not result.rows:
        raise KeyboardInterrupt
    summary = {"dataset": args.dataset, "root": str(args.root) if args.root else None,
               **source, "holes": args.holes, "max_gt_disparity": args.max_gt_disparity,
               **summarize(result, names)}
    what = args.backend or f"predictions in {args.predictions}"
    if result.interrupted:
        summary["interrupted"] = True
        summary["pairs_requested"] = count
        stdout.write(f"{args.dataset}: interrupted after {summary['pairs']} of {count} pairs; "
                     "the results of those:\n")
    stdout.write(f"{args.dataset}: {summary['pairs']} pairs, {what}, holes {args.holes}, "
                 "pooled over pixels\n")
    stdout.write(format_table(summary, names) + "\n")
    if args.out is not None:
        csv_path, json_path = write_outputs(args.out, result, summary)
        stdout.write(f"wrote {csv_path} and {json_path}\n")
    stdout.flush()
    if result.interrupted:
        raise KeyboardInterrupt          # exit status 130, after the partial results
    return summary


def main(argv: list[str] | None = None) -> int:
    """Console entry point; returns the exit status (0 ok, 1 failure, 2 bad command line).
    `--live` anywhere before a --ros-args section hands over to tools.live_eval."""
    arguments = list(sys.argv[1:] if argv is None else argv)
    own = arguments[:arguments.index("--ros-args")] if "--ros-args" in arguments else arguments
    if "--live" in own:
        from stereo_depth_ros.tools.live_eval import main as live_main
        arguments.remove("--live")
        return live_main(arguments)
    args = build_parser().parse_args(argv)
    return run_tool(PROG, lambda: run(args) and None,
                    interrupted_hint="the pairs scored before it are reported above")


if __name__ == "__main__":
    sys.exit(main())
