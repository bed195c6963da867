"""`make demo` in a reduced form (PSMNet with the real weights at a small scale, 2 frames), plus
its clean-up on Ctrl-C and on a failing node."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import pytest

from helpers.ros import REPO_ROOT, wait_for

pytestmark = [pytest.mark.ros, pytest.mark.slow]

DEMO = [sys.executable, "-m", "stereo_depth_ros.tools.demo"]


def _run(args, timeout=240):
    return subprocess.run(DEMO + args, cwd=REPO_ROOT, capture_output=True, text=True,
                          timeout=timeout)


def _assert_children_gone(out_dir: Path) -> None:
    pids = [int(line.split()[0]) for line in
            (out_dir / "logs" / "pids.txt").read_text().splitlines() if line.strip()]
    assert pids, "the demo started no process?"
    for pid in pids:
        assert not Path(f"/proc/{pid}").exists(), f"demo child {pid} still running"


def test_demo_reduced(tmp_path, assets_dir):
    out = tmp_path / "demo"
    # mask off: this checks the pipeline's geometry on every pixel (at quarter scale the default
    # relative-uncertainty limit keeps almost none: README, Which depth to trust)
    result = _run(["--frames", "2", "--input-scale", "0.25", "--out", str(out),
                   "--assets", str(assets_dir), "--max-relative-uncertainty", "0",
                   "--max-disparity-uncertainty", "0"])
    assert result.returncode == 0, result.stdout + result.stderr
    assert "demo summary" in result.stdout + result.stderr
    summary = json.loads((out / "demo_summary.json").read_text())
    assert summary["settings"]["backend"] == "psmnet"
    assert summary["settings"]["max_relative_uncertainty"] == 0.0
    assert summary["frames_in"] == summary["frames_out"] == 2
    assert summary["frames_without_output"] == 0
    assert summary["node"]["pairs_published"] == "2"
    assert summary["latency_ms"]["infer"]["mean"] > 0
    baselines = sorted(round(c["baseline_m"], 4) for c in summary["bag"]["calibrations"])
    assert baselines == [0.5327, 0.5446]
    sizes = [(220, 100), (310, 94)]            # DrivingStereo and KITTI pair at input_scale 0.25
    for frame, (width, height) in zip(summary["frames"], sizes):
        assert frame["valid_fraction"] > 0.9
        assert 2.0 < frame["depth_p5_m"] < frame["depth_median_m"] < frame["depth_p95_m"] < 200
        montage = cv2.imread(str(out / "frames" / frame["montage"]))
        assert montage.shape == (height, 3 * width, 3)
        depth = np.load(out / "frames" / f"{frame['index']:06d}_depth.npy")
        assert depth.shape == (height, width)
        assert np.nanmedian(depth) == pytest.approx(frame["depth_median_m"], rel=1e-5)
    _assert_children_gone(out)


def test_demo_stops_everything_on_ctrl_c(tmp_path, assets_dir):
    out = tmp_path / "demo"
    process = subprocess.Popen(DEMO + ["--input-scale", "0.25", "--out", str(out),
                                       "--assets", str(assets_dir)],
                               cwd=REPO_ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                               text=True, start_new_session=True)
    try:
        # the node is up and the replay started: PSMNet frames take seconds, so we are mid-run
        wait_for(lambda: "stereo_depth_replay" in _read(out / "logs" / "pids.txt"),
                 timeout=180, what="the demo's replay to start")
        signals = _signal_masks(process.pid)      # for the message, should SIGINT be missed
        process.send_signal(signal.SIGINT)
        output, _ = process.communicate(timeout=60)
        assert process.returncode == 130, (f"{output}\nsignal masks at SIGINT: {signals}; "
                                           f"pids: {_read(out / 'logs' / 'pids.txt')}")
        assert "interrupted" in output
        _assert_children_gone(out)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


def _signal_masks(pid: int) -> str:
    return " ".join(line.replace("\t", "") for line in _read(Path(f"/proc/{pid}/status"))
                    .splitlines() if line.startswith(("SigBlk", "SigIgn", "SigCgt")))


def _read(path: Path) -> str:
    try:
        return path.read_text()
    except OSError:
        return ""


def test_demo_failure_is_reported_and_cleaned_up(tmp_path, assets_dir):
    out = tmp_path / "demo"
    bad = tmp_path / "not_a_checkpoint.tar"
    bad.write_bytes(b"this is not a torch checkpoint")
    started = time.monotonic()
    result = _run(["--frames", "1", "--weights", str(bad), "--out", str(out),
                   "--assets", str(assets_dir), "--start-timeout", "120"])
    assert result.returncode == 1, result.stdout + result.stderr
    text = result.stdout + result.stderr
    assert "stereo_depth_demo: error: stereo_depth_node exited" in text, text
    assert time.monotonic() - started < 150
    _assert_children_gone(out)
    # a second run may reuse the folder (the demo marked it), a foreign folder is refused
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "keep.txt").write_text("mine")
    result = _run(["--frames", "1", "--backend", "sgbm", "--out", str(foreign)])
    assert result.returncode == 1 and "not made by the demo" in result.stdout + result.stderr
    assert (foreign / "keep.txt").is_file()


def test_an_earlier_run_is_moved_aside_not_deleted(tmp_path):
    """out/demo of an earlier run goes to out/demo.<its start time>, every time (no clash)."""
    from stereo_depth_ros.tools.demo import MARKER, DemoError, prepare_out_dir

    out = tmp_path / "demo"
    assert prepare_out_dir(out) is None and [p.name for p in out.iterdir()] == [MARKER]
    (out / "frames").mkdir()
    (out / "frames" / "000000_montage.png").write_bytes(b"first run")
    os.utime(out / MARKER, (1_700_000_000, 1_700_000_000))
    first = prepare_out_dir(out)
    stamp = time.strftime("%Y%m%d-%H%M%S", time.localtime(1_700_000_000))
    assert first == tmp_path / f"demo.{stamp}"
    assert (first / "frames" / "000000_montage.png").read_bytes() == b"first run"
    assert [p.name for p in out.iterdir()] == [MARKER]              # a fresh folder
    (out / "demo_summary.json").write_text("{}")
    os.utime(out / MARKER, (1_700_000_000, 1_700_000_000))         # same second: numbered
    second = prepare_out_dir(out)
    assert second == tmp_path / f"demo.{stamp}-2" and (second / "demo_summary.json").is_file()
    assert first.is_dir() and (first / "frames" / "000000_montage.png").is_file()
    (out / "x").write_text("")
    (out / MARKER).unlink()
    with pytest.raises(DemoError, match="not made by the demo"):
        prepare_out_dir(out)
    assert (out / "x").is_file()
