"""The four-topic synchroniser: exact and approximate policies, queue bounds, drops with reasons.

The in-package StereoSynchronizer is tested directly; MessageFiltersSync is tested against the real
message_filters (../shared/thirdparty/python in CI, not on PyPI) and, so the wrapper is covered in
any clone, a small fake of its API: its drop accounting must see arrivals before the synchroniser
emits. The node runs under both synchronisers in test_node_e2e / test_node_bad_input.
"""

from __future__ import annotations

import types

import pytest

from stereo_depth_ros.ros import sync as s

try:  # the real message_filters reads stamps with rclpy.Time.from_msg
    from builtin_interfaces.msg import Time
except ImportError:  # pure-layer runs without ROS (make test-oldest)
    def Time(sec, nanosec):  # noqa: N802
        return types.SimpleNamespace(sec=sec, nanosec=nanosec)

TOPICS = ["/left/image_raw", "/right/image_raw", "/left/camera_info", "/right/camera_info"]


class Msg:
    def __init__(self, name: str, ns: int) -> None:
        self.name = name
        self.header = types.SimpleNamespace(stamp=Time(sec=ns // 1_000_000_000,
                                                       nanosec=ns % 1_000_000_000))

    def __repr__(self) -> str:
        return f"{self.name}@{s.stamp_ns(self)}"


def ms(value: float) -> int:
    return int(round(value * 1_000_000))


class Recorder:
    def __init__(self):
        self.sets, self.drops = [], []

    def on_set(self, *msgs):
        self.sets.append(msgs)

    def on_drop(self, drop):
        self.drops.append(drop)


def make(approximate=False, tolerance_s=0.0, queue_size=5):
    rec = Recorder()
    sync = s.StereoSynchronizer(rec.on_set, TOPICS, queue_size, approximate, tolerance_s,
                                rec.on_drop)
    return sync, rec


def feed(sync, left=None, right=None, linfo=None, rinfo=None, order=(0, 1, 2, 3)):
    stamps = [left, right, linfo, rinfo]
    for index in order:
        if stamps[index] is not None:
            sync.add(index, Msg("LRlr"[index], stamps[index]))


@pytest.mark.parametrize("order", [(0, 1, 2, 3), (3, 2, 1, 0), (2, 0, 3, 1)])
def test_exact_emits_once_in_topic_order_whatever_the_arrival_order(order):
    sync, rec = make()
    t = ms(100)
    feed(sync, t, t, t, t, order=order)
    assert len(rec.sets) == 1
    assert [m.name for m in rec.sets[0]] == ["L", "R", "l", "r"]
    assert sync.pending() == [0, 0, 0, 0] and not rec.drops
    assert sync.received == [1, 1, 1, 1]


def test_exact_needs_equal_stamps_and_reports_the_skew():
    sync, rec = make()
    feed(sync, ms(100), ms(130), ms(100), ms(100))
    assert not rec.sets
    feed(sync, ms(200), ms(200), ms(200), ms(200))
    assert [s.stamp_ns(m) for m in rec.sets[0]] == [ms(200)] * 4
    assert len(rec.drops) == 1
    drop = rec.drops[0]
    assert drop.reason == s.STAMP_SKEW and drop.stamp_ns == ms(100)
    assert "stamps too far apart" in drop.detail and "/right/image_raw" in drop.detail
    assert "+0.030000 s" in drop.detail and "exact sync needs equal stamps" in drop.detail


def test_a_lost_left_image_is_counted_once_as_lost_in_transport():
    sync, rec = make(queue_size=2)
    for i in range(8):  # frame 2 loses its left image; its camera_info and right image arrive
        feed(sync, None if i == 2 else ms(100 * i), ms(100 * i), ms(100 * i), ms(100 * i))
    assert len(rec.sets) == 7
    assert [(d.reason, d.stamp_ns) for d in rec.drops] == [(s.IMAGES_LOST_IN_TRANSPORT, ms(200))]
    assert "/left/camera_info stamp 0.200000 arrived but no image on /left/image_raw" in \
        rec.drops[0].detail


def test_a_frame_whose_both_images_are_lost_is_counted():
    """Nothing of the frame reaches the node but its camera_infos: still counted, once."""
    sync, rec = make(queue_size=2)
    for i in range(8):
        lost = i in (3, 4)
        feed(sync, None if lost else ms(100 * i), None if lost else ms(100 * i), ms(100 * i),
             ms(100 * i))
    assert len(rec.sets) == 6
    assert [(d.reason, d.stamp_ns) for d in rec.drops] == [
        (s.IMAGES_LOST_IN_TRANSPORT, ms(300)), (s.IMAGES_LOST_IN_TRANSPORT, ms(400))]


def test_camera_info_before_the_first_image_is_not_a_loss():
    sync, rec = make(queue_size=2)
    for i in range(3):                      # the camera driver starts with its infos
        feed(sync, None, None, ms(100 * i), ms(100 * i))
    for i in range(3, 8):
        feed(sync, ms(100 * i), ms(100 * i), ms(100 * i), ms(100 * i))
    assert len(rec.sets) == 5
    assert s.IMAGES_LOST_IN_TRANSPORT not in [d.reason for d in rec.drops]


def test_all_images_lost_after_a_good_start_keeps_counting():
    """Only camera_info keeps arriving: every frame is counted as it leaves the books."""
    sync, rec = make(queue_size=2)
    feed(sync, ms(0), ms(0), ms(0), ms(0))
    for i in range(1, 10):
        feed(sync, None, None, ms(100 * i), ms(100 * i))
    lost = [d.stamp_ns for d in rec.drops if d.reason == s.IMAGES_LOST_IN_TRANSPORT]
    assert lost == [ms(100 * i) for i in range(1, 6)]        # the last 4 are still on the books


def test_a_lost_partner_is_unmatched_not_skew():
    sync, rec = make()
    for i in range(6):  # 10 Hz, the right image of frame 3 is lost
        feed(sync, ms(100 * i), None if i == 3 else ms(100 * i), ms(100 * i), ms(100 * i))
    assert len(rec.sets) == 5
    assert [d.reason for d in rec.drops] == [s.UNMATCHED]
    assert "found no partner" in rec.drops[0].detail and "frame period 0.100000 s" in \
        rec.drops[0].detail


def test_missing_camera_info_is_reported_with_the_topic():
    sync, rec = make(queue_size=3)
    for i in range(8):  # frames leave the books after 2 * queue_size
        feed(sync, ms(100 * i), ms(100 * i), None, ms(100 * i))
    assert not rec.sets
    assert [d.reason for d in rec.drops] == [s.MISSING_CAMERA_INFO] * 2
    assert rec.drops[0].detail == "waiting for camera_info on /left/camera_info"
    assert max(sync.pending()) <= 3


def test_missing_right_image_is_reported():
    sync, rec = make(queue_size=2)
    for i in range(5):
        feed(sync, ms(10 * i), None, ms(10 * i), ms(10 * i))
    assert [d.reason for d in rec.drops] == [s.MISSING_IMAGE]
    assert "/right/image_raw" in rec.drops[0].detail


def test_missing_left_image_is_reported_once_the_right_queue_overflows():
    sync, rec = make(queue_size=2)
    for i in range(6):
        feed(sync, None, ms(10 * i), ms(10 * i), ms(10 * i))
    assert [d.reason for d in rec.drops] == [s.MISSING_IMAGE] * 2
    assert "/left/image_raw" in rec.drops[0].detail


def test_queues_stay_bounded():
    sync, rec = make(queue_size=4)
    for i in range(50):
        feed(sync, ms(i), ms(i + 0.5))  # never matches, no infos
        assert max(sync.pending()) <= 4
    assert len(rec.drops) == 46


def test_a_newer_set_discards_older_incomplete_ones():
    sync, rec = make()
    feed(sync, ms(10), None, ms(10), ms(10))
    feed(sync, ms(20), None, ms(20), ms(20))
    feed(sync, ms(30), ms(30), ms(30), ms(30))
    assert len(rec.sets) == 1 and len(rec.drops) == 2
    assert sync.pending() == [0, 0, 0, 0]
    feed(sync, None, ms(10))  # a late right image of an old set: nothing to pair with
    assert len(rec.sets) == 1


def test_approximate_pairs_within_the_tolerance():
    sync, rec = make(approximate=True, tolerance_s=0.005)
    feed(sync, ms(100), ms(103), ms(100), ms(103))
    assert len(rec.sets) == 1
    assert [s.stamp_ns(m) for m in rec.sets[0]] == [ms(100), ms(103), ms(100), ms(103)]


def test_approximate_rejects_sets_wider_than_the_tolerance():
    sync, rec = make(approximate=True, tolerance_s=0.005)
    feed(sync, ms(100), ms(120), ms(100), ms(100))
    assert not rec.sets
    feed(sync, ms(200), ms(201), ms(200), ms(200))
    assert len(rec.sets) == 1
    assert rec.drops[0].reason == s.STAMP_SKEW
    assert "+0.020000 s" in rec.drops[0].detail
    assert "approximate_sync_tolerance_seconds=0.005" in rec.drops[0].detail


def test_approximate_picks_the_nearest_partner():
    sync, rec = make(approximate=True, tolerance_s=0.02)
    feed(sync, None, ms(95), ms(100), ms(100))
    feed(sync, None, ms(104))
    feed(sync, ms(100))
    assert len(rec.sets) == 1
    assert s.stamp_ns(rec.sets[0][1]) == ms(104) or s.stamp_ns(rec.sets[0][1]) == ms(95)
    # nearest to the left image (100): 104 is 4 ms away, 95 is 5 ms away
    assert s.stamp_ns(rec.sets[0][1]) == ms(104)


def test_constructor_checks():
    with pytest.raises(ValueError, match="4 topics"):
        s.StereoSynchronizer(print, TOPICS[:3])
    with pytest.raises(ValueError, match="queue_size"):
        s.StereoSynchronizer(print, TOPICS, queue_size=0)
    with pytest.raises(ValueError, match="tolerance"):
        s.StereoSynchronizer(print, TOPICS, tolerance_s=-1.0)


# ----------------------------------------------------------------------- message_filters path
def _fake_message_filters():
    """Just enough of message_filters: SimpleFilter callbacks in registration order."""
    class SimpleFilter:
        def __init__(self):
            self.callbacks = []

        def registerCallback(self, cb, *args):  # noqa: N802  (message_filters API)
            self.callbacks.append((cb, args))

        def signalMessage(self, *msgs):  # noqa: N802
            for cb, args in self.callbacks:
                cb(*(msgs + args))

    class Subscriber(SimpleFilter):
        def __init__(self, node, msg_type, topic, qos_profile=None, **options):
            super().__init__()
            self.sub = node.create_subscription(msg_type, topic, self.signalMessage,
                                                qos_profile=qos_profile, **options)

    class TimeSynchronizer(SimpleFilter):
        def __init__(self, fs, queue_size):
            super().__init__()
            self.queues = [{} for _ in fs]
            for i, f in enumerate(fs):
                f.registerCallback(self.add, i)

        def add(self, msg, index):
            stamp = s.stamp_ns(msg)
            self.queues[index][stamp] = msg
            if all(stamp in q for q in self.queues):
                msgs = [q.pop(stamp) for q in self.queues]
                self.signalMessage(*msgs)

    return types.SimpleNamespace(Subscriber=Subscriber, TimeSynchronizer=TimeSynchronizer,
                                 ApproximateTimeSynchronizer=None)


class FakeNode:
    """create_subscription records (topic, qos, options, callback); messages are pushed by hand."""

    def __init__(self):
        self.created = []

    def create_subscription(self, msg_type, topic, callback, qos_profile=None, **options):
        sub = types.SimpleNamespace(topic=topic, qos_profile=qos_profile, options=options,
                                    callback=callback)
        self.created.append(sub)
        return sub


@pytest.fixture(params=["real", "fake"])
def message_filters_module(request):
    if request.param == "fake":
        return _fake_message_filters()
    request.getfixturevalue("real_ros_packages")
    import message_filters
    return message_filters


def test_message_filters_wrapper_counts_drops_like_the_in_package_one(message_filters_module):
    node = FakeNode()
    rec = Recorder()
    sync = s.MessageFiltersSync(node, [object] * 4, TOPICS, "qos", rec.on_set, queue_size=5,
                                on_drop=rec.on_drop,
                                message_filters_module=message_filters_module,
                                subscription_options=[{"tag": i} for i in range(4)])
    assert sync.implementation == "message_filters"
    assert [sub.topic for sub in node.created] == TOPICS
    assert all(sub.qos_profile == "qos" for sub in node.created)
    assert [sub.options for sub in node.created] == [{"tag": i} for i in range(4)]
    assert sync.subscriptions == node.created

    def push(index, ns):
        node.created[index].callback(Msg("LRlr"[index], ns))

    for index, ns in ((0, ms(100)), (1, ms(350)), (2, ms(100)), (3, ms(100))):
        push(index, ns)
    for index in range(4):
        push(index, ms(200))
    assert len(rec.sets) == 1 and s.stamp_ns(rec.sets[0][0]) == ms(200)
    assert [d.reason for d in rec.drops] == [s.STAMP_SKEW]
    assert sync.received == [2, 2, 2, 2]


def test_create_stereo_sync_takes_the_implementation_asked_for(monkeypatch):
    rec = Recorder()
    node = FakeNode()
    sync = s.create_stereo_sync(node, [object] * 4, TOPICS, "qos", rec.on_set,
                                implementation="in_package")
    assert isinstance(sync, s.StereoSynchronizer) and sync.implementation == "in_package"
    assert [sub.topic for sub in sync.subscriptions] == TOPICS
    monkeypatch.setattr(s, "message_filters_available", lambda: False)
    assert s.create_stereo_sync(FakeNode(), [object] * 4, TOPICS, "qos", rec.on_set,
                                implementation="auto").implementation == "in_package"
    with pytest.raises(RuntimeError, match="synchronizer=message_filters but the "
                                           "message_filters package is not importable"):
        s.create_stereo_sync(FakeNode(), [object] * 4, TOPICS, "qos", rec.on_set,
                             implementation="message_filters")
    with pytest.raises(ValueError, match="synchronizer='exact'"):
        s.create_stereo_sync(FakeNode(), [object] * 4, TOPICS, "qos", rec.on_set,
                             implementation="exact")


def test_auto_prefers_the_real_message_filters(real_ros_packages):
    sync = s.create_stereo_sync(FakeNode(), [object] * 4, TOPICS, "qos", Recorder().on_set)
    assert isinstance(sync, s.MessageFiltersSync)


def _looping_stream(push):
    """Frames at 10.0 .. 10.4 s, right images whose partners were lost (10.5 .. 10.9 s: they
    fill the right queue), then the bag loops to 5.0 s: the new timeline's left image comes
    first and camera_infos of the old one (10.5 s) are still in flight after it. Without a
    restart the stale right images outrank every new one in the queue: nothing pairs again."""
    for t in (10000, 10100, 10200, 10300, 10400):
        for index in range(4):
            push(index, ms(t))
    for t in (10500, 10600, 10700, 10800, 10900):
        push(1, ms(t))
    push(0, ms(10500))
    push(0, ms(5000))            # the jump
    push(2, ms(10500))           # old timeline, late: must not pair with anything
    push(3, ms(10500))
    for index in range(1, 4):
        push(index, ms(5000))
    for t in (5100, 5200):
        for index in range(4):
            push(index, ms(t))


def _check_loop(rec, resets):
    stamps = [[s.stamp_ns(m) for m in msgs] for msgs in rec.sets]
    assert all(len(set(frame)) == 1 for frame in stamps)            # never mis-paired
    assert [frame[0] for frame in stamps] == [ms(t) for t in (10000, 10100, 10200, 10300,
                                                              10400, 5000, 5100, 5200)]
    assert len(resets) == 1 and resets[0].startswith(
        "input stamps jumped back by 5.900 s on /left/image_raw (from 10.900000 to 5.000000: "
        "a looping bag or a sim-time reset)")


def test_in_package_sync_starts_over_when_the_stamps_jump_back():
    rec, resets = Recorder(), []
    sync = s.StereoSynchronizer(rec.on_set, TOPICS, 5, False, 0.0, rec.on_drop,
                                on_reset=resets.append)
    _looping_stream(lambda index, ns: sync.add(index, Msg("LRlr"[index], ns)))
    _check_loop(rec, resets)
    assert sync.pending() == [0, 0, 0, 0]


def test_approximate_in_package_sync_starts_over_when_the_stamps_jump_back():
    rec, resets = Recorder(), []
    sync = s.StereoSynchronizer(rec.on_set, TOPICS, 5, True, 0.01, rec.on_drop,
                                on_reset=resets.append)
    _looping_stream(lambda index, ns: sync.add(index, Msg("LRlr"[index], ns)))
    _check_loop(rec, resets)


def test_message_filters_wrapper_starts_over_when_the_stamps_jump_back(message_filters_module):
    node, rec, resets = FakeNode(), Recorder(), []
    s.MessageFiltersSync(node, [object] * 4, TOPICS, "qos", rec.on_set, queue_size=5,
                         on_drop=rec.on_drop, message_filters_module=message_filters_module,
                         on_reset=resets.append)
    _looping_stream(lambda index, ns: node.created[index].callback(Msg("LRlr"[index], ns)))
    _check_loop(rec, resets)
