"""stereo_depth_node: synchronized stereo -> rectified -> PSMNet/SGBM -> disparity, depth, cloud.

Subscribes (relative, remappable): left/image_raw, right/image_raw, left/camera_info,
right/camera_info. Publishes: disparity (stereo_msgs/DisparityImage), depth/image_rect (32FC1 m,
NaN invalid), depth/camera_info, points2 (organized PointCloud2), left/image_rect,
disparity/confidence (when the backend has one), disparity/image_color (bgr8), /diagnostics.

Threading (latency first): the synchroniser callback only drops the complete set into a one-slot
mailbox; a single worker thread takes the newest set and runs convert -> rectify -> infer ->
postprocess -> publish. A set that is replaced before the worker got to it is counted as
dropped.busy, so the node never queues up behind its input.

Run: python -m stereo_depth_ros.ros.stereo_depth_node --ros-args --params-file
config/stereo_depth.yaml (or `ros2 run stereo_depth_ros stereo_depth_node`).
"""

from __future__ import annotations

import sys
import threading
import time
from pathlib import Path

import cv2
import numpy as np
import rclpy
from diagnostic_msgs.msg import DiagnosticArray
from rclpy.executors import ExternalShutdownException, SingleThreadedExecutor
from rclpy.node import Node
from rclpy.qos import (DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy,
                       qos_profile_system_default)
from sensor_msgs.msg import CameraInfo, Image, PointCloud2
from std_msgs.msg import Header
from stereo_msgs.msg import DisparityImage

from stereo_depth_ros.backends import make_backend
from stereo_depth_ros.config import WEIGHTS_HINT, NodeConfig
from stereo_depth_ros.core.disparity_io import colorize
from stereo_depth_ros.core.geometry import clip_depth, depth_to_points, disparity_to_depth
from stereo_depth_ros.core.rectify import Rectifier
from stereo_depth_ros.ros import diagnostics
from stereo_depth_ros.ros.image_conversion import (ImageDataError, UnsupportedEncodingError,
                                                   image_to_numpy, numpy_to_image,
                                                   pair_to_matcher_input)
from stereo_depth_ros.ros.messages import (INVALID_CALIBRATION, CalibrationError,
                                           calibration_key, make_disparity_image,
                                           make_float_image, make_pointcloud2,
                                           rectified_camera_info, stereo_calibration)
from stereo_depth_ros.ros.params import ParameterError, ParameterGuard, declare_parameters
from stereo_depth_ros.ros.sync import create_stereo_sync

NODE_NAME = "stereo_depth_node"
INPUT_TOPICS = ("left/image_raw", "right/image_raw", "left/camera_info", "right/camera_info")

# Drop reasons found by the worker (the synchroniser adds stamp_skew, missing_camera_info and
# missing_image; calibration problems use the keys from ros.messages).
BUSY = "busy"
SIZE_MISMATCH = "size_mismatch"
INFO_SIZE_MISMATCH = "camera_info_size_mismatch"
UNSUPPORTED_ENCODING = "unsupported_encoding"
BAD_IMAGE_DATA = "bad_image_data"
PROCESSING_ERROR = "processing_error"
IMAGE_TOO_SMALL = "image_too_small"

# Disparity quantisation reported in DisparityImage.delta_d: SGBM is 1/16 px fixed point;
# PSMNet regresses a continuous value, reported at KITTI's 1/256 px storage resolution.
DELTA_D = {"sgbm": 1.0 / 16.0, "psmnet": 1.0 / 256.0}
LOG_THROTTLE_S = 5.0


class StartupError(RuntimeError):
    """The node cannot start (bad parameter, missing weights, CUDA absent...): message says why."""


class _Drop(Exception):
    """A pair the worker rejects: reason is the diagnostics key, the message names field/value."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


class _Mailbox:
    """One-slot, newest-wins hand-over between the sync callback and the worker."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._item = None
        self._closed = False

    def put(self, item) -> object | None:
        """Store item; return the item it replaced (never processed), if any."""
        with self._cond:
            replaced, self._item = self._item, item
            self._cond.notify()
            return replaced

    def take(self, timeout: float) -> object | None:
        with self._cond:
            if self._item is None and not self._closed:
                self._cond.wait(timeout)
            item, self._item = self._item, None
            return item

    def pending(self) -> int:
        with self._cond:
            return 0 if self._item is None else 1

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()


class _Throttle:
    """Per-key log throttling that also says how often the problem happened meanwhile."""

    def __init__(self, period_s: float = LOG_THROTTLE_S) -> None:
        self._period = period_s
        self._last: dict[str, float] = {}
        self._suppressed: dict[str, int] = {}
        self._lock = threading.Lock()

    def ready(self, key: str) -> tuple[bool, int]:
        now = time.monotonic()
        with self._lock:
            last = self._last.get(key)
            if last is not None and now - last < self._period:
                self._suppressed[key] = self._suppressed.get(key, 0) + 1
                return False, 0
            self._last[key] = now
            return True, self._suppressed.pop(key, 0)


def sensor_qos(depth: int) -> QoSProfile:
    """Sensor-data QoS (best effort, keep last `depth`, volatile), like qos_profile_sensor_data."""
    return QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=depth,
                      reliability=ReliabilityPolicy.BEST_EFFORT,
                      durability=DurabilityPolicy.VOLATILE)


OUTPUT_QOS = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=1,
                        reliability=ReliabilityPolicy.RELIABLE,
                        durability=DurabilityPolicy.VOLATILE)


def create_backend(config: NodeConfig):
    """Build the matcher; StartupError with the path/device and the reason on failure."""
    if config.backend == "psmnet":
        config.validate_startup()
        path = Path(config.weights_path).expanduser()
        if not path.is_file():
            raise StartupError(f"weights_path {str(path)!r} does not exist or is not a file: "
                               + WEIGHTS_HINT)
        if config.device.startswith("cuda"):
            import torch  # noqa: PLC0415  (only the PSMNet path pays for torch)
            if not torch.cuda.is_available():
                raise StartupError(
                    f"device={config.device!r} was requested but CUDA is not available "
                    f"(torch {torch.__version__}, torch.cuda.is_available() is False): use "
                    "device:=cpu, or device:=auto to fall back to the CPU")
    try:
        return make_backend(config.backend, **config.backend_options())
    except Exception as error:  # noqa: BLE001  (any loader error: say what and where)
        where = f" from {config.weights_path!r}" if config.backend == "psmnet" else ""
        raise StartupError(f"cannot create the {config.backend} backend{where}: "
                           f"{type(error).__name__}: {error}") from None


class StereoDepthNode(Node):
    """The stereo depth node; see the module docstring. Raises StartupError when it cannot run."""

    def __init__(self, node_name: str = NODE_NAME, **kwargs) -> None:
        self._stop = threading.Event()
        self._mailbox = _Mailbox()
        self._worker: threading.Thread | None = None
        super().__init__(node_name, **kwargs)
        self._stats = diagnostics.PipelineStats()
        self._throttle = _Throttle()
        try:
            self._config = declare_parameters(self)
            self._config.validate_startup()
        except (ParameterError, ValueError) as error:
            raise StartupError(str(error)) from None
        config = self._config
        self._backend = create_backend(config)
        self._topics = [self.resolve_topic_name(name) for name in INPUT_TOPICS]
        self._calibration_state: tuple | None = None  # (key, StereoCalibration | error)
        self._rectifier_state: tuple | None = None  # (key, Rectifier)

        self._pub_disparity = self.create_publisher(DisparityImage, "disparity", OUTPUT_QOS)
        self._pub_depth = self.create_publisher(Image, "depth/image_rect", OUTPUT_QOS)
        self._pub_depth_info = self.create_publisher(CameraInfo, "depth/camera_info", OUTPUT_QOS)
        self._pub_points = self.create_publisher(PointCloud2, "points2", OUTPUT_QOS)
        self._pub_left_rect = self.create_publisher(Image, "left/image_rect", OUTPUT_QOS)
        self._pub_confidence = self.create_publisher(Image, "disparity/confidence", OUTPUT_QOS)
        self._pub_color = self.create_publisher(Image, "disparity/image_color", OUTPUT_QOS)
        self._pub_diagnostics = self.create_publisher(DiagnosticArray, "/diagnostics", 10)
        self._outputs = (self._pub_disparity, self._pub_depth, self._pub_depth_info,
                         self._pub_points, self._pub_left_rect, self._pub_confidence,
                         self._pub_color)

        qos = (qos_profile_system_default if config.use_system_default_qos
               else sensor_qos(config.queue_size))
        self._sync = create_stereo_sync(
            self, (Image, Image, CameraInfo, CameraInfo), INPUT_TOPICS, qos, self._on_pair,
            queue_size=config.queue_size, approximate=config.approximate_sync,
            tolerance_s=config.approximate_sync_tolerance_seconds, on_drop=self._on_sync_drop,
            display_names=self._topics)

        self.add_on_set_parameters_callback(ParameterGuard(lambda: self._config,
                                                           self._apply_config))
        self._diagnostics_timer = self.create_timer(config.diagnostics_period_seconds,
                                                    self._publish_diagnostics)
        self._worker = threading.Thread(target=self._worker_loop, name="stereo_depth_worker",
                                        daemon=True)
        self._worker.start()
        self.get_logger().info(
            f"ready: backend={config.backend} (range [{self._backend.min_disparity:g}, "
            f"{self._backend.max_disparity:g}) px), input_scale={config.input_scale:g}, "
            f"rectify={config.rectify}, sync={self._sync.implementation} "
            f"{'approximate' if config.approximate_sync else 'exact'}, "
            f"qos={'system default' if config.use_system_default_qos else 'sensor data'}, "
            f"inputs {', '.join(self._topics)}")

    # ------------------------------------------------------------------ parameters
    @property
    def config(self) -> NodeConfig:
        return self._config

    @property
    def backend(self):
        return self._backend

    def _apply_config(self, new_config: NodeConfig, changed: set[str]) -> None:
        """Make a validated parameter change take effect (ValueError rejects it)."""
        if self._backend.name == "sgbm" and any(name.startswith("sgbm.") for name in changed):
            self._backend.update(**new_config.sgbm_options())
        self._config = new_config
        self.get_logger().info("parameters changed: " + ", ".join(
            f"{name}={new_config.get(name)!r}" for name in sorted(changed)))

    # ------------------------------------------------------------------ input side
    def _on_pair(self, left_image, right_image, left_info, right_info) -> None:
        """Synchroniser callback: hand the set to the worker, never compute here."""
        self._stats.pair_in()
        replaced = self._mailbox.put((left_image, right_image, left_info, right_info))
        if replaced is not None:
            self._stats.drop(BUSY)
            self._log_drop(BUSY, "worker busy: a newer pair replaced one that was still "
                           "waiting (latest pair wins)", level="debug")
        self._stats.set_pending(self._mailbox.pending())

    def _on_sync_drop(self, drop) -> None:
        self._stats.drop(drop.reason, drop.detail)
        self._log_drop(drop.reason, drop.detail)

    def _log_drop(self, reason: str, detail: str, level: str = "warn",
                  key: str | None = None) -> None:
        """Throttled per key (default: the reason), so a flood of one problem logs every 5 s."""
        self._log_throttled(key or reason, f"{detail} -> pair dropped (dropped.{reason})", level)

    def _log_throttled(self, key: str, text: str, level: str = "warn") -> None:
        ready, suppressed = self._throttle.ready(key)
        if not ready:
            return
        if suppressed:
            text += f" [{suppressed} more since the last report]"
        # rclpy binds a severity to each call site: one call per level.
        if level == "debug":
            self.get_logger().debug(text)
        elif level == "error":
            self.get_logger().error(text)
        else:
            self.get_logger().warning(text)

    # ------------------------------------------------------------------ worker
    def _worker_loop(self) -> None:
        while not self._stop.is_set():
            item = self._mailbox.take(timeout=0.2)
            self._stats.set_pending(self._mailbox.pending())
            if item is None or self._stop.is_set():
                continue
            try:
                self._process_one(item)
            except Exception:  # noqa: BLE001  (the worker must outlive any single pair)
                if self._stop.is_set() or not rclpy.ok(context=self.context):
                    return

    def _process_one(self, item) -> None:
        try:
            self._process(*item)
        except _Drop as drop:
            # Worker messages carry no stamps: one throttle key per distinct problem.
            self._stats.drop(drop.reason, str(drop))
            self._log_drop(drop.reason, str(drop), key=f"{drop.reason}:{drop}")
        except Exception as error:  # noqa: BLE001  (keep serving the next pair)
            if self._stop.is_set() or not rclpy.ok(context=self.context):
                raise
            summary = f"{type(error).__name__}: {str(error).strip()}"
            self._stats.drop(PROCESSING_ERROR, summary)
            self._log_drop(PROCESSING_ERROR, f"processing failed: {summary}", level="error",
                           key=f"{PROCESSING_ERROR}:{type(error).__name__}")

    def _convert(self, msg: Image, topic: str) -> np.ndarray:
        try:
            return image_to_numpy(msg)
        except UnsupportedEncodingError as error:
            raise _Drop(UNSUPPORTED_ENCODING, f"{topic}: {error}") from None
        except ImageDataError as error:
            raise _Drop(BAD_IMAGE_DATA, f"{topic}: {error}") from None

    def _calibration(self, left_info: CameraInfo, right_info: CameraInfo):
        key = calibration_key(left_info, right_info)
        if self._calibration_state is None or self._calibration_state[0] != key:
            try:
                value = stereo_calibration(left_info, right_info, self._topics[2],
                                           self._topics[3])
                rig = value.rig
                self.get_logger().info(
                    f"calibration: {rig.width}x{rig.height}, fx={rig.fx:.6g} px, baseline="
                    f"{rig.baseline_m:.6g} m, cx offset={rig.cx_offset:.6g} px, "
                    f"{'already rectified' if value.already_rectified else 'needs rectifying'}"
                    f", frame {value.frame_id!r}")
            except CalibrationError as error:
                value = error
            self._calibration_state = (key, value)
        value = self._calibration_state[1]
        if isinstance(value, CalibrationError):
            raise _Drop(value.reason, str(value))
        return key, value

    def _rectifier(self, key, calibration) -> Rectifier:
        if self._rectifier_state is None or self._rectifier_state[0] != key:
            try:
                rectifier = Rectifier(calibration.left, calibration.right, calibration.width,
                                      calibration.height)
            except ValueError as error:
                raise _Drop(INVALID_CALIBRATION, f"cannot build rectification maps: {error}") \
                    from None
            self._rectifier_state = (key, rectifier)
            self.get_logger().info("rectification maps built for the new calibration")
        return self._rectifier_state[1]

    def _process(self, left_msg: Image, right_msg: Image, left_info: CameraInfo,
                 right_info: CameraInfo) -> None:
        config = self._config
        timings: dict[str, float] = {}
        start = time.perf_counter()

        # convert
        left_raw = self._convert(left_msg, self._topics[0])
        right_raw = self._convert(right_msg, self._topics[1])
        if left_raw.shape[:2] != right_raw.shape[:2]:
            raise _Drop(SIZE_MISMATCH, f"left/right image sizes differ: {self._topics[0]} is "
                        f"{left_raw.shape[1]}x{left_raw.shape[0]}, {self._topics[1]} is "
                        f"{right_raw.shape[1]}x{right_raw.shape[0]}")
        try:
            left, right = pair_to_matcher_input(left_raw, left_msg.encoding, right_raw,
                                                right_msg.encoding)
        except UnsupportedEncodingError as error:
            raise _Drop(UNSUPPORTED_ENCODING, f"{self._topics[0]}/{self._topics[1]}: {error}") \
                from None
        key, calibration = self._calibration(left_info, right_info)
        height, width = left.shape[:2]
        if (width, height) != (calibration.width, calibration.height):
            raise _Drop(INFO_SIZE_MISMATCH, f"image/camera_info size mismatch: "
                        f"{self._topics[0]} is {width}x{height} but {self._topics[2]} says "
                        f"{calibration.width}x{calibration.height}")
        after_convert = time.perf_counter()
        timings["convert"] = after_convert - start

        # rectify
        rectify = config.rectify == "true" or (config.rectify == "auto"
                                               and not calibration.already_rectified)
        if rectify:
            left, right = self._rectifier(key, calibration).rectify(left, right)
        rig = calibration.rig
        if config.input_scale != 1.0:
            scaled_w = max(1, round(width * config.input_scale))
            scaled_h = max(1, round(height * config.input_scale))
            left = cv2.resize(left, (scaled_w, scaled_h), interpolation=cv2.INTER_AREA)
            right = cv2.resize(right, (scaled_w, scaled_h), interpolation=cv2.INTER_AREA)
            rig = rig.scaled_to(scaled_w, scaled_h)
        after_rectify = time.perf_counter()
        timings["rectify"] = after_rectify - after_convert

        # infer
        backend = self._backend
        self._check_search_range(backend, left.shape[1])
        result = backend.compute(left, right)
        min_disparity, max_disparity = backend.min_disparity, backend.max_disparity
        after_infer = time.perf_counter()
        timings["infer"] = after_infer - after_rectify

        # postprocess
        disparity = np.array(result.disparity, dtype=np.float32, copy=True)
        if disparity.shape != (rig.height, rig.width):
            raise RuntimeError(f"backend returned disparity of shape {disparity.shape} for "
                               f"input {left.shape}")
        confidence = result.confidence
        if confidence is not None and config.confidence_threshold > 0:
            disparity[~(confidence >= config.confidence_threshold)] = np.nan
        header = Header(stamp=left_msg.header.stamp,
                        frame_id=calibration.frame_id or left_msg.header.frame_id)
        outgoing: list[tuple] = []
        if self._pub_disparity.get_subscription_count():
            outgoing.append((self._pub_disparity, make_disparity_image(
                disparity, header, rig, min_disparity, max_disparity,
                DELTA_D.get(backend.name, 1.0 / 256.0))))
        need_depth = (self._pub_depth.get_subscription_count()
                      or self._pub_points.get_subscription_count())
        if need_depth:
            depth = disparity_to_depth(disparity, rig.fx, rig.baseline_m, rig.cx_offset)
            if config.min_depth_m > 0 or config.max_depth_m > 0:
                depth = clip_depth(depth, config.min_depth_m or None, config.max_depth_m or None)
            if self._pub_depth.get_subscription_count():
                outgoing.append((self._pub_depth, make_float_image(depth, header)))
            if self._pub_points.get_subscription_count():
                points = depth_to_points(depth, rig.fx, rig.fy, rig.cx_left, rig.cy)
                outgoing.append((self._pub_points, make_pointcloud2(
                    points, header, left if config.use_color else None)))
        if self._pub_depth_info.get_subscription_count():
            outgoing.append((self._pub_depth_info, rectified_camera_info(rig, header)))
        if self._pub_left_rect.get_subscription_count():
            outgoing.append((self._pub_left_rect, numpy_to_image(
                left, "mono8" if left.ndim == 2 else "rgb8", header)))
        if confidence is not None and self._pub_confidence.get_subscription_count():
            outgoing.append((self._pub_confidence, make_float_image(confidence, header)))
        if self._pub_color.get_subscription_count():
            offset = rig.cx_offset
            colour = colorize(disparity - np.float32(offset), vmin=min_disparity - offset,
                              vmax=max_disparity - offset)
            outgoing.append((self._pub_color, numpy_to_image(colour, "bgr8", header)))
        after_post = time.perf_counter()
        timings["postprocess"] = after_post - after_infer

        # publish
        for publisher, msg in outgoing:
            publisher.publish(msg)
        end = time.perf_counter()
        timings["publish"] = end - after_post
        timings["total"] = end - start
        stamp = left_msg.header.stamp
        age = (self.get_clock().now().nanoseconds
               - (int(stamp.sec) * 1_000_000_000 + int(stamp.nanosec))) / 1e9
        self._stats.processed(timings, published=bool(outgoing), input_age_s=age)

    @staticmethod
    def _check_search_range(backend, width: int) -> None:
        """SGBM needs the image wider than its search range plus half a block."""
        if backend.name != "sgbm":
            return
        needed = int(backend.max_disparity) + backend.params.block_size // 2
        if width <= needed:
            raise _Drop(IMAGE_TOO_SMALL, (
                f"the matcher input is {width} px wide, but SGBM searches up to "
                f"{backend.max_disparity:g} px (sgbm.min_disparity + sgbm.num_disparities) plus "
                f"half a block: it needs more than {needed} px; lower sgbm.num_disparities or "
                "raise input_scale"))

    # ------------------------------------------------------------------ diagnostics
    def diagnostics_snapshot(self) -> dict:
        return self._stats.snapshot()

    def _publish_diagnostics(self) -> None:
        snapshot = self._stats.snapshot()
        received = self._sync.received
        snapshot["messages_in"] = dict(zip(self._topics, received))
        level, message = diagnostics.OK, "ok"
        waiting = [self._topics[i] for i in (2, 3) if received[i] == 0]
        if (received[0] or received[1]) and waiting:
            level = diagnostics.WARN
            message = "waiting for camera_info on " + ", ".join(waiting)
            for topic in waiting:
                self._log_throttled(f"waiting:{topic}", f"waiting for camera_info on {topic} "
                                    f"(images are arriving on {self._topics[0]})")
        elif not any(received):
            message = "waiting for input on " + ", ".join(self._topics)
        elif snapshot["last_problem"]:
            message = snapshot["last_problem"]
            level = diagnostics.WARN if snapshot["pairs_published"] == 0 else diagnostics.OK
        extra = {"backend": self._backend.name, "sync": self._sync.implementation,
                 "input_scale": f"{self._config.input_scale:g}"}
        # Outputs are only built for topics somebody subscribes to: show who listens.
        for publisher in self._outputs:
            extra[f"subscribers.{publisher.topic_name}"] = str(publisher.get_subscription_count())
        msg = diagnostics.to_diagnostic_array(
            snapshot, f"{self.get_name()}: stereo depth", self.get_clock().now().to_msg(),
            level, message, extra)
        msg.status[0].hardware_id = self.get_fully_qualified_name()
        self._pub_diagnostics.publish(msg)

    # ------------------------------------------------------------------ shutdown
    def shutdown(self, timeout_s: float = 5.0) -> None:
        """Stop the worker (waits up to timeout_s for a pair in flight)."""
        self._stop.set()
        self._mailbox.close()
        worker = self._worker
        if worker is not None and worker.is_alive() and threading.current_thread() is not worker:
            worker.join(timeout_s)

    def destroy_node(self) -> None:
        self.shutdown()
        super().destroy_node()


def main(args: list[str] | None = None) -> int:
    """Entry point (console script and `python -m`): 0 on a clean stop, 1 when it cannot start."""
    rclpy.init(args=args)
    try:
        node = StereoDepthNode()
    except StartupError as error:
        rclpy.logging.get_logger(NODE_NAME).fatal(f"cannot start: {error}")
        rclpy.try_shutdown()
        return 1
    executor = SingleThreadedExecutor()
    executor.add_node(node)
    try:
        executor.spin()
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    finally:
        if rclpy.ok(context=node.context):
            node.get_logger().info("shutting down")
        executor.shutdown(timeout_sec=1.0)
        node.destroy_node()
        rclpy.try_shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
