"""What the stereo depth node and its managed (lifecycle) variant share.

`StereoDepthCore` holds the node's parts, each made and dropped by one small method (backend and
pipeline, output publishers, input subscriptions and synchroniser, worker, diagnostics timer), and
the per-frame path: convert messages -> `pipeline.StereoPipeline` -> build and publish messages.
`stereo_depth_node.StereoDepthNode` builds all parts in its constructor;
`stereo_depth_lifecycle_node.StereoDepthLifecycleNode` builds and drops them in lifecycle
transitions. `run` is the entry point of both executables.

Threading (latency first): the synchroniser callback only drops the complete set into a one-slot
mailbox; a single worker thread takes the newest set and runs convert -> rectify -> infer ->
postprocess -> publish. A set that is replaced before the worker got to it is counted as
dropped.busy, so the node never queues up behind its input.
"""

from __future__ import annotations

import dataclasses
import os
import re
import sys
import threading
import time
from pathlib import Path
from typing import Callable

import numpy as np
import rclpy
from diagnostic_msgs.msg import DiagnosticArray
from rclpy.executors import ExternalShutdownException, SingleThreadedExecutor
from rclpy.node import Node
from rclpy.task import Future
from sensor_msgs.msg import CameraInfo, CompressedImage, Image, PointCloud2
from std_msgs.msg import Header
from stereo_msgs.msg import DisparityImage

from stereo_depth_ros import topics
from stereo_depth_ros.backends import make_backend
from stereo_depth_ros.assets import missing_weights_hint
from stereo_depth_ros.config import ONNX_HINT, NodeConfig
from stereo_depth_ros.core.disparity_io import colorize
from stereo_depth_ros.core.stamps import stamp_to_ns
from stereo_depth_ros.drop_reasons import (BAD_COMPRESSED_DATA, BAD_IMAGE_DATA, BUSY,
                                           DEPTH_UNAVAILABLE, IMAGES_LOST_IN_TRANSPORT,
                                           PROCESSING_ERROR,
                                           UNSUPPORTED_ENCODING, FrameDropped)
from stereo_depth_ros.pipeline import FrameResult, PipelineOptions, StereoPipeline
from stereo_depth_ros.pipeline.decimation import decimate_organized
from stereo_depth_ros.pipeline.trust import TrustFeatures
from stereo_depth_ros.ros import diagnostics
from stereo_depth_ros.ros import transport
from stereo_depth_ros.ros.input_health import InputHealth
from stereo_depth_ros.ros.image_conversion import (CompressedDataError, ImageDataError,
                                                   UnsupportedEncodingError, compressed_to_numpy,
                                                   image_to_numpy, numpy_to_image,
                                                   pair_to_matcher_input)
from stereo_depth_ros.ros.interrupts import ignore_further_interrupts
from stereo_depth_ros.ros.messages import (CalibrationError, calibration_key,
                                           make_depth_image, make_disparity_image,
                                           make_float_image, make_pointcloud2,
                                           rectified_camera_info, stereo_calibration)
from stereo_depth_ros.ros.params import ParameterError
from stereo_depth_ros.ros.sync import create_stereo_sync, destroy_stereo_sync

NODE_NAME = "stereo_depth_node"

LOG_THROTTLE_S = 5.0
SHUTDOWN_WAIT_S = 1.0
"""How long a stop (Ctrl-C, SIGTERM) waits for a frame in flight before leaving it: a large
PSMNet frame on a CPU takes seconds, and a robot's launch system expects a prompt exit."""


class StartupError(RuntimeError):
    """The node cannot start (bad parameter, missing weights, CUDA absent...): message says why."""


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


class LogThrottle:
    """Per-key log throttling that also says how often the problem happened meanwhile.

    Keys are problem texts (they name values), so a stream whose every frame is wrong in a new
    way makes new keys: at most `max_keys` are kept, the least recently reported go first.
    """

    def __init__(self, period_s: float = LOG_THROTTLE_S, max_keys: int = 256) -> None:
        self._period = period_s
        self._max_keys = max_keys
        self._last: dict[str, float] = {}
        self._suppressed: dict[str, int] = {}
        self._lock = threading.Lock()

    def ready(self, key: str, period_s: float | None = None) -> tuple[bool, int]:
        now = time.monotonic()
        period = self._period if period_s is None else period_s
        with self._lock:
            last = self._last.get(key)
            if last is not None and now - last < period:
                self._suppressed[key] = self._suppressed.get(key, 0) + 1
                return False, 0
            self._last.pop(key, None)          # re-inserted last: dicts keep insertion order
            self._last[key] = now
            while len(self._last) > self._max_keys:
                oldest = next(iter(self._last))
                del self._last[oldest]
                self._suppressed.pop(oldest, None)
            return True, self._suppressed.pop(key, 0)

    def report(self, logger, key: str, text: str, level: str = "warn",
               period_s: float | None = None) -> None:
        """Log `text` at `level` (debug, warn, error) through an rclpy logger unless `key` was
        reported less than the period ago; say how many reports were held back meanwhile."""
        ready, suppressed = self.ready(key, period_s)
        if not ready:
            return
        if suppressed:
            text += f" [{suppressed} more since the last report]"
        # rclpy binds a severity to each call site: one call per level.
        if level == "debug":
            logger.debug(text)
        elif level == "error":
            logger.error(text)
        else:
            logger.warning(text)

    def __len__(self) -> int:
        """Keys remembered."""
        with self._lock:
            return len(self._last)


def create_backend(config: NodeConfig):
    """Build the matcher; StartupError with the path/device and the reason on failure."""
    if config.backend == "psmnet":
        path = Path(config.weights_path).expanduser()
        if not path.is_file():
            raise StartupError(f"weights_path {str(path)!r} does not exist or is not a file: "
                               + missing_weights_hint(config.weights_path))
    if config.backend == "onnx" and not Path(config.onnx_path).expanduser().is_file():
        raise StartupError(f"onnx_path {config.onnx_path!r} does not exist or is not a file: "
                           + ONNX_HINT)
    try:
        return make_backend(config.backend, **config.backend_options())
    except Exception as error:  # noqa: BLE001  (any loader error: say what and where)
        where = _model_source(config)
        raise StartupError(f"cannot create the {config.backend} backend{where}: "
                           f"{type(error).__name__}: {error}") from None


def _model_source(config: NodeConfig) -> str:
    """The log text ` from '<file>'` of backends that load a file (psmnet, onnx), else ""."""
    path = {"psmnet": config.weights_path, "onnx": config.onnx_path}.get(config.backend)
    return f" from {path!r}" if path is not None else ""


class StereoDepthCore:
    """What the plain and the managed node are made of; the first base of a rclpy Node class.

    Each part is made and dropped by one method: `_load` / `_release_backend` (backend with its
    weights, pipeline, warm-up), `_create_outputs` / `_destroy_outputs` (publishers),
    `_subscribe` / `_unsubscribe` (input subscriptions + synchroniser), `_start_worker` /
    `_stop_worker`, `_start_diagnostics`. Building fails with StartupError naming the reason.
    """

    _config: NodeConfig | None = None
    _backend = None
    _pipeline: StereoPipeline | None = None
    _sync = None
    _outputs: tuple = ()
    _pub_diagnostics = None
    _pub_uncertainty = None
    _diagnostics_timer = None
    _left_running: threading.Thread | None = None
    _trust: TrustFeatures | None = None     # rate governor + rectification check (worker's)

    def _init_core(self) -> None:
        """State that lives as long as the node (call before Node.__init__)."""
        self._stats = diagnostics.PipelineStats()
        self._throttle = LogThrottle()
        self._stop = threading.Event()
        self._mailbox = _Mailbox()
        self._worker: threading.Thread | None = None
        self._busy = threading.Lock()       # held by the worker while it processes a pair
        self._accepting = True              # False: pairs taken from the mailbox are dropped
        self._topics: list[str] = []
        self._calibration_state: tuple | None = None  # (key, StereoCalibration | error)
        self._backend_loads = 0
        self._health: InputHealth | None = None
        self._in_flight_since: float | None = None   # monotonic start of the pair in the worker
        self._pending_lock = threading.Lock()
        self._pending_config: tuple | None = None     # (NodeConfig, changed names) to apply
        self.finished = Future()            # done when the node has shut itself down

    # ------------------------------------------------------------------ building blocks
    def _startup_config(self, read) -> NodeConfig:
        """read() (the parameters' NodeConfig) plus the start-up checks; StartupError if bad."""
        try:
            config = read()
            config.validate_startup()
        except (ParameterError, ValueError) as error:
            raise StartupError(str(error)) from None
        return config

    def _load(self, config: NodeConfig) -> None:
        """Backend (weights) and pipeline for `config`, warmed up when warmup_size is set."""
        started = time.perf_counter()
        self._backend = create_backend(config)
        self._backend_loads += 1
        self._topics = [self.resolve_topic_name(name)
                        for name in topics.inputs(config.image_transport)]
        self._pipeline = StereoPipeline(self._backend, PipelineOptions.from_config(config),
                                        on_event=self.get_logger().info,
                                        input_names=tuple(self._topics[:3]))
        self._calibration_state = None
        source = _model_source(config)
        self.get_logger().info(f"backend loaded: {config.backend}{source} in "
                               f"{time.perf_counter() - started:.2f} s (load number "
                               f"{self._backend_loads} in this process)")
        self._warm_up(config)

    def _warm_up(self, config: NodeConfig) -> None:
        """Run one blank pair of warmup_size through the pipeline (plans, graphs, buffers)."""
        size = config.warmup_dimensions()
        if size is None:
            return
        width, height = size
        blank = np.zeros((height, width, 3), np.uint8)
        started = time.perf_counter()
        try:
            result = self._pipeline.process(blank, blank, None, depth=False, points=False)
        except Exception as error:  # noqa: BLE001  (too small for the backend, out of memory)
            raise StartupError(f"warm-up at warmup_size={config.warmup_size!r} failed: "
                               f"{type(error).__name__}: {error}") from None
        matched_height, matched_width = result.disparity.shape
        self.get_logger().info(f"warmed up at {width}x{height} (matcher input {matched_width}x"
                               f"{matched_height}) in {time.perf_counter() - started:.2f} s")

    def _release_backend(self) -> None:
        """Drop the pipeline and the backend (PSMNet: the model; GPU memory goes back)."""
        backend, self._backend = self._backend, None
        self._pipeline = None
        self._calibration_state = None
        release = getattr(backend, "release", None)
        if release is not None:
            release()

    def _create_output_publisher(self, msg_type, topic: str, qos, **options):
        return self.create_publisher(msg_type, topic, qos, **options)

    def _destroy_output_publisher(self, publisher) -> None:
        self.destroy_publisher(publisher)

    def _create_outputs(self) -> None:
        def publisher(msg_type, topic: str):
            return self._create_output_publisher(
                msg_type, topic, transport.output_qos(),
                qos_overriding_options=transport.overridable(),
                event_callbacks=transport.incompatible_qos_events(
                    lambda policy, count: self._on_incompatible_qos(
                        self.resolve_topic_name(topic), "publisher", policy, count),
                    publisher=True))

        self._pub_disparity = publisher(DisparityImage, topics.DISPARITY)
        self._pub_depth = publisher(Image, topics.DEPTH)
        self._pub_depth_info = publisher(CameraInfo, topics.DEPTH_INFO)
        self._pub_points = publisher(PointCloud2, topics.POINTS)
        self._pub_left_rect = publisher(Image, topics.LEFT_RECT)
        self._pub_confidence = publisher(Image, topics.CONFIDENCE)
        self._pub_color = publisher(Image, topics.DISPARITY_COLOR)
        self._outputs = (self._pub_disparity, self._pub_depth, self._pub_depth_info,
                         self._pub_points, self._pub_left_rect, self._pub_confidence,
                         self._pub_color)
        # depth/uncertainty only where the backend measures it (PSMNet; not SGBM)
        self._pub_uncertainty = None
        if getattr(self._backend, "provides_uncertainty", False):
            self._pub_uncertainty = publisher(Image, topics.DEPTH_UNCERTAINTY)
            self._outputs += (self._pub_uncertainty,)

    def _destroy_outputs(self) -> None:
        outputs, self._outputs = self._outputs, ()
        for publisher in outputs:
            self._destroy_output_publisher(publisher)

    def _subscribe(self, config: NodeConfig) -> None:
        """The four input subscriptions and their synchroniser (StartupError if impossible)."""
        image_type = CompressedImage if config.image_transport == "compressed" else Image
        try:
            self._sync = create_stereo_sync(
                self, (image_type, image_type, CameraInfo, CameraInfo),
                topics.inputs(config.image_transport),
                transport.input_qos(config.queue_size, config.use_system_default_qos),
                self._on_pair, queue_size=config.queue_size, approximate=config.approximate_sync,
                tolerance_s=config.sync_tolerance_s(),
                on_drop=self._on_sync_drop, implementation=config.synchronizer,
                display_names=self._topics,
                subscription_options={"qos_overriding_options": transport.overridable()},
                event_callbacks=lambda index: transport.incompatible_qos_events(
                    lambda policy, count: self._on_incompatible_qos(
                        self._topics[index], "subscription", policy, count)),
                on_reset=self._on_time_jump)
        except RuntimeError as error:
            raise StartupError(str(error)) from None
        self._health = InputHealth(self._topics, config.image_transport)
        self.get_logger().info("QoS in effect (after qos_overrides): " + "; ".join(
            f"{topic} {transport.describe_qos(subscription.qos_profile)}"
            for topic, subscription in zip(self._topics, self._sync.subscriptions)))

    def _unsubscribe(self) -> None:
        self._health = None
        sync, self._sync = self._sync, None
        if sync is not None:
            destroy_stereo_sync(self, sync)

    def _start_diagnostics(self, period_s: float) -> None:
        """/diagnostics (a plain publisher: it reports in every state) every period_s."""
        if self._pub_diagnostics is None:
            self._pub_diagnostics = self.create_publisher(DiagnosticArray, topics.DIAGNOSTICS,
                                                          10)
        timer = self._diagnostics_timer
        if timer is not None and timer.timer_period_ns == int(period_s * 1e9):
            return
        if timer is not None:
            self.destroy_timer(timer)
        self._diagnostics_timer = self.create_timer(period_s, self._publish_diagnostics)

    def _start_worker(self) -> None:
        self._stop = threading.Event()
        self._mailbox = _Mailbox()
        self._worker = threading.Thread(target=self._worker_loop,
                                        args=(self._stop, self._mailbox),
                                        name="stereo_depth_worker", daemon=True)
        self._worker.start()
        self._start_trust()

    def _start_trust(self) -> None:
        """Rate governor and rectification check (their thread) for the current config."""
        if self._trust is not None:
            self._trust.stop()
        self._trust = TrustFeatures(self._config)
        self._trust.start()

    def _stop_worker(self, timeout_s: float = 5.0) -> None:
        """Stop the worker (waits up to timeout_s for a pair in flight)."""
        self._stop.set()
        self._mailbox.close()
        if self._trust is not None:
            self._trust.stop(timeout_s)
        worker, self._worker = self._worker, None
        if worker is not None and worker.is_alive() and threading.current_thread() is not worker:
            worker.join(timeout_s)
            if worker.is_alive():
                self._left_running = worker   # inside a long frame: it ends with the process

    def _pause(self) -> None:
        """No more processing: a waiting pair is dropped and a pair in flight finishes first."""
        self._accepting = False
        self._mailbox.take(timeout=0.0)
        with self._busy:
            pass

    def _summary(self) -> str:
        """One line: backend, engine, pipeline options and inputs (the start-up log)."""
        config, backend = self._config, self._backend
        sync = self._sync.implementation if self._sync is not None else config.synchronizer
        return (f"backend={config.backend} (range [{backend.min_disparity:g}, "
                f"{backend.max_disparity:g}) px; {backend.describe()}; frame on the "
                f"{'GPU' if self._pipeline.stages == 'device' else 'host'}), "
                f"input_scale={config.input_scale:g}, "
                f"rectify={config.rectify}, sync={sync} "
                f"{'approximate' if config.approximate_sync else 'exact'}, "
                f"transport={config.image_transport}, "
                f"qos={'system default' if config.use_system_default_qos else 'sensor data'}, "
                f"inputs {', '.join(self._topics)}")

    # ------------------------------------------------------------------ parameters
    @property
    def config(self) -> NodeConfig | None:
        return self._config

    @property
    def backend(self):
        return self._backend

    def _apply_config(self, new_config: NodeConfig, changed: set[str]) -> None:
        """Make a validated parameter change take effect between frames (ValueError rejects
        it). While a long frame is in flight the change waits for its end, in the worker."""
        if self._busy.acquire(timeout=0.5):
            try:
                self._apply_now(new_config, changed)
            finally:
                self._busy.release()
            return
        with self._pending_lock:
            pending = self._pending_config
            names = changed | (pending[1] if pending else set())
            self._pending_config = (new_config, names)
        self.get_logger().info("parameters " + ", ".join(sorted(changed)) + " take effect "
                               "after the frame in flight")

    def _apply_now(self, new_config: NodeConfig, changed: set[str]) -> None:
        options = new_config.backend_parameters()            # {parameter: backend option}
        updates = {options[name]: new_config.get(name) for name in changed if name in options}
        if updates:
            self._backend.update(**updates)
        self._pipeline.options = PipelineOptions.from_config(new_config)
        self._config = new_config
        if self._trust is not None:
            self._trust.configure(new_config)
        self.get_logger().info("parameters changed: " + ", ".join(
            f"{name}={new_config.get(name)!r}" for name in sorted(changed)))

    def _apply_pending_config(self) -> None:
        """In the worker, between frames: a change that arrived while a frame was in flight."""
        with self._pending_lock:
            pending, self._pending_config = self._pending_config, None
        if pending is None:
            return
        try:
            self._apply_now(*pending)
        except ValueError as error:
            self.get_logger().error(f"parameters {', '.join(sorted(pending[1]))} could not be "
                                    f"applied: {error}")

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

    def _on_time_jump(self, text: str) -> None:
        self._stats.count("input_time_jumps")
        self.get_logger().info(text)

    def _on_incompatible_qos(self, topic: str, side: str, policy: str, count: int) -> None:
        """A peer on `topic` asks for a QoS this node's subscription/publisher cannot meet."""
        self._stats.count(f"qos_incompatible.{topic}", max(1, count))
        peer = "publisher" if side == "subscription" else "subscription"
        self._log_throttled(f"qos:{topic}:{side}", (
            f"{topic}: a {peer}'s QoS is incompatible with this node's {side} ({policy} policy): "
            f"nothing flows between them. Match it with qos_overrides.{topic}.{side}."
            f"{policy.lower()} (see the README's topic table)"))

    def _on_sync_drop(self, drop) -> None:
        self._stats.drop(drop.reason, drop.detail)
        self._log_drop(drop.reason, drop.detail)
        if drop.reason == IMAGES_LOST_IN_TRANSPORT:
            self._log_throttled("transport_hint", transport.lost_in_transport_hint(
                self._topics[0]), period_s=60.0)

    def _log_drop(self, reason: str, detail: str, level: str = "warn",
                  key: str | None = None) -> None:
        """Throttled per key (default: the reason), so a flood of one problem logs every 5 s."""
        self._log_throttled(key or reason, f"{detail} -> pair dropped (dropped.{reason})", level)

    def _log_throttled(self, key: str, text: str, level: str = "warn",
                       period_s: float | None = None) -> None:
        self._throttle.report(self.get_logger(), key, text, level, period_s)

    # ------------------------------------------------------------------ worker
    def _worker_loop(self, stop: threading.Event, mailbox: _Mailbox) -> None:
        while not stop.is_set():
            item = mailbox.take(timeout=0.2)
            self._stats.set_pending(mailbox.pending())
            if item is None or stop.is_set():
                continue
            with self._busy:
                if not self._accepting:
                    continue
                self._in_flight_since = time.monotonic()
                try:
                    self._process_one(item, stop)
                except Exception:  # noqa: BLE001  (the worker must outlive any single pair)
                    if stop.is_set() or not rclpy.ok(context=self.context):
                        return
                finally:
                    self._in_flight_since = None
                    item = None             # no reference to the pair outlives its turn
                    self._apply_pending_config()

    def _process_one(self, item, stop: threading.Event) -> None:
        try:
            self._process(*item)
        except FrameDropped as drop:
            # Worker messages carry no stamps: one throttle key per distinct problem.
            self._stats.drop(drop.reason, str(drop))
            self._log_drop(drop.reason, str(drop), key=f"{drop.reason}:{drop}")
        except Exception as error:  # noqa: BLE001  (keep serving the next pair)
            if stop.is_set() or not rclpy.ok(context=self.context):
                raise
            summary = f"{type(error).__name__}: {str(error).strip()}"
            self._stats.drop(PROCESSING_ERROR, summary)
            self._log_drop(PROCESSING_ERROR, f"processing failed: {summary}", level="error",
                           key=f"{PROCESSING_ERROR}:{type(error).__name__}")

    def _convert(self, msg: Image | CompressedImage, topic: str) -> tuple[np.ndarray, str]:
        """(array, encoding) of a raw or compressed image; FrameDropped naming the problem."""
        try:
            if isinstance(msg, CompressedImage):
                return compressed_to_numpy(msg)
            return image_to_numpy(msg), msg.encoding
        except UnsupportedEncodingError as error:
            raise FrameDropped(UNSUPPORTED_ENCODING, f"{topic}: {error}") from None
        except CompressedDataError as error:
            raise FrameDropped(BAD_COMPRESSED_DATA, f"{topic}: {error}") from None
        except ImageDataError as error:
            raise FrameDropped(BAD_IMAGE_DATA, f"{topic}: {error}") from None

    def _matcher_input(self, left_msg, right_msg) -> tuple[np.ndarray, np.ndarray]:
        """The pair as the matcher takes it (uint8 RGB or mono); FrameDropped if unusable."""
        left, left_encoding = self._convert(left_msg, self._topics[0])
        right, right_encoding = self._convert(right_msg, self._topics[1])
        if left.shape[:2] != right.shape[:2]:
            return left, right                    # the pipeline drops it with both sizes
        try:
            return pair_to_matcher_input(left, left_encoding, right, right_encoding)
        except UnsupportedEncodingError as error:
            raise FrameDropped(UNSUPPORTED_ENCODING,
                               f"{self._topics[0]}/{self._topics[1]}: {error}") from None

    def _calibration(self, left_info: CameraInfo, right_info: CameraInfo):
        """The StereoCalibration of an info pair, validated once per calibration change.

        A rejected calibration is remembered as (reason, text) only, and every pair gets a fresh
        CalibrationError: re-raising one cached exception object would chain every dropped
        pair's frames (and so its messages and arrays) onto its traceback, without bound.
        """
        key = calibration_key(left_info, right_info)
        if self._calibration_state is None or self._calibration_state[0] != key:
            try:
                value = stereo_calibration(left_info, right_info, self._topics[2],
                                           self._topics[3])
                self._log_calibration(value)
            except CalibrationError as error:
                value = (error.reason, str(error))
            self._calibration_state = (key, value)
        value = self._calibration_state[1]
        if isinstance(value, tuple):
            raise CalibrationError(*value)
        return value

    def _log_calibration(self, calibration) -> None:
        rig = calibration.rig
        if rig.depth_problem:
            geometry = (f"fx={rig.fx:.6g} px, NO METRIC DEPTH ({calibration.depth_note}): "
                        "disparity only")
        else:
            geometry = f"fx={rig.fx:.6g} px, baseline={rig.baseline_m:.6g} m"
        note = f", {calibration.note}" if calibration.note else ""
        self.get_logger().info(
            f"calibration: {rig.width}x{rig.height}, {geometry}, cx offset="
            f"{rig.cx_offset:.6g} px, "
            f"{'already rectified' if calibration.already_rectified else 'needs rectifying'}"
            f"{note}, frame {calibration.frame_id!r}")

    def _note_depth_unavailable(self, calibration) -> None:
        """Count a pair published without depth/points and say why (throttled WARN)."""
        problem = calibration.rig.depth_problem
        self._stats.count(f"{DEPTH_UNAVAILABLE}.{problem}")
        self._log_throttled(f"{DEPTH_UNAVAILABLE}.{problem}", (
            f"no metric depth from this calibration ({calibration.depth_note}): publishing "
            f"disparity only; depth and points are skipped ({DEPTH_UNAVAILABLE}.{problem})"),
            period_s=60.0)

    def _process(self, left_msg: Image, right_msg: Image, left_info: CameraInfo,
                 right_info: CameraInfo) -> None:
        """convert -> pipeline (rectify, match, depth, points) -> messages -> publish."""
        start = time.perf_counter()
        left, right = self._matcher_input(left_msg, right_msg)
        calibration = self._calibration(left_info, right_info)
        converted = time.perf_counter()
        points = self._pub_points.get_subscription_count() > 0
        depth = points or self._pub_depth.get_subscription_count() > 0 or (
            self._pub_uncertainty is not None
            and self._pub_uncertainty.get_subscription_count() > 0)
        scale = self._use_governed_scale()
        result = self._pipeline.process(left, right, calibration, depth=depth, points=points)
        if calibration.rig.depth_problem:
            self._note_depth_unavailable(calibration)
        processed = time.perf_counter()
        # This pair's own left camera_info names the frame (the cached calibration ignores
        # header changes such as a renamed frame).
        header = Header(stamp=left_msg.header.stamp,
                        frame_id=left_info.header.frame_id or left_msg.header.frame_id)
        outgoing = self._messages(result, header)
        built = time.perf_counter()
        for publisher, msg in outgoing:
            publisher.publish(msg)
        end = time.perf_counter()
        stages = result.timings_s
        rectify = stages.get("rectify", 0.0) + stages.get("scale", 0.0)
        timings = {"convert": converted - start, "rectify": rectify,
                   "infer": processed - converted - rectify, "postprocess": built - processed,
                   "publish": end - built, "total": end - start}
        age_s = (self.get_clock().now().nanoseconds - stamp_to_ns(left_msg.header.stamp)) / 1e9
        self._stats.processed(timings, published=bool(outgoing), input_age_s=age_s)
        if self._trust is not None:
            self._trust.frame_done(scale, end - start, left, right, calibration,
                                   self._config.rectify)

    def _use_governed_scale(self) -> float:
        """The rate governor's input scale for this frame, set on the pipeline's options (the
        pipeline scales the rig with the images, so every output's geometry matches)."""
        options = self._pipeline.options
        scale = self._trust.scale() if self._trust is not None else options.input_scale
        if scale != options.input_scale:
            self._pipeline.options = dataclasses.replace(options, input_scale=scale)
        return scale

    def _messages(self, result: FrameResult, header: Header) -> list[tuple]:
        """(publisher, message) for every output somebody subscribes to."""
        outgoing: list[tuple] = []

        def wanted(publisher) -> bool:
            return publisher.get_subscription_count() > 0

        rig = result.rig
        if wanted(self._pub_disparity):
            outgoing.append((self._pub_disparity, make_disparity_image(
                result.disparity, header, rig, result.min_disparity, result.max_disparity,
                result.delta_d, border=getattr(self._backend, "border", 0))))
        if result.depth_m is not None and wanted(self._pub_depth):
            depth_msg, clamped = make_depth_image(result.depth_m, header,
                                                  self._config.depth_encoding)
            if clamped:
                self._stats.count("depth_clamped_pixels", clamped)
            outgoing.append((self._pub_depth, depth_msg))
        if result.points is not None:
            colours = result.left if self._config.use_color else None
            spread = result.depth_std_m if self._config.points_depth_std else None
            points, colours, spread = decimate_organized(self._config.points_decimation,
                                                         result.points, colours, spread)
            outgoing.append((self._pub_points, make_pointcloud2(
                points, header, colours, depth_std=spread,
                padded=not self._config.avoid_point_cloud_padding)))
        if (self._pub_uncertainty is not None and result.depth_std_m is not None
                and wanted(self._pub_uncertainty)):
            outgoing.append((self._pub_uncertainty, make_float_image(result.depth_std_m, header)))
        if rig.has_depth and wanted(self._pub_depth_info):
            outgoing.append((self._pub_depth_info, rectified_camera_info(rig, header)))
        if wanted(self._pub_left_rect):
            outgoing.append((self._pub_left_rect, numpy_to_image(
                result.left, "mono8" if result.left.ndim == 2 else "rgb8", header)))
        if result.confidence is not None and wanted(self._pub_confidence):
            outgoing.append((self._pub_confidence, make_float_image(result.confidence, header)))
        if wanted(self._pub_color):
            offset = rig.cx_offset
            colour = colorize(result.disparity - np.float32(offset),
                              vmin=result.min_disparity - offset,
                              vmax=result.max_disparity - offset)
            outgoing.append((self._pub_color, numpy_to_image(colour, "bgr8", header)))
        return outgoing

    # ------------------------------------------------------------------ diagnostics
    def diagnostics_snapshot(self) -> dict:
        return self._stats.snapshot()

    def lifecycle_state(self) -> str | None:
        """The lifecycle state's label (managed node), None for the plain node."""
        return None

    def _idle_health(self) -> tuple[int, str]:
        """(level, message) while the node has no input subscriptions (managed node only)."""
        return diagnostics.OK, self.lifecycle_state() or "not subscribed"

    def _input_health(self, snapshot: dict, received: list[int]) -> tuple[int, str]:
        """(level, message) while subscribed (input_health's rules); a new warning is logged."""
        since = self._in_flight_since
        snapshot = {**snapshot, "in_flight_s": None if since is None else
                    time.monotonic() - since}
        level, message = self._health.update(received, snapshot)
        if level != diagnostics.OK:       # one line per kind of warning (numbers vary)
            self._log_throttled("health:" + re.sub(r"[\d.]+", "#", message), message,
                                period_s=30.0)
        return level, message

    def _fold_trust_health(self, level: int, message: str, extra: dict) -> tuple[int, str]:
        """Add the rate governor's and the rectification check's key/values to `extra` and
        fold the drift alarm's level into (level, message)."""
        if self._trust is None:
            return level, message
        extra.update(self._trust.key_values())
        return self._trust.health(level, message)

    def _publish_diagnostics(self) -> None:
        snapshot = self._stats.snapshot()
        if self._sync is not None:
            received = self._sync.received
            snapshot["messages_in"] = dict(zip(self._topics, received))
            level, message = self._input_health(snapshot, received)
        else:
            level, message = self._idle_health()
        extra = {"backend": self._backend.name if self._backend is not None else "none",
                 "backend_loads": str(self._backend_loads)}
        state = self.lifecycle_state()
        if state is not None:
            extra["lifecycle_state"] = state
        if self._sync is not None:
            extra["sync"] = self._sync.implementation
        if self._config is not None:
            extra["input_scale"] = f"{self._config.input_scale:g}"
        since = self._in_flight_since
        if since is not None:
            extra["worker_in_flight_s"] = f"{time.monotonic() - since:.1f}"
        level, message = self._fold_trust_health(level, message, extra)
        # Outputs are only built for topics somebody subscribes to: show who listens.
        for publisher in self._outputs:
            extra[f"subscribers.{publisher.topic_name}"] = str(publisher.get_subscription_count())
        msg = diagnostics.to_diagnostic_array(
            snapshot, f"{self.get_name()}: stereo depth", self.get_clock().now().to_msg(),
            level, message, extra)
        msg.status[0].hardware_id = self.get_fully_qualified_name()
        self._pub_diagnostics.publish(msg)

    # ------------------------------------------------------------------ shutdown
    def shutdown(self, timeout_s: float = SHUTDOWN_WAIT_S) -> None:
        """Stop the worker (waits up to timeout_s for a pair in flight)."""
        self._stop_worker(timeout_s)

    def worker_alive(self) -> bool:
        """True while a worker thread still runs (a frame that outlived the shutdown wait)."""
        return any(worker is not None and worker.is_alive()
                   for worker in (self._worker, self._left_running))

    def destroy_node(self) -> None:
        self.shutdown()
        super().destroy_node()


def run(make_node: Callable[[], Node], args: list[str] | None = None, *,
        name: str = NODE_NAME) -> int:
    """Run a node until Ctrl-C, an external shutdown or its `finished` future: 0 on a clean stop,
    1 when it cannot start (StartupError, logged as "cannot start: <reason>" under `name`)."""
    profile_note = transport.use_large_image_profile()       # before any DDS participant
    rclpy.init(args=args)
    try:
        node = make_node()
        if profile_note:
            node.get_logger().info(profile_note)
    except StartupError as error:
        rclpy.logging.get_logger(name).fatal(f"cannot start: {error}")
        rclpy.try_shutdown()
        return 1
    executor = SingleThreadedExecutor()
    executor.add_node(node)
    try:
        executor.spin_until_future_complete(node.finished)
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    except Exception:
        # A process started with SIGINT ignored (from a background shell) gets no
        # KeyboardInterrupt: rclpy's own handler shuts the context down under the spin, and
        # rclpy may then fail inside it. That is a stop, not an error.
        if rclpy.ok(context=node.context):
            raise
    finally:
        ignore_further_interrupts()    # a second Ctrl-C (ros2 launch) must not break the cleanup
        if rclpy.ok(context=node.context) and not node.finished.done():
            node.get_logger().info("shutting down")
        executor.shutdown(timeout_sec=1.0)
        node.destroy_node()
        rclpy.try_shutdown()
    if node.worker_alive():
        # A frame outlived the shutdown wait: leave now rather than finalise the interpreter
        # (torch's and rclpy's destructors) under a thread that is still inside the network.
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(0)
    return 0
