"""Time synchronisation of the four stereo inputs: left/right image + left/right camera_info.

`create_stereo_sync` uses message_filters (TimeSynchronizer / ApproximateTimeSynchronizer) when it
is importable, and otherwise the in-package `StereoSynchronizer` with the same policies:

- exact: a set is emitted when all four topics hold a message with the same stamp;
- approximate: when a message arrives, the nearest-stamped message of every other topic is taken;
  the set is emitted when all four stamps lie within `tolerance_s` of each other.

Either way each topic keeps at most `queue_size` messages, and after a set is emitted everything
older is discarded. Both report every left image that never became part of a set through
`on_drop(SyncDrop)`, with a reason: `missing_camera_info` (nothing ever arrived on a camera_info
topic), `missing_image` (nothing ever arrived on the other image topic), `stamp_skew` (the partner
is there but its stamp differs by more than the policy allows; the detail gives the offset) or
`unmatched` (the partner never arrived: lost in transport, or queue_size too small). Skew and loss
are told apart by the frame period: a partner closer than half a period belongs to the same frame.
When the stamps of an input go back (a looping bag, a sim-time reset) both start over: queues and
books cleared, `on_reset` told once, and messages of the old timeline still in flight on the other
inputs ignored, so nothing is paired across the jump and nothing waits for stamps that will
never come.
Frames whose left image never came while their left camera_info did are counted once each as
`images_lost_in_transport` (also when both images of the frame were lost).
"""

from __future__ import annotations

import copy
import threading
import time
from collections import deque
from dataclasses import dataclass
from typing import Callable, Sequence

from stereo_depth_ros.core.stamps import ns_to_seconds_text, seconds_to_ns, stamp_to_ns
from stereo_depth_ros.drop_reasons import (IMAGES_LOST_IN_TRANSPORT, MISSING_CAMERA_INFO,
                                           MISSING_IMAGE, STAMP_SKEW, UNMATCHED)

LEFT_IMAGE, RIGHT_IMAGE, LEFT_INFO, RIGHT_INFO = range(4)
TIME_JUMP_NS = 1_000_000_000
"""A stamp this far (1 s) behind the newest on its input is a jump back in time (a looping bag,
a sim-time reset), not a late message."""
STALE_WINDOW_S = 1.0
"""How long after a jump messages of the old timeline may still be in flight."""


@dataclass(frozen=True)
class SyncDrop:
    """A left image that was never paired: reason (diagnostics key), its stamp, a log detail."""

    reason: str
    stamp_ns: int
    detail: str


def stamp_ns(msg) -> int:
    """header.stamp of a message in integer nanoseconds."""
    return stamp_to_ns(msg.header.stamp)


_seconds = ns_to_seconds_text


class _DropAccounting:
    """Which frames (image stamps) were never emitted, and why. Callers hold a lock.

    A frame is counted once: by its left image, or by its right image when the left one never
    arrived (lost). Frames leave the books when a set with them (or a newer one) is emitted, or
    when more than 2 * queue_size frames are pending.
    """

    def __init__(self, topics: Sequence[str], queue_size: int, approximate: bool,
                 tolerance_ns: int) -> None:
        self.topics = list(topics)
        self.queue_size = queue_size
        self.approximate = approximate
        self.tolerance_ns = tolerance_ns
        self.received = [0, 0, 0, 0]
        self.history = [deque(maxlen=max(4, 2 * queue_size)) for _ in range(4)]
        self.pending: dict[int, int] = {}  # image stamp -> bit mask of LEFT_IMAGE / RIGHT_IMAGE
        self.infos: dict[int, bool] = {}   # left camera_info stamps not yet retired
        self.left_images: deque[int] = deque(maxlen=max(16, 4 * queue_size))
        self.latest: list[int | None] = [None, None, None, None]   # newest stamp per input
        self.stale_above: int | None = None  # after a jump back: stamps of the old timeline
        self.old_newest = 0                   # ... up to the newest stamp before the jump
        self.stale_until = 0.0                # ... for this long (monotonic s)
        self.clock = time.monotonic

    def check_time(self, index: int, stamp: int) -> tuple[str, str]:
        """('ok'|'jump'|'stale', log text) for a message of input `index` stamped `stamp`.

        'jump': the stamp went back on this input (a looping bag, a sim-time reset): the
        books are cleared (the caller clears its queues) and the message starts the new
        timeline. 'stale': within STALE_WINDOW_S of the jump, a message of the old timeline
        still in flight on another input (stamped between the midpoint of the jump and the
        newest stamp before it): ignored, it can have no partners and would look like a
        second jump.
        """
        if self.stale_above is not None:
            if self.clock() > self.stale_until:
                self.stale_above = None
            elif self.stale_above < stamp <= self.old_newest:
                return "stale", ""
        latest = self.latest[index]
        if latest is None or stamp > latest - TIME_JUMP_NS:
            self.latest[index] = stamp if latest is None else max(stamp, latest)
            return "ok", ""
        newest = max(t for t in self.latest if t is not None)
        text = (f"input stamps jumped back by {(newest - stamp) / 1e9:.3f} s on "
                f"{self.topics[index]} (from {_seconds(newest)} to {_seconds(stamp)}: a looping "
                "bag or a sim-time reset): the synchroniser starts over")
        self.pending.clear()
        self.infos.clear()
        self.left_images.clear()
        for history in self.history:
            history.clear()
        self.latest = [None, None, None, None]
        self.latest[index] = stamp
        self.stale_above = stamp + (newest - stamp) // 2
        self.old_newest = newest
        self.stale_until = self.clock() + STALE_WINDOW_S
        return "jump", text

    def note(self, index: int, stamp: int) -> list[SyncDrop]:
        """Record an arrival; returns the frames pushed off the books."""
        self.received[index] += 1
        self.history[index].append(stamp)
        drops: list[SyncDrop] = []
        if index == LEFT_IMAGE:
            self.left_images.append(stamp)
        if index in (LEFT_IMAGE, RIGHT_IMAGE):
            self.pending[stamp] = self.pending.get(stamp, 0) | (1 << index)
            while len(self.pending) > 2 * self.queue_size:
                oldest = min(self.pending)
                self._drop(oldest, self.pending.pop(oldest), drops)
        if index == LEFT_INFO:
            self.infos[stamp] = True
            while len(self.infos) > 2 * self.queue_size:
                self._retire_info(min(self.infos), drops)
        return drops

    def matched(self, left_stamp: int, right_stamp: int | None = None) -> list[SyncDrop]:
        """A set with these image stamps was emitted: older pending frames are dropped."""
        right_stamp = left_stamp if right_stamp is None else right_stamp
        self.pending.pop(left_stamp, None)
        self.pending.pop(right_stamp, None)
        drops: list[SyncDrop] = []
        for stamp in sorted(t for t in self.pending if t < max(left_stamp, right_stamp)):
            self._drop(stamp, self.pending.pop(stamp), drops)
        for stamp in sorted(t for t in self.infos if t <= left_stamp):
            self._retire_info(stamp, drops)
        return drops

    def _has_left_image(self, stamp: int) -> bool:
        reach = self.tolerance_ns if self.approximate else 0
        return any(abs(other - stamp) <= reach for other in self.left_images)

    def _retire_info(self, stamp: int, drops: list[SyncDrop]) -> None:
        """A left camera_info leaves the books: if its frame's left image never arrived (while
        images do arrive in general), the image was lost before the node."""
        del self.infos[stamp]
        if self.received[LEFT_IMAGE] == 0 or self._has_left_image(stamp):
            return
        if not self.left_images or stamp < self.left_images[0]:   # before the images started
            return
        drops.append(SyncDrop(IMAGES_LOST_IN_TRANSPORT, stamp, (
            f"{self.topics[LEFT_INFO]} stamp {_seconds(stamp)} arrived but no image on "
            f"{self.topics[LEFT_IMAGE]}: the image was lost before the node")))

    def _drop(self, stamp: int, mask: int, drops: list[SyncDrop]) -> None:
        if mask & (1 << LEFT_IMAGE):
            drops.append(self.classify(stamp))
            return
        if self.received[LEFT_IMAGE] == 0:
            drops.append(SyncDrop(MISSING_IMAGE, stamp,
                                  f"no image received on {self.topics[LEFT_IMAGE]} yet"))
            return
        # A right image alone: counted only when no left image of the same frame came (that one
        # is counted by its own entry) and no left camera_info either (then the frame is counted
        # once, as images_lost_in_transport, when that info retires).
        period = self._frame_period()
        if period is None:
            return
        reach = max(self.tolerance_ns if self.approximate else 0, period // 2)
        if any(abs(left - stamp) <= reach for left in self.history[LEFT_IMAGE]):
            return
        if any(abs(info - stamp) <= reach for info in self.history[LEFT_INFO]):
            return
        drops.append(SyncDrop(UNMATCHED, stamp, (
            f"{self.topics[RIGHT_IMAGE]} stamp {_seconds(stamp)} found no partner on "
            f"{self.topics[LEFT_IMAGE]}: it was lost in transport or arrived after queue_size "
            "messages")))

    def classify(self, stamp: int) -> SyncDrop:
        """Why the left image with this stamp found no partners."""
        for index in (LEFT_INFO, RIGHT_INFO):
            if self.received[index] == 0:
                return SyncDrop(MISSING_CAMERA_INFO, stamp,
                                f"waiting for camera_info on {self.topics[index]}")
        if self.received[RIGHT_IMAGE] == 0:
            return SyncDrop(MISSING_IMAGE, stamp,
                            f"no image received on {self.topics[RIGHT_IMAGE]} yet")
        limit = self.tolerance_ns if self.approximate else 0
        worst_index, worst_offset = RIGHT_IMAGE, None
        for index in (RIGHT_IMAGE, LEFT_INFO, RIGHT_INFO):
            offsets = [other - stamp for other in self.history[index]]
            if not offsets:
                continue
            nearest = min(offsets, key=abs)
            if abs(nearest) > limit and (worst_offset is None or abs(nearest) > abs(worst_offset)):
                worst_index, worst_offset = index, nearest
        period = self._frame_period()
        if worst_offset is None or (period is not None and abs(worst_offset) >= period / 2):
            nearest = "" if worst_offset is None else (
                f"; nearest {self.topics[worst_index]} is {worst_offset / 1e9:+.6f} s away, frame "
                f"period {period / 1e9:.6f} s")
            return SyncDrop(UNMATCHED, stamp, (
                f"{self.topics[LEFT_IMAGE]} stamp {_seconds(stamp)} found no partner: it was lost "
                f"in transport or arrived after queue_size messages{nearest}"))
        policy = (f"approximate_sync_tolerance_seconds={self.tolerance_ns / 1e9:g}"
                  if self.approximate else "exact sync needs equal stamps")
        return SyncDrop(STAMP_SKEW, stamp, (
            f"stamps too far apart: {self.topics[LEFT_IMAGE]} stamp {_seconds(stamp)}, nearest "
            f"{self.topics[worst_index]} stamp {_seconds(stamp + worst_offset)} "
            f"({worst_offset / 1e9:+.6f} s; {policy})"))

    def _frame_period(self) -> int | None:
        """Lower median spacing of recent left image stamps (ns); None with fewer than 3."""
        stamps = sorted(set(self.history[LEFT_IMAGE]))
        gaps = [b - a for a, b in zip(stamps, stamps[1:])]
        if len(gaps) < 2:
            return None
        gaps.sort()
        return gaps[(len(gaps) - 1) // 2]


class StereoSynchronizer:
    """In-package exact/approximate synchroniser of (left, right image; left, right info).

    callback(left_image, right_image, left_info, right_info) runs in the thread that called `add`,
    after the internal lock is released. on_drop(SyncDrop) likewise.
    """

    implementation = "in_package"

    def __init__(self, callback: Callable, topics: Sequence[str], queue_size: int = 10,
                 approximate: bool = False, tolerance_s: float = 0.0,
                 on_drop: Callable[[SyncDrop], None] | None = None,
                 on_reset: Callable[[str], None] | None = None) -> None:
        if len(topics) != 4:
            raise ValueError(f"need 4 topics, got {len(topics)}")
        if queue_size < 1:
            raise ValueError(f"queue_size must be >= 1, got {queue_size}")
        if tolerance_s < 0:
            raise ValueError(f"tolerance_s must be >= 0, got {tolerance_s}")
        self.topics = list(topics)
        self.queue_size = int(queue_size)
        self.approximate = bool(approximate)
        self.tolerance_ns = seconds_to_ns(tolerance_s)
        self._callback = callback
        self._on_drop = on_drop
        self._on_reset = on_reset
        self._queues: list[dict[int, object]] = [{} for _ in range(4)]
        self._lock = threading.Lock()
        self._accounting = _DropAccounting(self.topics, self.queue_size, self.approximate,
                                           self.tolerance_ns)

    @property
    def received(self) -> list[int]:
        """Messages received per input, in topic order."""
        return list(self._accounting.received)

    def set_display_names(self, names: Sequence[str]) -> None:
        """Topic names used in drop details (e.g. resolved names)."""
        self._accounting.topics = list(names)

    def add(self, index: int, msg) -> None:
        """Feed one message of input `index` (0 left image, 1 right image, 2/3 left/right info)."""
        stamp = stamp_ns(msg)
        with self._lock:
            verdict, reset_text = self._accounting.check_time(index, stamp)
            if verdict == "stale":
                return
            if verdict == "jump":
                for queue in self._queues:
                    queue.clear()
            drops = self._accounting.note(index, stamp)
            queue = self._queues[index]
            queue[stamp] = msg
            while len(queue) > self.queue_size:
                del queue[min(queue)]
            stamps = self._find_set(index, stamp)
            emitted = None
            if stamps is not None:
                emitted = [self._queues[i].pop(s) for i, s in enumerate(stamps)]
                for i, s in enumerate(stamps):
                    for old in [t for t in self._queues[i] if t < s]:
                        del self._queues[i][old]
                drops += self._accounting.matched(stamps[LEFT_IMAGE], stamps[RIGHT_IMAGE])
        if reset_text and self._on_reset is not None:
            self._on_reset(reset_text)
        if self._on_drop is not None:
            for drop in drops:
                self._on_drop(drop)
        if emitted is not None:
            self._callback(*emitted)

    def _find_set(self, index: int, stamp: int) -> list[int] | None:
        if not self.approximate:
            if all(stamp in queue for queue in self._queues):
                return [stamp] * 4
            return None
        stamps = []
        for i, queue in enumerate(self._queues):
            if i == index:
                stamps.append(stamp)
                continue
            if not queue:
                return None
            stamps.append(min(queue, key=lambda t: abs(t - stamp)))
        if max(stamps) - min(stamps) > self.tolerance_ns:
            return None
        return stamps

    def pending(self) -> list[int]:
        """Messages waiting per input."""
        with self._lock:
            return [len(queue) for queue in self._queues]


class MessageFiltersSync:
    """message_filters synchronisation with the same drop accounting as StereoSynchronizer."""

    implementation = "message_filters"

    def __init__(self, node, msg_types: Sequence[type], topics: Sequence[str], qos,
                 callback: Callable, queue_size: int = 10, approximate: bool = False,
                 tolerance_s: float = 0.0, on_drop: Callable[[SyncDrop], None] | None = None,
                 message_filters_module=None,
                 subscription_options: Sequence[dict] | None = None,
                 on_reset: Callable[[str], None] | None = None) -> None:
        mf = message_filters_module
        if mf is None:
            import message_filters as mf  # noqa: PLC0415
        self.topics = list(topics)
        self._callback = callback
        self._on_drop = on_drop
        self._on_reset = on_reset
        self._lock = threading.Lock()
        self._accounting = _DropAccounting(self.topics, int(queue_size), bool(approximate),
                                           seconds_to_ns(tolerance_s))
        options = subscription_options or [{}] * len(topics)
        # One profile object per subscription: rclpy applies qos_overrides to the object given.
        self.subscribers = [mf.Subscriber(node, msg_type, topic, qos_profile=copy.copy(qos),
                                          **extra)
                            for msg_type, topic, extra in zip(msg_types, topics, options)]
        self.subscriptions = [subscriber.sub for subscriber in self.subscribers]
        # The taps go first so that an arrival is noted before the synchroniser can emit it.
        for index, subscriber in enumerate(self.subscribers):
            subscriber.registerCallback(self._tap, index)
        if approximate:
            self.synchronizer = mf.ApproximateTimeSynchronizer(self.subscribers, int(queue_size),
                                                               float(tolerance_s))
        else:
            self.synchronizer = mf.TimeSynchronizer(self.subscribers, int(queue_size))
        self.synchronizer.registerCallback(self._on_set)

    @property
    def received(self) -> list[int]:
        return list(self._accounting.received)

    def set_display_names(self, names: Sequence[str]) -> None:
        self._accounting.topics = list(names)

    def _report(self, drops: list[SyncDrop]) -> None:
        if self._on_drop is not None:
            for drop in drops:
                self._on_drop(drop)

    def _tap(self, msg, index: int) -> None:
        stamp = stamp_ns(msg)
        with self._lock:
            verdict, reset_text = self._accounting.check_time(index, stamp)
            if verdict == "jump":
                self._clear_synchronizer()
            drops = [] if verdict == "stale" else self._accounting.note(index, stamp)
        if reset_text and self._on_reset is not None:
            self._on_reset(reset_text)
        self._report(drops)

    def _clear_synchronizer(self) -> None:
        """Empty message_filters' queues (a time jump: nothing queued can pair any more).
        Its TimeSynchronizer and ApproximateTimeSynchronizer keep `queues` under `lock`."""
        queues = getattr(self.synchronizer, "queues", None)
        if queues is None:
            return
        with getattr(self.synchronizer, "lock", None) or threading.Lock():
            for queue in queues:
                queue.clear()

    def _on_set(self, *msgs) -> None:
        with self._lock:
            drops = self._accounting.matched(stamp_ns(msgs[LEFT_IMAGE]),
                                             stamp_ns(msgs[RIGHT_IMAGE]))
        self._report(drops)
        self._callback(*msgs)

    def destroy(self, node) -> None:
        for subscriber in self.subscribers:
            sub = getattr(subscriber, "sub", None)
            if sub is not None:
                node.destroy_subscription(sub)


def message_filters_available() -> bool:
    try:
        import message_filters  # noqa: F401, PLC0415
    except ImportError:
        return False
    return True


def create_stereo_sync(node, msg_types: Sequence[type], topics: Sequence[str], qos,
                       callback: Callable, queue_size: int = 10, approximate: bool = False,
                       tolerance_s: float = 0.0,
                       on_drop: Callable[[SyncDrop], None] | None = None,
                       implementation: str = "auto",
                       display_names: Sequence[str] | None = None,
                       subscription_options: dict | None = None,
                       event_callbacks: Callable[[int], object] | None = None,
                       on_reset: Callable[[str], None] | None = None):
    """Subscribe to the four topics on `node` and synchronise them.

    display_names: the topic names drop messages use (e.g. the resolved, remapped names).
    subscription_options: extra keyword arguments of every create_subscription (e.g.
    qos_overriding_options). event_callbacks(index) -> the SubscriptionEventCallbacks of input
    `index` (e.g. to report incompatible QoS per topic). on_reset(text): the stamps jumped back
    (a looping bag, a sim-time reset) and the synchroniser started over.

    implementation: 'message_filters', 'in_package' or 'auto' (message_filters when importable);
    asking for message_filters where it is not importable raises RuntimeError.

    Returns the synchroniser (`.implementation` is 'message_filters' or 'in_package', `.received`
    counts messages per topic, `.subscriptions` holds the four rclpy subscriptions).
    """
    options = [dict(subscription_options or {}) for _ in range(4)]
    if event_callbacks is not None:
        for index in range(4):
            options[index]["event_callbacks"] = event_callbacks(index)
    if implementation not in ("auto", "message_filters", "in_package"):
        raise ValueError(f"synchronizer={implementation!r} must be auto, message_filters or "
                         "in_package")
    if implementation == "message_filters" and not message_filters_available():
        raise RuntimeError("synchronizer=message_filters but the message_filters package is not "
                           "importable (a ROS 2 install has it: ros-<distro>-message-filters); "
                           "use auto or in_package")
    if implementation != "in_package" and message_filters_available():
        sync = MessageFiltersSync(node, msg_types, topics, qos, callback, queue_size,
                                  approximate, tolerance_s, on_drop,
                                  subscription_options=options, on_reset=on_reset)
    else:
        sync = StereoSynchronizer(callback, topics, queue_size, approximate, tolerance_s,
                                  on_drop, on_reset=on_reset)
        # One profile object per subscription: rclpy applies qos_overrides to the object given.
        sync.subscriptions = [
            node.create_subscription(msg_type, topic, _adder(sync, index), copy.copy(qos),
                                     **options[index])
            for index, (msg_type, topic) in enumerate(zip(msg_types, topics))]
    if display_names is not None:
        sync.set_display_names(display_names)
    return sync


def destroy_stereo_sync(node, sync) -> None:
    """Destroy the four subscriptions `create_stereo_sync` made on `node` (either kind of
    synchroniser): the node stops receiving, and the graph no longer lists it on the topics."""
    for subscription in getattr(sync, "subscriptions", ()):
        node.destroy_subscription(subscription)
    sync.subscriptions = []


def _adder(sync: StereoSynchronizer, index: int) -> Callable:
    def add(msg) -> None:
        sync.add(index, msg)
    return add
