#!/usr/bin/env python3
"""GPU check: the CUDA parity tests and the CUDA benchmark in one command, with a JSON report.

    python3 scripts/gpu_check.py [--out out/gpu_check] [--runs 20] [--sizes 384x1248]

For a machine with one NVIDIA GPU and PyTorch already installed (no ROS, no internet): it installs
nothing. It needs numpy, opencv-python(-headless), PyYAML and pytest (+ pytest-timeout) beside
torch, the weights file in assets/weights (`make assets` on a networked machine, then copy the
assets/ folder) and the sample pairs in assets/samples. Steps:

1. environment: python, torch, CUDA, cuDNN, the GPU's name;
2. `pytest -m gpu test/models/fused/test_cuda.py` (exact vs the official output, fast vs the CPU
   exact engine, graph capture, no host syncs, peak memory, the pipeline on the GPU);
3. `stereo_depth_bench --device cuda` (reference eager fp32, exact, fast, fast-bf16, fast-eager:
   network with CUDA events, the whole frame through the pipeline, peak GPU memory);
4. writes <out>/gpu_check.json (everything) and prints the targets: fast network >= 50 fps and
   >= 10x the eager reference, frame >= 25 fps, fast peak GPU memory <= 2 GB, and what sigma_d
   costs on the GPU (fast-sigma against fast: network, and frame with the node's default depth
   mask; target <= 5 % of the frame).

Exit status: 0 when the tests pass and the benchmark ran (targets are reported, not enforced),
1 when a test failed or a step could not run, 2 for bad arguments.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import subprocess
import sys
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
BENCH_CONFIGS = ("reference", "exact", "fast", "fast-bf16", "fast-eager", "fast-sigma")
TARGETS = {"fast network fps >= 50": ("network_fps", 50.0),
           "fast network >= 10x eager reference": ("network_speedup", 10.0),
           "fast frame fps >= 25": ("frame_fps", 25.0),
           "fast peak GPU memory <= 2048 MB": ("peak_gpu_mb", -2048.0)}


def _environment() -> dict:
    import torch
    info = {"python": platform.python_version(), "platform": platform.platform(),
            "torch": torch.__version__, "cuda_available": torch.cuda.is_available(),
            "torch_cuda": torch.version.cuda}
    if torch.cuda.is_available():
        props = torch.cuda.get_device_properties(0)
        info.update(gpu=torch.cuda.get_device_name(0), cudnn=torch.backends.cudnn.version(),
                    gpu_memory_gb=round(props.total_memory / 2**30, 1),
                    multiprocessors=props.multi_processor_count)
    try:
        smi = subprocess.run(["nvidia-smi", "--query-gpu=name,driver_version,clocks.sm,"
                              "clocks.max.sm,power.limit", "--format=csv,noheader"],
                             capture_output=True, text=True, timeout=30)
        info["nvidia_smi"] = smi.stdout.strip()
    except (OSError, subprocess.TimeoutExpired):
        info["nvidia_smi"] = None
    return info


def _run(command: list[str], log: Path, timeout_s: float) -> tuple[int, str, float]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO_ROOT), env.get("PYTHONPATH"))
                                        if p)
    start = time.perf_counter()
    try:
        proc = subprocess.run(command, cwd=REPO_ROOT, env=env, capture_output=True, text=True,
                              timeout=timeout_s)
        code, output = proc.returncode, proc.stdout + proc.stderr
    except subprocess.TimeoutExpired as error:
        code = 124
        output = f"{error.stdout or ''}{error.stderr or ''}\ntimed out after {timeout_s} s"
    log.write_text(output, encoding="utf-8")
    return code, output, time.perf_counter() - start


def _pytest_summary(output: str) -> dict:
    counts = {key: int(value) for value, key in
              re.findall(r"(\d+) (passed|failed|skipped|errors?|xfailed|xpassed)", output)}
    failures = [line for line in output.splitlines() if line.startswith(("FAILED", "ERROR"))]
    return {"counts": counts, "failures": failures}


def _bench_summary(report: dict) -> dict:
    """{size: {config: the figures that matter}}."""
    summary: dict[str, dict] = {}
    for record in report["results"]:
        network, frame = record.get("network", {}), record.get("frame", {})
        summary.setdefault(record["size"], {})[record["config"]] = {
            "network_ms": 1000 * network["median_s"] if network else None,
            "network_fps": network.get("fps"),
            "network_speedup": network.get("speedup_vs_reference"),
            "peak_gpu_mb": network.get("peak_gpu_mb"),
            "frame_ms": 1000 * frame["median_s"] if frame else None,
            "frame_fps": frame.get("fps"),
            "frame_stages_ms": {k: 1000 * v for k, v in frame.get("stages_s", {}).items()},
            "accuracy_vs_reference": record.get("accuracy_vs_reference"),
            "engine": record.get("engine_detail")}
    return summary


def _targets(summary: dict) -> dict:
    """The issue's targets, read at 384x1248 (else the first size measured)."""
    sizes = summary.get("384x1248") or next(iter(summary.values()), {})
    fast = sizes.get("fast")
    result = {}
    for label, (key, bound) in TARGETS.items():
        value = None if fast is None else fast.get(key)
        met = None if value is None else (value >= bound if bound >= 0 else value <= -bound)
        result[label] = {"value": value, "met": met}
    return result


def _sigma_cost(summary: dict) -> dict:
    """fast-sigma against fast, per size: sigma_d's share of the network time and, with the
    default depth mask, of the frame time (% of fast's)."""
    costs = {}
    for size, configs in summary.items():
        plain, sigma = configs.get("fast"), configs.get("fast-sigma")
        if not plain or not sigma:
            continue
        costs[size] = {key: 100.0 * (sigma[key] - plain[key]) / plain[key]
                       for key in ("network_ms", "frame_ms")
                       if sigma.get(key) is not None and plain.get(key)}
    return costs


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="gpu_check.py", description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=REPO_ROOT / "out" / "gpu_check",
                        help="folder for the report and logs (default out/gpu_check)")
    parser.add_argument("--runs", type=int, default=20, help="timed runs per configuration")
    parser.add_argument("--sizes", nargs="+", default=["384x1248"], metavar="HxW")
    parser.add_argument("--configs", nargs="+", default=list(BENCH_CONFIGS))
    parser.add_argument("--weights", type=Path, default=None,
                        help="PSMNet checkpoint (default assets/weights/...KITTI2015.tar)")
    parser.add_argument("--skip-tests", action="store_true", help="benchmark only")
    parser.add_argument("--skip-bench", action="store_true", help="tests only")
    args = parser.parse_args(argv)
    if args.runs < 1:
        parser.error("--runs must be >= 1")
    weights = args.weights or REPO_ROOT / "assets" / "weights" / "pretrained_model_KITTI2015.tar"
    if not weights.is_file():
        parser.error(f"weights file {weights} not found: run `make assets` on a networked "
                     "machine and copy assets/, or pass --weights")
    try:
        import torch
    except ImportError:
        print("gpu_check: error: PyTorch is not installed", file=sys.stderr)
        return 1
    environment = _environment()
    if not torch.cuda.is_available():
        print(f"gpu_check: error: CUDA is not available (torch {torch.__version__}); "
              "this check needs an NVIDIA GPU", file=sys.stderr)
        return 1
    args.out.mkdir(parents=True, exist_ok=True)
    report: dict = {"tool": "gpu_check", "environment": environment,
                    "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    status = 0
    print(f"[gpu_check] {environment.get('gpu')}, torch {environment['torch']}, "
          f"CUDA {environment['torch_cuda']}, cuDNN {environment.get('cudnn')}", flush=True)
    if not args.skip_tests:
        code, output, seconds = _run(
            [sys.executable, "-m", "pytest", "-q", "-m", "gpu", "-p", "no:cacheprovider",
             "test/models/fused/test_cuda.py", "--junitxml", str(args.out / "junit.xml")],
            args.out / "pytest.log", timeout_s=200)
        report["tests"] = {"exit_code": code, "seconds": round(seconds, 1),
                           **_pytest_summary(output)}
        print(f"[gpu_check] tests: exit {code} in {seconds:.0f} s: "
              f"{report['tests']['counts']}", flush=True)
        if code != 0:
            status = 1
            print("\n".join(output.strip().splitlines()[-40:]), flush=True)
    if not args.skip_bench:
        bench_json = args.out / "bench.json"
        code, output, seconds = _run(
            [sys.executable, "-m", "stereo_depth_ros.tools.bench", "--device", "cuda",
             "--sizes", *args.sizes, "--configs", *args.configs, "--runs", str(args.runs),
             "--warmup", "3", "--weights", str(weights), "--json", str(bench_json),
             "--quiet"],
            args.out / "bench.log", timeout_s=300)
        report["bench_exit_code"] = code
        report["bench_seconds"] = round(seconds, 1)
        print(output.strip(), flush=True)
        if code == 0 and bench_json.is_file():
            bench = json.loads(bench_json.read_text(encoding="utf-8"))
            report["bench"] = _bench_summary(bench)
            report["targets"] = _targets(report["bench"])
            for label, target in report["targets"].items():
                value = target["value"]
                shown = "-" if value is None else f"{value:.1f}"
                verdict = {True: "met", False: "NOT met", None: "not measured"}[target["met"]]
                print(f"[gpu_check] {label}: {shown} ({verdict})", flush=True)
            report["sigma_cost_pct"] = _sigma_cost(report["bench"])
            for size, cost in report["sigma_cost_pct"].items():
                print(f"[gpu_check] sigma_d at {size}: network +{cost.get('network_ms', 0):.1f} "
                      f"%, frame with the default depth mask +{cost.get('frame_ms', 0):.1f} % "
                      "(target <= 5 %)", flush=True)
        else:
            status = 1
    (args.out / "gpu_check.json").write_text(json.dumps(report, indent=2) + "\n",
                                             encoding="utf-8")
    print(f"[gpu_check] report written to {args.out / 'gpu_check.json'}", flush=True)
    return status


if __name__ == "__main__":
    sys.exit(main())
