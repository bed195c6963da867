"""The node in this process (real DDS around it), where a test can put a double behind it or
watch what it builds: outputs built only for topics with subscribers, a matcher that fails once
(counted, logged, survived), and every SGBM option (at start and live) read back from the OpenCV
matcher it sets."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

pytest.importorskip("rclpy")

from helpers.parameter_effects import (BACKGROUND, BACKGROUND_D, BACKGROUND_Z,  # noqa: E402
                                       set_ok, two_plane_scene, valid_disparity)
from helpers.ros import FRAME, OUTPUTS, Harness  # noqa: E402
from helpers.ros_messages import stamp_ns, stereo_infos, time_ns  # noqa: E402
from helpers.ros_nodes import InProcessNode, set_parameters  # noqa: E402

from stereo_depth_ros.backends.sgbm import SgbmBackend  # noqa: E402
from stereo_depth_ros.ros.messages import pointcloud2_to_numpy  # noqa: E402

pytestmark = [pytest.mark.ros, pytest.mark.slow]


@pytest.fixture(scope="module")
def scene():
    return two_plane_scene()


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
