"""Compressed image transport as a robot sends it: jpeg and png pairs give the depth, a corrupt
payload is dropped under its reason and the next pair processed, and a compressed
stereo_depth_kitti2bag bag replays into the node. Real rclpy and Fast DDS, the node as a
subprocess, values checked."""

from __future__ import annotations

import sys

import cv2
import numpy as np
import pytest

pytest.importorskip("rclpy")

from helpers.kitti import make_raw_drive  # noqa: E402
from helpers.robot_inputs import (BACKGROUND_D, BASELINE, FOREGROUND_D, FX, depth_of,  # noqa: E402
                                  node_in_namespace, robot_scene)
from helpers.ros import FRAME, CompressedHarness, NodeProcess, stop_node  # noqa: E402
from helpers.ros_messages import as_array, status_drops, stereo_infos  # noqa: E402

pytestmark = [pytest.mark.ros, pytest.mark.slow]


@pytest.fixture(scope="module")
def scene():
    return robot_scene()


def _compressed(image_bgr: np.ndarray, kind: str, when, payload: bytes | None = None):
    from sensor_msgs.msg import CompressedImage
    ok, data = cv2.imencode(".jpg" if kind == "jpeg" else ".png", image_bgr,
                            [cv2.IMWRITE_JPEG_QUALITY, 95] if kind == "jpeg" else [])
    msg = CompressedImage()
    msg.header.stamp, msg.header.frame_id = when, FRAME
    msg.format = f"bgr8; {kind} compressed bgr8"
    msg.data = payload if payload is not None else data.tobytes()
    return msg


@pytest.fixture(scope="module")
def compressed_node():
    node, harness = node_in_namespace(["-p", "image_transport:=compressed"], "/compressed",
                                      ready=r"ready: backend=sgbm.*transport=compressed.*"
                                            r"/compressed/left/image_raw/compressed",
                                      harness_class=CompressedHarness)
    try:
        harness.wait_until_connected()
        yield harness
    finally:
        stop_node(node, harness)


def test_compressed_jpeg_and_png_pairs_give_the_depth(compressed_node, scene):
    expected = {"background": FX * BASELINE / BACKGROUND_D, "foreground": FX * BASELINE /
                FOREGROUND_D}
    regions = {"background": (slice(95, 115), slice(60, 150)),
               "foreground": (slice(50, 70), slice(70, 100))}
    for kind in ("jpeg", "png"):
        when = compressed_node.next_stamp()
        depth = depth_of(compressed_node, _compressed(scene.left[..., ::-1], kind, when),
                         _compressed(scene.right[..., ::-1], kind, when), scene.rig)
        for name, region in regions.items():
            assert np.nanmedian(depth[region]) == pytest.approx(expected[name], rel=0.02), \
                (kind, name)


def test_a_corrupt_payload_is_dropped_and_the_next_pair_processed(compressed_node, scene):
    before = status_drops(compressed_node.latest_status()).get("bad_compressed_data", 0)
    when = compressed_node.next_stamp()
    good = _compressed(scene.left[..., ::-1], "png", when)
    truncated = _compressed(scene.right[..., ::-1], "png", when,
                            payload=bytes(good.data[: len(good.data) // 2]))
    left_info, right_info = stereo_infos(scene.rig, when, FRAME)
    compressed_node.send_msgs(good, truncated, left_info, right_info)
    compressed_node.wait_status(
        lambda s: status_drops(s).get("bad_compressed_data", 0) > before,
        what="bad_compressed_data counted")
    compressed_node.node.wait_for_output(r"/compressed/right/image_raw/compressed: png "
                                         r"payload of \d+ bytes does not decode")
    when = compressed_node.next_stamp()
    depth = depth_of(compressed_node, _compressed(scene.left[..., ::-1], "png", when),
                     _compressed(scene.right[..., ::-1], "png", when), scene.rig)
    assert np.isfinite(depth).mean() > 0.5


def test_a_compressed_kitti2bag_bag_replays_into_the_node(compressed_node, tmp_path):
    from stereo_depth_ros.bags.bag_writer import convert
    drive = make_raw_drive(tmp_path / "kitti", n_frames=3, size=(96, 192), shift=8)
    summary = convert(drive, tmp_path / "bag", storage="sqlite3", compress="jpeg",
                      start_stamp_s=compressed_node.next_stamp().sec + 1.0, period_s=0.2,
                      namespace="/compressed")
    assert set(summary["topics"]) >= {"/compressed/left/image_raw/compressed",
                                      "/compressed/right/image_raw/compressed"}
    argv = [sys.executable, "-m", "stereo_depth_ros.tools.replay", str(summary["bag"]),
            "--wait-timeout", "30", "--watch", "/compressed/depth/image_rect",
            "--watch-type", "sensor_msgs/msg/Image", "--step", "--step-timeout", "30"]
    with NodeProcess(argv=argv) as replay:
        assert replay.wait_exit(120) == 0, replay.output()
    collected = compressed_node.out["depth/image_rect"].snapshot()
    stamps = {m.header.stamp.sec * 10**9 + m.header.stamp.nanosec for m in collected}
    first, step = summary["stamps_ns"][0], summary["stamps_ns"][1] - summary["stamps_ns"][0]
    assert {first + k * step for k in range(3)} <= stamps
    depth = as_array(collected[-1])
    # KITTI fixture: fx 721.5377 px, B 0.5327 m, shift 8 px -> 48 m
    assert np.nanmedian(depth) == pytest.approx(721.5377 * 0.5327 / 8, rel=0.02)
