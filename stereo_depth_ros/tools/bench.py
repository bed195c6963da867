"""stereo_depth_bench: time the matchers and the whole per-frame path, with speed-ups measured
side by side against the reference PSMNet in the same run.

    stereo_depth_bench [--sizes 384x1248 256x512] [--configs reference exact fast sgbm]
                       [--runs 5] [--warmup 1] [--rounds 1] [--threads N] [--json OUT]
                       [--weights PATH] [--malloc default|reuse]

Configurations (--configs):
  reference  the plain eager float32 PSMNet exactly as the official code computes it
             (`models.psmnet`, disparity only, as the official test scripts)
  exact      models.fast, mode "exact": float32, golden parity (disparity + confidence)
  fast       models.fast, mode "fast": int8 where it pays (disparity + confidence)
  fast-fp32  models.fast, mode "fast" without int8 (for comparison)
  bf16       the reference under bfloat16 autocast (backends.psmnet precision "bf16")
  sgbm       OpenCV StereoSGBM with the backend's default parameters

Each configuration runs in its own subprocess, so that process's peak RSS (ru_maxrss) is that
configuration's peak memory; `--rounds R` runs every configuration R times, alternating, so
that a load change on a shared machine hits all of them alike. Speed-ups are the reference's
median over each configuration's median (and the same with minima) from the same run.

The per-frame overhead outside the matcher (image message -> array, rectification, depth and
points, DisparityImage/depth/PointCloud2 message build) is measured once per size with the
package's own functions (ROS messages when rclpy's message packages import).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

CONFIGS: dict[str, dict] = {
    "reference": {"kind": "psmnet", "engine": "reference", "precision": "fp32"},
    "exact": {"kind": "psmnet", "engine": "exact", "precision": "fp32"},
    "fast": {"kind": "psmnet", "engine": "fast", "precision": "int8+fp32"},
    "fast-fp32": {"kind": "psmnet", "engine": "fast-fp32", "precision": "fp32"},
    "bf16": {"kind": "psmnet", "engine": "reference", "precision": "bf16"},
    "sgbm": {"kind": "sgbm", "engine": "opencv", "precision": "-"},
}
DEFAULT_CONFIGS = ("reference", "exact", "fast", "sgbm")
DEFAULT_SIZES = ((384, 1248), (256, 512))
PSMNET_STAGES = ("preprocess", "features", "cost_volume", "cnn3d", "regression", "postprocess")
OVERHEAD_STAGES = ("convert", "rectify", "depth_points", "message_build")
RESULT_PREFIX = "STEREO_DEPTH_BENCH_RESULT "


class BenchError(Exception):
    """A problem with the arguments or a failed configuration; printed without a traceback."""


# ----------------------------------------------------------------------------------------------
# Inputs
# ----------------------------------------------------------------------------------------------

def _sample_pair_paths() -> tuple[Path, Path] | None:
    from stereo_depth_ros.tools.infer import find_default_weights
    weights = find_default_weights()
    roots = [weights.parent.parent] if weights is not None else []
    roots += [Path.cwd() / "assets", Path(__file__).resolve().parents[2] / "assets"]
    for root in roots:
        folder = root / "samples" / "kitti2015"
        left, right = folder / "kitti_000046_left.png", folder / "kitti_000046_right.png"
        if left.is_file() and right.is_file():
            return left, right
    return None


def load_pair(height: int, width: int):
    """An RGB uint8 pair of the given size: the KITTI sample resized, else a random-dot pair."""
    import cv2
    import numpy as np
    paths = _sample_pair_paths()
    if paths is not None:
        images = [cv2.imread(str(path), cv2.IMREAD_COLOR) for path in paths]
        if all(image is not None for image in images):
            return tuple(np.ascontiguousarray(cv2.resize(image, (width, height),
                                                         interpolation=cv2.INTER_AREA)[..., ::-1])
                         for image in images), "kitti2015/000046 resized"
    rng = np.random.default_rng(0)
    left = rng.integers(0, 256, (height, width + 32, 3), dtype=np.uint8)
    right = np.ascontiguousarray(left[:, 16:16 + width])                 # 16 px disparity
    return (np.ascontiguousarray(left[:, :width]), right), "random dots, 16 px shift"


# ----------------------------------------------------------------------------------------------
# Worker: one configuration at one size, in its own process
# ----------------------------------------------------------------------------------------------

def _stat(values: list[float]) -> dict:
    ordered = sorted(values)
    n = len(ordered)
    median = statistics.median(ordered)
    return {"median_s": median, "min_s": ordered[0], "max_s": ordered[-1],
            "p25_s": ordered[(n - 1) // 4], "p75_s": ordered[(3 * (n - 1) + 3) // 4],
            "spread_pct": 100.0 * (ordered[-1] - ordered[0]) / median if median > 0 else 0.0}


def _timed(function, warmup: int, runs: int):
    """Call `function()` -> (result, stages dict) warmup + runs times; per-run totals/stages."""
    totals, stages, result = [], [], None
    for index in range(warmup + runs):
        start = time.perf_counter()
        result, stage_times = function()
        elapsed = time.perf_counter() - start
        if index >= warmup:
            totals.append(elapsed)
            stages.append(stage_times)
    return result, totals, stages


def _psmnet_runner(config: dict, weights: Path | None, left, right):
    import torch
    from stereo_depth_ros.backends.psmnet import PsmnetBackend
    from stereo_depth_ros.models.fast import FastPSMNet

    precision = "bf16" if config["precision"] == "bf16" else "fp32"
    backend = PsmnetBackend(weights, device="cpu", precision=precision)
    model = backend.model
    engine = None
    if config["engine"] in ("exact", "fast", "fast-fp32"):
        mode = "exact" if config["engine"] == "exact" else "fast"
        engine = FastPSMNet.from_model(model, mode=mode,
                                       int8=False if config["engine"] == "fast-fp32" else None)

    def run():
        stages: dict[str, float] = {}
        start = time.perf_counter()
        left_t, right_t, padder = backend.preprocess(left, right)
        stages["preprocess"] = time.perf_counter() - start
        size = tuple(left_t.shape[-2:])
        if engine is not None:
            disparity, confidence = engine.forward_with_confidence(left_t, right_t,
                                                                   timings=stages)
        else:
            with torch.inference_mode(), backend._autocast():
                mark = time.perf_counter()
                features = model.extract_features(left_t, right_t)
                stages["features"] = time.perf_counter() - mark
                mark = time.perf_counter()
                volume = model.build_cost_volume(*features)
                del features
                stages["cost_volume"] = time.perf_counter() - mark
                mark = time.perf_counter()
                cost = model.aggregate(volume)[-1]
                del volume
                stages["cnn3d"] = time.perf_counter() - mark
                mark = time.perf_counter()
                disparity, confidence = model.regress(cost, size)
                stages["regression"] = time.perf_counter() - mark
        mark = time.perf_counter()
        out = padder.unpad(disparity[0, 0]).float().numpy().copy()
        if confidence is not None:
            padder.unpad(confidence[0, 0]).float().numpy().copy()
        stages["postprocess"] = time.perf_counter() - mark
        return out, stages

    return run


def _sgbm_runner(left, right):
    from stereo_depth_ros.backends import make_backend
    backend = make_backend("sgbm")

    def run():
        start = time.perf_counter()
        result = backend.compute(left, right)
        return result.disparity, {"infer": time.perf_counter() - start}

    return run


def _overhead_runner(left, right, disparity):
    """convert -> rectify -> depth/points -> message build, with the package's functions."""
    import numpy as np
    from stereo_depth_ros.core.camera import StereoRig
    from stereo_depth_ros.core.geometry import depth_to_points, disparity_to_depth
    from stereo_depth_ros.core.rectify import CameraCalibration, Rectifier

    height, width = left.shape[:2]
    fx = 721.5377 * width / 1242.0
    K = np.array([[fx, 0, width / 2 + 3.2], [0, fx, height / 2 - 1.7], [0, 0, 1.0]])
    D = np.array([-0.37, 0.2, 0.0005, -0.001, -0.07])
    angle = 0.004
    R = np.array([[np.cos(angle), 0, np.sin(angle)], [0, 1, 0], [-np.sin(angle), 0,
                                                                 np.cos(angle)]])
    P_left = np.hstack([K, np.zeros((3, 1))])
    P_right = np.hstack([K, np.array([[-fx * 0.54], [0], [0]])])
    calibration = (CameraCalibration.create(K, D, R, P_left, name="left"),
                   CameraCalibration.create(K, D, R.T, P_right, name="right"))
    rectifier = Rectifier(*calibration, width, height)
    rig = StereoRig.from_projection_matrices(P_left, P_right, width, height)
    bgr = [np.ascontiguousarray(image[..., ::-1]) for image in (left, right)]
    try:
        from std_msgs.msg import Header
        from stereo_depth_ros.ros.image_conversion import (image_to_numpy, numpy_to_image,
                                                           pair_to_matcher_input)
        from stereo_depth_ros.ros.messages import (make_disparity_image, make_float_image,
                                                   make_pointcloud2)
        messages = [numpy_to_image(image, "bgr8") for image in bgr]
        header = Header(frame_id="left_camera_optical_frame")
    except ImportError:
        messages = None

    def run():
        stages: dict[str, float] = {}
        start = time.perf_counter()
        if messages is not None:
            raw = [image_to_numpy(msg) for msg in messages]
            left_in, right_in = pair_to_matcher_input(raw[0], "bgr8", raw[1], "bgr8")
        else:
            left_in, right_in = (np.ascontiguousarray(image[..., ::-1]) for image in bgr)
        stages["convert"] = time.perf_counter() - start
        mark = time.perf_counter()
        rectifier.rectify(left_in, right_in)
        stages["rectify"] = time.perf_counter() - mark
        mark = time.perf_counter()
        depth = disparity_to_depth(disparity, rig.fx, rig.baseline_m, rig.cx_offset)
        points = depth_to_points(depth, rig.fx, rig.fy, rig.cx_left, rig.cy)
        stages["depth_points"] = time.perf_counter() - mark
        mark = time.perf_counter()
        if messages is not None:
            make_disparity_image(disparity, header, rig, 0.0, 192.0, 1.0 / 256.0)
            make_float_image(depth, header)
            make_pointcloud2(points, header, left_in)
        stages["message_build"] = time.perf_counter() - mark
        return None, stages

    return run, messages is not None


def run_worker(config_name: str, size: tuple[int, int], *, runs: int, warmup: int,
               threads: int | None, weights: Path | None, malloc: str,
               save_output: Path | None = None) -> dict:
    """Time one configuration (or "overhead") at one size in this process; return a record."""
    import cv2
    import numpy as np
    import torch

    if malloc == "reuse":
        from stereo_depth_ros.models.fast import reuse_freed_memory
        reuse_freed_memory()
    if threads is not None:
        torch.set_num_threads(threads)
        cv2.setNumThreads(threads)
    height, width = size
    (left, right), source = load_pair(height, width)
    record = {"config": config_name, "size": f"{height}x{width}", "height": height,
              "width": width, "input": source, "threads": torch.get_num_threads(),
              "runs": runs, "warmup": warmup}
    if config_name == "overhead":
        disparity = np.full((height, width), 20.0, dtype=np.float32)
        disparity[: height // 8] = np.nan
        run, with_messages = _overhead_runner(left, right, disparity)
        record["ros_messages"] = with_messages
        stage_names = OVERHEAD_STAGES
    else:
        config = CONFIGS[config_name]
        record.update(config)
        if config["kind"] == "sgbm":
            run = _sgbm_runner(left, right)
            stage_names = ("infer",)
        else:
            run = _psmnet_runner(config, weights, left, right)
            record["weights"] = str(weights) if weights else "random (no weights file found)"
            record["confidence"] = config["engine"] != "reference"
            stage_names = PSMNET_STAGES
    output, totals, stages = _timed(run, warmup, runs)
    record["runs_s"] = totals
    record.update(_stat(totals))
    record["stages_s"] = {name: statistics.median(s.get(name, 0.0) for s in stages)
                          for name in stage_names}
    record["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
    if save_output is not None and output is not None:
        np.save(save_output, np.asarray(output, dtype=np.float32))
    return record


# ----------------------------------------------------------------------------------------------
# Parent: subprocesses, rounds, ratios, report
# ----------------------------------------------------------------------------------------------

def _worker_command(args: argparse.Namespace, config: str, size: tuple[int, int],
                    save_output: Path | None) -> list[str]:
    command = [sys.executable, "-m", "stereo_depth_ros.tools.bench", "--worker", config,
               "--sizes", f"{size[0]}x{size[1]}", "--runs", str(args.runs),
               "--warmup", str(args.warmup), "--malloc", args.malloc]
    if args.threads is not None:
        command += ["--threads", str(args.threads)]
    if args.weights is not None:
        command += ["--weights", str(args.weights)]
    if save_output is not None:
        command += ["--save-output", str(save_output)]
    return command


def _run_config(args: argparse.Namespace, config: str, size: tuple[int, int],
                save_output: Path | None) -> dict:
    if args.in_process:
        return run_worker(config, size, runs=args.runs, warmup=args.warmup,
                          threads=args.threads, weights=args.weights, malloc=args.malloc,
                          save_output=save_output)
    proc = subprocess.run(_worker_command(args, config, size, save_output), text=True,
                          capture_output=True)
    for line in proc.stdout.splitlines():
        if line.startswith(RESULT_PREFIX):
            return json.loads(line[len(RESULT_PREFIX):])
    tail = (proc.stderr or proc.stdout).strip().splitlines()[-5:]
    raise BenchError(f"configuration {config!r} at {size[0]}x{size[1]} failed "
                     f"(exit {proc.returncode}): " + " | ".join(tail))


def _merge(records: list[dict]) -> dict:
    """One record from the rounds of a configuration: all runs pooled, peak = max."""
    merged = dict(records[0])
    totals = [t for r in records for t in r["runs_s"]]
    merged["runs_s"] = totals
    merged.update(_stat(totals))
    merged["rounds"] = len(records)
    merged["peak_rss_mb"] = max(r["peak_rss_mb"] for r in records)
    merged["stages_s"] = {name: statistics.median(r["stages_s"][name] for r in records)
                          for name in records[0]["stages_s"]}
    return merged


def _accuracy(output: Path, reference: Path) -> dict | None:
    import numpy as np
    if not (output.is_file() and reference.is_file()):
        return None
    got, ref = np.load(output), np.load(reference)
    valid = np.isfinite(got) & np.isfinite(ref)
    diff = np.abs(got - ref)[valid]
    if diff.size == 0:
        return None
    return {"mean_abs_px": float(diff.mean()), "max_abs_px": float(diff.max()),
            "bad3_pct": float(100.0 * (diff > 3.0).mean())}


def run_bench(args: argparse.Namespace) -> dict:
    """Every configuration at every size (rounds alternate); returns the report dict."""
    load_before = os.getloadavg()
    results, overhead = [], []
    with tempfile.TemporaryDirectory(prefix="stereo_depth_bench_") as tmp:
        for size in args.sizes:
            collected: dict[str, list[dict]] = {name: [] for name in args.configs}
            overhead_records = []
            outputs = {name: Path(tmp) / f"{name}_{size[0]}x{size[1]}.npy"
                       for name in args.configs}
            for round_index in range(args.rounds):
                for name in args.configs:
                    _progress(args, f"{size[0]}x{size[1]} round {round_index + 1}/{args.rounds}: "
                              f"{name}")
                    save = outputs[name] if round_index == 0 else None
                    collected[name].append(_run_config(args, name, size, save))
                if not args.no_overhead:
                    overhead_records.append(_run_config(args, "overhead", size, None))
            merged = {name: _merge(records) for name, records in collected.items()}
            reference = merged.get("reference")
            overhead_total = None
            if overhead_records:
                over = _merge(overhead_records)
                over["total_s"] = over.pop("median_s")
                overhead_total = sum(over["stages_s"].values())
                over["stages_total_s"] = overhead_total
                overhead.append(over)
            for name, record in merged.items():
                if reference is not None:
                    record["speedup_vs_reference"] = reference["median_s"] / record["median_s"]
                    record["speedup_vs_reference_min"] = reference["min_s"] / record["min_s"]
                    if name != "reference" and record["kind"] == "psmnet":
                        record["accuracy_vs_reference"] = _accuracy(outputs[name],
                                                                    outputs["reference"])
                if overhead_total is not None:
                    record["frame_total_s"] = record["median_s"] + overhead_total
                results.append(record)
    import torch
    return {
        "tool": "stereo_depth_bench", "schema": 1,
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "command": ["stereo_depth_bench", *sys.argv[1:]],
        "machine": {"platform": platform.platform(), "processor": _cpu_model(),
                    "cpus": os.cpu_count(), "torch": torch.__version__,
                    "loadavg_before": load_before, "loadavg_after": os.getloadavg()},
        "settings": {"sizes": [f"{h}x{w}" for h, w in args.sizes], "configs": args.configs,
                     "runs": args.runs, "warmup": args.warmup, "rounds": args.rounds,
                     "threads": args.threads, "malloc": args.malloc,
                     "weights": str(args.weights) if args.weights else None},
        "results": results,
        "overhead": overhead,
    }


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as handle:
            for line in handle:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


def _progress(args: argparse.Namespace, text: str) -> None:
    if not args.quiet:
        print(f"[bench] {text}", file=sys.stderr, flush=True)


def format_table(report: dict) -> str:
    """Plain-text summary of a report."""
    lines = [f"{'size':>9} {'config':>10} {'median s':>9} {'min s':>7} {'spread':>7} "
             f"{'x ref':>6} {'x ref(min)':>10} {'peak MB':>8}  accuracy vs reference"]
    for r in report["results"]:
        accuracy = r.get("accuracy_vs_reference")
        acc_text = "" if not accuracy else (
            f"mean {accuracy['mean_abs_px']:.3f} px, max {accuracy['max_abs_px']:.2f} px, "
            f">3 px {accuracy['bad3_pct']:.2f} %")
        lines.append(f"{r['size']:>9} {r['config']:>10} {r['median_s']:9.3f} {r['min_s']:7.3f} "
                     f"{r['spread_pct']:6.1f}% {r.get('speedup_vs_reference', float('nan')):6.2f}"
                     f" {r.get('speedup_vs_reference_min', float('nan')):10.2f} "
                     f"{r['peak_rss_mb']:8.0f}  {acc_text}")
    for over in report["overhead"]:
        stages = ", ".join(f"{k} {1000 * v:.1f} ms" for k, v in over["stages_s"].items())
        lines.append(f"per-frame overhead at {over['size']}: {1000 * over['stages_total_s']:.1f} "
                     f"ms ({stages}; ROS messages: {over.get('ros_messages')})")
    return "\n".join(lines)


# ----------------------------------------------------------------------------------------------
# Command line
# ----------------------------------------------------------------------------------------------

def _size(text: str) -> tuple[int, int]:
    try:
        height, width = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected HxW, e.g. 384x1248, got {text!r}") from None
    if height < 16 or width < 16:
        raise argparse.ArgumentTypeError(f"size must be at least 16x16, got {text!r}")
    return height, width


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected an integer >= 1, got {text!r}")
    return value


def _non_negative(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected an integer >= 0, got {text!r}")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="stereo_depth_bench", description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="configurations:\n" + "\n".join(
            line for line in __doc__.splitlines() if line.startswith("  ")))
    parser.add_argument("--sizes", type=_size, nargs="+", default=list(DEFAULT_SIZES),
                        metavar="HxW", help="input sizes (default: 384x1248 256x512); sizes "
                        "that are not multiples of 16 are padded as the backend does")
    parser.add_argument("--configs", nargs="+", default=list(DEFAULT_CONFIGS),
                        choices=sorted(CONFIGS), metavar="NAME",
                        help=f"configurations (default: {' '.join(DEFAULT_CONFIGS)}; one of "
                        f"{', '.join(sorted(CONFIGS))})")
    parser.add_argument("--runs", type=_positive, default=5, help="timed runs (default 5)")
    parser.add_argument("--warmup", type=_non_negative, default=1,
                        help="untimed warm-up runs (default 1)")
    parser.add_argument("--rounds", type=_positive, default=1,
                        help="run every configuration this many times, alternating (default 1)")
    parser.add_argument("--threads", type=_positive, default=None,
                        help="torch/OpenCV threads (default: torch's default)")
    parser.add_argument("--weights", type=Path, default=None,
                        help="PSMNet checkpoint (default: the KITTI 2015 weights from "
                        "`make assets` when present, else random weights)")
    parser.add_argument("--malloc", choices=("default", "reuse"), default="default",
                        help="'reuse': keep freed memory in glibc's heap in every configuration "
                        "(models.fast.reuse_freed_memory); default: glibc as is")
    parser.add_argument("--json", type=Path, default=None, metavar="OUT",
                        help="write the full report (all runs, stages, ratios) as JSON")
    parser.add_argument("--no-overhead", action="store_true",
                        help="skip the per-frame overhead measurement")
    parser.add_argument("--in-process", action="store_true",
                        help="run configurations in this process (peak memory is then shared)")
    parser.add_argument("--quiet", action="store_true", help="no progress lines on stderr")
    parser.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--save-output", type=Path, default=None, help=argparse.SUPPRESS)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.weights is not None and not args.weights.is_file():
        print(f"stereo_depth_bench: error: --weights {args.weights}: no such file",
              file=sys.stderr)
        return 2
    if args.weights is None:
        from stereo_depth_ros.tools.infer import find_default_weights
        args.weights = find_default_weights()
    if args.worker is not None:
        record = run_worker(args.worker, args.sizes[0], runs=args.runs, warmup=args.warmup,
                            threads=args.threads, weights=args.weights, malloc=args.malloc,
                            save_output=args.save_output)
        print(RESULT_PREFIX + json.dumps(record), flush=True)
        return 0
    if args.json is not None and not args.json.parent.is_dir():
        print(f"stereo_depth_bench: error: --json {args.json}: directory "
              f"{args.json.parent} does not exist", file=sys.stderr)
        return 2
    try:
        report = run_bench(args)
    except BenchError as error:
        print(f"stereo_depth_bench: error: {error}", file=sys.stderr)
        return 1
    print(format_table(report))
    if args.json is not None:
        args.json.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
        print(f"report written to {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
