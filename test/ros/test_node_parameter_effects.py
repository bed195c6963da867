"""Every parameter and output proven by its effect, not by its acceptance.

Real rclpy and Fast DDS. One SGBM node (a subprocess) serves rectify, depth limits, the SGBM
search range and frame ids; a second one (diagnostics every 0.5 s) the reported rates and, with
the first, the diagnostics period; a node on simulated time the input age. Synchronisation runs
three nodes per synchroniser (exact, approximate 10 ms, approximate 2 ms). The node in this
process with its test doubles is in test_node_in_process.py; PSMNet's options with the released
KITTI weights in test_node_psmnet.py.
"""

from __future__ import annotations

import statistics
import time

import numpy as np
import pytest

pytest.importorskip("rclpy")

from helpers.parameter_effects import (BACKGROUND, BACKGROUND_D, BACKGROUND_Z,  # noqa: E402
                                       FOREGROUND, FOREGROUND_D, FOREGROUND_Z, send_pair, set_ok,
                                       start_node, two_plane_scene, valid_disparity)
from helpers.ros import FRAME, OUTPUTS, Harness, NodeProcess, stop_node, wait_for  # noqa: E402
from helpers.ros_messages import (as_array, camera_info_msg, image_msg, stamp,  # noqa: E402
                                  stamp_ns, statuses_of, stereo_infos, time_ns)

from stereo_depth_ros.core.synthetic import make_unrectified_pair  # noqa: E402
from stereo_depth_ros.ros.messages import pointcloud2_to_numpy  # noqa: E402

pytestmark = [pytest.mark.ros, pytest.mark.slow]

SGBM = ["-p", "backend:=sgbm", "-p", "sgbm.num_disparities:=32", "-p", "sgbm.block_size:=5",
        "-p", "queue_size:=5"]
ALL_OUTPUTS = [name for name in OUTPUTS if name != "disparity/confidence"]   # SGBM has none
DISPARITY_ONLY = {"disparity": OUTPUTS["disparity"]}


@pytest.fixture(scope="module")
def scene():
    return two_plane_scene()


@pytest.fixture(scope="module")
def sgbm():
    node = start_node(SGBM + ["-p", "diagnostics_period_seconds:=0.2"])
    harness = None
    try:
        harness = Harness(node)
        harness.wait_until_connected(ALL_OUTPUTS)
        yield harness
    finally:
        stop_node(node, harness)


# ------------------------------------------------------------------------------ rectify
def test_rectify_false_publishes_the_raw_left_image_and_auto_or_true_remap_it(sgbm, scene):
    pair = make_unrectified_pair(scene)
    lc, rc = pair.left_calibration, pair.right_calibration

    def left_rect() -> np.ndarray:
        when = sgbm.next_stamp()
        left_info = camera_info_msg(lc.K, lc.D, lc.R, lc.P, 128, 96, when, FRAME)
        right_info = camera_info_msg(rc.K, rc.D, rc.R, rc.P, 128, 96, when, "right")
        sgbm.send(pair.left, pair.right, "rgb8", left_info, right_info, when)
        name = "matcher/left/image_rect"
        return as_array(sgbm.outputs_for(when, [name])[name])

    auto = left_rect()                                   # the default: rectify auto
    try:
        set_ok(sgbm, {"rectify": False})
        unrectified = left_rect()
        set_ok(sgbm, {"rectify": "true"})
        forced = left_rect()
    finally:
        set_ok(sgbm, {"rectify": "auto"})
    np.testing.assert_array_equal(unrectified, pair.left)          # untouched, bit for bit
    # auto remaps this distorted pair (D != 0, R != I): the scene's rectified view comes out.
    moved = np.abs(auto.astype(np.float32) - pair.left.astype(np.float32))
    assert np.mean(moved) > 10.0
    inner = (slice(12, 84), slice(30, 115))
    error = np.abs(auto[inner].astype(np.float32) - scene.left[inner].astype(np.float32))
    assert np.median(error) < 20.0 < np.median(moved[inner])
    np.testing.assert_array_equal(forced, auto)                    # true: the same maps


# ------------------------------------------------------------------------------ depth limits
def test_depth_limits_drop_one_plane_and_leave_the_other_unchanged(sgbm, scene):
    names = ["depth/image_rect", "points2"]

    def depth_and_cloud():
        out = send_pair(sgbm, scene.left, scene.right, scene.rig, names)
        return as_array(out["depth/image_rect"]).copy(), pointcloud2_to_numpy(out["points2"])

    depth0, cloud0 = depth_and_cloud()
    assert np.nanmedian(depth0[FOREGROUND]) == pytest.approx(FOREGROUND_Z, rel=0.02)
    assert np.nanmedian(depth0[BACKGROUND]) == pytest.approx(BACKGROUND_Z, rel=0.02)
    limit = 1.2                                   # between the two planes
    try:
        set_ok(sgbm, {"max_depth_m": limit})
        near_only = depth_and_cloud()
        set_ok(sgbm, {"max_depth_m": 0.0, "min_depth_m": limit})
        far_only = depth_and_cloud()
    finally:
        set_ok(sgbm, {"min_depth_m": 0.0, "max_depth_m": 0.0})
    for (depth, cloud), keep, dropped, kept in (
            (near_only, depth0 <= limit, BACKGROUND, FOREGROUND),
            (far_only, depth0 >= limit, FOREGROUND, BACKGROUND)):
        # Kept pixels: exactly the unlimited depth and point; every other pixel NaN in both.
        np.testing.assert_array_equal(depth, np.where(keep, depth0, np.nan))
        for axis in ("x", "y", "z"):
            np.testing.assert_array_equal(cloud[axis], np.where(keep, cloud0[axis], np.nan))
        assert np.isnan(depth[dropped]).mean() > 0.99           # the dropped plane is gone
        assert np.isfinite(depth[kept]).mean() > 0.9            # the other one is there


# ------------------------------------------------------------------------------ SGBM range
def test_sgbm_search_range_parameters_shape_the_published_disparity(sgbm, scene):
    def disparity():
        return send_pair(sgbm, scene.left, scene.right, scene.rig, ["disparity"])["disparity"]

    full = disparity()                                          # [0, 32): both planes found
    try:
        set_ok(sgbm, {"sgbm.min_disparity": 16, "sgbm.num_disparities": 16})
        shifted = disparity()                                   # [16, 32): background lost
        set_ok(sgbm, {"sgbm.min_disparity": 0})
        short = disparity()                                     # [0, 16): foreground lost
    finally:
        set_ok(sgbm, {"sgbm.min_disparity": 0, "sgbm.num_disparities": 32})
    assert (full.min_disparity, full.max_disparity) == (0.0, 31.0)       # inclusive ends
    assert (shifted.min_disparity, shifted.max_disparity) == (16.0, 31.0)
    assert (short.min_disparity, short.max_disparity) == (0.0, 15.0)
    d_full, d_shifted, d_short = (valid_disparity(m) for m in (full, shifted, short))
    assert np.nanmedian(d_full[FOREGROUND]) == pytest.approx(FOREGROUND_D, abs=0.2)
    assert np.nanmedian(d_full[BACKGROUND]) == pytest.approx(BACKGROUND_D, abs=0.2)
    assert np.nanmin(d_shifted) >= 16.0
    assert np.nanmedian(d_shifted[FOREGROUND]) == pytest.approx(FOREGROUND_D, abs=0.2)
    assert np.nanmax(d_short) < 16.0
    assert np.nanmedian(d_short[BACKGROUND]) == pytest.approx(BACKGROUND_D, abs=0.2)
    # The unsearchable left band grows with min_disparity + num_disparities.
    assert np.isnan(d_short[:, :12]).all() and np.isfinite(d_short[BACKGROUND][:, :10]).any()


# ------------------------------------------------------------------------------ frame ids
def test_outputs_carry_the_left_camera_info_frame_id(sgbm, scene):
    # The same calibration, first under FRAME, then under another frame id: outputs follow it.
    for info_frame in (FRAME, "left_camera_from_info"):
        out = send_pair(sgbm, scene.left, scene.right, scene.rig, ALL_OUTPUTS,
                        frame=info_frame, image_frame="camera_sensor_frame")
        assert {name: msg.header.frame_id for name, msg in out.items()} == {
            name: info_frame for name in ALL_OUTPUTS}
    # A camera_info without frame_id: the left image's frame is the best there is.
    out = send_pair(sgbm, scene.left, scene.right, scene.rig, ALL_OUTPUTS, frame="",
                    image_frame="camera_sensor_frame")
    assert {msg.header.frame_id for msg in out.values()} == {"camera_sensor_frame"}
    assert out["disparity"].image.header.frame_id == "camera_sensor_frame"


# ------------------------------------------------------------------------------ synchronisation
SKEW_NS = 5_000_000                                    # right image and info 5 ms after the left
INPUT_TOPICS = ("left/image_raw", "right/image_raw", "left/camera_info", "right/camera_info")
SYNC_CONFIGS = {  # namespace -> (approximate_sync, tolerance s, pairs the skewed set?)
    "/exact": (False, 0.01, False),
    "/approx_10ms": (True, 0.01, True),
    "/approx_2ms": (True, 0.002, False),
}


@pytest.mark.parametrize("synchronizer", ["in_package", "message_filters"])
def test_approximate_sync_and_its_tolerance_decide_what_is_paired(synchronizer, scene, request):
    if synchronizer == "message_filters":
        request.getfixturevalue("real_ros_packages")
    nodes = {ns: NodeProcess(SGBM + [
        "-r", f"__ns:={ns}", "-p", f"synchronizer:={synchronizer}",
        "-p", f"approximate_sync:={str(approximate).lower()}",
        "-p", f"approximate_sync_tolerance_seconds:={tolerance}",
        "-p", "diagnostics_period_seconds:=0.2"]).start()
        for ns, (approximate, tolerance, _) in SYNC_CONFIGS.items()}
    harnesses = {}
    try:
        for ns, node in nodes.items():
            node.wait_for_output(rf"ready: backend=sgbm.*sync={synchronizer} "
                                 rf"{'approximate' if SYNC_CONFIGS[ns][0] else 'exact'}")
            # Stamps 0.5 s apart: a 5 ms offset is a skew, not a lost frame.
            harnesses[ns] = Harness(node, DISPARITY_ONLY, namespace=ns, min_step_s=0.5)
        for harness in harnesses.values():
            harness.wait_until_connected(["disparity"])
        sent = {}
        for ns, h in harnesses.items():
            first = h.next_stamp()
            h.send(scene.left, scene.right, "rgb8", *stereo_infos(scene.rig, first, FRAME), first)
            h.out["disparity"].wait_for_stamp(first)
            left_stamp = h.next_stamp()
            right_ns = time_ns(left_stamp) + SKEW_NS
            right_stamp = stamp(right_ns // 10**9, right_ns % 10**9)
            left_info, right_info = stereo_infos(scene.rig, left_stamp, FRAME)
            right_info.header.stamp = right_stamp
            h.send_msgs(image_msg(scene.left, "rgb8", left_stamp, FRAME),
                        image_msg(scene.right, "rgb8", right_stamp, FRAME),
                        left_info, right_info)
            # Whatever the policy made of the skewed set, it is done with once the four
            # messages are in and nothing waits for the worker ...
            h.wait_status(lambda s: all(int(s.get(f"messages_in.{ns}/{topic}", 0)) >= 2
                                        for topic in INPUT_TOPICS)
                          and s["pending_pairs"] == "0" and s["pairs_in"] == s["pairs_processed"],
                          what="the skewed set to be in")
            last = h.next_stamp()                  # ... and a good pair settles the accounts
            h.send(scene.left, scene.right, "rgb8", *stereo_infos(scene.rig, last, FRAME), last)
            h.out["disparity"].wait_for_stamp(last)
            sent[ns] = (left_stamp, right_stamp, last)
        for ns, h in harnesses.items():
            left_stamp, right_stamp, last = sent[ns]
            paired = SYNC_CONFIGS[ns][2]
            status = h.wait_status(lambda s: int(s.get("pairs_published", 0)) >= 2 + paired
                                   and int(s["pairs_in"]) + int(s.get("dropped_total", 0)) >= 3)
            stamps = [stamp_ns(m) for m in h.out["disparity"].snapshot()]
            assert int(status.get("dropped.stamp_skew", 0)) == (0 if paired else 1), (ns, status)
            assert int(status["pairs_in"]) == 2 + paired, (ns, status)
            assert time_ns(right_stamp) not in stamps, ns     # never stamped with the right's
            if paired:                                        # stamped with the left stamp
                msg = h.out["disparity"].wait_for_stamp(left_stamp, 1.0)
                d = valid_disparity(msg)
                assert np.nanmedian(d[BACKGROUND]) == pytest.approx(BACKGROUND_D, abs=0.2)
            else:
                assert time_ns(left_stamp) not in stamps, ns
                h.node.wait_for_output(r"stamps too far apart: /\w+/left/image_raw stamp .*"
                                       r"\(\+0\.005000 s; ")
    finally:
        for ns, node in nodes.items():
            stop_node(node, harnesses.get(ns))


# ------------------------------------------------------------------------------ diagnostics
@pytest.fixture(scope="module")
def slow():
    """A node reporting every 0.5 s (rates over windows long enough to count several pairs)."""
    node = start_node(SGBM + ["-r", "__ns:=/slow", "-p", "diagnostics_period_seconds:=0.5"])
    harness = None
    try:
        harness = Harness(node, DISPARITY_ONLY, namespace="/slow")
        harness.wait_until_connected(["disparity"])
        yield harness
    finally:
        stop_node(node, harness)


def test_reported_rates_match_the_send_rate(slow, scene):
    period_s, count = 0.1, 30
    sent_at = []
    start = time.monotonic()
    for k in range(count):               # paced sending (the known rate), not waiting on a result
        time.sleep(max(0.0, start + k * period_s - time.monotonic()))
        when = slow.next_stamp()
        slow.send(scene.left, scene.right, "rgb8", *stereo_infos(scene.rig, when, FRAME), when)
        sent_at.append(time_ns(when))
    slow.out["disparity"].wait_for_stamp(stamp(sent_at[-1] // 10**9, sent_at[-1] % 10**9))
    wait_for(lambda: statuses_of(slow.diagnostics, slow.fqn)[-1][0] > sent_at[-1], 10,
             what="a report after the last pair")
    statuses = statuses_of(slow.diagnostics, slow.fqn)
    send_rate = (count - 1) / ((sent_at[-1] - sent_at[0]) / 1e9)
    rates_in, rates_out = [], []
    for (t0, _), (t1, status) in zip(statuses, statuses[1:]):
        if t0 >= sent_at[0] + 0.2e9 and t1 <= sent_at[-1]:     # windows inside the sending span
            rates_in.append(float(status["rate_in_hz"]))
            rates_out.append(float(status["rate_out_hz"]))
    # Each window's rate is the rate we sent at (pairs in the window / its length).
    assert len(rates_in) >= 3, statuses
    assert statistics.median(rates_in) == pytest.approx(send_rate, rel=0.25), rates_in
    assert statistics.median(rates_out) == pytest.approx(send_rate, rel=0.25), rates_out


def test_diagnostics_period_sets_the_report_spacing(sgbm, slow):
    def spacing(h: Harness) -> float:
        wait_for(lambda: len(statuses_of(h.diagnostics, h.fqn)) >= 8, 10,
                 what=f"8 reports of {h.fqn}")
        stamps = [t for t, _ in statuses_of(h.diagnostics, h.fqn)]
        return statistics.median(np.diff(stamps) / 1e9)

    fast_s, slow_s = spacing(sgbm), spacing(slow)
    assert fast_s == pytest.approx(0.2, rel=0.25)
    assert slow_s == pytest.approx(0.5, rel=0.25)
    assert 2.0 <= slow_s / fast_s <= 3.1


def test_input_age_is_measured_on_the_node_clock_sim_time(scene):
    from rosgraph_msgs.msg import Clock
    node = start_node(SGBM + ["-r", "__ns:=/sim", "-p", "use_sim_time:=true",
                              "-p", "diagnostics_period_seconds:=0.2"])
    h = None
    try:
        h = Harness(node, DISPARITY_ONLY, namespace="/sim")
        clock = h.ctx.publisher(Clock, "/clock")
        t_ns = 1_000 * 10**9

        def set_clock(ns: int, step_ns: int = 0, predicate=lambda status: True) -> dict:
            """Publish /clock (advancing by step_ns per try) until the node reports at one of
            the published times and the report satisfies predicate; that report."""
            published = []

            def reported():
                now = ns + len(published) * step_ns
                clock.publish(Clock(clock=stamp(now // 10**9, now % 10**9)))
                published.append(now)
                done = [s for t, s in statuses_of(h.diagnostics, h.fqn)
                        if t in published and predicate(s)]
                return done[-1] if done else None
            return wait_for(reported, 30, interval=0.1, what=f"a report at sim time {ns}")

        for pub in h.pubs:
            wait_for(lambda: pub.get_subscription_count() > 0, 20,
                     what=f"the node subscribing to {pub.topic_name}")
        # Sim time runs (from T - 100 s on) until the node reports our subscription ...
        set_clock(t_ns - 100 * 10**9, step_ns=3 * 10**8,
                  predicate=lambda s: s.get("subscribers./sim/disparity") == "1")
        set_clock(t_ns)                       # ... then stays at T for a pair taken at T - 2 s
        when = stamp(t_ns // 10**9 - 2)
        h.send(scene.left, scene.right, "rgb8", *stereo_infos(scene.rig, when, FRAME), when)
        h.out["disparity"].wait_for_stamp(when)
        status = set_clock(t_ns + 5 * 10**8)
        assert int(status["pairs_published"]) == 1
        for stat in ("p50", "p95", "max", "mean"):
            assert float(status[f"input_age_ms.{stat}"]) == pytest.approx(2000.0, abs=0.001)
    finally:
        stop_node(node, h)
