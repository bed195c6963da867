#!/usr/bin/env python3
"""Measure the rate governor with a real matcher on this machine: the scale it settles at and the
frame time it holds, against the same matcher at the full input scale, in one run.

Runs the real KITTI 2015 sample pair (1242x375, assets/samples/kitti2015) through
`pipeline.StereoPipeline` (the node's per-frame path: scale -> match -> depth -> points) with a
`RateGovernor`, frame after frame, as the node's worker does; prints each frame's scale and time,
then: the median frame time at --max-scale without the governor (--baseline-frames frames), the
scale held over the last --hold-frames frames, their median frame time and the rate that gives.

    PYTHONPATH=$PWD python scripts/measure_rate_governor.py --backend sgbm --target-rate-hz 10
    PYTHONPATH=$PWD python scripts/measure_rate_governor.py --backend psmnet \\
        --target-rate-hz 0.5 --max-scale 0.5 --frames 14 --baseline-frames 2
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

from stereo_depth_ros.backends import make_backend
from stereo_depth_ros.data.shipped_samples import shipped_pairs
from stereo_depth_ros.pipeline import PipelineOptions, StereoPipeline
from stereo_depth_ros.pipeline.rate_governor import RateGovernor

WEIGHTS = Path("weights/pretrained_model_KITTI2015.tar")


def run_frames(pipeline: StereoPipeline, pair, frames: int, governor: RateGovernor | None,
               scale: float) -> list[tuple[float, float]]:
    """(scale, seconds) of each frame."""
    left, right, rig = pair
    trace = []
    for _ in range(frames):
        if governor is not None:
            scale = governor.scale
        pipeline.options = dataclasses.replace(pipeline.options, input_scale=scale)
        started = time.perf_counter()
        pipeline.process(left, right, rig)
        seconds = time.perf_counter() - started
        if governor is not None:
            governor.observe(scale, seconds)
        trace.append((scale, seconds))
        print(f"  scale {scale:.3f}  {seconds * 1000:8.1f} ms", file=sys.stderr, flush=True)
    return trace


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backend", choices=("sgbm", "psmnet"), default="sgbm")
    parser.add_argument("--assets", type=Path, default=Path("assets"))
    parser.add_argument("--target-rate-hz", type=float, default=10.0)
    parser.add_argument("--max-scale", type=float, default=1.0)
    parser.add_argument("--min-scale", type=float, default=0.25)
    parser.add_argument("--frames", type=int, default=40, help="governed frames")
    parser.add_argument("--baseline-frames", type=int, default=5)
    parser.add_argument("--hold-frames", type=int, default=5)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args(argv)
    [pair] = [p for p in shipped_pairs(args.assets / "samples") if p.name.startswith("kitti")]
    options = {"weights_path": str(args.assets / WEIGHTS), "device": "cpu"} \
        if args.backend == "psmnet" else {}
    backend = make_backend(args.backend, **options)
    pipeline = StereoPipeline(backend, PipelineOptions(), on_event=lambda text: None)
    loaded = pair.load()
    print(f"baseline: {args.backend} at scale {args.max_scale}", file=sys.stderr)
    run_frames(pipeline, loaded, 1, None, args.max_scale)                  # warm-up
    baseline = run_frames(pipeline, loaded, args.baseline_frames, None, args.max_scale)
    governor = RateGovernor(args.target_rate_hz, args.max_scale, args.min_scale)
    print(f"governed: target {args.target_rate_hz} Hz", file=sys.stderr)
    governed = run_frames(pipeline, loaded, args.frames, governor, args.max_scale)
    held = governed[-args.hold_frames:]
    summary = {
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs",
        "backend": args.backend, "image": "kitti2015/kitti_000046 1242x375",
        "target_rate_hz": args.target_rate_hz, "max_scale": args.max_scale,
        "min_scale": args.min_scale,
        "baseline_median_ms": 1000 * statistics.median(s for _, s in baseline),
        "held_scales": sorted({round(scale, 4) for scale, _ in held}),
        "held_median_ms": 1000 * statistics.median(s for _, s in held),
        "scale_changes": governor.changes,
        "trajectory": " ".join(f"{scale:.3g}" for scale, _ in governed),
    }
    summary["held_rate_hz"] = 1000.0 / summary["held_median_ms"]
    summary["speedup"] = summary["baseline_median_ms"] / summary["held_median_ms"]
    print(json.dumps(summary, indent=1))
    if args.json:
        args.json.write_text(json.dumps(summary, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
