"""What a real robot sends the node: every camera encoding, QoS overrides,
large frames without a Fast DDS profile, lost images, binning, 16-bit depth. Real rclpy and Fast
DDS, the node as a subprocess, values checked (isolation in conftest.py). Compressed
transport: test_node_compressed_inputs.py."""

from __future__ import annotations

import os
import sys

import cv2
import numpy as np
import pytest

pytest.importorskip("rclpy")

from helpers.kitti import make_raw_drive  # noqa: E402
from helpers.robot_inputs import (BACKGROUND_D, BASELINE, FOREGROUND_D, FX, SGBM,  # noqa: E402
                                  depth_of, node_in_namespace, robot_scene)
from helpers.ros import (FRAME, Harness, NodeProcess, RosTestContext, stop_node,  # noqa: E402
                         wait_for, wait_for_publishers)
from helpers.ros_messages import (as_array, camera_info_msg, image_msg, status_drops,  # noqa: E402
                                  stereo_infos)

from stereo_depth_ros.core.synthetic import make_scene  # noqa: E402

pytestmark = [pytest.mark.ros, pytest.mark.slow]


PROFILE_VARIABLES = ("FASTDDS_DEFAULT_PROFILES_FILE", "FASTRTPS_DEFAULT_PROFILES_FILE")


@pytest.fixture(scope="module")
def scene():
    return robot_scene()


@pytest.fixture(scope="module")
def raw_node():
    node, harness = node_in_namespace([], "/raw")
    try:
        harness.wait_until_connected()
        yield harness
    finally:
        stop_node(node, harness)


# ------------------------------------------------------------------------------ encodings

def _luma(rgb: np.ndarray) -> np.ndarray:
    from stereo_depth_ros.backends.base import to_mono
    return to_mono(rgb)


def _bayer(rgb: np.ndarray, pattern: str) -> np.ndarray:
    index = {"r": 0, "g": 1, "b": 2}
    mosaic = np.zeros(rgb.shape[:2], rgb.dtype)
    for k, (dy, dx) in enumerate(((0, 0), (0, 1), (1, 0), (1, 1))):
        mosaic[dy::2, dx::2] = rgb[dy::2, dx::2, index[pattern[k]]]
    return mosaic


def _yuv422(rgb: np.ndarray, luma_first: bool) -> np.ndarray:
    r, g, b = (rgb[..., i].astype(np.float32) for i in range(3))
    y = 16 + 0.257 * r + 0.504 * g + 0.098 * b
    u = 128 - 0.148 * r - 0.291 * g + 0.439 * b
    v = 128 + 0.439 * r - 0.368 * g - 0.071 * b
    y, u, v = (np.clip(np.rint(c), 0, 255).astype(np.uint8) for c in (y, u, v))
    chroma = np.zeros_like(y)
    chroma[:, 0::2], chroma[:, 1::2] = u[:, 0::2], v[:, 0::2]
    packed = np.zeros(rgb.shape[:2] + (2,), np.uint8)
    packed[..., 0 if luma_first else 1] = y
    packed[..., 1 if luma_first else 0] = chroma
    return packed


ENCODED = {  # encoding -> (array made from the RGB image, big-endian?)
    "mono16": (lambda rgb: _luma(rgb).astype(np.uint16) * 257, False),
    "16UC1": (lambda rgb: (_luma(rgb).astype(np.uint16) * 257).astype(">u2"), True),
    "bgr8": (lambda rgb: rgb[..., ::-1], False),
    "rgba8": (lambda rgb: np.dstack([rgb, np.full(rgb.shape[:2], 255, np.uint8)]), False),
    "bgr16": (lambda rgb: rgb[..., ::-1].astype(np.uint16) * 257, False),
    "bayer_rggb8": (lambda rgb: _bayer(rgb, "rggb"), False),
    "bayer_gbrg16": (lambda rgb: _bayer(rgb.astype(np.uint16) * 257, "gbrg"), False),
    "yuv422": (lambda rgb: _yuv422(rgb, luma_first=False), False),
    "yuv422_yuy2": (lambda rgb: _yuv422(rgb, luma_first=True), False),
}


def _encoded_msg(harness: Harness, rgb: np.ndarray, encoding: str, when, frame: str):
    make, bigendian = ENCODED[encoding]
    msg = image_msg(make(rgb), encoding, when, frame)
    msg.is_bigendian = int(bigendian)
    return msg


def test_every_camera_encoding_gives_the_depth_of_mono8(raw_node, scene):
    """The same scene as mono8 and in each encoding family (16-bit, big-endian, colour with
    alpha, Bayer 8/16 sampled from the colour image, YUV422 in both byte orders): the same depth
    (SGBM matches on luma; Bayer and YUV lose a little of it)."""
    when = raw_node.next_stamp()
    reference = depth_of(raw_node, image_msg(_luma(scene.left), "mono8", when, FRAME),
                         image_msg(_luma(scene.right), "mono8", when, FRAME), scene.rig)
    valid = np.isfinite(reference)
    assert valid.mean() > 0.6
    assert np.nanmedian(reference[95:115, 60:150]) == pytest.approx(FX * BASELINE / BACKGROUND_D,
                                                                    rel=0.01)
    for encoding in ENCODED:
        when = raw_node.next_stamp()
        depth = depth_of(raw_node, _encoded_msg(raw_node, scene.left, encoding, when, FRAME),
                         _encoded_msg(raw_node, scene.right, encoding, when, FRAME), scene.rig)
        both = valid & np.isfinite(depth)
        assert both.mean() > 0.5, encoding
        relative = np.abs(depth[both] - reference[both]) / reference[both]
        exact = encoding in ("mono16", "16UC1", "bgr8", "rgba8", "bgr16")
        if exact:           # the matcher saw the very same luma image
            np.testing.assert_array_equal(depth[valid], reference[valid], err_msg=encoding)
        else:
            assert np.median(relative) < 0.01 and np.mean(relative > 0.05) < 0.05, encoding


# ------------------------------------------------------------------------------ 16-bit depth

def test_depth_encoding_16uc1_is_millimetres_with_0_invalid(raw_node, scene):
    from rclpy.parameter import Parameter  # noqa: F401  (the set goes through the service)
    when = raw_node.next_stamp()
    reference = depth_of(raw_node, image_msg(scene.left, "rgb8", when, FRAME),
                         image_msg(scene.right, "rgb8", when, FRAME), scene.rig)
    _set_parameter(raw_node, "depth_encoding", "16UC1")
    try:
        when = raw_node.next_stamp()
        left_info, right_info = stereo_infos(scene.rig, when, FRAME)
        raw_node.send(scene.left, scene.right, "rgb8", left_info, right_info, when)
        msg = raw_node.outputs_for(when, ["depth/image_rect"])["depth/image_rect"]
        assert msg.encoding == "16UC1" and msg.step == 2 * msg.width
        millimetres = np.frombuffer(msg.data, np.uint16).reshape(msg.height, msg.width)
        np.testing.assert_array_equal(millimetres == 0, ~np.isfinite(reference))
        finite = np.isfinite(reference)
        np.testing.assert_array_equal(millimetres[finite],
                                      np.rint(reference[finite] * 1000).astype(np.uint16))
    finally:
        _set_parameter(raw_node, "depth_encoding", "32FC1")


def _set_parameter(harness: Harness, name: str, value) -> None:
    from rcl_interfaces.msg import Parameter as ParameterMsg
    from rcl_interfaces.srv import SetParameters
    from rclpy.parameter import Parameter
    client = harness.ctx.node.create_client(SetParameters, f"{harness.fqn}/set_parameters")
    try:
        assert client.wait_for_service(timeout_sec=20)
        request = SetParameters.Request(
            parameters=[Parameter(name, value=value).to_parameter_msg()])
        assert isinstance(request.parameters[0], ParameterMsg)
        future = client.call_async(request)
        wait_for(future.done, 20, what=f"setting {name}")
        assert future.result().results[0].successful, future.result().results[0].reason
    finally:
        harness.ctx.node.destroy_client(client)


# ------------------------------------------------------------------------------ QoS

def _graph_reliability(ctx: RosTestContext, topic: str, publishers: bool) -> set[str]:
    infos = (ctx.node.get_publishers_info_by_topic(topic) if publishers
             else ctx.node.get_subscriptions_info_by_topic(topic))
    return {info.qos_profile.reliability.name for info in infos
            if info.node_name == "stereo_depth_node"}


def test_qos_overrides_change_what_connects_and_incompatibility_is_reported(scene):
    from rclpy.qos import QoSProfile, ReliabilityPolicy
    from sensor_msgs.msg import Image
    from stereo_msgs.msg import DisparityImage
    overrides = []
    for topic in ("/qos/left/image_raw", "/qos/right/image_raw"):
        overrides += ["-p", f"qos_overrides.{topic}.subscription.reliability:=reliable"]
    overrides += ["-p", "qos_overrides./qos/disparity.publisher.reliability:=best_effort"]
    node, harness = node_in_namespace(overrides, "/qos", outputs={})
    try:
        wait_for(lambda: _graph_reliability(harness.ctx, "/qos/left/image_raw", False) ==
                 {"RELIABLE"}, 20, what="the overridden subscription in the graph")
        assert _graph_reliability(harness.ctx, "/qos/left/camera_info", False) == \
            {"BEST_EFFORT"}
        wait_for(lambda: _graph_reliability(harness.ctx, "/qos/disparity", True) ==
                 {"BEST_EFFORT"}, 20, what="the overridden publisher in the graph")
        assert _graph_reliability(harness.ctx, "/qos/depth/image_rect", True) == {"RELIABLE"}
        # A best-effort output subscriber gets data from the overridden publisher ...
        best_effort = QoSProfile(depth=10, reliability=ReliabilityPolicy.BEST_EFFORT)
        disparity = harness.ctx.collect(DisparityImage, "/qos/disparity", qos=best_effort)
        wait_for_publishers(disparity.subscription)
        harness.wait_until_connected([])
        when = harness.next_stamp()
        left_info, right_info = stereo_infos(scene.rig, when, FRAME)
        harness.send(scene.left, scene.right, "rgb8", left_info, right_info, when)
        disparity.wait_for_stamp(when, 30)
        # ... and a best-effort camera cannot feed the reliable subscription: reported by name.
        camera = harness.ctx.node.create_publisher(Image, "/qos/left/image_raw", best_effort)
        node.wait_for_output(r"/qos/left/image_raw: a publisher's QoS is incompatible with "
                             r"this node's subscription \(RELIABILITY policy\).*qos_overrides\."
                             r"/qos/left/image_raw\.subscription\.reliability", timeout=30)
        harness.wait_status(
            lambda s: int(s.get("qos_incompatible./qos/left/image_raw", 0)) >= 1,
            what="the incompatibility counted")
        harness.ctx.node.destroy_publisher(camera)
    finally:
        stop_node(node, harness)


# ------------------------------------------------------------------------------ large frames

def test_large_frames_replay_without_a_profile_loses_nothing(tmp_path):
    """A 1242x375 bgr8 bag (6 frames) replayed into the node with no Fast DDS profile in the
    environment: both processes pick the shipped one themselves and every frame arrives."""
    from stereo_depth_ros.bags.bag_writer import convert
    drive = make_raw_drive(tmp_path / "kitti", n_frames=6, size=(375, 1242), shift=8)
    summary = convert(drive, tmp_path / "bag", storage="sqlite3", period_s=0.05,
                      namespace="/large")
    env = {k: v for k, v in os.environ.items() if k not in PROFILE_VARIABLES}
    node = NodeProcess(SGBM + ["-p", "sgbm.num_disparities:=16", "-r", "__ns:=/large"],
                       env=env).start()
    ctx = None
    try:
        node.wait_for_output(r"Fast DDS: no profile set, using .*fastdds_large_images\.xml",
                             timeout=60)
        ctx = RosTestContext("large_frames_peer")
        from sensor_msgs.msg import Image
        depth = ctx.collect(Image, "/large/depth/image_rect")
        wait_for_publishers(depth.subscription)
        argv = [sys.executable, "-m", "stereo_depth_ros.tools.replay", str(summary["bag"]),
                "--wait-timeout", "30", "--watch", "/large/depth/image_rect",
                "--watch-type", "sensor_msgs/msg/Image", "--watch-subscribers", "2",
                "--step", "--step-timeout", "15"]
        # --watch-subscribers 2: the replay starts once the graph also shows this test's
        # subscription (a reliable, volatile reader matched late misses the first frames).
        with NodeProcess(argv=argv, env=env) as replay:
            assert replay.wait_exit(120) == 0, replay.output()
            assert "no profile set, using" in replay.output()
        stamps = set(summary["stamps_ns"])

        def received() -> set[int]:
            return {m.header.stamp.sec * 10**9 + m.header.stamp.nanosec
                    for m in depth.snapshot()}

        try:
            wait_for(lambda: stamps <= received(), 30, what=f"depth for all {len(stamps)} frames")
        except AssertionError as error:
            raise AssertionError(f"{error}: missing {sorted(stamps - received())}; replay:\n"
                                 f"{replay.output()}\nnode:\n{node.output()}") from None
    finally:
        if ctx is not None:
            ctx.close()
        code = node.stop()
        assert code == 0, node.output()


def test_images_lost_before_the_node_are_counted_with_a_hint(raw_node, scene):
    """Three frames whose images never come (their camera_info does), then a good frame: the
    three are counted as images_lost_in_transport, and the node says what to do once."""
    before = status_drops(raw_node.latest_status()).get("images_lost_in_transport", 0)
    for withheld in range(3):
        when = raw_node.next_stamp()
        raw_node.send_msgs(None, None, *stereo_infos(scene.rig, when, FRAME))
    when = raw_node.next_stamp()
    depth = depth_of(raw_node, image_msg(scene.left, "rgb8", when, FRAME),
                     image_msg(scene.right, "rgb8", when, FRAME), scene.rig)
    assert np.isfinite(depth).mean() > 0.5
    status = raw_node.wait_status(
        lambda s: status_drops(s).get("images_lost_in_transport", 0) >= before + 3,
        what="images_lost_in_transport counted")
    assert status_drops(status)["images_lost_in_transport"] == before + 3
    raw_node.node.wait_for_output(r"images on /raw/left/image_raw are lost before the node.*"
                                  r"FASTDDS_DEFAULT_PROFILES_FILE=.*fastdds_large_images\.xml")


# ------------------------------------------------------------------------------ binning

def test_binned_images_with_a_full_resolution_camera_info(raw_node):
    """A 2x2-binned camera: 120x160 images, camera_info of the 240x320 sensor with binning 2."""
    full = make_scene(240, 320, background_disparity=2 * BACKGROUND_D,
                      foreground_disparity=2 * FOREGROUND_D, fx=2 * FX, baseline_m=BASELINE,
                      texture_cell_px=6.0, seed=6)
    binned = [cv2.resize(image, (160, 120), interpolation=cv2.INTER_AREA)
              for image in (full.left, full.right)]
    when = raw_node.next_stamp()
    p_left, p_right = full.rig.projection_matrices()
    infos = []
    for p, frame in ((p_left, FRAME), (p_right, FRAME.replace("left", "right"))):
        info = camera_info_msg(p[:, :3], np.zeros(5), np.eye(3), p, 320, 240, when, frame)
        info.binning_x = info.binning_y = 2
        infos.append(info)
    raw_node.send_msgs(image_msg(binned[0], "rgb8", when, FRAME),
                       image_msg(binned[1], "rgb8", when, FRAME), *infos)
    depth = as_array(raw_node.outputs_for(when, ["depth/image_rect"])["depth/image_rect"])
    assert depth.shape == (120, 160)
    # Binning halves fx and the disparity alike: the depth of the full-resolution scene.
    assert np.nanmedian(depth[95:115, 60:150]) == pytest.approx(
        2 * FX * BASELINE / (2 * BACKGROUND_D), rel=0.02)
    raw_node.node.wait_for_output(r"calibration: 160x120, fx=200 px")
