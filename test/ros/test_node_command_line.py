"""The nodes' command line before rclpy: `--help` (usage and the parameter table from config.py,
exit 0, nothing loaded) and `--params-file` checks (a missing or malformed file is one line naming
it, exit 2, no rcl traceback)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from stereo_depth_ros.config import PARAMS
from stereo_depth_ros.ros.command_line import (ParamsFileError, check_params_file,
                                               params_files, parameter_table)

REPO_ROOT = Path(__file__).resolve().parents[2]
NODES = {"stereo_depth_node": "stereo_depth_ros.ros.stereo_depth_node",
         "stereo_depth_lifecycle_node": "stereo_depth_ros.ros.stereo_depth_lifecycle_node"}


def _run_node(module: str, tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    """The node as a process, in a folder without assets and with no default weights either
    (so anything that loaded weights would fail: FATAL, exit 1)."""
    env = dict(os.environ, STEREO_DEPTH_ASSETS=str(tmp_path / "no_assets"),
               PYTHONPATH=os.pathsep.join([str(REPO_ROOT), os.environ.get("PYTHONPATH", "")]))
    return subprocess.run([sys.executable, "-m", module, *args], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize("prog", sorted(NODES))
def test_help_prints_usage_and_parameter_table_without_starting(prog, tmp_path):
    result = _run_node(NODES[prog], tmp_path, "--help")
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.startswith(f"usage: {prog} [-h] [--ros-args")
    assert result.stderr == ""                  # no FATAL about weights, no rcl output
    for spec in PARAMS:
        assert f"\n  {spec.name} (default " in result.stdout, spec.name
    assert "  backend (default 'psmnet')\n      stereo matcher: psmnet (the network)" \
        in result.stdout


def test_parameter_table_lists_every_parameter_once_with_its_default():
    table = parameter_table()
    heads = [line.strip() for line in table.splitlines() if not line.startswith("      ")]
    assert len(heads) == len(PARAMS)
    for head, spec in zip(heads, PARAMS):
        default = spec.default
        shown = repr(default) if isinstance(default, str) else (
            str(default).lower() if isinstance(default, bool) else str(default))
        assert head == f"{spec.name} (default {shown})"
    assert all(len(line) <= 99 for line in table.splitlines())


@pytest.mark.parametrize("prog", sorted(NODES))
def test_bad_params_file_is_one_line_naming_it(prog, tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("/**:\n  ros__parameters:\n    backend: [sgbm\n")
    for path, message in ((tmp_path / "missing.yaml", "no such file"),
                          (bad, "not valid YAML at line 4")):
        result = _run_node(NODES[prog], tmp_path, "--ros-args", "--params-file", str(path))
        assert result.returncode == 2, result.stdout + result.stderr
        assert result.stderr.splitlines() == [
            f"{prog}: error: --params-file {path}: {message}, column 1: expected ',' or ']', "
            "but got '<stream end>'" if path == bad else
            f"{prog}: error: --params-file {path}: {message}"]


def test_shipped_params_files_pass_the_check():
    for path in sorted((REPO_ROOT / "config").glob("*.yaml")):
        check_params_file(path)


def test_params_files_found_in_ros_arguments(tmp_path):
    assert params_files(["--ros-args", "-p", "a:=1", "--params-file", "x.yaml",
                         "--params-file", "y.yaml"]) == [Path("x.yaml"), Path("y.yaml")]
    with pytest.raises(ParamsFileError, match="--params-file needs a file name"):
        params_files(["--ros-args", "--params-file"])
    folder = tmp_path / "folder.yaml"
    folder.mkdir()
    with pytest.raises(ParamsFileError, match=f"--params-file {folder}: cannot read it"):
        check_params_file(folder)
