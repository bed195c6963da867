#!/usr/bin/env python3
"""What sigma_d costs on the CPU, robust to a shared machine: CPU seconds (process time, not wall
time) of the fused regression at 256x512 with and without sigma_d, interleaved, over the CPU
seconds of a whole `exact` matcher frame (released weights, the benchmark's input pair).

    PYTHONPATH=$PWD python scripts/uncertainty_cost.py [--runs 15] [--threads 2]

The wall-clock comparison is `stereo_depth_bench --configs exact exact-sigma fast fast-sigma`;
on a loaded shared machine its run-to-run noise is larger than the effect, hence this script.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time

import torch


def _cpu_seconds(function) -> float:
    start = time.process_time()
    function()
    return time.process_time() - start


def main(argv: list[str] | None = None) -> int:
    from stereo_depth_ros.backends.psmnet import PsmnetBackend
    from stereo_depth_ros.models.fused.regression import ChunkedRegression
    from stereo_depth_ros.assets import find_default_weights
    from stereo_depth_ros.benchmark.inputs import load_pair

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=15)
    parser.add_argument("--frames", type=int, default=2)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    height, width = 256, 512
    (left, right), source = load_pair(height, width)
    backend = PsmnetBackend(find_default_weights(), device="cpu", engine="exact")
    left_t, right_t, _ = backend.preprocess(left, right)
    with torch.inference_mode():
        model = backend.model
        features = model.extract_features(left_t, right_t)
        cost = model.aggregate(model.build_cost_volume(*features))[-1]
        regression = ChunkedRegression(192, True)
        size = tuple(left_t.shape[-2:])
        timings = {False: [], True: []}
        for _ in range(args.runs):
            for sigma in (False, True):
                timings[sigma].append(_cpu_seconds(lambda: regression(
                    cost, size, with_confidence=True, with_uncertainty=sigma)))
        frames = [_cpu_seconds(lambda: backend.runner.forward_with_confidence(left_t, right_t))
                  for _ in range(args.frames)]
    without, with_sigma = (statistics.median(timings[k]) for k in (False, True))
    frame = statistics.median(frames)
    print(f"input {source}, {height}x{width}, {torch.get_num_threads()} threads, CPU seconds")
    print(f"regression without sigma {without:.3f} s, with sigma {with_sigma:.3f} s "
          f"(+{with_sigma - without:.3f} s)")
    print(f"exact matcher frame (network) {frame:.2f} s")
    print(f"sigma's cost: {100.0 * (with_sigma - without) / frame:.2f} % of the exact frame")
    return 0


if __name__ == "__main__":
    sys.exit(main())
