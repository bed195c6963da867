"""The benchmark's parent: every configuration at every size, each in its own worker process,
rounds alternating, then ratios to the reference (`run_bench`)."""

from __future__ import annotations

import datetime
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from stereo_depth_ros.benchmark.report import accuracy, machine, merge, ratios
from stereo_depth_ros.benchmark.settings import RESULT_PREFIX, BenchError, BenchSettings
from stereo_depth_ros.benchmark.worker import run_worker


def progress(settings: BenchSettings, text: str) -> None:
    """A progress line on stderr (none with `quiet`)."""
    if not settings.quiet:
        print(f"[bench] {text}", file=sys.stderr, flush=True)


def _in_worker(job: dict) -> tuple[dict | None, subprocess.CompletedProcess]:
    """Run `worker.main` on `job` in a new process: (its record or None, the process)."""
    command = [sys.executable, "-m", "stereo_depth_ros.benchmark.worker", json.dumps(job)]
    proc = subprocess.run(command, text=True, capture_output=True)
    for line in proc.stdout.splitlines():
        if line.startswith(RESULT_PREFIX):
            return json.loads(line[len(RESULT_PREFIX):]), proc
    return None, proc


def run_config(settings: BenchSettings, config: str, size: tuple[int, int],
               save_output: Path | None) -> dict:
    """One configuration at one size (in a worker process unless `in_process`); its record.
    BenchError when the worker fails."""
    options = {"device": settings.device, "runs": settings.runs, "warmup": settings.warmup,
               "frame_runs": settings.frame_runs, "threads": settings.threads,
               "malloc": settings.malloc}
    if settings.in_process:
        return run_worker(config, size, weights=settings.weights, save_output=save_output,
                          **options)
    record, proc = _in_worker({"config": config, "size": list(size), **options,
                               "weights": str(settings.weights) if settings.weights else None,
                               "save_output": str(save_output) if save_output else None})
    if record is not None:
        return record
    tail = (proc.stderr or proc.stdout).strip().splitlines()[-5:]
    raise BenchError(f"configuration {config!r} at {size[0]}x{size[1]} failed "
                     f"(exit {proc.returncode}): " + " | ".join(tail))


def run_limits(settings: BenchSettings, size: tuple[int, int]) -> dict:
    """`models.fused.limits` at one size, in a worker process with the run's threads."""
    progress(settings, f"{size[0]}x{size[1]}: network FLOPs and 3-D convolution throughput")
    record, proc = _in_worker({"limits": True, "size": list(size),
                               "threads": settings.threads})
    if record is not None:
        return record
    tail = (proc.stderr or proc.stdout).strip().splitlines()[-3:]
    return {"size": f"{size[0]}x{size[1]}", "error": " | ".join(tail)}


def _measure_size(settings: BenchSettings, size: tuple[int, int], tmp: Path) -> list[dict]:
    """Every configuration at one size, `rounds` times alternating; merged records with their
    ratios and accuracy against the reference."""
    label = f"{size[0]}x{size[1]}"
    collected: dict[str, list[dict]] = {name: [] for name in settings.configs}
    outputs = {name: tmp / f"{name}_{label}.npy" for name in settings.configs}
    for round_index in range(settings.rounds):
        for name in settings.configs:
            progress(settings, f"{label} round {round_index + 1}/{settings.rounds}: {name}")
            save = outputs[name] if round_index == 0 else None
            try:
                collected[name].append(run_config(settings, name, size, save))
            except BenchError as error:                  # report it, measure the others
                progress(settings, str(error))
                collected[name].append({"config": name, "size": label, "error": str(error)})
    merged = {}
    for name, records in collected.items():
        failed = [r for r in records if "error" in r]
        merged[name] = failed[0] if failed else merge(records)
    reference = merged.get("reference")
    if reference is not None and "error" in reference:
        reference = None
    for name, record in merged.items():
        if "error" not in record and reference is not None:
            ratios(record, reference)
            if name != "reference" and record["kind"] == "psmnet":
                record["accuracy_vs_reference"] = accuracy(outputs[name],
                                                           outputs["reference"])
    return list(merged.values())


def run_bench(settings: BenchSettings) -> dict:
    """Every configuration at every size (rounds alternate); returns the report dict."""
    load_before = os.getloadavg()
    results = []
    with tempfile.TemporaryDirectory(prefix="stereo_depth_bench_") as tmp:
        for size in settings.sizes:
            results += _measure_size(settings, size, Path(tmp))
    limits = [run_limits(settings, size) for size in settings.sizes] if settings.limits \
        else None
    return {
        "tool": "stereo_depth_bench", "schema": 2,
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "command": list(settings.command),
        "machine": machine(settings.device, load_before),
        "settings": {"device": settings.device,
                     "sizes": [f"{h}x{w}" for h, w in settings.sizes],
                     "configs": settings.configs, "runs": settings.runs,
                     "warmup": settings.warmup, "rounds": settings.rounds,
                     "frame_runs": settings.frame_runs, "threads": settings.threads,
                     "malloc": settings.malloc,
                     "weights": str(settings.weights) if settings.weights else None},
        "results": results,
        "limits": limits,
    }
