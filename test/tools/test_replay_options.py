"""stereo_depth_replay's options, each proven by its effect: --list/--rate/--loop/--clock-hz
(the player driven by a fake clock, so the schedule is checked exactly and never by wall-clock
timing). Expected values are written out by hand or derived from the fixture's numbers, not
from the code under test."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pytest


NS = 1_000_000_000


# =================================================================== stereo_depth_replay

# bag time (s after the first message) and topic of every message in the test bag
BAG_MESSAGES = [(0.0, "/a"), (0.5, "/b"), (1.0, "/a"), (2.0, "/a"), (2.5, "/b"), (3.0, "/a")]
BAG_START_NS = 100 * NS


@pytest.fixture(scope="module")
def string_bag(tmp_path_factory) -> Path:
    """A ROS 2 bag: /a (std_msgs/String) x4 and /b x2 at the times of BAG_MESSAGES."""
    from rosbags.rosbag2 import StoragePlugin, Writer
    from rosbags.typesys import Stores, get_typestore

    typestore = get_typestore(Stores.ROS2_KILTED)
    path = tmp_path_factory.mktemp("replay") / "bag"
    with Writer(path, version=9, storage_plugin=StoragePlugin.SQLITE3) as writer:
        connections = {}
        for k, (offset_s, topic) in enumerate(BAG_MESSAGES):
            if topic not in connections:
                connections[topic] = writer.add_connection(topic, "std_msgs/msg/String",
                                                           typestore=typestore)
            message = typestore.types["std_msgs/msg/String"](data=f"message {k}")
            writer.write(connections[topic], BAG_START_NS + int(offset_s * NS),
                         bytes(typestore.serialize_cdr(message, "std_msgs/msg/String")))
    return path


def test_replay_list_gives_each_topic_with_its_message_count(string_bag, caplog):
    pytest.importorskip("rclpy")
    from stereo_depth_ros.tools import replay

    caplog.set_level(logging.INFO, logger="stereo_depth_ros.tools.replay")
    assert replay.main([str(string_bag), "--list"]) == 0
    lines = [r.getMessage() for r in caplog.records if r.name == "stereo_depth_ros.tools.replay"]
    assert lines == ["/a: 4 messages", "/b: 2 messages"]


def texts(sent) -> list[str]:
    """The std_msgs/String data of recorded (wall time, CDR bytes) publications."""
    from rosbags.typesys import Stores, get_typestore

    typestore = get_typestore(Stores.ROS2_KILTED)
    return [typestore.deserialize_cdr(cdr, "std_msgs/msg/String").data for _, cdr in sent]


class FakeClock:
    """time.monotonic()/time.time() of the player; advanced only by the fake executor."""

    def __init__(self, start: float = 1024.0) -> None:
        self.now = start

    def monotonic(self) -> float:
        return self.now

    def time(self) -> float:
        return self.now


class _Recorder:
    """Stands in for a publisher: records (fake wall time, payload)."""

    def __init__(self, clock: FakeClock) -> None:
        self.clock = clock
        self.sent: list[tuple[float, object]] = []

    def publish(self, message) -> None:
        if hasattr(message, "clock"):                       # rosgraph_msgs/Clock: keep the ns
            message = message.clock.sec * NS + message.clock.nanosec
        self.sent.append((self.clock.now, message))


@pytest.fixture
def fake_player(monkeypatch):
    """Run stereo_depth_replay's main() with a Player whose clock, executor and publishers are
    fakes: spinning advances the fake clock by the timeout asked for, so the schedule is exact.
    Returns (run(argv, passes=None) -> (exit code, players), clock)."""
    pytest.importorskip("rclpy")
    from stereo_depth_ros.ros import bag_player
    from stereo_depth_ros.tools import replay

    clock = FakeClock()
    monkeypatch.setattr(bag_player, "time", clock)
    players = []

    class RecordingPlayer(bag_player.Player):
        stop_after_passes: int | None = None

        def __init__(self, *args, **kwargs) -> None:
            super().__init__(*args, **kwargs)
            self.passes = 0
            self.sent = _Recorder(clock)
            self.publishers = {topic: self.sent for topic in self.publishers}
            self.clock_sent = _Recorder(clock)
            if self.clock_pub is not None:
                self.clock_pub = self.clock_sent
            self.executor.spin_once = self._fake_spin_once
            players.append(self)

        @staticmethod
        def _fake_spin_once(timeout_sec: float | None = None) -> None:
            clock.now += max(0.0, timeout_sec or 0.0)

        def play_once(self) -> None:
            super().play_once()
            self.passes += 1
            if self.stop_after_passes is not None and self.passes >= self.stop_after_passes:
                raise replay.Interrupted()            # how SIGTERM ends a --loop replay

    monkeypatch.setattr(replay, "Player", RecordingPlayer)

    def run(argv: list[str], passes: int | None = None):
        RecordingPlayer.stop_after_passes = passes
        code = replay.main(argv + ["--wait-timeout", "0"])
        return code, players

    return run, clock


@pytest.mark.parametrize("rate, expected_offsets_s", [
    ("1", [0.0, 0.5, 1.0, 2.0, 2.5, 3.0]),           # the bag's own spacing
    ("2", [0.0, 0.25, 0.5, 1.0, 1.25, 1.5]),         # twice as fast: half the spacing
    ("0.5", [0.0, 1.0, 2.0, 4.0, 5.0, 6.0]),
    ("0", [0.0] * 6),                                # as fast as possible: no waiting
])
def test_replay_rate_scales_the_publishing_schedule(string_bag, fake_player, rate,
                                                    expected_offsets_s):
    run, _ = fake_player
    code, (player,) = run([str(string_bag), "--rate", rate])
    assert code == 0
    sent = player.sent.sent
    assert texts(sent) == [f"message {k}" for k in range(6)]
    wall0 = sent[0][0]
    offsets = [wall - wall0 for wall, _ in sent]
    assert offsets == pytest.approx(expected_offsets_s, abs=1e-9)
    assert player.clock_sent.sent == []                   # no --clock: no /clock


@pytest.mark.parametrize("rate, hz", [(1.0, 8), (1.0, 4), (2.0, 8)])
def test_replay_clock_hz_sets_the_clock_rate_between_messages(string_bag, fake_player, rate,
                                                              hz):
    run, _ = fake_player
    code, (player,) = run([str(string_bag), "--rate", str(rate), "--clock",
                           "--clock-hz", str(hz)])
    assert code == 0
    ticks = player.clock_sent.sent
    wall0 = player.sent.sent[0][0]
    span_wall_s = 3.0 / rate                              # the bag lasts 3 s of bag time
    # about `hz` messages per second of playing, the first and last included
    assert span_wall_s * hz <= len(ticks) <= span_wall_s * hz + 2, len(ticks)
    walls = [wall for wall, _ in ticks]
    assert max(np.diff(walls)) <= 1.0 / hz + 1e-9           # never a longer gap than 1/hz
    # every /clock says the bag time of its moment: start + (wall - wall0) * rate
    for wall, clock_ns in ticks:
        assert clock_ns == pytest.approx(BAG_START_NS + (wall - wall0) * rate * NS, abs=1)
    # ... and each message goes out with /clock at its own bag time
    values = {clock_ns for _, clock_ns in ticks}
    assert {BAG_START_NS + int(offset * NS) for offset, _ in BAG_MESSAGES} <= values


def test_replay_loop_plays_the_bag_again(string_bag, fake_player, tmp_path):
    run, _ = fake_player
    stats = tmp_path / "stats.json"
    code, (player,) = run([str(string_bag), "--rate", "0", "--loop", "--stats-json",
                           str(stats)], passes=3)
    assert code == 130                                   # ended by the (simulated) SIGTERM
    assert player.passes == 3
    assert texts(player.sent.sent) == [f"message {k}" for k in range(6)] * 3
    assert json.loads(stats.read_text())["published"] == {"/a": 12, "/b": 6}
    # without --loop: one pass, then a normal exit
    code, players = run([str(string_bag), "--rate", "0", "--stats-json", str(stats)],
                        passes=None)
    assert code == 0 and players[-1].passes == 1
    assert json.loads(stats.read_text())["published"] == {"/a": 4, "/b": 2}
