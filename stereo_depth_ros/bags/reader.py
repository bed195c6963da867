"""Reading ROS 2 bags (sqlite3 or MCAP folders) and ROS 1 `.bag` files as ROS 2 CDR messages.

`BagSource` yields `Outgoing` messages (bag time, output topic, type, ROS 2 CDR bytes, header
stamp) in bag order, with ROS 1 messages converted to ROS 2 CDR, topics renamed by a preset and
remaps, and kitti2bag frames fixed (`kitti2bag_fix`). Uses `rosbags` only: no rclpy, no rosbag2.

Latched topics (`BagSource.latched`): in a ROS 2 bag those recorded with a transient-local
offered QoS, in a ROS 1 bag those with a latching connection header, and /tf_static always (tf2
reads it transient local; kitti2bag writes it unlatched). The player publishes them transient
local, and `start_s` does not skip them: their messages from before the start are played first.
"""

from __future__ import annotations

import logging
import struct
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

from stereo_depth_ros import topics as topic_names
from stereo_depth_ros.bags.kitti2bag_fix import ROLES, BagError, KittiStereoGrouper, Preset
from stereo_depth_ros.core.stamps import NS_PER_S, seconds_to_ns
from stereo_depth_ros.topics import NODE_INPUTS

FRAME_TYPES = ("sensor_msgs/msg/Image", "sensor_msgs/msg/CompressedImage",
               "sensor_msgs/msg/CameraInfo")
"""Types whose header stamp marks a stereo frame (the player's --watch/--step unit). Other
stamped messages (scans, IMU) keep their own sensor stamps and are not frames."""
TF_MESSAGE = "tf2_msgs/msg/TFMessage"

LOG = logging.getLogger(__name__)


def header_stamp_ns(cdr: bytes) -> int:
    """Stamp (ns) of a CDR-serialized message whose first field is std_msgs/Header."""
    if len(cdr) < 12:
        raise ValueError("message too short for a Header")
    endian = "<" if cdr[1] == 1 else ">"
    sec, nanosec = struct.unpack_from(endian + "iI", cdr, 4)
    return sec * NS_PER_S + nanosec


def _has_header(typestore, msgtype: str) -> bool:
    try:
        fields = typestore.fielddefs[msgtype][1]
    except KeyError:
        return False
    return bool(fields) and fields[0][0] == "header" and fields[0][1][1] == "std_msgs/msg/Header"


@dataclass(frozen=True)
class Outgoing:
    """One message to publish: bag time, output topic, type and ROS 2 CDR bytes."""

    t_ns: int
    topic: str
    msgtype: str
    cdr: bytes
    stamp_ns: int | None = None      # header stamp, when the type starts with a Header
    in_frame: bool = True            # part of a stereo frame (FRAME_TYPES)

    @property
    def frame_stamp_ns(self) -> int | None:
        """The stereo frame this message belongs to (its stamp), or None."""
        return self.stamp_ns if self.in_frame else None


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
    can_publish: Callable[[str], bool] | None = None
    latched: set[str] = field(default_factory=set)       # output topics played latched

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
                if self._is_latched(conn):
                    self.latched.add(self._output_name(conn.topic))
        if not self.outputs:
            raise BagError(f"{self.path}: nothing to play (topics in the bag: "
                           f"{', '.join(sorted(self.message_counts)) or 'none'})")

    @staticmethod
    def _bag_paths(path: Path) -> list[Path]:
        if not path.exists():
            raise BagError(f"{path}: no such bag")
        if path.is_file() and path.suffix == ".bag":
            return [path]
        if path.is_file() and path.suffix in (".mcap", ".db3") \
                and (path.parent / "metadata.yaml").is_file():
            return [path.parent]
        if path.is_dir() and (path / "metadata.yaml").is_file():
            return [path]
        raise BagError(f"{path}: neither a ROS 2 bag folder (with metadata.yaml) nor a ROS 1 "
                       ".bag file")

    def _reader(self):
        from rosbags.highlevel import AnyReader

        try:
            reader = AnyReader(self.bag_paths, default_typestore=self.typestore)
            reader.open()
        except Exception as exc:  # noqa: BLE001  (rosbags raises several unrelated types)
            raise BagError(f"{self.path}: cannot open bag: {exc}") from None
        return _Closing(reader)

    @staticmethod
    def _is_latched(conn) -> bool:
        from rosbags.interfaces import ConnectionExtRosbag1, QosDurability

        if conn.topic == topic_names.TF_STATIC:
            return True
        if isinstance(conn.ext, ConnectionExtRosbag1):
            return bool(conn.ext.latching)
        return any(getattr(qos, "durability", None) == QosDurability.TRANSIENT_LOCAL
                   for qos in (conn.ext.offered_qos_profiles or []))

    def _selected(self, reader) -> list:
        wanted = self.topics
        present = {c.topic for c in reader.connections}
        if wanted is None and self.preset is not None:
            wanted = list(self.preset.topics.values()) + [
                topic for topic in self.preset.extras if topic in present]
        connections = []
        if wanted is not None:
            missing = [t for t in wanted if t not in present]
            if missing:
                raise BagError(f"{self.path}: topics not in the bag: {', '.join(missing)} "
                               f"(bag has: {', '.join(sorted(present))})")
        for conn in reader.connections:
            if wanted is not None and conn.topic not in wanted:
                continue
            if conn.msgtype not in self.typestore.types:
                self.skipped_topics[conn.topic] = f"type {conn.msgtype} unknown to ROS 2"
                continue
            if self.can_publish is not None and not self.can_publish(conn.msgtype):
                self.skipped_topics[conn.topic] = f"no Python package for {conn.msgtype}"
                continue
            connections.append(conn)
        for topic, why in self.skipped_topics.items():
            LOG.warning("skipping %s: %s", topic, why)
        if self.preset is not None:
            roles = {self.preset.role_of(c.topic) for c in connections}
            if not set(ROLES) <= roles:
                raise BagError(f"{self.path}: preset {self.preset.name} needs "
                               f"{', '.join(self.preset.topics.values())}")
        return connections

    def _output_name(self, bag_topic: str) -> str:
        name = bag_topic
        if self.preset is not None:
            role = self.preset.role_of(bag_topic)
            if role is not None:
                name = NODE_INPUTS[role]
            elif bag_topic in self.preset.extras:
                name = self.preset.extras[bag_topic]
        for candidate in (name, name.lstrip("/"), "/" + name.lstrip("/")):
            if candidate in self.remaps:
                return self.remaps[candidate]
        return name

    def __iter__(self) -> Iterator[Outgoing]:
        with self._reader() as reader:
            connections = self._selected(reader)
            start_ns = reader.start_time + seconds_to_ns(self.start_s)
            grouper = None
            if self.preset is not None:
                grouper = KittiStereoGrouper(seconds_to_ns(self.pair_tolerance_s), self.frame_id)
                self.last_grouper = grouper
            latched = [c for c in connections if self._output_name(c.topic) in self.latched]
            if start_ns > reader.start_time and latched:
                for conn, _, raw in reader.messages(connections=latched, stop=start_ns):
                    yield self._outgoing(start_ns, conn.topic, conn.msgtype, self._cdr(conn, raw))
            for conn, t, raw in reader.messages(connections=connections, start=start_ns):
                cdr = self._cdr(conn, raw)
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

    def _cdr(self, conn, raw) -> bytes:
        """ROS 2 CDR of a stored message; /tf_static of a preset with a frame id gets the
        preset's left camera frame renamed to it."""
        cdr = bytes(self.typestore.ros1_to_cdr(raw, conn.msgtype)) if self.is_ros1 \
            else bytes(raw)
        renames = self.preset.frame_renames(self.frame_id) if self.preset is not None else {}
        if conn.msgtype == TF_MESSAGE and renames:
            msg = self.typestore.deserialize_cdr(cdr, TF_MESSAGE)
            for item in msg.transforms:
                item.header.frame_id = renames.get(item.header.frame_id.lstrip("/"),
                                                   item.header.frame_id)
                item.child_frame_id = renames.get(item.child_frame_id.lstrip("/"),
                                                  item.child_frame_id)
            cdr = bytes(self.typestore.serialize_cdr(msg, TF_MESSAGE))
        return cdr

    def _frame_messages(self, frame) -> Iterator[Outgoing]:
        for role, msg, t in frame:
            msgtype = msg.__msgtype__
            cdr = bytes(self.typestore.serialize_cdr(msg, msgtype))
            yield self._outgoing(t, self.preset.topics[role], msgtype, cdr)

    def _outgoing(self, t: int, bag_topic: str, msgtype: str, cdr: bytes) -> Outgoing:
        stamp = header_stamp_ns(cdr) if _has_header(self.typestore, msgtype) else None
        return Outgoing(t, self._output_name(bag_topic), msgtype, cdr, stamp,
                        in_frame=msgtype in FRAME_TYPES)


class _Closing:
    def __init__(self, reader) -> None:
        self.reader = reader

    def __enter__(self):
        return self.reader

    def __exit__(self, *exc) -> None:
        self.reader.close()
