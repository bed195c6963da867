"""stereo_depth_bench: time the matchers and the whole per-frame pipeline, with speed-ups measured
side by side against the reference PSMNet in the same run.

    stereo_depth_bench [--device cpu|cuda] [--sizes 384x1248 256x512]
                       [--configs reference exact fast sgbm] [--runs 5] [--warmup 1]
                       [--rounds 1] [--frame-runs N] [--threads N] [--json OUT]
                       [--weights PATH] [--malloc default|reuse]

Configurations (--configs):
  reference  the plain eager float32 PSMNet exactly as the official code computes it
             (`models.psmnet`, disparity only, as the official test scripts; on CUDA with
             PyTorch's default settings)
  exact      CPU: models.fused.FastPSMNet "exact" (fused float32); CUDA: models.fused.cuda
             "exact" (float32, TF32 off, CUDA graph). Golden parity; disparity + confidence
  fast       CPU: the fused engine in the arithmetic this CPU runs fastest (bf16, int8 or fp32;
             the report names it); CUDA: fp16 convolutions, CUDA graph
  fast-fp32  CPU only: the fused fast engine in float32 (for comparison)
  fast-int8  CPU only: the fused fast engine with int8 3-D and feature layers (needs VNNI)
  fast-bf16  CPU: the fused fast engine in bfloat16 (needs oneDNN bf16; native with
             AVX512_BF16/AMX); CUDA: bf16 convolutions, CUDA graph
  fast-eager CUDA only: fast without the CUDA graph (what the graph saves)
  fast-compile CUDA only: fast through torch.compile(mode="reduce-overhead") instead of the
             engine's own graph capture (compiles for a minute or more)
  bf16       CUDA only: the reference under bfloat16 autocast (refused on CPUs, where it is
             slower than float32: use fast-bf16)
  sgbm       OpenCV StereoSGBM with the backend's default parameters (always on the CPU)
  exact-sigma, fast-sigma  exact / fast also computing sigma_d (the uncertainty) in the same
             regression pass: their ratio to exact / fast is the uncertainty's cost

Each configuration runs in its own subprocess, so that process's peak RSS (ru_maxrss) is that
configuration's peak memory; `--rounds R` runs every configuration R times, alternating, so
that a load change on a shared machine hits all of them alike. Speed-ups are the reference's
median over each configuration's median (and the same with minima) from the same run.

Two measurements per configuration:
  matcher  preprocess + network + result on the host (`median_s`; on CUDA also the network
           alone, timed with CUDA events: `network`, with the peak GPU memory)
  frame    the whole per-frame path the node runs (`pipeline.StereoPipeline`): a raw, distorted
           pair -> rectification -> matching -> depth -> points, plus the ROS message
           conversion and building when rclpy's message packages import (`frame`)
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

from stereo_depth_ros.tools._cli import hxw_size, run_tool

CONFIGS: dict[str, dict] = {
    "reference": {"kind": "psmnet", "engine": "reference", "precision": "fp32",
                  "devices": ("cpu", "cuda")},
    "exact": {"kind": "psmnet", "engine": "exact", "precision": "fp32",
              "devices": ("cpu", "cuda")},
    "fast": {"kind": "psmnet", "engine": "fast", "precision": "fp32", "devices": ("cpu", "cuda")},
    "fast-fp32": {"kind": "psmnet", "engine": "fast", "precision": "fp32", "arithmetic": "fp32",
                  "devices": ("cpu",)},
    "fast-int8": {"kind": "psmnet", "engine": "fast", "precision": "fp32", "arithmetic": "int8",
                  "devices": ("cpu",)},
    "fast-bf16": {"kind": "psmnet", "engine": "fast", "precision": "bf16",
                  "devices": ("cpu", "cuda")},
    "fast-eager": {"kind": "psmnet", "engine": "fast", "precision": "fp32", "graphs": False,
                   "devices": ("cuda",)},
    "fast-compile": {"kind": "psmnet", "engine": "fast", "precision": "fp32", "compile": True,
                     "devices": ("cuda",)},
    "bf16": {"kind": "psmnet", "engine": "reference", "precision": "bf16",
             "devices": ("cuda",)},
    "sgbm": {"kind": "sgbm", "engine": "opencv", "precision": "-", "devices": ("cpu",)},
    "exact-sigma": {"kind": "psmnet", "engine": "exact", "precision": "fp32", "uncertainty": True,
                    "devices": ("cpu", "cuda")},
    "fast-sigma": {"kind": "psmnet", "engine": "fast", "precision": "fp32", "uncertainty": True,
                   "devices": ("cpu", "cuda")},
}
DEFAULT_CONFIGS = {"cpu": ("reference", "exact", "fast", "sgbm"),
                   "cuda": ("reference", "exact", "fast", "fast-eager")}
DEFAULT_SIZES = ((384, 1248), (256, 512))
PSMNET_STAGES = ("preprocess", "features", "cost_volume", "cnn3d", "regression", "postprocess")
RESULT_PREFIX = "STEREO_DEPTH_BENCH_RESULT "


class BenchError(Exception):
    """A problem with the arguments or a failed configuration; printed without a traceback."""


# ----------------------------------------------------------------------------------------------
# Inputs
# ----------------------------------------------------------------------------------------------

def _sample_pair_paths() -> tuple[Path, Path] | None:
    from stereo_depth_ros.tools._cli import find_default_weights
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


def raw_calibration(width: int, height: int):
    """A KITTI-like stereo calibration with lens distortion and a small rotation, so that the
    frame measurement rectifies (core.rectify.StereoCalibration)."""
    import numpy as np
    from stereo_depth_ros.core.camera import StereoRig
    from stereo_depth_ros.core.rectify import CameraCalibration, StereoCalibration

    fx = 721.5377 * width / 1242.0
    K = np.array([[fx, 0, width / 2 + 3.2], [0, fx, height / 2 - 1.7], [0, 0, 1.0]])
    D = np.array([-0.37, 0.2, 0.0005, -0.001, -0.07])
    angle = 0.004
    R = np.array([[np.cos(angle), 0, np.sin(angle)], [0, 1, 0],
                  [-np.sin(angle), 0, np.cos(angle)]])
    P_left = np.hstack([K, np.zeros((3, 1))])
    P_right = np.hstack([K, np.array([[-fx * 0.54], [0], [0]])])
    return StereoCalibration(
        left=CameraCalibration.create(K, D, R, P_left, name="left"),
        right=CameraCalibration.create(K, D, R.T, P_right, name="right"),
        rig=StereoRig.from_projection_matrices(P_left, P_right, width, height),
        already_rectified=False, frame_id="left_camera_optical_frame")


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


def _make_backend(config: dict, device: str, weights: Path | None):
    from stereo_depth_ros.backends import make_backend
    if config["kind"] == "sgbm":
        return make_backend("sgbm")
    from stereo_depth_ros.backends.psmnet import PsmnetBackend
    backend = PsmnetBackend(weights, device=device, engine=config["engine"],
                            precision=config["precision"],
                            cuda_graphs=config.get("graphs", True))
    if config.get("compile"):
        from stereo_depth_ros.models.fused.cuda import CudaPSMNet
        backend.runner = CudaPSMNet(backend.model, mode="fast", fuse_relu=False, compile=True)
    if config.get("arithmetic"):
        from stereo_depth_ros.models.fused import FastPSMNet
        backend.runner = FastPSMNet.from_model(backend.model, mode="fast",
                                               arithmetic=config["arithmetic"])
    return backend


def _matcher_runner(backend, config: dict, left, right):
    """preprocess -> network -> result on the host, with the engine's stage timings."""
    if config["kind"] == "sgbm":
        def run_sgbm():
            start = time.perf_counter()
            result = backend.compute(left, right)
            return result.disparity, {"infer": time.perf_counter() - start}
        return run_sgbm

    with_confidence = config["engine"] != "reference"     # the official scripts: disparity only

    def run():
        stages: dict[str, float] = {}
        start = time.perf_counter()
        left_t, right_t, padder = backend.preprocess(left, right)
        backend._synchronize()
        stages["preprocess"] = time.perf_counter() - start
        outputs = backend.runner.forward_with_confidence(
            left_t, right_t, timings=stages, with_confidence=with_confidence,
            **({"with_uncertainty": True} if config.get("uncertainty") else {}))
        mark = time.perf_counter()
        out = padder.unpad(outputs[0][0, 0]).float().cpu().numpy().copy()
        for extra in outputs[1:]:                     # confidence, sigma_d
            if extra is not None:
                padder.unpad(extra[0, 0]).float().cpu().numpy().copy()
        stages["postprocess"] = time.perf_counter() - mark
        return out, stages

    return run


def _network_on_cuda(backend, config: dict, left, right, warmup: int, runs: int) -> dict:
    """The network alone on CUDA: CUDA-event times after warm-up, and the peak GPU memory of
    warm-up (graph capture included) and runs."""
    import torch
    options = {"with_confidence": config["engine"] != "reference"}
    if config.get("uncertainty"):
        options["with_uncertainty"] = True
    left_t, right_t, _ = backend.preprocess(left, right)
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    for _ in range(max(1, warmup)):
        backend.runner.forward_with_confidence(left_t, right_t, **options)
    times = []
    for _ in range(runs):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        backend.runner.forward_with_confidence(left_t, right_t, **options)
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end) / 1000.0)
    record = _stat(times)
    record["runs_s"] = times
    record["fps"] = 1.0 / record["median_s"]
    record["peak_gpu_mb"] = torch.cuda.max_memory_allocated() / 2**20
    return record


def _frame_runner(backend, left, right):
    """The node's per-frame path: (Image messages ->) raw arrays -> StereoPipeline -> (messages).

    Returns (run, with_messages)."""
    import numpy as np
    from stereo_depth_ros.pipeline import StereoPipeline

    height, width = left.shape[:2]
    calibration = raw_calibration(width, height)
    pipeline = StereoPipeline(backend)
    bgr = [np.ascontiguousarray(image[..., ::-1]) for image in (left, right)]
    try:
        from std_msgs.msg import Header
        from stereo_depth_ros.ros.image_conversion import (image_to_numpy, numpy_to_image,
                                                           pair_to_matcher_input)
        from stereo_depth_ros.ros.messages import (make_disparity_image, make_float_image,
                                                   make_pointcloud2)
        messages = [numpy_to_image(image, "bgr8") for image in bgr]
        header = Header(frame_id=calibration.frame_id)
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
        result = pipeline.process(left_in, right_in, calibration)
        for name in ("upload", "rectify", "scale", "match", "depth_points", "download"):
            if name in result.timings_s:
                stages[name] = result.timings_s[name]
        mark = time.perf_counter()
        if messages is not None:
            make_disparity_image(result.disparity, header, result.rig, result.min_disparity,
                                 result.max_disparity, result.delta_d)
            make_float_image(result.depth_m, header)
            make_pointcloud2(result.points, header, result.left)
        stages["message_build"] = time.perf_counter() - mark
        return result.disparity, stages

    return run, messages is not None


def run_worker(config_name: str, size: tuple[int, int], *, device: str, runs: int, warmup: int,
               frame_runs: int, threads: int | None, weights: Path | None, malloc: str,
               save_output: Path | None = None) -> dict:
    """Time one configuration at one size in this process; return a record."""
    import cv2
    import numpy as np
    import torch

    if malloc == "reuse":
        from stereo_depth_ros.models.fused.memory import reuse_freed_memory
        reuse_freed_memory()
    if threads is not None:
        torch.set_num_threads(threads)
        cv2.setNumThreads(threads)
    config = CONFIGS[config_name]
    run_device = device if device in config["devices"] else "cpu"
    height, width = size
    (left, right), source = load_pair(height, width)
    record = {"config": config_name, "size": f"{height}x{width}", "height": height,
              "width": width, "input": source, "threads": torch.get_num_threads(),
              "runs": runs, "warmup": warmup, "device": run_device,
              **{k: v for k, v in config.items() if k != "devices"}}
    backend = _make_backend(config, run_device, weights)
    if config["kind"] == "psmnet":
        record["weights"] = str(weights) if weights else "random (no weights file found)"
        record["confidence"] = config["engine"] != "reference"
        record["engine_detail"] = backend.describe()
    if run_device == "cuda":
        record["gpu"] = torch.cuda.get_device_name()
        record["network"] = _network_on_cuda(backend, config, left, right, warmup, runs)
    output, totals, stages = _timed(_matcher_runner(backend, config, left, right), warmup, runs)
    record["runs_s"] = totals
    record.update(_stat(totals))
    names = sorted({name for s in stages for name in s}, key=lambda n: (
        PSMNET_STAGES.index(n) if n in PSMNET_STAGES else len(PSMNET_STAGES), n))
    record["stages_s"] = {name: statistics.median(s.get(name, 0.0) for s in stages)
                          for name in names}
    if frame_runs > 0:
        if run_device == "cuda":
            torch.cuda.reset_peak_memory_stats()
        frame_run, with_messages = _frame_runner(backend, left, right)
        _, frame_totals, frame_stages = _timed(frame_run, max(1, warmup), frame_runs)
        record["frame"] = {**_stat(frame_totals), "runs_s": frame_totals,
                           "fps": 1.0 / statistics.median(frame_totals),
                           "ros_messages": with_messages,
                           "stages_s": {name: statistics.median(s[name] for s in frame_stages)
                                        for name in frame_stages[0]}}
        if run_device == "cuda":
            record["frame"]["peak_gpu_mb"] = torch.cuda.max_memory_allocated() / 2**20
    record["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
    if save_output is not None and output is not None:
        np.save(save_output, np.asarray(output, dtype=np.float32))
    return record


def network_flops(height: int, width: int, max_disparity: int = 192) -> dict[str, float]:
    """Convolution FLOPs (2 x multiply-adds) of one frame, counted by torch's FlopCounterMode on
    meta tensors: the reference network's parts, and the fused engines' total (dres0's first
    convolution replaced by ImplicitCostConv's two 2-D convolutions)."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from stereo_depth_ros.models import build_psmnet
    from stereo_depth_ros.models.fused.cost_conv import ImplicitCostConv

    height, width = -(-height // 16) * 16, -(-width // 16) * 16
    model = build_psmnet("stackhourglass", max_disparity=max_disparity).eval().to("meta")
    levels, h4, w4 = max_disparity // 4, height // 4, width // 4

    def count(function) -> float:
        with torch.inference_mode(), FlopCounterMode(display=False) as counter:
            function()
        return float(counter.get_total_flops())

    image = torch.empty(1, 3, height, width, device="meta")
    features = torch.empty(1, 32, h4, w4, device="meta")
    volume = torch.empty(1, 64, levels, h4, w4, device="meta")
    first = model.dres0[0][0]
    implicit = ImplicitCostConv(torch.zeros(32, 64, 3, 3, 3), torch.zeros(32), levels)
    implicit.left_weight = implicit.left_weight.to("meta")
    implicit.right_weight = implicit.right_weight.to("meta")
    implicit.right_bias = implicit.right_bias.to("meta")
    parts = {"features": count(lambda: model.extract_features(image, image)),
             "cost_conv_reference": count(lambda: first(volume)),
             "cost_conv_fused": count(lambda: implicit.tables(features, features)),
             "cnn3d_after_cost_conv": count(lambda: model.aggregate(volume))}
    parts["cnn3d_after_cost_conv"] -= parts["cost_conv_reference"]
    parts["total_reference"] = (parts["features"] + parts["cost_conv_reference"]
                                + parts["cnn3d_after_cost_conv"])
    parts["total_fused"] = (parts["features"] + parts["cost_conv_fused"]
                            + parts["cnn3d_after_cost_conv"])
    return parts


def conv_throughput(height: int, width: int, max_disparity: int = 192, runs: int = 5
                    ) -> dict[str, dict]:
    """GFLOP/s of one 32->32 3x3x3 3-D convolution over the 1/4-resolution volume of a frame
    (the fused engine's most common layer), channels-last on oneDNN, in every arithmetic this
    CPU runs: the machine's limit for the 3-D network."""
    import torch

    from stereo_depth_ros.models.fused import cpu_features
    from stereo_depth_ros.models.fused.int8 import Int8Conv
    from stereo_depth_ros.models.fused.onednn import CHANNELS_LAST_3D, FoldedConv

    levels, h4, w4 = max_disparity // 4, -(-height // 16) * 4, -(-width // 16) * 4
    flops = 2.0 * 32 * 32 * 27 * levels * h4 * w4
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(1, 32, levels, h4, w4, generator=generator).relu().contiguous(
        memory_format=CHANNELS_LAST_3D)
    weight = 0.05 * torch.randn(32, 32, 3, 3, 3, generator=generator)
    bias = torch.zeros(32)
    cpu = cpu_features.detect()
    variants = {"fp32": (FoldedConv(weight, bias, padding=1), x)}
    if cpu.onednn_bf16:
        variants["bf16"] = (FoldedConv(weight, bias, padding=1, dtype=torch.bfloat16),
                            x.bfloat16())
    if cpu.int8_vnni:
        int8 = Int8Conv.from_conv(FoldedConv(weight, bias, padding=1), nonnegative_input=True)
        variants["int8"] = (int8, x)                               # quantizes x every call
        variants["int8 (input already quantized)"] = (int8, int8.quantize(x))
    result = {}
    with torch.inference_mode():
        for name, (conv, tensor) in variants.items():
            conv(tensor)
            times = []
            for _ in range(runs):
                start = time.perf_counter()
                conv(tensor)
                times.append(time.perf_counter() - start)
            median = statistics.median(times)
            result[name] = {"median_s": median, "gflops": flops / median / 1e9}
    return {"shape": [1, 32, levels, h4, w4], "gflop": flops / 1e9, "cpu": cpu.describe(),
            "arithmetic": result}


def _run_limits(args: argparse.Namespace, size: tuple[int, int]) -> dict:
    """network_flops + conv_throughput at one size, in a worker process with the run's threads."""
    command = [sys.executable, "-m", "stereo_depth_ros.tools.bench", "--worker", "limits",
               "--sizes", f"{size[0]}x{size[1]}"]
    if args.threads is not None:
        command += ["--threads", str(args.threads)]
    _progress(args, f"{size[0]}x{size[1]}: network FLOPs and 3-D convolution throughput")
    proc = subprocess.run(command, text=True, capture_output=True)
    for line in proc.stdout.splitlines():
        if line.startswith(RESULT_PREFIX):
            return json.loads(line[len(RESULT_PREFIX):])
    tail = (proc.stderr or proc.stdout).strip().splitlines()[-3:]
    return {"size": f"{size[0]}x{size[1]}", "error": " | ".join(tail)}


# ----------------------------------------------------------------------------------------------
# Parent: subprocesses, rounds, ratios, report
# ----------------------------------------------------------------------------------------------

def _worker_command(args: argparse.Namespace, config: str, size: tuple[int, int],
                    save_output: Path | None) -> list[str]:
    command = [sys.executable, "-m", "stereo_depth_ros.tools.bench", "--worker", config,
               "--device", args.device, "--sizes", f"{size[0]}x{size[1]}",
               "--runs", str(args.runs), "--warmup", str(args.warmup),
               "--frame-runs", str(args.frame_runs), "--malloc", args.malloc]
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
        return run_worker(config, size, device=args.device, runs=args.runs, warmup=args.warmup,
                          frame_runs=args.frame_runs, threads=args.threads,
                          weights=args.weights, malloc=args.malloc, save_output=save_output)
    proc = subprocess.run(_worker_command(args, config, size, save_output), text=True,
                          capture_output=True)
    for line in proc.stdout.splitlines():
        if line.startswith(RESULT_PREFIX):
            return json.loads(line[len(RESULT_PREFIX):])
    tail = (proc.stderr or proc.stdout).strip().splitlines()[-5:]
    raise BenchError(f"configuration {config!r} at {size[0]}x{size[1]} failed "
                     f"(exit {proc.returncode}): " + " | ".join(tail))


def _merge_stats(records: list[dict]) -> dict:
    runs = [t for r in records for t in r["runs_s"]]
    merged = {**records[0], **_stat(runs), "runs_s": runs}
    if "stages_s" in records[0]:
        merged["stages_s"] = {name: statistics.median(r["stages_s"][name] for r in records)
                              for name in records[0]["stages_s"]}
    return merged


def _merge(records: list[dict]) -> dict:
    """One record from the rounds of a configuration: all runs pooled, peaks = max."""
    merged = _merge_stats(records)
    merged["rounds"] = len(records)
    merged["peak_rss_mb"] = max(r["peak_rss_mb"] for r in records)
    for part in ("network", "frame"):
        if part in records[0]:
            merged[part] = _merge_stats([r[part] for r in records])
            merged[part]["fps"] = 1.0 / merged[part]["median_s"]
            for peak in ("peak_gpu_mb",):
                if peak in records[0][part]:
                    merged[part][peak] = max(r[part][peak] for r in records)
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


def _ratios(record: dict, reference: dict) -> None:
    record["speedup_vs_reference"] = reference["median_s"] / record["median_s"]
    record["speedup_vs_reference_min"] = reference["min_s"] / record["min_s"]
    for part in ("network", "frame"):
        if part in record and part in reference:
            record[part]["speedup_vs_reference"] = (reference[part]["median_s"]
                                                    / record[part]["median_s"])


def run_bench(args: argparse.Namespace) -> dict:
    """Every configuration at every size (rounds alternate); returns the report dict."""
    load_before = os.getloadavg()
    results = []
    with tempfile.TemporaryDirectory(prefix="stereo_depth_bench_") as tmp:
        for size in args.sizes:
            collected: dict[str, list[dict]] = {name: [] for name in args.configs}
            outputs = {name: Path(tmp) / f"{name}_{size[0]}x{size[1]}.npy"
                       for name in args.configs}
            for round_index in range(args.rounds):
                for name in args.configs:
                    _progress(args, f"{size[0]}x{size[1]} round {round_index + 1}/{args.rounds}: "
                              f"{name}")
                    save = outputs[name] if round_index == 0 else None
                    try:
                        collected[name].append(_run_config(args, name, size, save))
                    except BenchError as error:          # report it, measure the others
                        _progress(args, str(error))
                        collected[name].append({"config": name, "size": f"{size[0]}x{size[1]}",
                                                "error": str(error)})
            merged = {}
            for name, records in collected.items():
                failed = [r for r in records if "error" in r]
                merged[name] = failed[0] if failed else _merge(records)
            reference = merged.get("reference")
            if reference is not None and "error" in reference:
                reference = None
            for name, record in merged.items():
                if "error" in record:
                    results.append(record)
                    continue
                if reference is not None:
                    _ratios(record, reference)
                    if name != "reference" and record["kind"] == "psmnet":
                        record["accuracy_vs_reference"] = _accuracy(outputs[name],
                                                                    outputs["reference"])
                results.append(record)
    import torch
    machine = {"platform": platform.platform(), "processor": _cpu_model(),
               "cpus": os.cpu_count(), "torch": torch.__version__,
               "loadavg_before": load_before, "loadavg_after": os.getloadavg()}
    if args.device == "cuda":
        machine.update(gpu=torch.cuda.get_device_name(), cuda=torch.version.cuda,
                       cudnn=torch.backends.cudnn.version())
    limits = None
    if args.limits:
        limits = [_run_limits(args, size) for size in args.sizes]
    return {
        "tool": "stereo_depth_bench", "schema": 2,
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "command": ["stereo_depth_bench", *sys.argv[1:]],
        "machine": machine,
        "settings": {"device": args.device, "sizes": [f"{h}x{w}" for h, w in args.sizes],
                     "configs": args.configs, "runs": args.runs, "warmup": args.warmup,
                     "rounds": args.rounds, "frame_runs": args.frame_runs,
                     "threads": args.threads, "malloc": args.malloc,
                     "weights": str(args.weights) if args.weights else None},
        "results": results,
        "limits": limits,
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


def _ms(seconds: float | None) -> str:
    return "-" if seconds is None else f"{1000 * seconds:.1f}"


def format_table(report: dict) -> str:
    """Plain-text summary of a report."""
    lines = [f"{'size':>9} {'config':>10} {'device':>6} {'matcher ms':>10} {'x ref':>6} "
             f"{'network ms':>10} {'x ref':>6} {'frame ms':>9} {'fps':>6} {'peak MB':>8}  "
             "accuracy vs reference"]
    for r in report["results"]:
        if "error" in r:
            lines.append(f"{r['size']:>9} {r['config']:>10} failed: {r['error']}")
            continue
        accuracy = r.get("accuracy_vs_reference")
        acc_text = "" if not accuracy else (
            f"mean {accuracy['mean_abs_px']:.3f} px, max {accuracy['max_abs_px']:.2f} px, "
            f">3 px {accuracy['bad3_pct']:.2f} %")
        network = r.get("network") or {}
        frame = r.get("frame") or {}
        peak = network.get("peak_gpu_mb", r["peak_rss_mb"])
        lines.append(
            f"{r['size']:>9} {r['config']:>10} {r.get('device', 'cpu'):>6} "
            f"{_ms(r['median_s']):>10} {r.get('speedup_vs_reference', float('nan')):6.2f} "
            f"{_ms(network.get('median_s')):>10} "
            f"{network.get('speedup_vs_reference', float('nan')):6.2f} "
            f"{_ms(frame.get('median_s')):>9} {frame.get('fps', float('nan')):6.1f} "
            f"{peak:8.0f}  {acc_text}")
    for r in report["results"]:
        if r.get("stages_s") and r.get("kind") == "psmnet" and "error" not in r:
            text = ", ".join(f"{k} {1000 * v:.0f}" for k, v in r["stages_s"].items())
            lines.append(f"matcher stages (ms) {r['size']} {r['config']}: {text}"
                         + (f" [{r['engine_detail']}]" if r.get("engine_detail") else ""))
    for limit in report.get("limits") or []:
        if "error" in limit:
            lines.append(f"limits at {limit['size']}: failed: {limit['error']}")
            continue
        flops = limit["flops"]
        conv = ", ".join(f"{name} {v['gflops']:.0f} GFLOP/s" for name, v in
                         limit["conv3d"]["arithmetic"].items())
        lines.append(f"limits at {limit['size']} ({limit['threads']} threads, "
                     f"{limit['conv3d']['cpu']}): network {flops['total_reference'] / 1e12:.3f}"
                     f" TFLOP (reference), {flops['total_fused'] / 1e12:.3f} TFLOP (fused: "
                     f"features {flops['features'] / 1e12:.3f}, cost conv "
                     f"{flops['cost_conv_fused'] / 1e12:.4f}, 3-D "
                     f"{flops['cnn3d_after_cost_conv'] / 1e12:.3f}); one 32->32 3-D conv "
                     f"({limit['conv3d']['gflop']:.1f} GFLOP): {conv}")
    stages = [r for r in report["results"] if r.get("frame")]
    for r in stages:
        text = ", ".join(f"{k} {1000 * v:.1f}" for k, v in r["frame"]["stages_s"].items())
        lines.append(f"frame stages (ms) {r['size']} {r['config']}: {text} "
                     f"(ROS messages: {r['frame']['ros_messages']})")
    lines.append("peak MB: GPU memory (max allocated) on CUDA, process RSS on the CPU")
    return "\n".join(lines)


# ----------------------------------------------------------------------------------------------
# Command line
# ----------------------------------------------------------------------------------------------

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
            line for line in __doc__.split("Configurations (--configs):\n")[1].split(
                "\n\n")[0].splitlines()))
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu",
                        help="where the PSMNet configurations run (default cpu)")
    parser.add_argument("--sizes", type=hxw_size("384x1248", minimum=16), nargs="+",
                        default=list(DEFAULT_SIZES), metavar="HxW",
                        help="input sizes (default: 384x1248 256x512); sizes that are not "
                        "multiples of 16 are padded as the backend does")
    parser.add_argument("--configs", nargs="+", default=None, choices=list(CONFIGS),
                        metavar="NAME",
                        help="configurations (default: " + "; ".join(
                            f"{d}: {' '.join(c)}" for d, c in DEFAULT_CONFIGS.items())
                        + f"; any of {', '.join(CONFIGS)})")
    parser.add_argument("--runs", type=_positive, default=5, help="timed runs (default 5)")
    parser.add_argument("--warmup", type=_non_negative, default=1,
                        help="untimed warm-up runs (default 1)")
    parser.add_argument("--frame-runs", type=_non_negative, default=None,
                        help="timed runs of the whole frame path (default: --runs; 0 = skip)")
    parser.add_argument("--no-overhead", action="store_true",
                        help="same as --frame-runs 0")
    parser.add_argument("--rounds", type=_positive, default=1,
                        help="run every configuration this many times, alternating (default 1)")
    parser.add_argument("--threads", type=_positive, default=None,
                        help="torch/OpenCV threads (default: torch's default)")
    parser.add_argument("--weights", type=Path, default=None,
                        help="PSMNet checkpoint (default: the KITTI 2015 weights from "
                        "`make assets` when present, else random weights)")
    parser.add_argument("--malloc", choices=("default", "reuse"), default="default",
                        help="'reuse': keep freed memory in glibc's heap in every configuration "
                        "(models.fused.memory.reuse_freed_memory); default: glibc as is")
    parser.add_argument("--json", type=Path, default=None, metavar="OUT",
                        help="write the full report (all runs, stages, ratios) as JSON")
    parser.add_argument("--limits", action="store_true",
                        help="also count the network's FLOPs and time one 3-D convolution in "
                        "every arithmetic this CPU runs (how close the engines are to the "
                        "machine's limit)")
    parser.add_argument("--in-process", action="store_true",
                        help="run configurations in this process (peak memory is then shared)")
    parser.add_argument("--quiet", action="store_true", help="no progress lines on stderr")
    parser.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--save-output", type=Path, default=None, help=argparse.SUPPRESS)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Console script: 0 ok, 1 a failure (message on stderr), 2 bad command line, 130 Ctrl-C."""
    parser = build_parser()
    args = parser.parse_args(argv)
    return run_tool("stereo_depth_bench", lambda: _run(parser, args))


def _run(parser: argparse.ArgumentParser, args: argparse.Namespace) -> int:
    if args.configs is None:
        args.configs = list(DEFAULT_CONFIGS[args.device])
    unsupported = [name for name in args.configs
                   if CONFIGS[name]["kind"] == "psmnet" and args.device not in
                   CONFIGS[name]["devices"]]
    if unsupported:
        parser.error(f"configuration(s) {', '.join(unsupported)} do not run on "
                     f"--device {args.device}")
    if args.frame_runs is None:
        args.frame_runs = 0 if args.no_overhead else args.runs
    if args.weights is not None and not args.weights.is_file():
        parser.error(f"--weights {args.weights}: no such file")
    if args.device == "cuda":
        import torch
        if not torch.cuda.is_available():
            print(f"stereo_depth_bench: error: --device cuda, but CUDA is not available (torch "
                  f"{torch.__version__})", file=sys.stderr)
            return 1
    if args.weights is None:
        from stereo_depth_ros.tools._cli import find_default_weights
        args.weights = find_default_weights()
    if args.worker == "limits":
        import torch
        if args.threads is not None:
            torch.set_num_threads(args.threads)
        height, width = args.sizes[0]
        record = {"size": f"{height}x{width}", "threads": torch.get_num_threads(),
                  "flops": network_flops(height, width),
                  "conv3d": conv_throughput(height, width)}
        print(RESULT_PREFIX + json.dumps(record), flush=True)
        return 0
    if args.worker is not None:
        record = run_worker(args.worker, args.sizes[0], device=args.device, runs=args.runs,
                            warmup=args.warmup, frame_runs=args.frame_runs,
                            threads=args.threads, weights=args.weights, malloc=args.malloc,
                            save_output=args.save_output)
        print(RESULT_PREFIX + json.dumps(record), flush=True)
        return 0
    if args.json is not None and not args.json.parent.is_dir():
        parser.error(f"--json {args.json}: directory {args.json.parent} does not exist")
    report = run_bench(args)
    print(format_table(report))
    if args.json is not None:
        args.json.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
        print(f"report written to {args.json}")
    failed = [f"{r['config']} at {r['size']}" for r in report["results"] if "error" in r]
    if failed:
        print(f"stereo_depth_bench: error: configuration(s) failed: {', '.join(failed)}",
              file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
