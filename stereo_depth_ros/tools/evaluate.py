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
import sys
import time
from pathlib import Path

from stereo_depth_ros.core.disparity_io import read_disparity
from stereo_depth_ros.core.metrics import DEFAULT_METRICS, HOLE_POLICIES, parse_metric_names
from stereo_depth_ros.data import StereoSample
from stereo_depth_ros.evaluation.offline import (
    Progress, check_predictions, evaluate, format_table, match_at_scale, summarize,
    write_outputs)
from stereo_depth_ros.tools._cli import (
    ToolError, add_backend_arguments, add_dataset_arguments, backend_from_args,
    dataset_from_args, hxw_size, run_tool, spec_type)

PROG = "stereo_depth_eval"


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


def _predictor(args: argparse.Namespace, dataset, sample_names: list[str]):
    """(predict(sample) -> (disparity, timings or None), the summary's description of the
    source): the saved predictions of --predictions, else the matcher run on each pair."""
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
    return predict, source


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

    predict, source = _predictor(args, dataset, sample_names)
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
