"""stereo_depth_point_cloud_node: stereo_image_proc's point_cloud_node, disparity -> points2.

For disparities that come from another node (stereo_image_proc's disparity_node, an Isaac ROS
graph, a bag): stereo_depth_node builds points2 itself. Subscribes (relative, remappable;
stereo_image_proc's names): disparity (stereo_msgs/DisparityImage), left/image_rect_color
(sensor_msgs/Image, or left/image_rect_color/compressed with image_transport compressed),
left/camera_info, right/camera_info, synchronised (exact stamps, or approximate_sync). Publishes
points2 (organized sensor_msgs/PointCloud2, the disparity's header; stereo_image_proc's aligned
layout, or packed with avoid_point_cloud_padding; packed rgb with use_color) and /diagnostics.
Geometry from the two camera_infos' P as stereo_image_proc takes it: Z = fx * B / d with the
DisparityImage's values (already adjusted by the cx offset, as the message defines them);
invalid disparities (below min_disparity, above max_disparity, <= 0, not finite) give NaN points.

Run: ros2 run stereo_depth_ros stereo_depth_point_cloud_node (or python -m
stereo_depth_ros.ros.point_cloud_node) --ros-args -p use_color:=false ...
"""

from __future__ import annotations

import sys
import time

from diagnostic_msgs.msg import DiagnosticArray
from rclpy.node import Node
from rclpy.task import Future
from sensor_msgs.msg import CameraInfo, CompressedImage, Image, PointCloud2
from stereo_msgs.msg import DisparityImage

from stereo_depth_ros import topics
from stereo_depth_ros.config import UNBOUNDED_SYNC_TOLERANCE_S, point_cloud_specs
from stereo_depth_ros.core.stamps import stamp_to_ns
from stereo_depth_ros.drop_reasons import DEPTH_UNAVAILABLE, PROCESSING_ERROR, FrameDropped
from stereo_depth_ros.ros import diagnostics, transport
from stereo_depth_ros.ros.command_line import node_main
from stereo_depth_ros.ros.messages import calibration_key
from stereo_depth_ros.ros.params import (ParameterError, SpecGuard,
                                         adopt_unremapped_qos_overrides,
                                         declare_named_parameters, unknown_parameter_warnings)
from stereo_depth_ros.ros.point_cloud import (CloudGeometry, InputTopics, cloud_colours,
                                              cloud_geometry, cloud_header, disparity_values,
                                              make_cloud)
from stereo_depth_ros.ros.stereo_depth_core import LogThrottle, StartupError, run
from stereo_depth_ros.ros.sync import create_stereo_sync

NODE_NAME = "point_cloud_node"
"""stereo_image_proc's node name, so a params file keyed by it keeps working."""
EXECUTABLE = "stereo_depth_point_cloud_node"


class PointCloudNode(Node):
    """See the module docstring. Raises StartupError for a parameter it cannot start with."""

    def __init__(self, node_name: str = NODE_NAME, **kwargs) -> None:
        super().__init__(node_name, **kwargs)
        self.finished = Future()            # stereo_depth_core.run's stop signal (never set)
        self._specs = point_cloud_specs()
        self._stats = diagnostics.PipelineStats()
        self._throttle = LogThrottle()
        self._geometry_state: tuple | None = None     # (key, CloudGeometry | (reason, text))
        try:
            self._values = declare_named_parameters(self, self._specs)
        except ParameterError as error:
            raise StartupError(str(error)) from None
        inputs = topics.point_cloud_inputs(self._values["image_transport"])
        adopted = adopt_unremapped_qos_overrides(self, list(inputs) + [topics.POINTS])
        self._names = InputTopics(*(self.resolve_topic_name(name) for name in inputs))
        self._pub_points = self.create_publisher(
            PointCloud2, topics.POINTS, transport.output_qos(),
            qos_overriding_options=transport.overridable())
        self._subscribe(inputs)
        self.add_on_set_parameters_callback(SpecGuard(self._specs, self._values.update))
        for line in unknown_parameter_warnings(self, adopted):
            self.get_logger().warning(line)
        self._pub_diagnostics = self.create_publisher(DiagnosticArray, topics.DIAGNOSTICS, 10)
        self._last_tick = self._stats.snapshot()
        self.create_timer(self._values["diagnostics_period_seconds"], self._publish_diagnostics)
        sync = "approximate" if self._values["approximate_sync"] else "exact"
        self.get_logger().info(
            f"ready: {self._pub_points.topic_name} from {', '.join(self._names.all())}"
            f" ({sync} sync, {self._sync.implementation}; QoS in effect: " + "; ".join(
                f"{topic} {transport.describe_qos(sub.qos_profile)}"
                for topic, sub in zip(self._names.all(), self._sync.subscriptions))
            + ")")

    def _subscribe(self, inputs: tuple[str, ...]) -> None:
        values = self._values
        image_type = CompressedImage if values["image_transport"] == "compressed" else Image
        tolerance = values["approximate_sync_tolerance_seconds"] or UNBOUNDED_SYNC_TOLERANCE_S
        try:
            self._sync = create_stereo_sync(
                self, (DisparityImage, image_type, CameraInfo, CameraInfo), inputs,
                transport.input_qos(values["queue_size"], values["use_system_default_qos"]),
                self._on_set, queue_size=values["queue_size"],
                approximate=values["approximate_sync"], tolerance_s=tolerance,
                on_drop=self._on_sync_drop, implementation=values["synchronizer"],
                display_names=list(self._names.all()),
                subscription_options={"qos_overriding_options": transport.overridable()},
                on_reset=self.get_logger().info)
        except RuntimeError as error:
            raise StartupError(str(error)) from None

    # ------------------------------------------------------------------ per set
    def _on_set(self, disparity: DisparityImage, image, left_info: CameraInfo,
                right_info: CameraInfo) -> None:
        """Synchroniser callback: build and publish the cloud (a few ms; nothing to offload)."""
        self._stats.pair_in()
        if self._pub_points.get_subscription_count() == 0:
            return                          # as stereo_image_proc: no subscriber, no work
        try:
            self._process(disparity, image, left_info, right_info)
        except FrameDropped as drop:
            self._stats.drop(drop.reason, str(drop))
            self._log_throttled(f"{drop.reason}:{drop}",
                                f"{drop} -> set dropped (dropped.{drop.reason})")
        except Exception as error:  # noqa: BLE001  (the node keeps serving the next set)
            summary = f"{type(error).__name__}: {str(error).strip()}"
            self._stats.drop(PROCESSING_ERROR, summary)
            self._log_throttled(f"{PROCESSING_ERROR}:{type(error).__name__}",
                                f"processing failed: {summary} -> set dropped "
                                f"(dropped.{PROCESSING_ERROR})", level="error")

    def _process(self, disparity, image, left_info, right_info) -> None:
        start = time.perf_counter()
        values = disparity_values(disparity, self._names.disparity)
        geometry = self._geometry(left_info, right_info, values.shape)
        use_color = self._values["use_color"]
        colours = cloud_colours(image, values.shape, self._names) if use_color else None
        converted = time.perf_counter()
        if geometry.depth_note:
            self._note_no_geometry(geometry)
        cloud = make_cloud(disparity, values, geometry, cloud_header(disparity, left_info, image),
                           colours, padded=not self._values["avoid_point_cloud_padding"])
        built = time.perf_counter()
        self._pub_points.publish(cloud)
        end = time.perf_counter()
        age_s = (self.get_clock().now().nanoseconds - stamp_to_ns(disparity.header.stamp)) / 1e9
        self._stats.processed({"convert": converted - start, "postprocess": built - converted,
                               "publish": end - built, "total": end - start}, published=True,
                              input_age_s=age_s)

    def _geometry(self, left_info, right_info, shape: tuple[int, int]) -> CloudGeometry:
        """The rig for this camera_info pair and disparity size, worked out (and logged) once per
        change; a rejected calibration is remembered as (reason, text) and raised per set."""
        key = (calibration_key(left_info, right_info), shape)
        if self._geometry_state is None or self._geometry_state[0] != key:
            try:
                value = cloud_geometry(left_info, right_info, shape[1], shape[0], self._names)
                self._log_geometry(value)
            except FrameDropped as error:
                value = (error.reason, str(error))
            self._geometry_state = (key, value)
        value = self._geometry_state[1]
        if isinstance(value, tuple):
            raise FrameDropped(*value)
        return value

    def _log_geometry(self, geometry: CloudGeometry) -> None:
        rig = geometry.rig
        scaled = (f" (camera_info {geometry.scaled_from[0]}x{geometry.scaled_from[1]} scaled to "
                  "the disparity)" if geometry.scaled_from else "")
        metric = (f"NO METRIC GEOMETRY ({geometry.depth_note}): every point is NaN"
                  if geometry.depth_note else
                  f"fx={rig.fx:.6g} px, fy={rig.fy:.6g} px, cx={rig.cx_left:.6g}, "
                  f"cy={rig.cy:.6g}, baseline={rig.baseline_m:.6g} m")
        self.get_logger().info(f"geometry: {rig.width}x{rig.height}{scaled}, {metric}")

    def _note_no_geometry(self, geometry: CloudGeometry) -> None:
        """A set published as NaN points (stereo_image_proc does the same): counted, WARN a
        minute."""
        key = f"{DEPTH_UNAVAILABLE}.{geometry.rig.depth_problem}"
        self._stats.count(key)
        self._log_throttled(key, f"no metric geometry from the camera_infos "
                            f"({geometry.depth_note}): points2 carries NaN for every pixel "
                            f"({key})", period_s=60.0)

    # ------------------------------------------------------------------ logs, diagnostics
    def _on_sync_drop(self, drop) -> None:
        self._stats.drop(drop.reason, drop.detail)
        self._log_throttled(drop.reason, f"{drop.detail} -> set dropped (dropped.{drop.reason})")

    def _log_throttled(self, key: str, text: str, level: str = "warn",
                       period_s: float | None = None) -> None:
        self._throttle.report(self.get_logger(), key, text, level, period_s)

    def _health(self, snapshot: dict) -> tuple[int, str]:
        """(level, message) of the sets since the previous diagnostics tick."""
        last, self._last_tick = self._last_tick, snapshot
        published = snapshot["pairs_published"] - last["pairs_published"]
        drops = {reason: count - last["dropped"].get(reason, 0)
                 for reason, count in snapshot["dropped"].items()}
        nan_sets = sum(count - last["counters"].get(name, 0)
                       for name, count in snapshot["counters"].items()
                       if name.startswith(DEPTH_UNAVAILABLE))
        if published and nan_sets:
            return diagnostics.WARN, "publishing NaN points: the camera_infos give no metric " \
                "geometry (see the log)"
        if published:
            return diagnostics.OK, "publishing points2"
        if any(drops.values()):
            top = max(drops, key=drops.get)
            return diagnostics.WARN, f"every set since the last report was dropped: top " \
                f"reason {top}"
        if self._pub_points.get_subscription_count() == 0:
            return diagnostics.OK, "no subscriber on points2: idle"
        return diagnostics.OK, "waiting for a synchronised set"

    def _publish_diagnostics(self) -> None:
        snapshot = self._stats.snapshot()
        snapshot["messages_in"] = dict(zip(self._names.all(), self._sync.received))
        level, message = self._health(snapshot)
        extra = {"sync": self._sync.implementation,
                 f"subscribers.{self._pub_points.topic_name}":
                     str(self._pub_points.get_subscription_count())}
        msg = diagnostics.to_diagnostic_array(snapshot, f"{self.get_name()}: point cloud",
                                              self.get_clock().now().to_msg(), level, message,
                                              extra)
        msg.status[0].hardware_id = self.get_fully_qualified_name()
        self._pub_diagnostics.publish(msg)

    def worker_alive(self) -> bool:
        """stereo_depth_core.run asks: this node has no worker thread."""
        return False


def main(args: list[str] | None = None) -> int:
    """Entry point (console script and `python -m`): 0 on a clean stop or --help, 1 when it cannot
    start, 2 for a bad --params-file."""
    return node_main(lambda argv: run(PointCloudNode, argv, name=NODE_NAME), args,
                     prog=EXECUTABLE, description=__doc__, specs=point_cloud_specs())


if __name__ == "__main__":
    sys.exit(main())
