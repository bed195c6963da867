"""Build the package with colcon (from PyPI) into a temporary install space, and run from it.

The workspace's src/ holds symlinks to the package files (not the venv or the assets). The install
space is built once per test session (`colcon_install_space` in conftest.py) and shared by the
colcon and launch tests.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
PACKAGE = "stereo_depth_ros"
PACKAGE_ITEMS = ("setup.py", "setup.cfg", "package.xml", "resource", PACKAGE, "launch", "config",
                 "README.md", "LICENSE")


def colcon() -> str:
    candidate = Path(sys.executable).parent / "colcon"
    found = str(candidate) if candidate.exists() else shutil.which("colcon")
    if not found:
        pytest.fail("colcon not found: pip install colcon-common-extensions "
                    "(requirements-dev.txt has it)")
    return found


def clean_env() -> dict[str, str]:
    """The test environment without the repository on PYTHONPATH (use the installed copy)."""
    env = dict(os.environ)
    paths = [p for p in env.get("PYTHONPATH", "").split(os.pathsep)
             if p and Path(p).resolve() != REPO_ROOT]
    env["PYTHONPATH"] = os.pathsep.join(paths)
    # pip installs no AMENT_PREFIX_PATH; the venv prefix holds the core packages' ament index.
    env.setdefault("AMENT_PREFIX_PATH", sys.prefix)
    return env


def build_install_space(workspace: Path) -> Path:
    """colcon build of the package in `workspace`; returns its install space."""
    source = workspace / "src" / PACKAGE
    source.mkdir(parents=True)
    for item in PACKAGE_ITEMS:
        if (REPO_ROOT / item).exists():
            (source / item).symlink_to(REPO_ROOT / item)
    result = subprocess.run(
        [colcon(), "build", "--base-paths", "src", "--build-base", "build", "--install-base",
         "install", "--event-handlers", "console_cohesion+"],
        cwd=workspace, env=clean_env(), capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Summary: 1 package finished" in result.stdout + result.stderr
    return workspace / "install"


def installed(install: Path, *parts: str) -> Path:
    return install.joinpath(PACKAGE, *parts)


def sourced(install: Path, command: str) -> list[str]:
    """bash running `command` with the install space sourced (as a robot's shell would)."""
    return ["bash", "-c", f". {install / 'setup.bash'} && {command}"]
