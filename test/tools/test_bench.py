"""stereo_depth_bench: a tiny run produces a well-formed report with the ratio fields."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from stereo_depth_ros.benchmark.worker import stat as bench_stat
from stereo_depth_ros.tools import bench


def test_bench_tiny_run_writes_wellformed_json(tmp_path):
    out = tmp_path / "bench.json"
    proc = subprocess.run(
        [sys.executable, "-m", "stereo_depth_ros.tools.bench", "--sizes", "256x256",
         "--runs", "1", "--warmup", "0", "--configs", "reference", "exact", "fast", "sgbm",
         "--threads", "2", "--json", str(out), "--quiet"],
        capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert "x ref" in proc.stdout and "frame stages (ms) 256x256 fast" in proc.stdout
    report = json.loads(out.read_text())
    assert report["tool"] == "stereo_depth_bench" and report["settings"]["device"] == "cpu"
    assert report["settings"]["sizes"] == ["256x256"] and report["settings"]["runs"] == 1
    by_config = {r["config"]: r for r in report["results"]}
    assert set(by_config) == {"reference", "exact", "fast", "sgbm"}
    for record in by_config.values():
        assert record["size"] == "256x256" and len(record["runs_s"]) == 1
        for key in ("median_s", "min_s", "max_s", "spread_pct", "peak_rss_mb",
                    "speedup_vs_reference", "speedup_vs_reference_min"):
            assert isinstance(record[key], float) and record[key] >= 0, key
        assert record["peak_rss_mb"] > 50                     # each config is its own process
        frame = record["frame"]
        assert frame["ros_messages"] is True                  # rclpy is installed in CI
        # The frame runs the whole pipeline: it takes longer than the matcher inside it.
        assert frame["median_s"] > frame["stages_s"]["match"] > 0
        assert set(frame["stages_s"]) == {"convert", "rectify", "scale", "match",
                                          "depth_points", "message_build"}
    ratio = by_config["exact"]["median_s"] / by_config["reference"]["median_s"]
    assert by_config["exact"]["speedup_vs_reference"] == pytest.approx(1 / ratio)
    stages = by_config["fast"]["stages_s"]
    assert set(bench.PSMNET_STAGES) <= set(stages) and all(v > 0 for v in stages.values())
    assert by_config["exact"]["accuracy_vs_reference"]["max_abs_px"] < 0.05
    assert by_config["fast"]["accuracy_vs_reference"]["mean_abs_px"] < 0.5
    assert "engine=exact" in by_config["exact"]["engine_detail"]


def test_bench_bad_arguments():
    for argv, message in ((["--sizes", "12x3"], "at least 16x16"),
                          (["--configs", "turbo"], "invalid choice"),
                          (["--runs", "0"], ">= 1"),
                          (["--configs", "fast-eager"], "do not run on --device cpu")):
        proc = subprocess.run([sys.executable, "-m", "stereo_depth_ros.tools.bench", *argv],
                              capture_output=True, text=True, timeout=60)
        assert proc.returncode == 2 and message in proc.stderr, (argv, proc.stderr)


def test_stat_and_table():
    stat = bench_stat([3.0, 1.0, 2.0, 4.0])
    assert stat["median_s"] == 2.5 and stat["min_s"] == 1.0 and stat["max_s"] == 4.0
    assert stat["spread_pct"] == pytest.approx(120.0)
    report = {"results": [{"size": "8x8", "config": "fast", "median_s": 1.0, "min_s": 1.0,
                           "spread_pct": 0.0, "speedup_vs_reference": 3.5,
                           "speedup_vs_reference_min": 3.6, "peak_rss_mb": 100.0}]}
    assert "3.50" in bench.format_table(report)


@pytest.mark.skipif(__import__("torch").cuda.is_available(), reason="CUDA present")
def test_bench_cuda_without_cuda_is_a_clear_failure():
    proc = subprocess.run([sys.executable, "-m", "stereo_depth_ros.tools.bench", "--device",
                           "cuda", "--sizes", "256x256"], capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 1 and "CUDA is not available" in proc.stderr
