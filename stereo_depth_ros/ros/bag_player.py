"""Publishing a `bags.BagSource` with rclpy: pacing, /clock, waiting for subscribers, and the
watch/step mode that waits for the node's output before the next frame.

Latched topics (`BagSource.latched`, e.g. /tf_static) get transient-local publishers, so a
subscriber that joins later still receives them. A stereo frame is the set of image/camera_info
messages with one stamp (`Outgoing.frame_stamp_ns`); other stamped messages (LiDAR scans, IMU)
are played at their bag time and are not frames."""

from __future__ import annotations

import importlib
import logging
import time
from dataclasses import dataclass

from stereo_depth_ros.bags import BagError, BagSource, header_stamp_ns
from stereo_depth_ros.core.stamps import ns_to_sec_nanosec, set_stamp

LOG = logging.getLogger(__name__)


def rclpy_message_type(msgtype: str):
    """'sensor_msgs/msg/Image' -> the rclpy class (no rosidl_runtime_py on pip installs)."""
    package, kind, name = msgtype.split("/")
    return getattr(importlib.import_module(f"{package}.{kind}"), name)


def has_message_package(msgtype: str) -> bool:
    """Whether rclpy can publish `msgtype` here (its Python message package is installed)."""
    try:
        rclpy_message_type(msgtype)
    except (ImportError, AttributeError, ValueError):
        return False
    return True


@dataclass
class FrameRecord:
    stamp_ns: int
    published_wall: float
    output_wall: float | None = None
    resent: int = 0


STEP_RESENDS = 2
"""Step mode: how often a frame whose output does not come is published again (once a third of
--step-timeout has passed each time). A node's reader that had not yet discovered this process's
writers when the frame went out never got it (DDS discovery is per direction); the node handles
a repeated stamp like any pair."""


class Player:
    """Publishes a BagSource with rclpy: pacing, /clock, subscriber wait, watch/step."""

    #: While waiting for subscribers, how often (s) the topics still missing are logged again.
    WAIT_NOTE_PERIOD_S = 5.0

    def __init__(self, source: BagSource, *, node_name: str = "stereo_depth_replay",
                 namespace: str = "", rate: float = 1.0, clock: bool = False,
                 clock_hz: float = 40.0, qos_depth: int = 10, wait_topics: list[str] | None = None,
                 wait_timeout_s: float = 30.0, watch: str | None = None,
                 watch_type: str = "stereo_msgs/msg/DisparityImage", step: bool = False,
                 step_timeout_s: float = 60.0, watch_subscribers: int = 1,
                 context=None) -> None:
        import rclpy
        from rclpy.executors import SingleThreadedExecutor
        from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy

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

        def qos(topic: str) -> QoSProfile:
            durability = DurabilityPolicy.TRANSIENT_LOCAL if topic in source.latched \
                else DurabilityPolicy.VOLATILE
            return QoSProfile(depth=qos_depth, reliability=ReliabilityPolicy.RELIABLE,
                              durability=durability)

        self.publishers = {topic: self.node.create_publisher(rclpy_message_type(msgtype), topic,
                                                             qos(topic))
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
        self._frame_items: list[tuple[str, bytes]] = []   # step mode: the frame being played
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
        set_stamp(self._clock_msg.clock, self._bag_now_ns)
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
            raise BagError(f"--wait-topics {', '.join(unknown)}: not played (playing: "
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
        missing = unmatched()
        if missing:
            LOG.info("waiting up to %.0f s for subscribers on: %s (start the node; "
                     "--wait-timeout sets the limit, 0 plays at once)", self.wait_timeout_s,
                     ", ".join(missing))
        ok = self._spin_until(deadline, self._noting_progress(unmatched, deadline))
        if ok:
            LOG.info("subscribers found on %s", ", ".join(self.wait_topics))
        else:
            LOG.warning("no subscriber after %.0f s on: %s; playing anyway",
                        self.wait_timeout_s, ", ".join(unmatched()))
        self.subscribers_matched = ok
        return ok

    def _noting_progress(self, unmatched, deadline: float):
        """A `_spin_until` predicate: nothing unmatched; every WAIT_NOTE_PERIOD_S it logs what is
        still missing and how long the wait has left."""
        next_note = [time.monotonic() + self.WAIT_NOTE_PERIOD_S]

        def done() -> bool:
            missing = unmatched()
            now = time.monotonic()
            if missing and now >= next_note[0]:
                LOG.info("still waiting for subscribers on: %s (%.0f s left)",
                         ", ".join(missing), max(0.0, deadline - now))
                next_note[0] = now + self.WAIT_NOTE_PERIOD_S
            return not missing
        return done

    def play_once(self) -> None:
        """One pass over the bag."""
        wall0 = None
        t0 = None
        pending_stamp: int | None = None
        for item in self.source:
            if t0 is None:
                t0, wall0 = item.t_ns, time.monotonic()
            frame_stamp = item.frame_stamp_ns
            if frame_stamp is not None and pending_stamp is not None \
                    and frame_stamp != pending_stamp:
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
            if self.step and frame_stamp is not None:
                self._frame_items.append((item.topic, item.cdr))
            if frame_stamp is not None:
                if pending_stamp is None:
                    self.frames.append(FrameRecord(frame_stamp, time.time()))
                else:
                    self.frames[-1].published_wall = time.time()
                pending_stamp = frame_stamp
            self.executor.spin_once(timeout_sec=0)
        if pending_stamp is not None:
            self._finish_frame(pending_stamp)

    def _finish_frame(self, stamp: int) -> None:
        items, self._frame_items = self._frame_items, []
        if not self.step:
            return
        seen = lambda: stamp in self.outputs_seen  # noqa: E731
        wait_s = self.step_timeout_s / (STEP_RESENDS + 1)
        for attempt in range(STEP_RESENDS + 1):
            if self._spin_until(time.monotonic() + wait_s, seen):
                return
            if attempt < STEP_RESENDS:
                LOG.info("no output for stamp %d.%09d after %.0f s: publishing the frame again",
                         *ns_to_sec_nanosec(stamp), wait_s)
                for topic, cdr in items:
                    self.publishers[topic].publish(cdr)
                self.frames[-1].resent += 1
        LOG.warning("no output for stamp %d.%09d within %.0f s",
                    *ns_to_sec_nanosec(stamp), self.step_timeout_s)

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
                        "output_wall": f.output_wall, "resent": f.resent,
                        "latency_s": None if f.output_wall is None
                        else f.output_wall - f.published_wall} for f in self.frames],
            "unpaired_dropped": (self.source.last_grouper.dropped
                                 if self.source.last_grouper is not None else {}),
            "skipped_topics": self.source.skipped_topics,
        }
