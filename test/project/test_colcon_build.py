"""`colcon build` of the package (colcon from PyPI) and the installed executable.

The package is built in a temporary workspace whose src/ holds symlinks to the package files (not
the venv or the assets). The installed `stereo_depth_node` is then run from the sourced install
space: with a bad parameter it fails with a clear error; with the installed sgbm.yaml it comes up
and stops cleanly on SIGINT.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from helpers.colcon import PACKAGE, clean_env, installed, sourced
from helpers.process import assert_clean_exit
from helpers.ros import NodeProcess

pytestmark = [pytest.mark.ros, pytest.mark.slow]


@pytest.fixture
def install_space(colcon_install_space):
    return colcon_install_space


def test_install_space_has_the_executable_launch_and_config(install_space):
    executable = installed(install_space, "lib", PACKAGE, "stereo_depth_node")
    assert executable.is_file() and os.access(executable, os.X_OK)
    share = installed(install_space, "share", PACKAGE)
    for name in ("launch/stereo_depth.launch.py", "config/stereo_depth.yaml", "config/sgbm.yaml",
                 "config/stereo_depth.rviz", "config/fastdds_large_images.xml", "package.xml"):
        assert (share / name).is_file(), name
    index = install_space / PACKAGE / "share" / "ament_index" / "resource_index" / "packages"
    assert (index / PACKAGE).exists()


def test_installed_package_is_the_one_imported(install_space):
    result = subprocess.run(
        sourced(install_space, f"{sys.executable} -c 'import stereo_depth_ros, "
                "ament_index_python as a; print(stereo_depth_ros.__file__); "
                f"print(a.get_package_share_directory(\"{PACKAGE}\"))'"),
        env=clean_env(), capture_output=True, text=True, timeout=60, cwd=install_space.parent)
    assert result.returncode == 0, result.stderr
    module_file, share = result.stdout.split()
    assert Path(module_file).is_relative_to(install_space)
    assert Path(share) == installed(install_space, "share", PACKAGE)


def test_installed_executable_rejects_a_bad_backend(install_space):
    executable = installed(install_space, "lib", PACKAGE, "stereo_depth_node")
    result = subprocess.run(sourced(install_space, f"{executable} --ros-args -p "
                                    "backend:=nonsense"),
                            env=clean_env(), capture_output=True, text=True, timeout=60,
                            cwd=install_space.parent)
    assert result.returncode == 1, result.stdout + result.stderr
    assert "backend='nonsense' is not allowed: expected one of psmnet, sgbm" in result.stderr
    assert_clean_exit(result.stderr)


def test_installed_executable_starts_with_the_installed_params_and_stops_cleanly(install_space):
    executable = installed(install_space, "lib", PACKAGE, "stereo_depth_node")
    params = installed(install_space, "share", PACKAGE, "config", "sgbm.yaml")
    command = f"exec {executable} --ros-args --params-file {params}"
    node = NodeProcess(argv=sourced(install_space, command), env=clean_env(),
                       cwd=install_space.parent)
    with node:
        node.wait_for_output(r"ready: backend=sgbm", timeout=60.0)
        code = node.stop()
    assert_clean_exit(node.output(), code)


def test_installed_params_with_relative_weights_give_a_workspace_hint(install_space):
    """The installed stereo_depth.yaml's relative weights_path, started from the workspace: the
    error names the directory it was resolved against and suggests fetch_assets.py, not `make
    assets` (a colcon workspace has no Makefile)."""
    executable = installed(install_space, "lib", PACKAGE, "stereo_depth_node")
    params = installed(install_space, "share", PACKAGE, "config", "stereo_depth.yaml")
    result = subprocess.run(sourced(install_space, f"{executable} --ros-args --params-file "
                                    f"{params}"),
                            env=clean_env(), capture_output=True, text=True, timeout=120,
                            cwd=install_space.parent)
    assert result.returncode == 1, result.stdout + result.stderr
    text = result.stdout + result.stderr
    assert "weights_path 'assets/weights/pretrained_model_KITTI2015.tar' does not exist" in text
    assert f"resolved against the directory the node started in ({install_space.parent})" in text
    assert "scripts/fetch_assets.py --dir ~/stereo_assets" in text
    assert "make assets" not in text
    assert_clean_exit(text)


def test_installed_executables_print_help(install_space):
    for name in ("stereo_depth_node", "stereo_depth_lifecycle_node"):
        executable = installed(install_space, "lib", PACKAGE, name)
        result = subprocess.run(sourced(install_space, f"{executable} --help"),
                                env=clean_env(), capture_output=True, text=True, timeout=60,
                                cwd=install_space.parent)
        assert result.returncode == 0, result.stdout + result.stderr
        assert result.stdout.startswith(f"usage: {name} ") and "weights_path (default" in \
            result.stdout
