"""One benchmark configuration at one size, timed in this process (`run_worker`).

`python -m stereo_depth_ros.benchmark.worker JSON` runs one (the JSON object holds
`run_worker`'s arguments, or {"limits": ...} for `limits_record`) and prints its record after
RESULT_PREFIX: the benchmark runs each configuration in its own process this way, so that the
process's peak RSS is that configuration's.
"""

from __future__ import annotations

import json
import resource
import statistics
import sys
import time
from pathlib import Path

from stereo_depth_ros.benchmark.inputs import load_pair, raw_calibration
from stereo_depth_ros.benchmark.settings import CONFIGS, PSMNET_STAGES, RESULT_PREFIX


def stat(values: list[float]) -> dict:
    """Median, min, max, quartiles and spread (% of the median) of run times in s."""
    ordered = sorted(values)
    n = len(ordered)
    median = statistics.median(ordered)
    return {"median_s": median, "min_s": ordered[0], "max_s": ordered[-1],
            "p25_s": ordered[(n - 1) // 4], "p75_s": ordered[(3 * (n - 1) + 3) // 4],
            "spread_pct": 100.0 * (ordered[-1] - ordered[0]) / median if median > 0 else 0.0}


def timed(function, warmup: int, runs: int):
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


def make_backend(config: dict, device: str, weights: Path | None):
    """The backend a configuration of CONFIGS measures, through the backends' public options."""
    from stereo_depth_ros.backends import make_backend as make
    if config["kind"] == "sgbm":
        return make("sgbm")
    return make("psmnet", weights_path=weights, device=device, engine=config["engine"],
                precision=config["precision"], cuda_graphs=config.get("graphs", True),
                arithmetic=config.get("arithmetic"), compile=config.get("compile", False))


def matcher_runner(backend, config: dict, left, right):
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
        backend.synchronize()
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


def network_on_cuda(backend, config: dict, left, right, warmup: int, runs: int) -> dict:
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
    record = stat(times)
    record["runs_s"] = times
    record["fps"] = 1.0 / record["median_s"]
    record["peak_gpu_mb"] = torch.cuda.max_memory_allocated() / 2**20
    return record


def frame_runner(backend, left, right, *, depth_mask: bool = False):
    """The node's per-frame path: (Image messages ->) raw arrays -> StereoPipeline -> (messages).
    depth_mask: with the node's default depth mask (config.default_depth_mask()), else
    everything published.

    Returns (run, with_messages)."""
    import numpy as np
    from stereo_depth_ros.config import default_depth_mask
    from stereo_depth_ros.pipeline import PipelineOptions, StereoPipeline

    height, width = left.shape[:2]
    calibration = raw_calibration(width, height)
    options = PipelineOptions(**(default_depth_mask() if depth_mask else {}))
    pipeline = StereoPipeline(backend, options)
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
    (left, right), source = load_pair(height, width, weights)
    record = {"config": config_name, "size": f"{height}x{width}", "height": height,
              "width": width, "input": source, "threads": torch.get_num_threads(),
              "runs": runs, "warmup": warmup, "device": run_device,
              **{k: v for k, v in config.items() if k != "devices"}}
    backend = make_backend(config, run_device, weights)
    if config["kind"] == "psmnet":
        record["weights"] = str(weights) if weights else "random (no weights file found)"
        record["confidence"] = config["engine"] != "reference"
        record["engine_detail"] = backend.describe()
    if run_device == "cuda":
        record["gpu"] = torch.cuda.get_device_name()
        record["network"] = network_on_cuda(backend, config, left, right, warmup, runs)
    output, totals, stages = timed(matcher_runner(backend, config, left, right), warmup, runs)
    record["runs_s"] = totals
    record.update(stat(totals))
    names = sorted({name for s in stages for name in s}, key=lambda n: (
        PSMNET_STAGES.index(n) if n in PSMNET_STAGES else len(PSMNET_STAGES), n))
    record["stages_s"] = {name: statistics.median(s.get(name, 0.0) for s in stages)
                          for name in names}
    if frame_runs > 0:
        if run_device == "cuda":
            torch.cuda.reset_peak_memory_stats()
        frame_run, with_messages = frame_runner(backend, left, right,
                                                depth_mask=bool(config.get("uncertainty")))
        _, frame_totals, frame_stages = timed(frame_run, max(1, warmup), frame_runs)
        record["frame"] = {**stat(frame_totals), "runs_s": frame_totals,
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


def limits_record(size: tuple[int, int], threads: int | None) -> dict:
    """`models.fused.limits` at one size with `threads` torch threads."""
    import torch

    from stereo_depth_ros.models.fused.limits import conv_throughput, network_flops
    if threads is not None:
        torch.set_num_threads(threads)
    height, width = size
    return {"size": f"{height}x{width}", "threads": torch.get_num_threads(),
            "flops": network_flops(height, width), "conv3d": conv_throughput(height, width)}


def main(argv: list[str] | None = None) -> int:
    """Worker process: one JSON argument in, RESULT_PREFIX + the JSON record out."""
    job = json.loads((sys.argv[1:] if argv is None else argv)[0])
    size = tuple(job.pop("size"))
    if job.pop("limits", False):
        record = limits_record(size, job.get("threads"))
    else:
        for key in ("weights", "save_output"):
            job[key] = Path(job[key]) if job.get(key) else None
        record = run_worker(job.pop("config"), size, **job)
    print(RESULT_PREFIX + json.dumps(record), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
