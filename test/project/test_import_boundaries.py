"""The pure layers import (and run) without ROS: core, models, backends, pipeline, data, bags and
the offline tools. The check blocks ROS imports outright, as on the GPU machine or a plain Python
install, rather than only looking at what got imported."""

import subprocess
import sys

import pytest

PURE_MODULES = [
    "stereo_depth_ros.config", "stereo_depth_ros.drop_reasons", "stereo_depth_ros.topics",
    "stereo_depth_ros.ros_domain",
    "stereo_depth_ros.core.camera", "stereo_depth_ros.core.geometry",
    "stereo_depth_ros.core.rectify", "stereo_depth_ros.core.padding",
    "stereo_depth_ros.core.disparity_io", "stereo_depth_ros.core.synthetic",
    "stereo_depth_ros.core.metrics", "stereo_depth_ros.core.kitti_calib",
    "stereo_depth_ros.core.image_io", "stereo_depth_ros.core.stamps",
    "stereo_depth_ros.core.dump_files", "stereo_depth_ros.ros.dump_node",
    "stereo_depth_ros.models", "stereo_depth_ros.models.fused",
    "stereo_depth_ros.models.fused.cuda",
    "stereo_depth_ros.backends.psmnet", "stereo_depth_ros.backends.sgbm",
    "stereo_depth_ros.pipeline", "stereo_depth_ros.pipeline.device",
    "stereo_depth_ros.data", "stereo_depth_ros.bags",
    "stereo_depth_ros.bags.kitti_layout", "stereo_depth_ros.bags.bag_writer",
    "stereo_depth_ros.tools.infer", "stereo_depth_ros.tools.evaluate",
    "stereo_depth_ros.tools.train", "stereo_depth_ros.tools.kitti2bag",
    "stereo_depth_ros.tools.replay", "stereo_depth_ros.tools.dump",
    "stereo_depth_ros.tools.bench", "stereo_depth_ros.tools.export",
    "stereo_depth_ros.benchmark.runner", "stereo_depth_ros.core.stage_clock",
    "stereo_depth_ros.backends.onnx", "stereo_depth_ros.core.onnx_metadata",
]
ROS_MODULES = ("rclpy", "sensor_msgs", "stereo_msgs", "std_msgs", "message_filters",
               "cv_bridge", "rcl_interfaces", "diagnostic_msgs")
TORCH_FREE = ("stereo_depth_ros.pipeline", "stereo_depth_ros.backends.sgbm",
              "stereo_depth_ros.core.rectify", "stereo_depth_ros.core.geometry",
              "stereo_depth_ros.bags", "stereo_depth_ros.config", "stereo_depth_ros.backends.onnx",
              "stereo_depth_ros.core.onnx_metadata")

_BLOCK_ROS = f"""
import importlib.abc, sys
class _NoRos(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split('.')[0] in {ROS_MODULES!r}:
            raise ImportError(f'{{name}} is blocked: ROS must not be needed here')
sys.meta_path.insert(0, _NoRos())
"""


@pytest.mark.parametrize("module", PURE_MODULES)
def test_pure_module_imports_without_ros(module, repo_root):
    code = _BLOCK_ROS + f"import importlib; importlib.import_module({module!r})"
    result = subprocess.run([sys.executable, "-c", code], cwd=repo_root, capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 0, result.stderr


def test_the_sgbm_frame_path_runs_without_ros_and_without_torch(repo_root):
    """SGBM through the pipeline, ROS blocked: no torch import either (the SGBM path never pays
    for it)."""
    code = _BLOCK_ROS + """
import numpy as np
from stereo_depth_ros.backends import make_backend
from stereo_depth_ros.core.synthetic import make_scene
from stereo_depth_ros.pipeline import StereoPipeline
scene = make_scene(96, 160, texture_cell_px=2.0)
result = StereoPipeline(make_backend("sgbm", num_disparities=32)).process(
    scene.left, scene.right, scene.rig)
assert np.isfinite(result.depth_m).mean() > 0.5
print("torch" in sys.modules)
"""
    result = subprocess.run([sys.executable, "-c", code], cwd=repo_root, capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "False"


@pytest.mark.parametrize("module", TORCH_FREE)
def test_torch_free_modules(module, repo_root):
    code = (f"import sys, importlib; importlib.import_module({module!r}); "
            "print('torch' in sys.modules)")
    result = subprocess.run([sys.executable, "-c", code], cwd=repo_root, capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "False", f"{module} imports torch"
