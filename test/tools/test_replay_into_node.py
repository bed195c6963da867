"""stereo_depth_replay into the real node (ROS 2 and ROS 1 bags, their values checked), and
latched topics reaching late subscribers. Without a node: test_replay.py."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest

from helpers.kitti import BASELINE_M, FX, LEFT_STAMPS, WRONG_BASELINE_M
from helpers.replay_bags import NODE_INPUTS, SHIFT, SIZE
from stereo_depth_ros.bags.kitti_layout import parse_kitti_timestamp
from stereo_depth_ros.bags import BagSource


# ---------------------------------------------------------------------- into the real node


@pytest.fixture(scope="module")
def stereo_node():
    """stereo_depth_node with SGBM (32 disparities) as a subprocess, plus an in-test peer that
    collects its outputs (subscribed before any replay so the lazy outputs are published)."""
    from helpers.ros import NodeProcess, RosTestContext, wait_for_publishers
    from rosgraph_msgs.msg import Clock
    from sensor_msgs.msg import Image
    from stereo_msgs.msg import DisparityImage

    node = NodeProcess(["-p", "backend:=sgbm", "-p", "sgbm.num_disparities:=32",
                        "-p", "sgbm.block_size:=5", "-p", "diagnostics_period_seconds:=0.5"])
    ros = None
    try:
        node.start()
        node.wait_for_output(r"ready:", timeout=60)
        ros = RosTestContext("replay_test_peer")
        collectors = {"disparity": ros.collect(DisparityImage, "/disparity"),
                      "depth": ros.collect(Image, "/depth/image_rect"),
                      "clock": ros.collect(Clock, "/clock")}
        for name in ("disparity", "depth"):
            wait_for_publishers(collectors[name].subscription)
        yield node, collectors
    finally:
        if ros is not None:
            ros.close()
        node.stop()


def _replay(bag, tmp_path, *extra):
    from helpers.ros import NodeProcess

    stats = tmp_path / "stats.json"
    argv = [sys.executable, "-m", "stereo_depth_ros.tools.replay", str(bag), "--rate", "5",
            "--wait-timeout", "30", "--watch", "disparity", "--step", "--step-timeout", "30",
            "--stats-json", str(stats), *extra]
    with NodeProcess(argv=argv) as replay:
        code = replay.wait_exit(120)
        assert code == 0, replay.output()
    return json.loads(stats.read_text())


def _check_outputs(collectors, stamps):
    """Every frame gave a disparity and a depth image whose depth is fx * B / shift."""
    expected_depth = FX * BASELINE_M / SHIFT                  # 48.05 m
    for stamp in stamps:
        match = (lambda m, s=stamp: m.header.stamp.sec * 10**9 + m.header.stamp.nanosec == s)
        disparity = collectors["disparity"].wait_for(match, 30, what=f"disparity {stamp}")
        depth_msg = collectors["depth"].wait_for(match, 30, what=f"depth {stamp}")
        assert disparity.t == pytest.approx(BASELINE_M, rel=1e-6)
        assert disparity.f == pytest.approx(FX, rel=1e-6)
        depth = np.frombuffer(bytes(depth_msg.data), dtype="<f4").reshape(*SIZE)
        inner = depth[10:-10, 48:-10]
        assert np.isfinite(inner).mean() > 0.9
        median = float(np.nanmedian(inner))
        assert median == pytest.approx(expected_depth, rel=0.02)
        assert abs(median - FX * WRONG_BASELINE_M / SHIFT) > 4.0      # not the 0.47 m trap


@pytest.mark.ros
def test_ros2_bag_into_node(stereo_node, ros2_bag, tmp_path):
    node, collectors = stereo_node
    stats = _replay(ros2_bag, tmp_path, "--clock", "--wait-topics", "/clock",
                    *(f"/{topic}" for topic in sorted(NODE_INPUTS)))
    stamps = [parse_kitti_timestamp(s) for s in LEFT_STAMPS[:3]]
    assert [f["stamp_ns"] for f in stats["frames"]] == stamps
    assert all(f["output_wall"] is not None for f in stats["frames"]), stats
    assert stats["subscribers_matched"] is True
    _check_outputs(collectors, stamps)
    clock = collectors["clock"].snapshot()
    assert clock, "no /clock message"
    clock_ns = {c.clock.sec * 10**9 + c.clock.nanosec for c in clock}
    # /clock lands on frame stamps, within the bag's span. Not necessarily on every one: it is
    # keep-last 1, and on a loaded machine a newer value replaces one in flight, or the replay
    # exits before its last values reach this process (seen with two busy loops beside it).
    assert set(stamps) & clock_ns, (clock_ns, stamps)
    assert all(stamps[0] <= value <= stamps[-1] for value in clock_ns), (clock_ns, stamps)


@pytest.mark.ros
def test_ros1_kitti2bag_bag_into_node(stereo_node, ros1_bag, tmp_path):
    node, collectors = stereo_node
    stats = _replay(ros1_bag, tmp_path, "--preset", "kitti2bag", "--frame-id",
                    "camera_left_optical_frame")
    stamps = [parse_kitti_timestamp(s) for s in LEFT_STAMPS[:3]]
    assert stats["ros1"] is True
    assert [f["stamp_ns"] for f in stats["frames"]] == stamps
    assert all(f["output_wall"] is not None for f in stats["frames"]), stats
    # the scans too; /tf_static only where tf2_msgs is installed (not on PyPI)
    published = {t: n for t, n in stats["published"].items() if t != "/tf_static"}
    assert published == {topic: 3 for topic in NODE_INPUTS | {"velodyne_points"}}
    assert ("/tf_static" in stats["skipped_topics"]) != ("/tf_static" in stats["published"])
    _check_outputs(collectors, stamps)
    disparity = collectors["disparity"].snapshot()[-1]
    assert disparity.header.frame_id == "camera_left_optical_frame"


def _latched_bag(path: Path) -> Path:
    """A ROS 2 bag with /latched (recorded transient local, as rosbag2 records /tf_static) and
    /volatile, one CameraInfo each."""
    from rosbags.rosbag2 import Writer
    from rosbags.typesys import Stores, get_typestore

    from stereo_depth_ros.bags.bag_writer import _latched_qos, _MessageFactory
    ts = get_typestore(Stores.ROS2_KILTED)
    make = _MessageFactory(ts)
    fields = {"width": 4, "height": 3, "distortion_model": "plumb_bob", "d": [0.0] * 5,
              "k": [1.0] * 9, "r": [1.0] * 9, "p": [1.0] * 12}
    with Writer(path, version=9) as writer:
        for topic, qos in (("/latched", [_latched_qos()]), ("/volatile", [])):
            conn = writer.add_connection(topic, "sensor_msgs/msg/CameraInfo", typestore=ts,
                                         offered_qos_profiles=qos)
            msg = make.camera_info(fields, 5 * 10**9, topic.strip("/"))
            writer.write(conn, 5 * 10**9, bytes(ts.serialize_cdr(msg, "sensor_msgs/msg/"
                                                                 "CameraInfo")))
    return path


@pytest.mark.ros
def test_latched_topics_reach_late_subscribers_and_scans_are_not_frames(tmp_path, lidar_bag):
    """Played transient local, /latched still reaches a subscriber created after the replay
    published it; /volatile does not. Playing a bag with scans records only the camera frames."""
    import rclpy
    from rclpy.context import Context
    from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
    from sensor_msgs.msg import CameraInfo
    from helpers.ros import RosTestContext, wait_for

    from stereo_depth_ros.ros.bag_player import Player

    context = Context()
    rclpy.init(context=context)
    player = peer = None
    try:
        source = BagSource(_latched_bag(tmp_path / "latched"))
        assert source.latched == {"/latched"}
        player = Player(source, context=context, rate=0, wait_timeout_s=0)
        player.play_once()
        assert player.published == {"/latched": 1, "/volatile": 1}
        peer = RosTestContext("late_peer")
        late = QoSProfile(depth=5, reliability=ReliabilityPolicy.RELIABLE,
                          durability=DurabilityPolicy.TRANSIENT_LOCAL)
        latched = peer.collect(CameraInfo, "/latched", qos=late)
        volatile = peer.collect(CameraInfo, "/volatile")
        wait_for(lambda: latched.snapshot(), 20, what="the latched message")
        assert latched.snapshot()[0].header.frame_id == "latched"
        wait_for(lambda: volatile.subscription.get_publisher_count() == 1, 20,
                 what="the /volatile publisher")
        assert volatile.snapshot() == []        # matched, yet nothing: it was volatile
        player.destroy()

        scene, bag = lidar_bag
        player = Player(BagSource(bag, can_publish=lambda t: "tf2_msgs" not in t),
                        context=context, rate=0, wait_timeout_s=0)
        player.play_once()
        assert player.published["/velodyne_points"] == 3
        assert [f.stamp_ns for f in player.frames] == scene.left_stamps_ns
    finally:
        if peer is not None:
            peer.close()
        if player is not None:
            player.destroy()
        rclpy.try_shutdown(context=context)
