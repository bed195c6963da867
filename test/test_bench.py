"""stereo_depth_bench: a tiny run produces a well-formed report with the ratio fields."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from stereo_depth_ros.tools import bench


def test_bench_tiny_run_writes_wellformed_json(tmp_path):
    out = tmp_path / "bench.json"
    proc = subprocess.run(
        [sys.executable, "-m", "stereo_depth_ros.tools.bench", "--sizes", "256x256",
         "--runs", "1", "--warmup", "0", "--configs", "reference", "exact", "fast", "sgbm",
         "--threads", "2", "--json", str(out), "--quiet"],
        capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert "x ref" in proc.stdout and "per-frame overhead at 256x256" in proc.stdout
    report = json.loads(out.read_text())
    assert report["tool"] == "stereo_depth_bench"
    assert report["settings"]["sizes"] == ["256x256"] and report["settings"]["runs"] == 1
    by_config = {r["config"]: r for r in report["results"]}
    assert set(by_config) == {"reference", "exact", "fast", "sgbm"}
    for record in by_config.values():
        assert record["size"] == "256x256" and len(record["runs_s"]) == 1
        for key in ("median_s", "min_s", "max_s", "spread_pct", "peak_rss_mb",
                    "speedup_vs_reference", "speedup_vs_reference_min", "frame_total_s"):
            assert isinstance(record[key], float) and record[key] >= 0, key
        assert record["peak_rss_mb"] > 50                     # each config is its own process
    assert by_config["reference"]["speedup_vs_reference"] == pytest.approx(1.0)
    stages = by_config["fast"]["stages_s"]
    assert set(stages) == set(bench.PSMNET_STAGES) and all(v > 0 for v in stages.values())
    assert by_config["exact"]["accuracy_vs_reference"]["max_abs_px"] < 0.05
    assert by_config["fast"]["accuracy_vs_reference"]["mean_abs_px"] < 0.5
    overhead = report["overhead"][0]
    assert set(overhead["stages_s"]) == set(bench.OVERHEAD_STAGES)
    assert overhead["stages_total_s"] > 0
    assert overhead["ros_messages"] is True                  # rclpy is installed in CI


def test_bench_bad_arguments():
    for argv, message in ((["--sizes", "12x3"], "at least 16x16"),
                          (["--configs", "turbo"], "invalid choice"),
                          (["--runs", "0"], ">= 1")):
        proc = subprocess.run([sys.executable, "-m", "stereo_depth_ros.tools.bench", *argv],
                              capture_output=True, text=True, timeout=60)
        assert proc.returncode == 2 and message in proc.stderr, (argv, proc.stderr)


def test_stat_and_table():
    stat = bench._stat([3.0, 1.0, 2.0, 4.0])
    assert stat["median_s"] == 2.5 and stat["min_s"] == 1.0 and stat["max_s"] == 4.0
    assert stat["spread_pct"] == pytest.approx(120.0)
    report = {"results": [{"size": "8x8", "config": "fast", "median_s": 1.0, "min_s": 1.0,
                           "spread_pct": 0.0, "speedup_vs_reference": 3.5,
                           "speedup_vs_reference_min": 3.6, "peak_rss_mb": 100.0}],
              "overhead": []}
    assert "3.50" in bench.format_table(report)
