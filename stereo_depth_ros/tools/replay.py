"""Play a ROS 2 bag (sqlite3 or MCAP folder) or a ROS 1 `.bag` into live ROS 2 topics.

    stereo_depth_replay BAG [--rate R] [--loop] [--start S] [--topics T ...]
                            [--remap FROM:=TO ...] [--clock] [--preset kitti2bag]
                            [--wait-timeout S] [--watch TOPIC --step]

A substitute for `ros2 bag play` that needs only rclpy and `rosbags` (no rosbag2, no ROS 1):

* ROS 2 bags: the stored CDR bytes are published as they are (rclpy raw publish).
* ROS 1 bags: each message is converted to ROS 2 CDR with the ROS 2 typestore (`Header.seq` goes).
  Topics whose type has no ROS 2 Python package installed are skipped with a warning.
* `--preset kitti2bag` (or `kitti2bag-gray`) plays the colour (grey) camera pair of a bag made by
  tomas789/kitti2bag into the stereo node's inputs `left/image_raw`, `right/image_raw`,
  `left/camera_info`, `right/camera_info` (relative, so `--namespace` applies) and fixes what
  kitti2bag gets wrong for rectified images: camera_info gets D = 0, R = I, K = P[:3, :3], left
  P[0, 3] = 0, right P[0, 3] = -fx * B with B from the difference of the two P[0, 3] terms, the
  size of the actual image; the two cameras' messages are grouped into one stereo frame that
  carries the left stamp and one frame id (the left image's, or `--frame-id`).
* Publishers wait until the stereo input topics (`*image_raw`, `*camera_info`; `--wait-topics`)
  have subscribers, at most `--wait-timeout` s, then play. `--clock` publishes /clock (bag time)
  for nodes running with use_sim_time.
* `--watch TOPIC` records, per frame, when the first message with that frame's stamp arrives on
  TOPIC (e.g. `disparity`); `--step` waits for it (at most `--step-timeout` s) before playing the
  next frame, so a slow consumer (PSMNet on a CPU) sees every frame. With `--watch`, playing
  also waits for a publisher on TOPIC and for `--watch-subscribers` subscriptions on it.
  `--stats-json` writes what was published and when.

rclpy is imported inside the functions that need it, so this module imports without ROS.
"""

from __future__ import annotations

import argparse
import importlib
import json
import logging
import struct
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import numpy as np

from stereo_depth_ros.core.kitti_calib import CalibrationError, rectified_stereo_calibration
from stereo_depth_ros.tools._cli import parse_ros_args, ros_session

LOG = logging.getLogger(__name__)

ROLES = ("left_image", "right_image", "left_info", "right_info")
NODE_INPUTS = {"left_image": "left/image_raw", "right_image": "right/image_raw",
               "left_info": "left/camera_info", "right_info": "right/camera_info"}


@dataclass(frozen=True)
class Preset:
    """Bag topics of one stereo pair, mapped to the node's inputs (and camera_info fixed)."""

    name: str
    topics: dict[str, str]           # role -> bag topic

    def role_of(self, topic: str) -> str | None:
        for role, name in self.topics.items():
            if name == topic:
                return role
        return None


def _kitti2bag_preset(name: str, camera: str) -> Preset:
    base = f"/kitti/camera_{camera}"
    return Preset(name, {"left_image": f"{base}_left/image_raw",
                         "right_image": f"{base}_right/image_raw",
                         "left_info": f"{base}_left/camera_info",
                         "right_info": f"{base}_right/camera_info"})


PRESETS = {"kitti2bag": _kitti2bag_preset("kitti2bag", "color"),
           "kitti2bag-gray": _kitti2bag_preset("kitti2bag-gray", "gray")}


class ReplayError(RuntimeError):
    """The bag cannot be played (missing, unreadable, or lacks the topics asked for)."""


# ------------------------------------------------------------------------------- CDR helpers


def header_stamp_ns(cdr: bytes) -> int:
    """Stamp (ns) of a CDR-serialized message whose first field is std_msgs/Header."""
    if len(cdr) < 12:
        raise ValueError("message too short for a Header")
    endian = "<" if cdr[1] == 1 else ">"
    sec, nanosec = struct.unpack_from(endian + "iI", cdr, 4)
    return sec * 1_000_000_000 + nanosec


def parse_remap(spec: str) -> tuple[str, str]:
    """'FROM:=TO' -> (FROM, TO)."""
    source, sep, target = spec.partition(":=")
    if not sep or not source or not target:
        raise argparse.ArgumentTypeError(f"remap must look like FROM:=TO, got {spec!r}")
    return source, target


def rclpy_message_type(msgtype: str):
    """'sensor_msgs/msg/Image' -> the rclpy class (no rosidl_runtime_py on pip installs)."""
    package, kind, name = msgtype.split("/")
    return getattr(importlib.import_module(f"{package}.{kind}"), name)


def _has_header(typestore, msgtype: str) -> bool:
    try:
        fields = typestore.fielddefs[msgtype][1]
    except KeyError:
        return False
    return bool(fields) and fields[0][0] == "header" and fields[0][1][1] == "std_msgs/msg/Header"


# --------------------------------------------------------------------------- kitti2bag fixing


class KittiStereoGrouper:
    """Groups kitti2bag's per-camera messages into stereo frames and rewrites them.

    push(role, msg, t) takes rosbags ROS 2 message objects (role in ROLES) in bag order and returns
    the frames completed so far as lists of (role, msg, t). A frame is a left image, the right
    image within `tolerance_ns` of it, and each image's camera_info (same stamp within the
    tolerance). Everything in a frame gets the left stamp and one frame id; camera_info is
    replaced by the rectified one. Messages that can no longer complete a frame are dropped and
    counted in `dropped`.
    """

    def __init__(self, tolerance_ns: int = 20_000_000, frame_id: str | None = None) -> None:
        self.tolerance_ns = int(tolerance_ns)
        self.frame_id = frame_id
        self.buffers: dict[str, list] = {role: [] for role in ROLES}
        self.dropped: dict[str, int] = {role: 0 for role in ROLES}
        self.frames = 0
        self.notes: list[str] = []

    @staticmethod
    def _stamp(msg) -> int:
        return msg.header.stamp.sec * 1_000_000_000 + msg.header.stamp.nanosec

    def push(self, role: str, msg, t: int) -> list[list[tuple[str, object, int]]]:
        self.buffers[role].append((self._stamp(msg), msg, t))
        return self._collect(final=False)

    def flush(self) -> list[list[tuple[str, object, int]]]:
        frames = self._collect(final=True)
        for role, items in self.buffers.items():
            self.dropped[role] += len(items)
            items.clear()
        return frames

    def _find(self, role: str, stamp: int) -> int | None:
        for index, (other, _, _) in enumerate(self.buffers[role]):
            if abs(other - stamp) <= self.tolerance_ns:
                return index
        return None

    def _hopeless(self, role: str, stamp: int) -> bool:
        """True when `role` already holds a later message, so a match for `stamp` cannot come."""
        return any(other > stamp + self.tolerance_ns for other, _, _ in self.buffers[role])

    def _collect(self, final: bool) -> list[list[tuple[str, object, int]]]:
        frames = []
        while self.buffers["left_image"]:
            left_stamp = self.buffers["left_image"][0][0]
            # anything older than the oldest left image can never be paired
            for role in ("right_image", "left_info", "right_info"):
                keep = [item for item in self.buffers[role]
                        if item[0] >= left_stamp - self.tolerance_ns]
                self.dropped[role] += len(self.buffers[role]) - len(keep)
                self.buffers[role] = keep
            left_info = self._find("left_info", left_stamp)
            right_image = self._find("right_image", left_stamp)
            right_info = None
            if right_image is not None:
                right_info = self._find("right_info", self.buffers["right_image"][right_image][0])
            if None not in (left_info, right_image, right_info):
                frames.append(self._emit(left_info, right_image, right_info))
                continue
            missing = [(role, left_stamp) for role, index in
                       (("left_info", left_info), ("right_image", right_image)) if index is None]
            if right_image is not None and right_info is None:
                missing.append(("right_info", self.buffers["right_image"][right_image][0]))
            if final or any(self._hopeless(role, stamp) for role, stamp in missing):
                self.buffers["left_image"].pop(0)
                self.dropped["left_image"] += 1
                continue
            break
        return frames

    def _emit(self, left_info_index: int, right_image_index: int,
              right_info_index: int) -> list[tuple[str, object, int]]:
        left_stamp, left_image, t_left = self.buffers["left_image"].pop(0)
        _, left_info, t_li = self.buffers["left_info"].pop(left_info_index)
        _, right_image, t_right = self.buffers["right_image"].pop(right_image_index)
        _, right_info, t_ri = self.buffers["right_info"].pop(right_info_index)
        frame_id = self.frame_id or left_image.header.frame_id or left_info.header.frame_id
        t_out = max(t_left, t_li, t_right, t_ri)
        if (left_image.width, left_image.height) != (right_image.width, right_image.height):
            raise ReplayError(f"left image is {left_image.width}x{left_image.height} but right "
                              f"is {right_image.width}x{right_image.height}")
        p_left = np.asarray(left_info.p, dtype=np.float64).reshape(3, 4)
        p_right = np.asarray(right_info.p, dtype=np.float64).reshape(3, 4)
        try:
            calib = rectified_stereo_calibration(
                p_left, p_right, int(left_image.width), int(left_image.height),
                baseline_source="projection", source="kitti2bag camera_info")
        except CalibrationError as exc:
            raise ReplayError(str(exc)) from None
        if (left_info.width, left_info.height) != (left_image.width, left_image.height) and \
                not self.notes:
            self.notes.append(f"camera_info says {left_info.width}x{left_info.height}, image is "
                              f"{left_image.width}x{left_image.height}: using the image size")
        for msg in (left_image, right_image, left_info, right_info):
            msg.header.stamp.sec = left_stamp // 1_000_000_000
            msg.header.stamp.nanosec = left_stamp % 1_000_000_000
            msg.header.frame_id = frame_id
        for msg, side in ((left_info, "left"), (right_info, "right")):
            values = calib.camera_info_fields(side)
            msg.width, msg.height = values["width"], values["height"]
            msg.distortion_model = values["distortion_model"]
            msg.d = np.array(values["d"], dtype=np.float64)
            msg.k = np.array(values["k"], dtype=np.float64)
            msg.r = np.array(values["r"], dtype=np.float64)
            msg.p = np.array(values["p"], dtype=np.float64)
            msg.binning_x = msg.binning_y = 0
            msg.roi.x_offset = msg.roi.y_offset = msg.roi.width = msg.roi.height = 0
            msg.roi.do_rectify = False
        self.frames += 1
        return [("left_info", left_info, t_out), ("right_info", right_info, t_out),
                ("left_image", left_image, t_out), ("right_image", right_image, t_out)]


# ------------------------------------------------------------------------------- bag source


@dataclass(frozen=True)
class Outgoing:
    """One message to publish: bag time, output topic, type and ROS 2 CDR bytes."""

    t_ns: int
    topic: str
    msgtype: str
    cdr: bytes
    stamp_ns: int | None = None      # header stamp, when the type starts with a Header


@dataclass
class BagSource:
    """Reads a bag and yields `Outgoing` messages (no rclpy involved; testable on its own).

    topics: bag topics to play (default all, or the preset's four). remaps: output name ->
    new name (applied after the preset). start_s: skip this much of the bag's beginning.
    """

    path: Path
    topics: list[str] | None = None
    remaps: dict[str, str] = field(default_factory=dict)
    start_s: float = 0.0
    preset: Preset | None = None
    frame_id: str | None = None
    pair_tolerance_s: float = 0.02
    is_ros1: bool = False
    outputs: dict[str, str] = field(default_factory=dict)     # output topic -> msgtype
    last_grouper: KittiStereoGrouper | None = None
    skipped_topics: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        from rosbags.typesys import Stores, get_typestore

        self.path = Path(self.path)
        self.typestore = get_typestore(Stores.ROS2_KILTED)
        self.bag_paths = self._bag_paths(self.path)
        with self._reader() as reader:
            self.is_ros1 = not reader.is2
            self.duration_ns = reader.duration
            self.message_counts = {c.topic: c.msgcount for c in reader.connections}
            connections = self._selected(reader)
            for conn in connections:
                self.outputs[self._output_name(conn.topic)] = conn.msgtype
        if not self.outputs:
            raise ReplayError(f"{self.path}: nothing to play (topics in the bag: "
                              f"{', '.join(sorted(self.message_counts)) or 'none'})")

    @staticmethod
    def _bag_paths(path: Path) -> list[Path]:
        if not path.exists():
            raise ReplayError(f"{path}: no such bag")
        if path.is_file() and path.suffix == ".bag":
            return [path]
        if path.is_file() and path.suffix in (".mcap", ".db3") \
                and (path.parent / "metadata.yaml").is_file():
            return [path.parent]
        if path.is_dir() and (path / "metadata.yaml").is_file():
            return [path]
        raise ReplayError(f"{path}: neither a ROS 2 bag folder (with metadata.yaml) nor a ROS 1 "
                          ".bag file")

    def _reader(self):
        from rosbags.highlevel import AnyReader

        try:
            reader = AnyReader(self.bag_paths, default_typestore=self.typestore)
            reader.open()
        except Exception as exc:  # noqa: BLE001  (rosbags raises several unrelated types)
            raise ReplayError(f"{self.path}: cannot open bag: {exc}") from None
        return _Closing(reader)

    def _selected(self, reader) -> list:
        wanted = self.topics
        if wanted is None and self.preset is not None:
            wanted = list(self.preset.topics.values())
        connections = []
        present = {c.topic for c in reader.connections}
        if wanted is not None:
            missing = [t for t in wanted if t not in present]
            if missing:
                raise ReplayError(f"{self.path}: topics not in the bag: {', '.join(missing)} "
                                  f"(bag has: {', '.join(sorted(present))})")
        for conn in reader.connections:
            if wanted is not None and conn.topic not in wanted:
                continue
            if conn.msgtype not in self.typestore.types:
                self.skipped_topics[conn.topic] = f"type {conn.msgtype} unknown to ROS 2"
                continue
            try:
                rclpy_message_type(conn.msgtype)
            except (ImportError, AttributeError, ValueError):
                self.skipped_topics[conn.topic] = f"no Python package for {conn.msgtype}"
                continue
            connections.append(conn)
        for topic, why in self.skipped_topics.items():
            LOG.warning("skipping %s: %s", topic, why)
        if self.preset is not None:
            roles = {self.preset.role_of(c.topic) for c in connections}
            if not set(ROLES) <= roles:
                raise ReplayError(f"{self.path}: preset {self.preset.name} needs "
                                  f"{', '.join(self.preset.topics.values())}")
        return connections

    def _output_name(self, bag_topic: str) -> str:
        name = bag_topic
        if self.preset is not None:
            role = self.preset.role_of(bag_topic)
            if role is not None:
                name = NODE_INPUTS[role]
        for candidate in (name, name.lstrip("/"), "/" + name.lstrip("/")):
            if candidate in self.remaps:
                return self.remaps[candidate]
        return name

    def __iter__(self) -> Iterator[Outgoing]:
        with self._reader() as reader:
            connections = self._selected(reader)
            start_ns = reader.start_time + int(self.start_s * 1e9)
            grouper = None
            if self.preset is not None:
                grouper = KittiStereoGrouper(int(self.pair_tolerance_s * 1e9), self.frame_id)
                self.last_grouper = grouper
            for conn, t, raw in reader.messages(connections=connections, start=start_ns):
                cdr = bytes(self.typestore.ros1_to_cdr(raw, conn.msgtype)) if self.is_ros1 \
                    else bytes(raw)
                role = self.preset.role_of(conn.topic) if self.preset is not None else None
                if role is None:
                    yield self._outgoing(t, conn.topic, conn.msgtype, cdr)
                    continue
                msg = self.typestore.deserialize_cdr(cdr, conn.msgtype)
                for frame in grouper.push(role, msg, t):
                    yield from self._frame_messages(frame)
            if grouper is not None:
                for frame in grouper.flush():
                    yield from self._frame_messages(frame)
                for note in grouper.notes:
                    LOG.warning("%s", note)

    def _frame_messages(self, frame) -> Iterator[Outgoing]:
        for role, msg, t in frame:
            msgtype = msg.__msgtype__
            cdr = bytes(self.typestore.serialize_cdr(msg, msgtype))
            yield self._outgoing(t, self.preset.topics[role], msgtype, cdr)

    def _outgoing(self, t: int, bag_topic: str, msgtype: str, cdr: bytes) -> Outgoing:
        stamp = header_stamp_ns(cdr) if _has_header(self.typestore, msgtype) else None
        return Outgoing(t, self._output_name(bag_topic), msgtype, cdr, stamp)


class _Closing:
    def __init__(self, reader) -> None:
        self.reader = reader

    def __enter__(self):
        return self.reader

    def __exit__(self, *exc) -> None:
        self.reader.close()


# ---------------------------------------------------------------------------------- player


@dataclass
class FrameRecord:
    stamp_ns: int
    published_wall: float
    output_wall: float | None = None


class _Interrupted(Exception):
    pass


class Player:
    """Publishes a BagSource with rclpy: pacing, /clock, subscriber wait, watch/step."""

    def __init__(self, source: BagSource, *, node_name: str = "stereo_depth_replay",
                 namespace: str = "", rate: float = 1.0, clock: bool = False,
                 clock_hz: float = 40.0, qos_depth: int = 10, wait_topics: list[str] | None = None,
                 wait_timeout_s: float = 30.0, watch: str | None = None,
                 watch_type: str = "stereo_msgs/msg/DisparityImage", step: bool = False,
                 step_timeout_s: float = 60.0, watch_subscribers: int = 1,
                 context=None) -> None:
        import rclpy
        from rclpy.executors import SingleThreadedExecutor
        from rclpy.qos import QoSProfile, ReliabilityPolicy

        if rate < 0:
            raise ValueError("rate must be >= 0 (0: as fast as possible)")
        if step and watch is None:
            raise ValueError("--step needs --watch TOPIC")
        self.source = source
        self.rate = rate
        self.clock_period = 1.0 / clock_hz if clock_hz > 0 else 0.025
        self.step = step
        self.step_timeout_s = step_timeout_s
        self.wait_timeout_s = wait_timeout_s
        self.node = rclpy.create_node(node_name, namespace=namespace or "", context=context,
                                      start_parameter_services=False)
        self.executor = SingleThreadedExecutor(context=context)
        self.executor.add_node(self.node)
        qos = QoSProfile(depth=qos_depth, reliability=ReliabilityPolicy.RELIABLE)
        self.publishers = {topic: self.node.create_publisher(rclpy_message_type(msgtype), topic,
                                                             qos)
                           for topic, msgtype in source.outputs.items()}
        self.clock_pub = None
        if clock:
            from rosgraph_msgs.msg import Clock
            self.clock_pub = self.node.create_publisher(Clock, "/clock", QoSProfile(
                depth=1, reliability=ReliabilityPolicy.RELIABLE))
            self._clock_msg = Clock()
        self.wait_topics = self._default_wait_topics() if wait_topics is None else wait_topics
        self.outputs_seen: dict[int, float] = {}
        self.watch_sub = None
        self.watch_subscribers = watch_subscribers
        if watch is not None:
            self.watch_sub = self.node.create_subscription(
                rclpy_message_type(watch_type), watch, self._on_output,
                QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE), raw=True)
        self.published: dict[str, int] = {topic: 0 for topic in self.publishers}
        self.frames: list[FrameRecord] = []
        self.subscribers_matched = None
        self._bag_now_ns: int | None = None
        self._last_clock = 0.0

    def _default_wait_topics(self) -> list[str]:
        inputs = [t for t in self.publishers if t.endswith(("image_raw", "camera_info"))]
        return inputs or list(self.publishers)

    def _on_output(self, raw: bytes) -> None:
        try:
            stamp = header_stamp_ns(raw)
        except ValueError:
            return
        self.outputs_seen.setdefault(stamp, time.time())

    def destroy(self) -> None:
        self.executor.remove_node(self.node)
        self.executor.shutdown()
        self.node.destroy_node()

    # -- time helpers
    def _publish_clock(self, force: bool = False) -> None:
        if self.clock_pub is None or self._bag_now_ns is None:
            return
        now = time.monotonic()
        if not force and now - self._last_clock < self.clock_period:
            return
        self._last_clock = now
        self._clock_msg.clock.sec = self._bag_now_ns // 1_000_000_000
        self._clock_msg.clock.nanosec = self._bag_now_ns % 1_000_000_000
        self.clock_pub.publish(self._clock_msg)

    def _spin_until(self, deadline: float, done=lambda: False) -> bool:
        """Spin (callbacks, /clock) until monotonic `deadline` or done(); returns done()."""
        while True:
            if done():
                return True
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return done()
            self._publish_clock()
            self.executor.spin_once(timeout_sec=min(remaining, self.clock_period))

    def wait_for_subscribers(self) -> bool:
        """Wait until every topic in wait_topics has a subscriber (or the timeout); log misses."""
        if self.wait_timeout_s <= 0 or not self.wait_topics:
            return True

        publishers = dict(self.publishers)
        if self.clock_pub is not None:
            publishers["/clock"] = self.clock_pub
        unknown = [t for t in self.wait_topics if t not in publishers]
        if unknown:
            raise ReplayError(f"--wait-topics {', '.join(unknown)}: not played (playing: "
                              f"{', '.join(sorted(publishers))})")

        def unmatched():
            missing = [t for t in self.wait_topics if publishers[t].get_subscription_count() == 0]
            if self.watch_sub is not None:
                name = self.watch_sub.topic_name
                if self.watch_sub.get_publisher_count() == 0:
                    missing.append(f"{name} (no publisher yet)")
                elif self.node.count_subscribers(name) < self.watch_subscribers:
                    missing.append(f"{name} (fewer than {self.watch_subscribers} subscribers)")
            return missing

        deadline = time.monotonic() + self.wait_timeout_s
        ok = self._spin_until(deadline, lambda: not unmatched())
        if ok:
            LOG.info("subscribers found on %s", ", ".join(self.wait_topics))
        else:
            LOG.warning("no subscriber after %.0f s on: %s; playing anyway",
                        self.wait_timeout_s, ", ".join(unmatched()))
        self.subscribers_matched = ok
        return ok

    def play_once(self) -> None:
        """One pass over the bag."""
        wall0 = None
        t0 = None
        pending_stamp: int | None = None
        for item in self.source:
            if t0 is None:
                t0, wall0 = item.t_ns, time.monotonic()
            if item.stamp_ns is not None and pending_stamp is not None \
                    and item.stamp_ns != pending_stamp:
                self._finish_frame(pending_stamp)
                pending_stamp = None
            if not self.step and self.rate > 0:
                self._bag_now_ns = self._bag_now_ns or item.t_ns
                target = wall0 + (item.t_ns - t0) / 1e9 / self.rate
                while time.monotonic() < target:
                    elapsed = (time.monotonic() - wall0) * self.rate
                    self._bag_now_ns = t0 + int(elapsed * 1e9)
                    self._spin_until(min(target, time.monotonic() + self.clock_period))
            self._bag_now_ns = item.t_ns
            self._publish_clock(force=True)
            self.publishers[item.topic].publish(item.cdr)
            self.published[item.topic] += 1
            if item.stamp_ns is not None:
                if pending_stamp is None:
                    self.frames.append(FrameRecord(item.stamp_ns, time.time()))
                else:
                    self.frames[-1].published_wall = time.time()
                pending_stamp = item.stamp_ns
            self.executor.spin_once(timeout_sec=0)
        if pending_stamp is not None:
            self._finish_frame(pending_stamp)

    def _finish_frame(self, stamp: int) -> None:
        if self.step:
            deadline = time.monotonic() + self.step_timeout_s
            if not self._spin_until(deadline, lambda: stamp in self.outputs_seen):
                LOG.warning("no output for stamp %d.%09d within %.0f s", stamp // 10**9,
                            stamp % 10**9, self.step_timeout_s)

    def linger(self, seconds: float) -> None:
        """Keep spinning (watch callbacks, /clock) for a while after the last message."""
        if seconds > 0:
            frames = {f.stamp_ns for f in self.frames}
            self._spin_until(time.monotonic() + seconds,
                             lambda: frames <= set(self.outputs_seen))

    def stats(self) -> dict:
        for record in self.frames:
            record.output_wall = self.outputs_seen.get(record.stamp_ns)
        return {
            "bag": str(self.source.path),
            "ros1": self.source.is_ros1,
            "published": self.published,
            "subscribers_matched": self.subscribers_matched,
            "frames": [{"stamp_ns": f.stamp_ns, "published_wall": f.published_wall,
                        "output_wall": f.output_wall,
                        "latency_s": None if f.output_wall is None
                        else f.output_wall - f.published_wall} for f in self.frames],
            "unpaired_dropped": (self.source.last_grouper.dropped
                                 if self.source.last_grouper is not None else {}),
            "skipped_topics": self.source.skipped_topics,
        }


# ------------------------------------------------------------------------------------- CLI


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="stereo_depth_replay",
        description="Play a ROS 2 bag (sqlite3/MCAP folder) or a ROS 1 .bag into ROS 2 topics.",
        epilog="Examples: stereo_depth_replay drive5_bag --clock --loop;  stereo_depth_replay "
               "kitti_2011_09_26_drive_0002_synced.bag --preset kitti2bag --clock")
    parser.add_argument("bag", type=Path, help="ROS 2 bag folder or ROS 1 .bag file")
    parser.add_argument("--rate", type=float, default=1.0,
                        help="playback speed factor (default 1; 0 = as fast as possible)")
    parser.add_argument("--loop", action="store_true", help="play again and again")
    parser.add_argument("--start", type=float, default=0.0, dest="start_s",
                        help="skip this many seconds at the start of the bag")
    parser.add_argument("--topics", nargs="+", default=None,
                        help="bag topics to play (default: all, or the preset's)")
    parser.add_argument("--remap", action="append", type=parse_remap, default=[],
                        metavar="FROM:=TO", help="rename an output topic (repeatable)")
    parser.add_argument("--namespace", default="",
                        help="namespace of the replay node (applies to relative output names)")
    parser.add_argument("--clock", action="store_true",
                        help="publish /clock with the bag time (for use_sim_time)")
    parser.add_argument("--clock-hz", type=float, default=40.0, help="/clock rate (default 40)")
    parser.add_argument("--preset", choices=sorted(PRESETS), default=None,
                        help="kitti2bag: play /kitti/camera_color_{left,right}/{image_raw,"
                             "camera_info} as the node's inputs with fixed camera_info")
    parser.add_argument("--frame-id", default=None,
                        help="preset: frame id for both cameras (default: the left image's)")
    parser.add_argument("--pair-tolerance", type=float, default=0.02, dest="pair_tolerance_s",
                        help="preset: max left/right stamp difference in s (default 0.02)")
    parser.add_argument("--wait-topics", nargs="*", default=None,
                        help="output topics (as published, /clock included) that need a "
                             "subscriber before playing (default: the *image_raw and "
                             "*camera_info ones)")
    parser.add_argument("--wait-timeout", type=float, default=30.0, dest="wait_timeout_s",
                        help="max seconds to wait for subscribers (0: do not wait)")
    parser.add_argument("--qos-depth", type=int, default=10, help="publisher queue depth")
    parser.add_argument("--watch", default=None,
                        help="topic whose messages mark a frame as processed (e.g. disparity)")
    parser.add_argument("--watch-type", default="stereo_msgs/msg/DisparityImage",
                        help="message type of --watch (default stereo_msgs/msg/DisparityImage)")
    parser.add_argument("--step", action="store_true",
                        help="wait for each frame's --watch output before the next frame")
    parser.add_argument("--step-timeout", type=float, default=60.0, dest="step_timeout_s")
    parser.add_argument("--watch-subscribers", type=int, default=1,
                        help="before playing, also wait until the ROS graph shows this many "
                             "subscriptions on --watch (this replay's own included), e.g. 2 when "
                             "stereo_depth_dump must see every frame")
    parser.add_argument("--linger", type=float, default=None,
                        help="seconds to keep waiting for --watch outputs after the last frame "
                             "(default: --step-timeout when --watch is given)")
    parser.add_argument("--stats-json", type=Path, default=None,
                        help="write per-frame publish/output times and counts here")
    parser.add_argument("--list", action="store_true", help="list the bag's topics and exit")
    return parser


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    args = parse_ros_args(build_parser(), argv, "replay")
    try:
        source = BagSource(args.bag, topics=args.topics, remaps=dict(args.remap),
                           start_s=args.start_s,
                           preset=PRESETS[args.preset] if args.preset else None,
                           frame_id=args.frame_id, pair_tolerance_s=args.pair_tolerance_s)
    except ReplayError as exc:
        LOG.error("%s", exc)
        return 1
    if args.list:
        for topic, count in sorted(source.message_counts.items()):
            LOG.info("%s: %d messages", topic, count)
        return 0
    player = None
    code = 0
    with ros_session(argv, interrupt=_Interrupted):
        try:
            player = Player(source, namespace=args.namespace, rate=args.rate, clock=args.clock,
                            clock_hz=args.clock_hz, qos_depth=args.qos_depth,
                            wait_topics=args.wait_topics, wait_timeout_s=args.wait_timeout_s,
                            watch=args.watch, watch_type=args.watch_type, step=args.step,
                            step_timeout_s=args.step_timeout_s,
                            watch_subscribers=args.watch_subscribers)
            player.wait_for_subscribers()
            LOG.info("playing %s (%s) -> %s", args.bag, "ROS 1" if source.is_ros1 else "ROS 2",
                     ", ".join(sorted(player.publishers)))
            while True:
                player.play_once()
                if not args.loop:
                    break
            linger = args.linger if args.linger is not None else (
                args.step_timeout_s if args.watch else 0.0)
            player.linger(linger)
        except (KeyboardInterrupt, _Interrupted):
            LOG.info("interrupted")
            code = 130
        except ReplayError as exc:
            LOG.error("%s", exc)
            code = 1
        finally:
            if player is not None:
                stats = player.stats()
                LOG.info("published %s",
                         ", ".join(f"{t} x{n}" for t, n in stats["published"].items()))
                if args.stats_json is not None:
                    args.stats_json.write_text(json.dumps(stats, indent=2))
                player.destroy()
    return code


if __name__ == "__main__":
    sys.exit(main())
