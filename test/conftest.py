"""Shared test setup.

ROS isolation happens here, at import time, before any test module imports rclpy: discovery is
limited to this host and every pytest session reserves its own ROS domain id (a TCP port lock, as
ros-domain-coordinator does), so parallel runs on one machine never see each other's topics.
Subprocesses started by tests inherit os.environ and therefore the same isolation.
"""

from __future__ import annotations

import logging
import os
import signal
import sys
from pathlib import Path

import pytest

from stereo_depth_ros.ros_domain import reserve_domain_id

# The helpers package's asserts report their operands as the tests' own do.
pytest.register_assert_rewrite("helpers")

REPO_ROOT = Path(__file__).resolve().parent.parent
SHARED_DIR = REPO_ROOT.parent / "shared"
ASSETS_DIR = Path(os.environ.get("STEREO_DEPTH_ASSETS", REPO_ROOT / "assets"))

os.environ["ROS_AUTOMATIC_DISCOVERY_RANGE"] = "LOCALHOST"
os.environ.pop("ROS_LOCALHOST_ONLY", None)
os.environ.pop("RMW_IMPLEMENTATION", None)
if "STEREO_DEPTH_TEST_DOMAIN_ID" in os.environ:
    os.environ["ROS_DOMAIN_ID"] = os.environ["STEREO_DEPTH_TEST_DOMAIN_ID"]
else:
    _DOMAIN_ID, _DOMAIN_LOCK = reserve_domain_id()
    os.environ["ROS_DOMAIN_ID"] = str(_DOMAIN_ID)
# A test runner started in the background by a non-interactive shell (`make test &`, nohup)
# ignores SIGINT, and every process it starts inherits that; the tests stop nodes, tools and
# launches with Ctrl-C as a terminal does, so they get the terminal's default.
if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)

_FASTDDS_PROFILE = REPO_ROOT / "config" / "fastdds_large_images.xml"
if _FASTDDS_PROFILE.is_file():
    os.environ.setdefault("FASTDDS_DEFAULT_PROFILES_FILE", str(_FASTDDS_PROFILE))
THIRDPARTY_DIR = SHARED_DIR / "thirdparty" / "python"
STAND_INS_DIR = REPO_ROOT / "test" / "stand_ins"
THIRDPARTY_PACKAGES = ("message_filters", "launch", "launch_ros")
HAVE_THIRDPARTY = all((THIRDPARTY_DIR / name / "__init__.py").is_file()
                      for name in THIRDPARTY_PACKAGES)
# The real message_filters / launch / launch_ros (not on PyPI) for this process and every node
# the tests start, as on a robot's ROS 2 install; composition_interfaces as an import-only
# stand-in.
_EXTRA_PATHS = [str(THIRDPARTY_DIR), str(STAND_INS_DIR)] if HAVE_THIRDPARTY else []
for _path in reversed(_EXTRA_PATHS):
    if _path not in sys.path:
        sys.path.insert(0, _path)
os.environ["PYTHONPATH"] = os.pathsep.join(
    p for p in (str(REPO_ROOT), *_EXTRA_PATHS, os.environ.get("PYTHONPATH", "")) if p)
THIRDPARTY_SKIP_REASON = (
    f"the upstream ROS 2 Python packages {', '.join(THIRDPARTY_PACKAGES)} are not at "
    f"{THIRDPARTY_DIR} (they live beside the repository in CI, not in it; on a ROS 2 install "
    "they come with the distribution)")


@pytest.fixture(scope="session")
def real_ros_packages() -> None:
    """Skip (with the reason) unless the real message_filters and launch packages are importable
    (a ROS 2 install's own, or ../shared/thirdparty/python)."""
    try:
        import launch_ros  # noqa: F401, PLC0415
        import message_filters  # noqa: F401, PLC0415
    except ImportError as error:
        pytest.skip(f"{THIRDPARTY_SKIP_REASON}: {error}")


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return REPO_ROOT


@pytest.fixture(scope="session")
def golden_dir() -> Path:
    """The random-weight golden vectors of the official code in ../shared/golden: an extra
    check beside the repository's own real-weights golden (test/reference), skipped in a clone that
    has no ../shared beside it."""
    path = SHARED_DIR / "golden"
    if not (path / "golden_input.pt").is_file():
        pytest.skip(f"random-weight golden vectors not found at {path} (they live beside the "
                    "repository, not in it; test/reference/golden_real_weights is the golden that "
                    "always runs)")
    return path


@pytest.fixture(scope="session")
def assets_dir() -> Path:
    if not all((ASSETS_DIR / name).is_dir() for name in ("weights", "samples", "ground_truth")):
        pytest.fail(f"sample assets missing in {ASSETS_DIR}: run `make assets` "
                    "(make test does it for you)")
    return ASSETS_DIR


@pytest.fixture(scope="session")
def kitti_weights(assets_dir: Path) -> Path:
    return assets_dir / "weights" / "pretrained_model_KITTI2015.tar"


REAL_GOLDEN_DIR = REPO_ROOT / "test" / "reference" / "golden_real_weights"


@pytest.fixture(scope="session")
def real_golden() -> dict:
    """The official output with the released weights on a real 256x512 crop (test/reference, with
    its provenance README): left/right (256, 512, 3) uint8 RGB, disparity per align_corners."""
    import cv2
    import numpy as np
    left, right = (cv2.imread(str(REAL_GOLDEN_DIR / f"drivingstereo_crop_{side}.png"),
                              cv2.IMREAD_COLOR)[..., ::-1].copy() for side in ("left", "right"))
    return {"left": left, "right": right,
            True: np.load(REAL_GOLDEN_DIR / "official_disp_align_corners_true.npy"),
            False: np.load(REAL_GOLDEN_DIR / "official_disp_align_corners_false.npy")}


@pytest.fixture(scope="session")
def colcon_install_space(tmp_path_factory) -> Path:
    """The package built with colcon into a temporary install space (once per session)."""
    from helpers.colcon import build_install_space
    return build_install_space(tmp_path_factory.mktemp("colcon_ws"))


@pytest.fixture(autouse=True)
def standard_logging_after_launch():
    """Importing the upstream `launch` package in this process (the real launch API tests) makes
    every logger created afterwards a LaunchLogger that does not propagate, so caplog would miss
    our tools' log lines in later tests; undo that after each test."""
    yield
    if logging.getLoggerClass() is not logging.Logger:
        logging.setLoggerClass(logging.Logger)
    for name, logger in list(logging.Logger.manager.loggerDict.items()):
        if name.startswith("stereo_depth_ros") and isinstance(logger, logging.Logger):
            logger.propagate = True
