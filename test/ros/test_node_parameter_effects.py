"""Every parameter and output proven by its effect, not by its acceptance.

Real rclpy and Fast DDS. One SGBM node (a subprocess) serves rectify, depth limits, the SGBM
search range and frame ids; a second one (diagnostics every 0.5 s) the reported rates and, with
the first, the diagnostics period; a node on simulated time the input age. Synchronisation runs
three nodes per synchroniser (exact, approximate 10 ms, approximate 2 ms). A node in this process
(real DDS around it) holds the test doubles: a matcher that fails once, and spies on what is
built. PSMNet runs with the released KITTI weights on one small real crop.
"""

from __future__ import annotations

import statistics
import time

import cv2
import numpy as np
import pytest

pytest.importorskip("rclpy")

from helpers.process import assert_clean_exit  # noqa: E402
from helpers.ros import FRAME, OUTPUTS, Harness, NodeProcess, wait_for  # noqa: E402
from helpers.ros_messages import (as_array, camera_info_msg, image_msg, stamp,  # noqa: E402
                                  stamp_ns, statuses_of, stereo_infos, time_ns)
from helpers.ros_nodes import InProcessNode, set_parameters  # noqa: E402
from helpers.samples import kitti_crop  # noqa: E402

from stereo_depth_ros.backends.sgbm import SgbmBackend  # noqa: E402
from stereo_depth_ros.core.synthetic import make_scene, make_unrectified_pair  # noqa: E402
from stereo_depth_ros.ros.messages import pointcloud2_to_numpy  # noqa: E402

pytestmark = [pytest.mark.ros, pytest.mark.slow]

FX, BASELINE = 200.0, 0.1
BACKGROUND_D, FOREGROUND_D = 14.0, 22.0        # px: depth 1.43 m and 0.91 m
BACKGROUND_Z, FOREGROUND_Z = FX * BASELINE / BACKGROUND_D, FX * BASELINE / FOREGROUND_D
FOREGROUND = (slice(38, 58), slice(50, 80))    # inside the box u 42.7-85.3, v 32-64
BACKGROUND = (slice(72, 92), slice(44, 124))
SGBM = ["-p", "backend:=sgbm", "-p", "sgbm.num_disparities:=32", "-p", "sgbm.block_size:=5",
        "-p", "queue_size:=5"]
ALL_OUTPUTS = [name for name in OUTPUTS if name != "disparity/confidence"]   # SGBM has none
DISPARITY_ONLY = {"disparity": OUTPUTS["disparity"]}


@pytest.fixture(scope="module")
def scene():
    return make_scene(96, 128, background_disparity=BACKGROUND_D,
                      foreground_disparity=FOREGROUND_D, fx=FX, baseline_m=BASELINE,
                      texture_cell_px=2.0, seed=7)


def _start(args: list[str], ready: str = r"ready: backend=sgbm",
           timeout: float = 60.0) -> NodeProcess:
    node = NodeProcess(args).start()
    try:
        node.wait_for_output(ready, timeout=timeout)
    except BaseException:
        node.stop()
        raise
    return node


def _stop(node: NodeProcess, harness: Harness | None = None) -> None:
    if harness is not None:
        harness.close()
    code = node.stop()
    assert_clean_exit(node.output(), code)


@pytest.fixture(scope="module")
def sgbm():
    node = _start(SGBM + ["-p", "diagnostics_period_seconds:=0.2"])
    harness = None
    try:
        harness = Harness(node)
        harness.wait_until_connected(ALL_OUTPUTS)
        yield harness
    finally:
        _stop(node, harness)


def send_pair(h: Harness, left, right, rig, names, frame: str = FRAME, encoding="rgb8",
              image_frame: str = FRAME) -> dict:
    """Publish one pair (stamped now) with the rectified infos of rig; its outputs by name."""
    when = h.next_stamp()
    left_info, right_info = stereo_infos(rig, when, frame)
    h.send_msgs(image_msg(left, encoding, when, image_frame),
                image_msg(right, encoding, when, image_frame), left_info, right_info)
    return h.outputs_for(when, names)


def set_ok(h: Harness, values: dict) -> None:
    results = set_parameters(h.ctx.node, h.fqn, values)
    assert all(r.successful for r in results), [r.reason for r in results]


def valid_disparity(msg) -> np.ndarray:
    """Disparity values of a DisparityImage with NaN where the message marks them invalid."""
    d = as_array(msg.image).astype(np.float32)
    return np.where(d >= msg.min_disparity, d, np.nan)


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


# ------------------------------------------------------------------------------ in process
class _FailsOnce:
    """The node's matcher, except that the next compute() raises (a crashing matcher)."""

    def __init__(self, backend) -> None:
        self._backend = backend
        self.calls = 0

    def __getattr__(self, name):
        return getattr(self._backend, name)

    def compute(self, left, right):
        self.calls += 1
        if self.calls == 1:
            raise RuntimeError("matcher crashed on purpose")
        return self._backend.compute(left, right)


@pytest.fixture(scope="module")
def inproc():
    node = InProcessNode("/inproc", {"backend": "sgbm", "sgbm.num_disparities": 32,
                                     "diagnostics_period_seconds": 0.2})
    harness = None
    try:
        harness = Harness(node, outputs={}, namespace="/inproc")
        harness.wait_until_connected([])
        yield harness
    finally:
        if harness is not None:
            harness.close()
        node.close()


def _subscribe(h: Harness, name: str):
    """A collector on one of the node's outputs, once the node's publisher counts it."""
    from helpers.ros_messages import msg_type
    collector = h.ctx.collect(msg_type(OUTPUTS[name]), f"{h.ns}/{name}")
    h.wait_status(lambda s: int(s.get(f"subscribers.{h.ns}/{name}", 0)) >= 1,
                  what=f"the node counting our {name} subscription")
    return collector


def _unsubscribe(h: Harness, name: str, collector) -> None:
    h.ctx.node.destroy_subscription(collector.subscription)
    h.wait_status(lambda s: s.get(f"subscribers.{h.ns}/{name}") == "0",
                  what=f"the node seeing our {name} subscription go")


def test_outputs_are_built_only_for_topics_with_subscribers(inproc, scene, monkeypatch):
    from stereo_depth_ros.ros import stereo_depth_core as node_module
    node = inproc.node.node
    calls, built = [], {"points2": 0, "depth": 0}
    process = node._pipeline.process

    def spy_process(*args, **kwargs):
        result = process(*args, **kwargs)
        calls.append((kwargs, result.depth_m is not None, result.points is not None))
        return result

    def counting(name, function):
        def wrapper(*args, **kwargs):
            built[name] += 1
            return function(*args, **kwargs)
        return wrapper

    monkeypatch.setattr(node._pipeline, "process", spy_process)
    monkeypatch.setattr(node_module, "make_pointcloud2",
                        counting("points2", node_module.make_pointcloud2))
    monkeypatch.setattr(node_module, "make_depth_image",
                        counting("depth", node_module.make_depth_image))
    disparity = _subscribe(inproc, "disparity")
    points = None
    try:
        status = inproc.latest_status()
        assert status["subscribers./inproc/points2"] == "0"
        assert status["subscribers./inproc/depth/image_rect"] == "0"
        when = inproc.next_stamp()
        inproc.send(scene.left, scene.right, "rgb8", *stereo_infos(scene.rig, when, FRAME), when)
        disparity.wait_for_stamp(when)
        # Only disparity is listened to: neither depth nor points computed nor built.
        assert calls == [({"depth": False, "points": False}, False, False)]
        assert built == {"points2": 0, "depth": 0}

        points = _subscribe(inproc, "points2")
        when = inproc.next_stamp()
        inproc.send(scene.left, scene.right, "rgb8", *stereo_infos(scene.rig, when, FRAME), when)
        cloud = pointcloud2_to_numpy(points.wait_for_stamp(when))
        disparity.wait_for_stamp(when)
        # points2 needs depth: both computed, the cloud built; the depth image still is not.
        assert calls[1:] == [({"depth": True, "points": True}, True, True)]
        assert built == {"points2": 1, "depth": 0}
        assert np.nanmedian(cloud["z"][BACKGROUND]) == pytest.approx(BACKGROUND_Z, rel=0.02)
    finally:
        _unsubscribe(inproc, "disparity", disparity)
        if points is not None:
            _unsubscribe(inproc, "points2", points)


def test_an_exception_in_the_worker_is_counted_logged_and_survived(inproc, scene):
    from rcl_interfaces.msg import Log
    from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
    node = inproc.node.node
    # /rosout keeps the node's recent log lines (transient local): nothing is missed.
    rosout = inproc.ctx.collect(Log, "/rosout", qos=QoSProfile(
        depth=1000, reliability=ReliabilityPolicy.RELIABLE,
        durability=DurabilityPolicy.TRANSIENT_LOCAL))
    disparity = _subscribe(inproc, "disparity")
    failing = _FailsOnce(node.backend)
    before = inproc.latest_status()
    node._pipeline.backend = failing
    try:
        bad = inproc.next_stamp()
        inproc.send(scene.left, scene.right, "rgb8", *stereo_infos(scene.rig, bad, FRAME), bad)
        status = inproc.wait_status(lambda s: int(s.get("dropped.processing_error", 0)) >= 1,
                                    what="dropped.processing_error")
        assert status["last_problem"] == ("processing_error: RuntimeError: matcher crashed on "
                                          "purpose")
        log = rosout.wait_for(lambda m: "processing failed" in m.msg, what="the error log line")
        assert log.level == Log.ERROR and log.name == "inproc.stereo_depth_node"
        assert log.msg == ("processing failed: RuntimeError: matcher crashed on purpose -> "
                           "pair dropped (dropped.processing_error)")
        good = inproc.next_stamp()                # the node keeps serving
        inproc.send(scene.left, scene.right, "rgb8", *stereo_infos(scene.rig, good, FRAME), good)
        d = valid_disparity(disparity.wait_for_stamp(good))
        assert np.nanmedian(d[BACKGROUND]) == pytest.approx(BACKGROUND_D, abs=0.2)
    finally:
        node._pipeline.backend = failing._backend
        inproc.ctx.node.destroy_subscription(rosout.subscription)
        _unsubscribe(inproc, "disparity", disparity)
    assert failing.calls == 2
    assert all(stamp_ns(m) != time_ns(bad) for m in disparity.snapshot())
    status = inproc.wait_status(lambda s: int(s["pairs_published"])
                                >= int(before.get("pairs_published", 0)) + 1)
    assert int(status["dropped.processing_error"]) == 1
    assert int(status["pairs_in"]) - int(before["pairs_in"]) == 2


SGBM_GETTERS = {  # option -> the cv2.StereoSGBM getter that reads it back
    "min_disparity": "getMinDisparity", "num_disparities": "getNumDisparities",
    "block_size": "getBlockSize", "uniqueness_ratio": "getUniquenessRatio",
    "speckle_window_size": "getSpeckleWindowSize", "speckle_range": "getSpeckleRange",
    "disp12_max_diff": "getDisp12MaxDiff", "pre_filter_cap": "getPreFilterCap",
}


def _matcher(backend) -> cv2.StereoSGBM:
    """The cv2.StereoSGBM object compute() runs."""
    return backend.matcher


def _read_back(matcher) -> dict:
    values = {name: getattr(matcher, getter)() for name, getter in SGBM_GETTERS.items()}
    values.update(P1=matcher.getP1(), P2=matcher.getP2(), mode=matcher.getMode())
    return values


NON_DEFAULT = {"min_disparity": -8, "num_disparities": 48, "block_size": 7,
               "uniqueness_ratio": 3, "speckle_window_size": 50, "speckle_range": 4,
               "disp12_max_diff": -1, "pre_filter_cap": 31}


def test_every_sgbm_option_is_set_on_the_opencv_matcher():
    backend = SgbmBackend(num_disparities=32)
    assert _read_back(_matcher(backend)) == {
        "min_disparity": 0, "num_disparities": 32, "block_size": 5, "uniqueness_ratio": 10,
        "speckle_window_size": 100, "speckle_range": 2, "disp12_max_diff": 1,
        "pre_filter_cap": 63, "P1": 8 * 25, "P2": 32 * 25, "mode": cv2.STEREO_SGBM_MODE_SGBM}
    # Colour matching: OpenCV's default penalties count three channels.
    backend.update(**NON_DEFAULT, mode="hh", grayscale=False)
    assert _read_back(_matcher(backend)) == {**NON_DEFAULT, "P1": 8 * 3 * 49,
                                             "P2": 32 * 3 * 49, "mode": cv2.STEREO_SGBM_MODE_HH}
    for mode, value in (("sgbm_3way", cv2.STEREO_SGBM_MODE_SGBM_3WAY),
                        ("hh4", cv2.STEREO_SGBM_MODE_HH4)):
        backend.update(p1=300, p2=5000, mode=mode)
        assert _read_back(_matcher(backend)) == {**NON_DEFAULT, "P1": 300, "P2": 5000,
                                                 "mode": value}


def test_live_sgbm_parameters_reach_the_opencv_matcher_through_the_service(inproc):
    node = inproc.node.node
    original = {f"sgbm.{name}": node.config.get(f"sgbm.{name}") for name in
                (*NON_DEFAULT, "mode", "grayscale", "p2", "p1")}
    assert node._pipeline.backend is node.backend
    try:
        set_ok(inproc, {**{f"sgbm.{k}": v for k, v in NON_DEFAULT.items()},
                        "sgbm.mode": "hh", "sgbm.grayscale": False})
        assert _read_back(_matcher(node.backend)) == {
            **NON_DEFAULT, "P1": 8 * 3 * 49, "P2": 32 * 3 * 49, "mode": cv2.STEREO_SGBM_MODE_HH}
        set_ok(inproc, {"sgbm.p2": 5000, "sgbm.p1": 300, "sgbm.mode": "hh4"})
        assert _read_back(_matcher(node.backend)) == {
            **NON_DEFAULT, "P1": 300, "P2": 5000, "mode": cv2.STEREO_SGBM_MODE_HH4}
        rejected = set_parameters(inproc.ctx.node, inproc.fqn, {"sgbm.block_size": 8})[0]
        assert not rejected.successful
        assert _matcher(node.backend).getBlockSize() == 7         # a refused value changes nothing
    finally:
        set_ok(inproc, {"sgbm.p1": 0, "sgbm.p2": 0})
        set_ok(inproc, {name: value for name, value in original.items()
                        if name not in ("sgbm.p1", "sgbm.p2")})
    assert _read_back(_matcher(node.backend))["num_disparities"] == 32


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
            _stop(node, harnesses.get(ns))


# ------------------------------------------------------------------------------ diagnostics
@pytest.fixture(scope="module")
def slow():
    """A node reporting every 0.5 s (rates over windows long enough to count several pairs)."""
    node = _start(SGBM + ["-r", "__ns:=/slow", "-p", "diagnostics_period_seconds:=0.5"])
    harness = None
    try:
        harness = Harness(node, DISPARITY_ONLY, namespace="/slow")
        harness.wait_until_connected(["disparity"])
        yield harness
    finally:
        _stop(node, harness)


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
    node = _start(SGBM + ["-r", "__ns:=/sim", "-p", "use_sim_time:=true",
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
        _stop(node, h)


# ------------------------------------------------------------------------------ PSMNet
PSM_MAX_DISPARITY = 64
CONFIDENCE_THRESHOLD = 0.85


def test_psmnet_options_reach_the_model_confidence_masks_all_outputs(assets_dir, kitti_weights):
    """engine auto on the CPU runs the exact fused engine, max_disparity sets the searched range,
    and confidence_threshold invalidates the same pixels in disparity, depth and points2."""
    names = ["disparity", "disparity/confidence", "depth/image_rect", "points2"]
    left, right, rig = kitti_crop(assets_dir)
    node = _start(["-r", "__ns:=/psm", "-p", "backend:=psmnet", "-p", f"weights_path:="
                   f"{kitti_weights}", "-p", "device:=cpu", "-p", "engine:=auto",
                   "-p", f"max_disparity:={PSM_MAX_DISPARITY}", "-p", "use_color:=false",
                   "-p", f"confidence_threshold:={CONFIDENCE_THRESHOLD}",
                   "-p", "max_relative_uncertainty:=0.0",      # only the threshold masks here
                   "-p", "diagnostics_period_seconds:=0.5"],
                  ready=r"ready: backend=psmnet", timeout=120)
    h = None
    try:
        node.wait_for_output(rf"ready: backend=psmnet \(range \[0, {PSM_MAX_DISPARITY}\) px; "
                             r"psmnet engine=exact on cpu: fused CPU engine, mode exact")
        h = Harness(node, {n: OUTPUTS[n] for n in names}, namespace="/psm")
        h.wait_until_connected(names)
        masked = send_pair(h, left, right, rig, names)
        set_ok(h, {"confidence_threshold": 0.0})
        unmasked = send_pair(h, left, right, rig, names)
    finally:
        _stop(node, h)
    for out in (masked, unmasked):
        assert out["disparity"].max_disparity == PSM_MAX_DISPARITY - 1      # inclusive
    confidence = as_array(masked["disparity/confidence"])
    np.testing.assert_array_equal(confidence, as_array(unmasked["disparity/confidence"]))
    low = confidence < CONFIDENCE_THRESHOLD
    assert 0.05 < low.mean() < 0.6                    # the threshold splits this crop
    results = {}
    for key, out in (("masked", masked), ("unmasked", unmasked)):
        d = valid_disparity(out["disparity"])
        depth = as_array(out["depth/image_rect"])
        cloud = pointcloud2_to_numpy(out["points2"])
        assert np.nanmax(d) < PSM_MAX_DISPARITY
        results[key] = (d, depth, cloud)
        # One invalid set in all three outputs.
        np.testing.assert_array_equal(np.isnan(depth), np.isnan(d))
        for axis in ("x", "y", "z"):
            np.testing.assert_array_equal(np.isnan(cloud[axis]), np.isnan(d))
    d, depth, cloud = results["masked"]
    d0, depth0, cloud0 = results["unmasked"]
    assert np.isfinite(d0).all()
    np.testing.assert_array_equal(np.isnan(d), low)   # exactly the low-confidence pixels
    np.testing.assert_array_equal(d[~low], d0[~low])  # the rest untouched
    np.testing.assert_array_equal(depth[~low], depth0[~low])
    np.testing.assert_array_equal(cloud["z"][~low], cloud0["z"][~low])


def test_psmnet_engine_is_reported_and_bad_combinations_stop_the_node(kitti_weights):
    runs = {
        "reference": ["-p", "engine:=reference", "-p", "max_disparity:=48"],
        "bf16_reference": ["-p", "engine:=reference", "-p", "precision:=bf16"],
        "basic_model": ["-p", "model:=basic"],
    }
    base = ["-p", "backend:=psmnet", "-p", f"weights_path:={kitti_weights}", "-p", "device:=cpu"]
    nodes = {name: NodeProcess(base + ["-r", f"__ns:=/{name}"] + args).start()
             for name, args in runs.items()}
    try:
        codes = {name: nodes[name].wait_exit(120) for name in ("bf16_reference", "basic_model")}
        nodes["reference"].wait_for_output(
            r"ready: backend=psmnet \(range \[0, 48\) px; psmnet engine=reference on cpu: "
            r"reference eager model, fp32; frame on the host\)", timeout=120)
    finally:
        reference_code = nodes["reference"].stop()
        for node in nodes.values():
            node.stop()
    assert reference_code == 0, nodes["reference"].output()
    output = {name: node.output() for name, node in nodes.items()}
    assert codes == {"bf16_reference": 1, "basic_model": 1}, output
    assert (f"cannot start: cannot create the psmnet backend from '{kitti_weights}': ValueError: "
            "precision='bf16' with engine='reference' on the CPU") in output["bf16_reference"]
    assert (f"cannot start: cannot create the psmnet backend from '{kitti_weights}': "
            "CheckpointError: ") in output["basic_model"]
    assert ("does not match PSMNetBasic (the file looks like a 'stackhourglass' PSMNet, the "
            "model is 'basic')") in output["basic_model"]
    for name in ("bf16_reference", "basic_model"):
        assert_clean_exit(output[name])
        assert "ready:" not in output[name], output[name]
