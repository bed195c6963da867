"""The /diagnostics verdict (ros.input_health) on a fake clock: each rule fires within the window
(or 3 frames of a slow camera), names its cause, and clears once output flows again."""

from __future__ import annotations

import pytest

from stereo_depth_ros.ros.input_health import OK, WARN, InputHealth

TOPICS = ["/cam/left/image_raw", "/cam/right/image_raw", "/cam/left/camera_info",
          "/cam/right/camera_info"]


class Feed:
    """A node's view: counts per topic and a stats snapshot, advanced by `tick`."""

    def __init__(self, transport: str = "raw") -> None:
        self.now = 0.0
        self.health = InputHealth(TOPICS, transport, clock=lambda: self.now)
        self.received = [0, 0, 0, 0]
        self.snapshot = {"pairs_processed": 0, "dropped": {}, "counters": {}}

    def tick(self, seconds: float, arriving=(0, 1, 2, 3), rate_hz: float = 10.0,
             processed: bool = False, drops: dict[str, int] | None = None, step: float = 0.5):
        """Advance `seconds` in ticks of `step`; arriving topics get rate_hz messages a second."""
        verdict = None
        for _ in range(round(seconds / step)):
            self.now += step
            for index in arriving:
                self.received[index] += max(1, round(rate_hz * step)) if rate_hz * step >= 1 \
                    else int(self.now * rate_hz) - int((self.now - step) * rate_hz)
            if processed:
                self.snapshot["pairs_processed"] += 1
            for reason, count in (drops or {}).items():
                dropped = self.snapshot["dropped"]
                dropped[reason] = dropped.get(reason, 0) + count
            verdict = self.health.update(list(self.received), dict(self.snapshot))
        return verdict


def test_flowing_inputs_and_outputs_are_ok():
    feed = Feed()
    assert feed.tick(10, processed=True) == (OK, "ok")


def test_nothing_yet_is_waiting_not_a_warning():
    feed = Feed()
    level, message = feed.tick(2, arriving=())
    assert level == OK and message.startswith("waiting for input on /cam/left/image_raw")


@pytest.mark.parametrize("transport, other", [("raw", "compressed"), ("compressed", "raw")])
def test_camera_info_without_images_names_the_likely_causes(transport, other):
    feed = Feed(transport)
    feed.tick(4.5, arriving=(2, 3))
    assert feed.health.update(list(feed.received), feed.snapshot)[0] == OK   # < 5 s: not yet
    level, message = feed.tick(0.5, arriving=(2, 3))
    assert level == WARN
    assert message.startswith("camera_info arrives but no images on /cam/left/image_raw, "
                              "/cam/right/image_raw")
    assert f"needs image_transport:={other}" in message
    assert "QoS" in message and "large-image Fast DDS profile" in message


def test_slow_camera_is_judged_after_three_frames_not_five_seconds():
    """0.5 Hz: camera_info every 2 s; images stop -> WARN after 3 missed frames (~6 s)."""
    feed = Feed()
    feed.tick(2, rate_hz=0.5, processed=True)
    for _ in range(40):                # a normal 0.5 Hz stream never looks silent
        assert feed.tick(0.5, rate_hz=0.5, processed=True) == (OK, "ok")
    assert feed.tick(4.5, arriving=(2, 3), rate_hz=0.5)[0] == OK
    level, message = feed.tick(1.5, arriving=(2, 3), rate_hz=0.5)
    assert level == WARN and message.startswith("camera_info arrives but no images")


def test_images_without_camera_info():
    feed = Feed()
    level, message = feed.tick(5, arriving=(0, 1))
    assert level == WARN
    assert message.startswith("images arrive but no camera_info on /cam/left/camera_info, "
                              "/cam/right/camera_info (none since the node subscribed 5 s ago)")


@pytest.mark.parametrize("arriving, side, silent", [
    ((0, 2), "right", "/cam/right/image_raw, /cam/right/camera_info"),
    ((1, 3), "left", "/cam/left/image_raw, /cam/left/camera_info")])
def test_one_side_only_names_the_silent_side(arriving, side, silent):
    feed = Feed()
    feed.tick(3, processed=True)
    level, message = feed.tick(5, arriving=arriving)
    assert level == WARN
    assert message.startswith(f"only one side arrives: nothing on the {side} camera ({silent}) "
                              "(none for 5 s)")


def test_qos_incompatibility_on_an_input_warns_until_output_flows():
    feed = Feed()
    feed.tick(2, processed=True)
    feed.snapshot["counters"] = {"qos_incompatible./cam/left/image_raw": 1}
    level, message = feed.tick(0.5, processed=False)
    assert level == WARN and message.startswith("/cam/left/image_raw: a publisher's QoS is "
                                                "incompatible")
    assert feed.tick(3)[0] == WARN                      # still nothing out
    assert feed.tick(0.5, processed=True) == (OK, "ok")  # output flows again
    feed.snapshot["counters"] = {"qos_incompatible./cam/disparity": 1}   # an output: not here
    assert feed.tick(0.5, processed=True) == (OK, "ok")


def test_every_pair_dropped_names_the_top_reason():
    feed = Feed()
    feed.tick(3, processed=True)
    level, message = feed.tick(6, drops={"uncalibrated_camera_info": 5, "busy": 1})
    assert level == WARN
    assert message.startswith("every pair of the last 5 s was dropped (60): top reason "
                              "uncalibrated_camera_info (50;")
    assert feed.tick(0.5, processed=True) == (OK, "ok")   # output flows again


def test_inputs_arriving_but_nothing_out_is_a_stall():
    feed = Feed()
    level, message = feed.tick(5)
    assert level == WARN and message.startswith("nothing published for 5 s while all inputs "
                                                "arrive")


def test_a_slow_frame_in_flight_is_not_a_stall_until_far_longer_than_usual():
    feed = Feed()
    feed.snapshot["latency_ms"] = {"total": {"mean": 8000.0}}      # 8 s PSMNet frames
    feed.tick(1, processed=True)
    feed.snapshot["in_flight_s"] = 10.0
    assert feed.tick(10)[0] == OK
    feed.snapshot["in_flight_s"] = 25.0
    level, message = feed.tick(0.5)
    assert level == WARN and message.startswith("the worker has been on one pair for 25 s")


def test_disparity_only_warns_while_it_lasts():
    feed = Feed()
    feed.snapshot["counters"] = {"depth_unavailable.zero_baseline": 1}
    level, message = feed.tick(1, processed=True)
    assert level == WARN and "depth_unavailable.zero_baseline" in message
    assert feed.tick(6, processed=True) == (OK, "ok")    # no new such pair for a window


def test_no_camera_at_all_warns_after_the_window():
    feed = Feed()
    assert feed.tick(4.5, arriving=())[0] == OK
    level, message = feed.tick(0.5, arriving=())
    assert level == WARN and message.startswith(
        "no input on any of /cam/left/image_raw, /cam/right/image_raw, /cam/left/camera_info, "
        "/cam/right/camera_info (none since the node subscribed 5 s ago)")


def test_camera_stopping_and_resuming_warns_then_recovers():
    feed = Feed()
    feed.tick(3, processed=True)
    assert feed.tick(4.5, arriving=())[0] == OK
    level, message = feed.tick(5.5, arriving=())
    assert level == WARN and message.startswith("no input on any of") and "(none for 10 s)" in \
        message
    assert feed.tick(0.5, processed=True) == (OK, "ok")
