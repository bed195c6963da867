"""The pure layers must import without ROS: core, models, backends, data and the offline tools."""

import subprocess
import sys

import pytest

PURE_MODULES = [
    "stereo_depth_ros.config",
    "stereo_depth_ros.core.camera", "stereo_depth_ros.core.geometry",
    "stereo_depth_ros.core.rectify", "stereo_depth_ros.core.padding",
    "stereo_depth_ros.core.disparity_io", "stereo_depth_ros.core.synthetic",
    "stereo_depth_ros.core.metrics", "stereo_depth_ros.core.kitti_calib",
    "stereo_depth_ros.core.image_io",
    "stereo_depth_ros.models", "stereo_depth_ros.models.fast",
    "stereo_depth_ros.backends.psmnet", "stereo_depth_ros.backends.sgbm",
    "stereo_depth_ros.data",
    "stereo_depth_ros.tools.infer", "stereo_depth_ros.tools.evaluate",
    "stereo_depth_ros.tools.train", "stereo_depth_ros.tools.kitti2bag",
    "stereo_depth_ros.tools.replay", "stereo_depth_ros.tools.dump",
]
ROS_MODULES = ("rclpy", "sensor_msgs", "stereo_msgs", "message_filters", "cv_bridge")


@pytest.mark.parametrize("module", PURE_MODULES)
def test_pure_module_imports_no_ros(module, repo_root):
    code = (f"import sys, importlib; importlib.import_module({module!r}); "
            f"print(','.join(m for m in {ROS_MODULES!r} if m in sys.modules))")
    result = subprocess.run([sys.executable, "-c", code], cwd=repo_root, capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "", f"{module} pulled in {result.stdout.strip()}"
