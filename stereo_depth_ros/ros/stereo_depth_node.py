"""stereo_depth_node: synchronized stereo -> rectified -> PSMNet/SGBM -> disparity, depth, cloud.

Subscribes (relative, remappable): left/image_raw, right/image_raw, left/camera_info,
right/camera_info. Publishes: disparity (stereo_msgs/DisparityImage), depth/image_rect (32FC1 m,
NaN invalid), depth/camera_info, points2 (organized PointCloud2), matcher/left/image_rect,
disparity/confidence (when the backend has one), disparity/image_color (bgr8), /diagnostics.
Everything but the construction lives in `stereo_depth_core` (shared with the managed variant,
`stereo_depth_lifecycle_node`).

Run: python -m stereo_depth_ros.ros.stereo_depth_node --ros-args --params-file
config/stereo_depth.yaml (or `ros2 run stereo_depth_ros stereo_depth_node`).
"""

from __future__ import annotations

import sys

from rclpy.node import Node

from stereo_depth_ros import topics
from stereo_depth_ros.ros.command_line import node_main
from stereo_depth_ros.ros.params import (ParameterGuard, SipAliasSync,
                                         adopt_unremapped_qos_overrides, declare_parameters,
                                         unknown_parameter_warnings)
from stereo_depth_ros.ros.stereo_depth_core import (NODE_NAME, StartupError,  # noqa: F401
                                                    StereoDepthCore, run)


class StereoDepthNode(StereoDepthCore, Node):
    """The stereo depth node; see the module docstring. Raises StartupError when it cannot run."""

    def __init__(self, node_name: str = NODE_NAME, **kwargs) -> None:
        self._init_core()
        super().__init__(node_name, **kwargs)
        config = self._startup_config(lambda: declare_parameters(self))
        self._load(config)
        self._config = config
        self.adopted_qos_overrides = adopt_unremapped_qos_overrides(
            self, list(topics.inputs(config.image_transport)) + list(topics.OUTPUTS))
        self._create_outputs()
        self._subscribe(config)
        self.add_on_set_parameters_callback(ParameterGuard(lambda: self._config,
                                                           self._apply_config))
        if hasattr(self, "add_pre_set_parameters_callback"):         # Iron and newer
            self.add_pre_set_parameters_callback(SipAliasSync(lambda: self._config))
        for line in unknown_parameter_warnings(self, self.adopted_qos_overrides):
            self.get_logger().warning(line)
        self._start_diagnostics(config.diagnostics_period_seconds)
        self._start_worker()
        self.get_logger().info("ready: " + self._summary())


def main(args: list[str] | None = None) -> int:
    """Entry point (console script and `python -m`): 0 on a clean stop or --help, 1 when it cannot
    start, 2 for a bad --params-file."""
    return node_main(lambda argv: run(StereoDepthNode, argv), args, prog="stereo_depth_node",
                     description=__doc__)


if __name__ == "__main__":
    sys.exit(main())
