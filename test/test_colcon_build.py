"""`colcon build` of the package (colcon from PyPI) and the installed executable.

The package is built in a temporary workspace whose src/ holds symlinks to the package files (not
the venv or the assets). The installed `stereo_depth_node` is then run from the sourced install
space: with a bad parameter it fails with a clear error; with the installed sgbm.yaml it comes up
and stops cleanly on SIGINT.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from ros_helpers import NodeProcess

pytestmark = [pytest.mark.ros, pytest.mark.slow]

REPO_ROOT = Path(__file__).resolve().parent.parent
PACKAGE = "stereo_depth_ros"
PACKAGE_ITEMS = ("setup.py", "setup.cfg", "package.xml", "resource", PACKAGE, "launch", "config",
                 "README.md", "LICENSE")


def _colcon() -> str:
    candidate = Path(sys.executable).parent / "colcon"
    found = str(candidate) if candidate.exists() else shutil.which("colcon")
    if not found:
        pytest.fail("colcon not found: pip install colcon-common-extensions "
                    "(requirements-dev.txt has it)")
    return found


def _clean_env() -> dict[str, str]:
    """The test environment without the repository on PYTHONPATH (use the installed copy)."""
    env = dict(os.environ)
    paths = [p for p in env.get("PYTHONPATH", "").split(os.pathsep)
             if p and Path(p).resolve() != REPO_ROOT]
    env["PYTHONPATH"] = os.pathsep.join(paths)
    # pip installs no AMENT_PREFIX_PATH; the venv prefix holds the core packages' ament index.
    env.setdefault("AMENT_PREFIX_PATH", sys.prefix)
    return env


@pytest.fixture(scope="module")
def install_space(tmp_path_factory):
    workspace = tmp_path_factory.mktemp("colcon_ws")
    source = workspace / "src" / PACKAGE
    source.mkdir(parents=True)
    for item in PACKAGE_ITEMS:
        if (REPO_ROOT / item).exists():
            (source / item).symlink_to(REPO_ROOT / item)
    result = subprocess.run(
        [_colcon(), "build", "--base-paths", "src", "--build-base", "build", "--install-base",
         "install", "--event-handlers", "console_cohesion+"],
        cwd=workspace, env=_clean_env(), capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Summary: 1 package finished" in result.stdout + result.stderr
    return workspace / "install"


def _installed(install: Path, *parts: str) -> Path:
    return install.joinpath(PACKAGE, *parts)


def test_install_space_has_the_executable_launch_and_config(install_space):
    executable = _installed(install_space, "lib", PACKAGE, "stereo_depth_node")
    assert executable.is_file() and os.access(executable, os.X_OK)
    share = _installed(install_space, "share", PACKAGE)
    for name in ("launch/stereo_depth.launch.py", "config/stereo_depth.yaml", "config/sgbm.yaml",
                 "config/stereo_depth.rviz", "config/fastdds_large_images.xml", "package.xml"):
        assert (share / name).is_file(), name
    index = install_space / PACKAGE / "share" / "ament_index" / "resource_index" / "packages"
    assert (index / PACKAGE).exists()


def _sourced(install: Path, command: str) -> list[str]:
    return ["bash", "-c", f". {install / 'setup.bash'} && {command}"]


def test_installed_package_is_the_one_imported(install_space):
    result = subprocess.run(
        _sourced(install_space, f"{sys.executable} -c 'import stereo_depth_ros, "
                 "ament_index_python as a; print(stereo_depth_ros.__file__); "
                 f"print(a.get_package_share_directory(\"{PACKAGE}\"))'"),
        env=_clean_env(), capture_output=True, text=True, timeout=60, cwd=install_space.parent)
    assert result.returncode == 0, result.stderr
    module_file, share = result.stdout.split()
    assert Path(module_file).is_relative_to(install_space)
    assert Path(share) == _installed(install_space, "share", PACKAGE)


def test_installed_executable_rejects_a_bad_backend(install_space):
    executable = _installed(install_space, "lib", PACKAGE, "stereo_depth_node")
    result = subprocess.run(_sourced(install_space, f"{executable} --ros-args -p "
                                     "backend:=nonsense"),
                            env=_clean_env(), capture_output=True, text=True, timeout=60,
                            cwd=install_space.parent)
    assert result.returncode == 1, result.stdout + result.stderr
    assert "backend='nonsense' is not allowed: expected one of psmnet, sgbm" in result.stderr
    assert "Traceback" not in result.stderr


def test_installed_executable_starts_with_the_installed_params_and_stops_cleanly(install_space):
    executable = _installed(install_space, "lib", PACKAGE, "stereo_depth_node")
    params = _installed(install_space, "share", PACKAGE, "config", "sgbm.yaml")
    command = f"exec {executable} --ros-args --params-file {params}"
    node = NodeProcess(argv=_sourced(install_space, command), env=_clean_env(),
                       cwd=install_space.parent)
    with node:
        node.wait_for_output(r"ready: backend=sgbm", timeout=60.0)
        code = node.stop()
    assert code == 0, node.output()
    assert "Traceback" not in node.output()
