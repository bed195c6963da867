"""The rclpy side of `stereo_depth_eval --live`: the node's depth against LiDAR while a bag plays.

Subscribes (relative names, so a namespace applies) to the stereo node's `depth/image_rect`
(32FC1 metres with NaN invalid, or 16UC1 millimetres with 0 invalid) and `depth/camera_info`, to
the LiDAR topic (sensor_msgs/PointCloud2 with float x, y, z) and, when the tf2_msgs Python
package is installed, to /tf_static (transient local). Everything else happens in
`core.lidar_eval.LiveEvaluation`; each scan's result is published on `depth_error` as a
diagnostic_msgs/DiagnosticArray (one status per range band, the depth frame's stamp) and handed
to `on_reports`.
"""

from __future__ import annotations

import logging
import time
from typing import Callable

import numpy as np

from stereo_depth_ros import topics
from stereo_depth_ros.core.depth_error import METRICS
from stereo_depth_ros.core.lidar import xyz_from_cloud
from stereo_depth_ros.core.lidar_eval import FrameReport, LiveEvaluation
from stereo_depth_ros.core.stamps import ns_to_seconds_text, set_stamp, stamp_to_ns
from stereo_depth_ros.core.transforms import TransformTree, static_transforms_from_message
from stereo_depth_ros.ros.messages import depth_image_metres

LOG = logging.getLogger(__name__)
STATUS_PREFIX = "depth_error"


def tf_message_type():
    """tf2_msgs.msg.TFMessage, or None where the package is not installed (it is not on PyPI)."""
    try:
        from tf2_msgs.msg import TFMessage
    except ImportError:
        return None
    return TFMessage


def report_statuses(report: FrameReport, hardware_id: str, tolerance_s: float):
    """DiagnosticStatus list of one FrameReport: "depth_error: all" and one per range band (OK),
    or one WARN status naming why the scan was not compared."""
    from diagnostic_msgs.msg import DiagnosticStatus, KeyValue

    common = [("scan_stamp", ns_to_seconds_text(report.scan_stamp_ns)),
              ("depth_stamp", "" if report.depth_stamp_ns is None
               else ns_to_seconds_text(report.depth_stamp_ns)),
              ("offset_s", "" if report.offset_s is None else f"{report.offset_s:.6f}"),
              ("outcome", report.outcome)]
    if report.errors is None:
        status = DiagnosticStatus(level=DiagnosticStatus.WARN, name=f"{STATUS_PREFIX}: all",
                                  hardware_id=hardware_id,
                                  message=f"scan not compared: {report.outcome}"
                                  + (f" (tolerance {tolerance_s:g} s)"
                                     if report.depth_stamp_ns is None else "")
                                  + (f": {report.detail}" if report.detail else ""))
        status.values = [KeyValue(key=k, value=v) for k, v in common]
        return [status]
    counts = [("points", report.points), ("in_image", report.in_image),
              ("compared", report.compared), ("no_depth", report.no_depth),
              ("behind", report.behind), ("outside", report.outside)]
    statuses = []
    for label, values in report.errors.summary().items():
        status = DiagnosticStatus(level=DiagnosticStatus.OK, name=f"{STATUS_PREFIX}: {label}",
                                  hardware_id=hardware_id, message="")
        pairs = common + ([(k, str(v)) for k, v in counts] if label == "all" else [])
        pairs += [(name, str(values[name]) if name == "n" else f"{values[name]:.6g}")
                  for name in METRICS]
        status.values = [KeyValue(key=k, value=v) for k, v in pairs]
        statuses.append(status)
    return statuses


class LiveEvalNode:
    """The subscriptions and the depth_error publisher around a LiveEvaluation.

    tree: transforms known so far (e.g. read from a bag); /tf_static adds to it when tf2_msgs is
    installed and subscribe_tf is true. on_reports: called with each batch of FrameReports.
    """

    def __init__(self, evaluation: LiveEvaluation, tree: TransformTree, *,
                 lidar_topic: str = topics.LIDAR_POINTS, depth_topic: str = topics.DEPTH,
                 depth_info_topic: str = topics.DEPTH_INFO,
                 error_topic: str = topics.DEPTH_ERROR, subscribe_tf: bool = True,
                 lidar_best_effort: bool = False,
                 on_reports: Callable[[list[FrameReport]], None] | None = None,
                 node_name: str = "stereo_depth_live_eval", namespace: str = "",
                 context=None) -> None:
        import rclpy
        from diagnostic_msgs.msg import DiagnosticArray
        from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
        from sensor_msgs.msg import CameraInfo, Image, PointCloud2

        self.evaluation = evaluation
        self.tree = tree
        self.on_reports = on_reports
        self.tolerance_s = evaluation.tolerance_ns / 1e9
        self.lidar_topic = lidar_topic
        self.node = rclpy.create_node(node_name, namespace=namespace or "", context=context,
                                      start_parameter_services=False)
        self.hardware_id = self.node.get_fully_qualified_name()
        reliable = QoSProfile(depth=20, reliability=ReliabilityPolicy.RELIABLE)
        lidar_qos = QoSProfile(depth=20, reliability=ReliabilityPolicy.BEST_EFFORT
                               if lidar_best_effort else ReliabilityPolicy.RELIABLE)
        self.subscriptions = [
            self.node.create_subscription(Image, depth_topic, self._on_depth, reliable),
            self.node.create_subscription(CameraInfo, depth_info_topic, self._on_info, reliable),
            self.node.create_subscription(PointCloud2, lidar_topic, self._on_cloud, lidar_qos)]
        self.tf_subscribed = False
        tf_type = tf_message_type() if subscribe_tf else None
        if tf_type is not None:
            self.subscriptions.append(self.node.create_subscription(
                tf_type, topics.TF_STATIC, self._on_tf,
                QoSProfile(depth=100, reliability=ReliabilityPolicy.RELIABLE,
                           durability=DurabilityPolicy.TRANSIENT_LOCAL)))
            self.tf_subscribed = True
        self.publisher = self.node.create_publisher(DiagnosticArray, error_topic, reliable)
        self.messages = 0
        self.last_message = None          # time.monotonic() of the last input message
        self.problems: dict[str, int] = {}

    # ----------------------------------------------------------------------------- callbacks
    def _seen(self) -> None:
        self.messages += 1
        self.last_message = time.monotonic()

    def _problem(self, text: str) -> None:
        if text not in self.problems:
            self.node.get_logger().warning(text)
        self.problems[text] = self.problems.get(text, 0) + 1

    def _on_depth(self, msg) -> None:
        self._seen()
        try:
            depth = depth_image_metres(msg)
        except ValueError as exc:
            self._problem(f"depth image skipped: {exc}")
            return
        self._emit(self.evaluation.add_depth_image(stamp_to_ns(msg.header.stamp), depth,
                                                   msg.header.frame_id))

    def _on_info(self, msg) -> None:
        self._seen()
        p = np.asarray(msg.p, dtype=np.float64).reshape(3, 4)
        try:
            reports = self.evaluation.add_camera_info(stamp_to_ns(msg.header.stamp), p[:, :3],
                                                      int(msg.width), int(msg.height))
        except ValueError as exc:
            self._problem(f"depth camera_info skipped: {exc}")
            return
        self._emit(reports)

    def _on_cloud(self, msg) -> None:
        self._seen()
        try:
            points = xyz_from_cloud(
                msg.data, [(f.name, f.offset, f.datatype, f.count) for f in msg.fields],
                point_step=int(msg.point_step), row_step=int(msg.row_step),
                width=int(msg.width), height=int(msg.height),
                is_bigendian=bool(msg.is_bigendian), source=f"PointCloud2 on {self.lidar_topic}")
        except ValueError as exc:
            self._problem(f"scan skipped: {exc}")
            return
        self._emit(self.evaluation.add_scan(stamp_to_ns(msg.header.stamp), points,
                                            msg.header.frame_id))

    def _on_tf(self, msg) -> None:
        try:
            self.tree.add_all(static_transforms_from_message(msg, source=topics.TF_STATIC))
        except ValueError as exc:
            self._problem(f"/tf_static message skipped: {exc}")

    # ----------------------------------------------------------------------------- output
    def _emit(self, reports: list[FrameReport]) -> None:
        if not reports:
            return
        from diagnostic_msgs.msg import DiagnosticArray

        for report in reports:
            if not self.node.context.ok():
                break          # shut down (Ctrl-C): the reports still go to on_reports
            array = DiagnosticArray()
            set_stamp(array.header.stamp, report.depth_stamp_ns if report.depth_stamp_ns
                      is not None else report.scan_stamp_ns)
            array.status = report_statuses(report, self.hardware_id, self.tolerance_s)
            self.publisher.publish(array)
        if self.on_reports is not None:
            self.on_reports(reports)

    def finish(self) -> list[FrameReport]:
        """Decide the pending scans (end of input) and publish them."""
        reports = self.evaluation.finish()
        self._emit(reports)
        return reports

    def destroy(self) -> None:
        self.node.destroy_node()
