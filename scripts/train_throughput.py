#!/usr/bin/env python3
"""Training throughput (pairs/s) of stereo_depth_train with 1, 2, ... processes, in one run.

    python3 scripts/train_throughput.py --nproc 1 2                       # CPU, Gloo
    python3 scripts/train_throughput.py --device cuda --nproc 1 --precision fp32 bf16 fp16

For every process count N (and precision) it starts
`python -m torch.distributed.run --standalone --nproc_per_node=N -m stereo_depth_ros.tools.train
--benchmark-steps S ...` on synthetic scenes (generated in code: nothing to download), so every
number includes what real training runs per step: DistributedDataParallel (Gloo on the CPU, NCCL
on CUDA, also for N = 1), the gradient and loss all-reduce, the data path, the optimiser. The
per-process batch is fixed (--pairs-per-process; the global batch grows with N), the timed
steps follow --warmup untimed ones, and on the CPU the cores are shared out (each process gets
cores / N threads). It prints a table and, with --json, writes every run's benchmark record
with the machine's CPU / GPU, Python and torch versions. Needs torch, numpy, OpenCV and PyYAML;
neither ROS nor tensorboard. Exit status 0 ok, 1 when a run failed, 2 for bad arguments.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description="stereo_depth_train throughput (pairs/s) with 1, 2, ... processes.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--nproc", type=_positive, nargs="+", default=[1, 2],
                        help="process counts to measure, one torchrun start each")
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    parser.add_argument("--precision", nargs="+", choices=("fp32", "bf16", "fp16"),
                        default=["fp32"], help="one run per precision and process count")
    parser.add_argument("--model", choices=("stackhourglass", "basic"),
                        default="stackhourglass")
    parser.add_argument("--max-disparity", type=_positive, default=192)
    parser.add_argument("--crop", default="256x512", help="training crop HxW")
    parser.add_argument("--pairs-per-process", type=_positive, default=1,
                        help="pairs per process and step (the global batch is N times this)")
    parser.add_argument("--steps", type=_positive, default=3, help="timed steps")
    parser.add_argument("--warmup", type=int, default=1, help="untimed steps before them")
    parser.add_argument("--timeout", type=float, default=1800.0, help="seconds per run")
    parser.add_argument("--json", type=Path, help="write the records here")
    return parser


def machine() -> dict:
    """CPU model and core count, Python, torch, CUDA and GPU name."""
    import torch

    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    info = {"cpu": cpu, "cores": os.cpu_count(), "python": platform.python_version(),
            "torch": torch.__version__, "cuda": torch.version.cuda}
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
        info["gpus"] = torch.cuda.device_count()
    return info


def measure(args: argparse.Namespace, nproc: int, precision: str, out: Path) -> dict:
    """One torchrun start; returns its benchmark record (train_log.jsonl) plus the wall time."""
    batch = args.pairs_per_process * nproc
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone",
               f"--nproc_per_node={nproc}", "-m", "stereo_depth_ros.tools.train",
               "--dataset", "synthetic", "--count", str(batch), "--cache", "--workers", "0",
               "--crop", args.crop, "--batch-size", str(batch), "--model", args.model,
               "--max-disparity", str(args.max_disparity), "--device", args.device,
               "--precision", precision, "--benchmark-steps", str(args.steps),
               "--benchmark-warmup", str(args.warmup), "--quiet", "--out", str(out)]
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO_ROOT), env.get("PYTHONPATH"))
                                        if p)
    if args.device == "cpu":
        env["OMP_NUM_THREADS"] = str(max(1, (os.cpu_count() or 1) // nproc))
    print("$ " + " ".join(command), flush=True)
    start = time.perf_counter()
    result = subprocess.run(command, cwd=REPO_ROOT, env=env, capture_output=True, text=True,
                            timeout=args.timeout)
    wall_s = time.perf_counter() - start
    if result.returncode != 0:
        raise RuntimeError(f"{nproc} process(es), {precision}: exit status "
                           f"{result.returncode}\n{result.stderr[-3000:]}")
    records = [json.loads(line) for line in (out / "train_log.jsonl").read_text().splitlines()]
    record = next(r for r in records if r["event"] == "benchmark")
    record.pop("event")
    record["wall_s"] = round(wall_s, 1)
    print(result.stdout.strip(), flush=True)
    return record


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    info = machine()
    print(f"machine: {json.dumps(info)}", flush=True)
    records = []
    try:
        with tempfile.TemporaryDirectory(prefix="train_throughput_") as scratch:
            for precision in args.precision:
                for nproc in args.nproc:
                    out = Path(scratch) / f"{precision}_{nproc}"
                    records.append(measure(args, nproc, precision, out))
    except (RuntimeError, subprocess.TimeoutExpired) as error:
        print(f"train_throughput: error: {error}", file=sys.stderr)
        return 1
    print("\nprocesses  backend  threads/process  global batch  precision  pairs/s  x first")
    first = {}
    for record in records:
        base = first.setdefault(record["precision"], record["pairs_per_s"])
        print(f"{record['processes']:>9}  {record['backend'] or '-':>7}  "
              f"{record['threads_per_process']:>15}  {record['batch_size']:>12}  "
              f"{record['precision']:>9}  {record['pairs_per_s']:>7.3f}  "
              f"{record['pairs_per_s'] / base:>7.2f}")
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"machine": info, "runs": records}, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
