"""Helpers for tests that run real ROS 2 nodes (isolation comes from conftest.py).

- `NodeProcess`: the node as a subprocess; output captured line by line; `stop()` always ends it
  (SIGINT, then terminate, then kill) and is called by the context manager even when a test fails.
- `RosTestContext`: an in-process rclpy context + node + executor thread for the test side, with
  publishers and `Collector`s (thread-safe message lists with waiting).
- `wait_for`, `wait_for_subscribers`: polling with deadlines (discovery takes 0.1-3.6 s here),
  never fixed sleeps.
- `Harness`: a node's inputs (publishers) and outputs (collectors, /diagnostics) on the test side.
- `stop_node`: close the harness, stop the node, assert it exited 0 without a traceback.

Message builders and readers are in helpers.ros_messages; nodes in this process, the parameter
and lifecycle service clients in helpers.ros_nodes.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from helpers.process import assert_clean_exit
from helpers.ros_messages import image_msg, msg_type, stamp

REPO_ROOT = Path(__file__).resolve().parents[2]
NODE_MODULE = "stereo_depth_ros.ros.stereo_depth_node"
DISCOVERY_TIMEOUT_S = 20.0


def wait_for(predicate: Callable[[], object], timeout: float, interval: float = 0.05,
             what: str = "condition") -> object:
    """Poll predicate until it returns something truthy; AssertionError after timeout seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.1f} s waiting for {what}")
        time.sleep(interval)


def wait_for_subscribers(publisher, count: int = 1, timeout: float = DISCOVERY_TIMEOUT_S) -> None:
    wait_for(lambda: publisher.get_subscription_count() >= count, timeout,
             what=f"{count} subscriber(s) on {publisher.topic_name}")


def wait_for_publishers(subscription, count: int = 1,
                        timeout: float = DISCOVERY_TIMEOUT_S) -> None:
    wait_for(lambda: subscription.get_publisher_count() >= count, timeout,
             what=f"{count} publisher(s) on {subscription.topic_name}")


def stop_node(node: NodeProcess, harness: Harness | None = None) -> None:
    """Close the harness (if any), stop the node and assert it ended cleanly."""
    if harness is not None:
        harness.close()
    code = node.stop()
    assert_clean_exit(node.output(), code)


@dataclass(frozen=True)
class SyncVariant:
    """One input synchroniser configuration the node tests run under."""

    synchronizer: str    # the node's `synchronizer` parameter
    approximate: bool
    tolerance_s: float = 0.01

    @property
    def id(self) -> str:
        return f"{self.synchronizer}-{'approximate' if self.approximate else 'exact'}"

    def ros_args(self) -> list[str]:
        return ["-p", f"synchronizer:={self.synchronizer}",
                "-p", f"approximate_sync:={str(self.approximate).lower()}",
                "-p", f"approximate_sync_tolerance_seconds:={self.tolerance_s}"]

    def policy_text(self) -> str:
        """How the node's stamp-skew message names the policy."""
        if self.approximate:
            return f"approximate_sync_tolerance_seconds={self.tolerance_s:g}"
        return "exact sync needs equal stamps"

    def requires(self, request) -> None:
        """Skip (with the reason) when the real message_filters is not available."""
        if self.synchronizer == "message_filters":
            request.getfixturevalue("real_ros_packages")


SYNC_VARIANTS = (SyncVariant("in_package", False), SyncVariant("message_filters", False),
                 SyncVariant("message_filters", True))
"""The in-package synchroniser and the real message_filters' exact and approximate policies."""


class NodeProcess:
    """A node started as `python -m <module> --ros-args <ros_args>`; use as a context manager."""

    def __init__(self, ros_args: list[str] | None = None, module: str = NODE_MODULE,
                 argv: list[str] | None = None, env: dict | None = None,
                 cwd: Path = REPO_ROOT) -> None:
        self.argv = argv or [sys.executable, "-m", module, "--ros-args", *(ros_args or [])]
        self.env = dict(os.environ if env is None else env)
        self.env.setdefault("PYTHONUNBUFFERED", "1")
        self.env.setdefault("RCUTILS_COLORIZED_OUTPUT", "0")
        self.cwd = cwd
        self.process: subprocess.Popen | None = None
        self._lines: list[str] = []
        self._lock = threading.Lock()
        self._reader: threading.Thread | None = None

    def start(self) -> NodeProcess:
        self.process = subprocess.Popen(
            self.argv, cwd=self.cwd, env=self.env, stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT, text=True, bufsize=1, start_new_session=True)
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        return self

    def _read(self) -> None:
        assert self.process is not None and self.process.stdout is not None
        for line in self.process.stdout:
            with self._lock:
                self._lines.append(line.rstrip("\n"))

    def output(self) -> str:
        with self._lock:
            return "\n".join(self._lines)

    def lines(self) -> list[str]:
        with self._lock:
            return list(self._lines)

    def wait_for_output(self, pattern: str, timeout: float = DISCOVERY_TIMEOUT_S,
                        start_line: int = 0) -> re.Match:
        """Wait until a line (from start_line on) matches the regex; fails if the process exits."""
        regex = re.compile(pattern)

        def find():
            for line in self.lines()[start_line:]:
                match = regex.search(line)
                if match:
                    return match
            if self.process is not None and self.process.poll() is not None:
                raise AssertionError(f"node exited with {self.process.returncode} before "
                                     f"printing /{pattern}/; output:\n{self.output()}")
            return None
        try:
            return wait_for(find, timeout, what=f"output /{pattern}/")
        except AssertionError as error:
            raise AssertionError(f"{error}; output so far:\n{self.output()}") from None

    def wait_exit(self, timeout: float = 60.0) -> int:
        assert self.process is not None
        try:
            code = self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.stop()
            raise AssertionError(f"node did not exit within {timeout} s; output:\n"
                                 f"{self.output()}") from None
        if self._reader is not None:
            self._reader.join(5)
        return code

    def stop(self, timeout: float = 15.0) -> int | None:
        """SIGINT (clean shutdown), then SIGTERM, then SIGKILL; returns the exit code."""
        process = self.process
        if process is None:
            return None
        for sig, wait_s in ((signal.SIGINT, timeout), (signal.SIGTERM, 5.0),
                            (signal.SIGKILL, 5.0)):
            if process.poll() is not None:
                break
            try:
                process.send_signal(sig)
            except ProcessLookupError:
                break
            try:
                process.wait(wait_s)
            except subprocess.TimeoutExpired:
                continue
        if self._reader is not None:
            self._reader.join(5)
        return process.returncode

    def __enter__(self) -> NodeProcess:
        return self.start()

    def __exit__(self, *exc_info) -> None:
        self.stop()


class Collector:
    """Messages received on one topic, with waiting helpers."""

    def __init__(self) -> None:
        self.messages: list = []
        self._cond = threading.Condition()

    def __call__(self, msg) -> None:
        with self._cond:
            self.messages.append(msg)
            self._cond.notify_all()

    def clear(self) -> None:
        with self._cond:
            self.messages.clear()

    def snapshot(self) -> list:
        with self._cond:
            return list(self.messages)

    def wait_for(self, predicate: Callable[[object], bool], timeout: float = 30.0,
                 what: str = "a matching message"):
        """First message (old or new) for which predicate(msg) is true."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                for msg in self.messages:
                    if predicate(msg):
                        return msg
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise AssertionError(f"timed out after {timeout:.1f} s waiting for {what} "
                                         f"({len(self.messages)} messages received)")
                self._cond.wait(min(remaining, 0.2))

    def wait_for_stamp(self, stamp, timeout: float = 30.0):
        sec, nanosec = int(stamp.sec), int(stamp.nanosec)
        return self.wait_for(lambda m: m.header.stamp.sec == sec
                             and m.header.stamp.nanosec == nanosec, timeout,
                             what=f"a message stamped {sec}.{nanosec:09d}")


class _SpunNode:
    """A node in its own rclpy context, spun by a single-threaded executor in a background
    thread; `close` stops the thread, destroys the node and shuts the context down."""

    def _start_spinning(self) -> None:
        from rclpy.executors import SingleThreadedExecutor

        self.executor = SingleThreadedExecutor(context=self.context)
        self.executor.add_node(self.node)
        self._thread = threading.Thread(target=self._spin, daemon=True)
        self._thread.start()

    def _spin(self) -> None:
        from rclpy.executors import ExternalShutdownException
        try:
            self.executor.spin()
        except (ExternalShutdownException, Exception):  # noqa: BLE001  (shutdown races)
            pass

    def close(self) -> None:
        import rclpy
        try:
            self.executor.shutdown(timeout_sec=2.0)
            self.node.destroy_node()
        finally:
            rclpy.try_shutdown(context=self.context)
            self._thread.join(5)


class RosTestContext(_SpunNode):
    """An isolated rclpy context with one test node spun in a background thread."""

    def __init__(self, name: str = "test_peer") -> None:
        import rclpy
        from rclpy.context import Context

        self.context = Context()
        rclpy.init(context=self.context)
        self.node = rclpy.create_node(name, context=self.context)
        self._start_spinning()

    def collect(self, msg_type, topic: str, qos=None) -> Collector:
        from rclpy.qos import QoSProfile, ReliabilityPolicy
        collector = Collector()
        qos = qos or QoSProfile(depth=50, reliability=ReliabilityPolicy.RELIABLE)
        collector.subscription = self.node.create_subscription(msg_type, topic, collector, qos)
        return collector

    def publisher(self, msg_type, topic: str, depth: int = 20):
        from rclpy.qos import QoSProfile, ReliabilityPolicy
        return self.node.create_publisher(
            msg_type, topic, QoSProfile(depth=depth, reliability=ReliabilityPolicy.RELIABLE))


# ---------------------------------------------------------------------------- node harness
FRAME = "stereo_left_optical_frame"
OUTPUTS = {  # output topic -> "package/Type" (resolved lazily: no ROS import at collection)
    "disparity": "stereo_msgs/DisparityImage",
    "depth/image_rect": "sensor_msgs/Image",
    "depth/camera_info": "sensor_msgs/CameraInfo",
    "points2": "sensor_msgs/PointCloud2",
    "matcher/left/image_rect": "sensor_msgs/Image",
    "disparity/image_color": "sensor_msgs/Image",
    "disparity/confidence": "sensor_msgs/Image",
}


class Harness:
    """Test-side publishers (the node's inputs) and collectors (its outputs + /diagnostics)."""

    def __init__(self, node: NodeProcess, outputs=OUTPUTS, namespace: str = "",
                 min_step_s: float = 0.001) -> None:
        from diagnostic_msgs.msg import DiagnosticArray
        from sensor_msgs.msg import CameraInfo, Image
        from stereo_depth_ros.ros.diagnostics import key_values_to_dict

        self._key_values = key_values_to_dict
        self._min_step_ns = int(min_step_s * 1e9)
        self.node = node
        self.ns = namespace
        self.fqn = f"{namespace}/stereo_depth_node"
        self.ctx = RosTestContext("e2e_peer" + namespace.replace("/", "_"))
        self.pubs = [self.ctx.publisher(Image, f"{namespace}/left/image_raw"),
                     self.ctx.publisher(Image, f"{namespace}/right/image_raw"),
                     self.ctx.publisher(CameraInfo, f"{namespace}/left/camera_info"),
                     self.ctx.publisher(CameraInfo, f"{namespace}/right/camera_info")]
        self.out = {name: self.ctx.collect(msg_type(type_name), f"{namespace}/{name}")
                    for name, type_name in outputs.items()}
        self.diagnostics = self.ctx.collect(DiagnosticArray, "/diagnostics")
        self._last_ns = 0

    def next_stamp(self, min_step_s: float | None = None):
        """Now (wall clock, as the node's clock), strictly increasing: input ages are real.
        min_step_s: at least this far after the previous stamp (default: the harness's)."""
        step_ns = self._min_step_ns if min_step_s is None else int(min_step_s * 1e9)
        self._last_ns = max(time.time_ns(), self._last_ns + step_ns)
        return stamp(self._last_ns // 1_000_000_000, self._last_ns % 1_000_000_000)

    def latest_status(self) -> dict[str, str]:
        for array in reversed(self.diagnostics.snapshot()):
            for status in array.status:
                if status.hardware_id == self.fqn:
                    values = self._key_values(status)
                    values.update(_message=status.message, _level=status.level[0])
                    return values
        return {}

    def wait_status(self, predicate, timeout=30.0, what="diagnostics"):
        return wait_for(lambda: (lambda s: s if s and predicate(s) else None)(
            self.latest_status()), timeout, interval=0.1, what=what)

    def wait_until_connected(self, names=None):
        """Until the node hears our inputs and reports a subscriber on each output we read."""
        names = list(self.out) if names is None else names
        for pub in self.pubs:
            wait_for(lambda: pub.get_subscription_count() > 0, 20.0,
                     what=f"node subscribing to {pub.topic_name}")
        self.wait_status(lambda s: all(int(s.get(f"subscribers.{self.ns}/{n}", 0)) >= 1
                                       for n in names),
                         what="node seeing our output subscriptions")

    def send(self, left, right, encoding, left_info, right_info, when):
        """Publish a pair of arrays with its camera_infos, all stamped `when`."""
        left_info.header.stamp = right_info.header.stamp = when
        self.send_msgs(image_msg(left, encoding, when, FRAME),
                       image_msg(right, encoding, when, FRAME.replace("left", "right")),
                       left_info, right_info)

    def send_msgs(self, left_msg, right_msg, left_info, right_info):
        """Publish four ready-made messages (None = skip that topic)."""
        for pub, msg in zip(self.pubs, (left_msg, right_msg, left_info, right_info)):
            if msg is not None:
                pub.publish(msg)

    def outputs_for(self, when, names, timeout=30.0):
        return {name: self.out[name].wait_for_stamp(when, timeout) for name in names}

    def received_for(self, when, name) -> bool:
        """Whether a message stamped `when` has arrived on output `name` (no waiting)."""
        return any(m.header.stamp.sec == when.sec and m.header.stamp.nanosec == when.nanosec
                   for m in self.out[name].snapshot())

    def close(self):
        self.ctx.close()


class CompressedHarness(Harness):
    """A Harness whose images go out as sensor_msgs/CompressedImage on
    <ns>/left|right/image_raw/compressed (for a node with image_transport: compressed)."""

    def __init__(self, node, **kwargs) -> None:
        super().__init__(node, **kwargs)
        from sensor_msgs.msg import CompressedImage
        for pub in self.pubs[:2]:
            self.ctx.node.destroy_publisher(pub)
        self.pubs[:2] = [self.ctx.publisher(CompressedImage,
                                            f"{self.ns}/{side}/image_raw/compressed")
                         for side in ("left", "right")]
