"""The ROS side of `stereo_depth_dump`: an rclpy node that subscribes to the stereo node's
outputs, groups them by header stamp into frames and writes each with `core.dump_files`.

Subscribed (relative names, so a namespace or ROS remapping applies): `disparity` (required),
and when they are published `depth/image_rect`, `depth/uncertainty`, `depth/camera_info`,
`points2`, `left/image_rect`; /diagnostics for the summary. rclpy and the message packages
are imported when a `Dumper` is built, so this module imports without ROS.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

import numpy as np

from stereo_depth_ros import topics
from stereo_depth_ros.core.dump_files import FrameData, points_from_depth, write_frame
from stereo_depth_ros.core.geometry import disparity_to_depth
from stereo_depth_ros.core.stamps import ns_to_sec_nanosec, stamp_to_ns

LOG = logging.getLogger(__name__)

DISPARITY, DEPTH, DEPTH_INFO, POINTS = (topics.DISPARITY, topics.DEPTH, topics.DEPTH_INFO,
                                        topics.POINTS)
LEFT = topics.LEFT_RECT
DEPTH_UNCERTAINTY = topics.DEPTH_UNCERTAINTY
OPTIONAL_TOPICS = (DEPTH, DEPTH_INFO, POINTS, LEFT, DEPTH_UNCERTAINTY)


def disparity_from_message(msg) -> np.ndarray:
    """DisparityImage -> (H, W) float32 px (as published: adjusted by -cx offset), NaN invalid."""
    from stereo_depth_ros.ros.image_conversion import image_to_numpy

    values = np.array(image_to_numpy(msg.image), dtype=np.float32)
    values[~np.isfinite(values) | (values < msg.min_disparity)] = np.nan
    return values


def depth_from_disparity_message(msg, disparity: np.ndarray) -> np.ndarray:
    """Z = f * T / d as stereo_msgs/DisparityImage defines it (`core.geometry.disparity_to_depth`;
    the published disparity already includes the cx offset): NaN for d <= 0, and everywhere
    when the message has no focal length or baseline."""
    if not (msg.f > 0 and msg.t > 0):
        return np.full(np.shape(disparity), np.nan, dtype=np.float32)
    return disparity_to_depth(disparity, msg.f, msg.t)


def frame_from_messages(stamp_ns: int, parts: dict) -> FrameData:
    """Arrays of one frame from the messages received for it (keys: the topic constants)."""
    from stereo_depth_ros.ros.image_conversion import image_to_numpy, to_matcher_input
    from stereo_depth_ros.ros.messages import (depth_image_metres, pointcloud2_to_numpy,
                                               unpack_rgb)

    disparity_msg = parts[DISPARITY]
    disparity = disparity_from_message(disparity_msg)
    if DEPTH in parts:
        depth = depth_image_metres(parts[DEPTH])
    else:
        depth = depth_from_disparity_message(disparity_msg, disparity)
    left = None
    if LEFT in parts:
        msg = parts[LEFT]
        left = np.ascontiguousarray(to_matcher_input(np.array(image_to_numpy(msg)),
                                                     msg.encoding))
    points = colors = None
    if POINTS in parts:
        cloud = pointcloud2_to_numpy(parts[POINTS])
        points = np.stack([cloud["x"], cloud["y"], cloud["z"]], axis=-1).astype(np.float32)
        if "rgb" in cloud.dtype.names:
            colors = unpack_rgb(cloud["rgb"])
    elif DEPTH_INFO in parts:
        k = np.asarray(parts[DEPTH_INFO].k, dtype=np.float64).reshape(3, 3)
        points = points_from_depth(depth, k)
    if points is not None and colors is None and left is not None \
            and left.shape[:2] == points.shape[:2]:
        colors = left if left.ndim == 3 else np.repeat(left[:, :, None], 3, axis=2)
    depth_std = (depth_image_metres(parts[DEPTH_UNCERTAINTY])
                 if DEPTH_UNCERTAINTY in parts else None)
    return FrameData(stamp_ns, disparity, depth, points, colors, left, depth_std)


class Dumper:
    """rclpy node that assembles output frames by stamp and writes them with write_frame."""

    def __init__(self, out_dir: Path, *, namespace: str = "", max_frames: int | None = None,
                 grace_s: float = 1.0, ply: str = "binary", context=None,
                 node_name: str = "stereo_depth_dump", end_grace_s: float = 5.0) -> None:
        import rclpy
        from diagnostic_msgs.msg import DiagnosticArray
        from rclpy.qos import QoSProfile, ReliabilityPolicy
        from sensor_msgs.msg import CameraInfo, Image, PointCloud2
        from stereo_msgs.msg import DisparityImage

        self.out_dir = Path(out_dir)
        self.max_frames = max_frames
        self.grace_s = grace_s
        self.ply = ply
        self.node = rclpy.create_node(node_name, namespace=namespace or "", context=context,
                                      start_parameter_services=False)
        qos = QoSProfile(depth=5, reliability=ReliabilityPolicy.RELIABLE)
        types = {DISPARITY: DisparityImage, DEPTH: Image, DEPTH_INFO: CameraInfo,
                 POINTS: PointCloud2, LEFT: Image, DEPTH_UNCERTAINTY: Image}
        self.counts = {topic: 0 for topic in types}
        self.resolved = {}
        for topic, msg_type in types.items():
            sub = self.node.create_subscription(
                msg_type, topic, lambda msg, topic=topic: self._on_message(topic, msg), qos)
            self.resolved[topic] = sub.topic_name
        self.node.create_subscription(DiagnosticArray, "/diagnostics", self._on_diagnostics, 10)
        self.pending: dict[int, dict] = {}
        self.first_seen: dict[int, float] = {}
        self.written: set[int] = set()
        self.frames: list[dict] = []
        self.diagnostics: dict[str, dict[str, str]] = {}
        self.last_frame_time = time.monotonic()
        self.outputs_found = False
        self.end_grace_s = end_grace_s
        self.input_topic = self.node.resolve_topic_name(topics.LEFT_IMAGE)
        self.inputs_found = False
        self.stream_end: str | None = None        # why the stream ended; None while it runs
        self.stream_end_time = 0.0
        self.node.create_timer(0.1, self._flush_due)

    @property
    def done(self) -> bool:
        return self.max_frames is not None and len(self.frames) >= self.max_frames

    @property
    def finished(self) -> bool:
        """max_frames written, or the stream ended (`stream_end`), nothing is pending and no frame
        has arrived for end_grace_s since."""
        if self.done:
            return True
        if self.stream_end is None or self.pending:
            return False
        quiet_since = max(self.stream_end_time, self.last_frame_time)
        return time.monotonic() - quiet_since >= self.end_grace_s

    def _watch_stream(self) -> None:
        """Note the end of the stream: a topic that had input has no publisher now, the node's
        left input in this namespace (a bag replay or camera stopped: seen as a publisher here,
        or in the node's /diagnostics `messages_in.<topic>`, for a bag too short for this
        process to discover its player) or its disparity (the node stopped). Re-checked every
        tick, so a publisher discovered late (or back) clears it."""
        inputs = self.node.count_publishers(self.input_topic)
        if not self.inputs_found and (inputs or self._node_received_input()):
            self.inputs_found = True
            LOG.info("input found on %s: the dump also ends when it has no publisher any more",
                     self.input_topic)
        reason = None
        if self.inputs_found and not inputs:
            reason = f"{self.input_topic} has no publisher any more (the bag or camera stopped)"
        elif self.outputs_found and not self.node.count_publishers(self.resolved[DISPARITY]):
            reason = f"{self.resolved[DISPARITY]} has no publisher any more (the node stopped)"
        if reason == self.stream_end:
            return
        if reason is None:
            LOG.info("stream running again: its publishers are back")
        else:
            self.stream_end_time = time.monotonic()
            LOG.info("stream ended: %s; waiting up to %g s for outputs still on their way",
                     reason, self.end_grace_s)
        self.stream_end = reason

    def _node_received_input(self) -> bool:
        """The node's /diagnostics count messages on this dump's input topic."""
        key = f"messages_in.{self.input_topic}"
        return any(values.get(key, "").isdigit() and int(values[key]) > 0
                   for values in self.diagnostics.values())

    def _on_message(self, topic: str, msg) -> None:
        self.counts[topic] += 1
        stamp = stamp_to_ns(msg.header.stamp)
        if stamp in self.written or self.done:
            return
        self.pending.setdefault(stamp, {})[topic] = msg
        self.first_seen.setdefault(stamp, time.monotonic())
        if DISPARITY in self.pending[stamp] and self._complete(self.pending[stamp]):
            self._write(stamp)

    def _on_diagnostics(self, msg) -> None:
        for status in msg.status:
            self.diagnostics[status.name] = {kv.key: kv.value for kv in status.values}
            self.diagnostics[status.name]["_message"] = status.message

    def _complete(self, parts: dict) -> bool:
        """All topics that currently have a publisher have arrived for this stamp."""
        for topic in OPTIONAL_TOPICS:
            if topic not in parts and self.node.count_publishers(self.resolved[topic]) > 0:
                return False
        return True

    def _flush_due(self) -> None:
        if not self.outputs_found and self.node.count_publishers(self.resolved[DISPARITY]):
            self.outputs_found = True
            LOG.info("publisher found on %s", self.resolved[DISPARITY])
        self._watch_stream()
        now = time.monotonic()
        for stamp in sorted(self.pending):
            age = now - self.first_seen[stamp]
            if DISPARITY in self.pending[stamp] and age >= self.grace_s:
                self._write(stamp)
            elif age >= max(10.0, 10 * self.grace_s):     # parts without a disparity: give up
                self.pending.pop(stamp, None)
                self.first_seen.pop(stamp, None)

    def _write(self, stamp: int) -> None:
        parts = self.pending.pop(stamp)
        self.first_seen.pop(stamp, None)
        if self.done:
            return
        self.written.add(stamp)
        try:
            frame = frame_from_messages(stamp, parts)
            entry = write_frame(self.out_dir, len(self.frames), frame, self.ply)
        except (ValueError, OSError) as exc:
            LOG.error("frame %d.%09d not written: %s", *ns_to_sec_nanosec(stamp), exc)
            return
        entry["received_wall"] = time.time()
        entry["topics"] = sorted(parts)
        self.frames.append(entry)
        self.last_frame_time = time.monotonic()
        LOG.info("frame %d (stamp %d.%09d): %s, depth median %s m", entry["index"],
                 stamp // 10**9, stamp % 10**9, ", ".join(sorted(parts)),
                 f"{entry['depth_median_m']:.2f}" if "depth_median_m" in entry else "n/a")

    def node_published(self) -> int | None:
        """Largest pairs_published the node's /diagnostics reported so far (None: none seen)."""
        values = [int(d["pairs_published"]) for d in self.diagnostics.values()
                  if d.get("pairs_published", "").isdigit()]
        return max(values) if values else None

    def summary(self) -> dict:
        return {"out_dir": str(self.out_dir), "frames": self.frames, "messages": self.counts,
                "topics": self.resolved, "diagnostics": self.diagnostics}

    def destroy(self) -> None:
        self.node.destroy_node()
