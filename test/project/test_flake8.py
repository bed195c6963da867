"""House style gate: flake8 (max line 99, setup.cfg) over package, tests, scripts, launch."""

import subprocess
import sys

import pytest


def test_flake8_clean(repo_root):
    pytest.importorskip("flake8")
    result = subprocess.run(
        [sys.executable, "-m", "flake8", "stereo_depth_ros", "test", "scripts", "launch"],
        cwd=repo_root, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
