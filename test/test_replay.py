"""stereo_depth_replay: bag reading/fixing without ROS, then ROS 2 and ROS 1 bags into the node."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

from kitti_fixtures import (BASELINE_M, FX, LEFT_STAMPS, WRONG_BASELINE_M, make_kitti2bag_ros1,
                            make_raw_drive)
from stereo_depth_ros.tools.kitti2bag import convert, parse_kitti_timestamp
from stereo_depth_ros.bags import PRESETS, BagError, BagSource, KittiStereoGrouper, header_stamp_ns
from stereo_depth_ros.tools.replay import parse_remap

SIZE = (96, 192)
SHIFT = 8
NODE_INPUTS = {"left/image_raw", "right/image_raw", "left/camera_info", "right/camera_info"}


def deserialize(item):
    from rosbags.typesys import Stores, get_typestore
    return get_typestore(Stores.ROS2_KILTED).deserialize_cdr(item.cdr, item.msgtype)


@pytest.fixture(scope="module")
def ros1_bag(tmp_path_factory):
    return make_kitti2bag_ros1(tmp_path_factory.mktemp("ros1") / "kitti.bag", n_frames=3,
                               size=SIZE, shift=SHIFT)


@pytest.fixture(scope="module")
def ros2_bag(tmp_path_factory):
    root = tmp_path_factory.mktemp("ros2")
    drive = make_raw_drive(root / "kitti", n_frames=3, size=SIZE, shift=SHIFT)
    return Path(convert(drive, root / "bag", storage="sqlite3")["bag"])


# ------------------------------------------------------------------------------ without ROS


def test_kitti2bag_preset_fixes_ros1_bag(ros1_bag):
    source = BagSource(ros1_bag, preset=PRESETS["kitti2bag"])
    assert source.is_ros1
    assert set(source.outputs) == NODE_INPUTS      # gps/fix is not part of the preset
    items = list(source)
    assert [i.topic for i in items[:4]] == ["left/camera_info", "right/camera_info",
                                            "left/image_raw", "right/image_raw"]
    left_stamps = [parse_kitti_timestamp(s) for s in LEFT_STAMPS[:3]]
    assert [i.stamp_ns for i in items] == [t for t in left_stamps for _ in range(4)]
    for item in items:
        msg = deserialize(item)
        assert msg.header.frame_id == "camera_color_left"
        assert header_stamp_ns(item.cdr) == item.stamp_ns
        if item.msgtype.endswith("CameraInfo"):
            assert (msg.width, msg.height) == (SIZE[1], SIZE[0])    # bag had them swapped
            np.testing.assert_array_equal(msg.d, np.zeros(5))
            np.testing.assert_array_equal(msg.r, np.eye(3).reshape(-1))
            np.testing.assert_allclose(msg.k, [FX, 0, 609.5593, 0, FX, 172.854, 0, 0, 1])
            expected_tx = 0.0 if item.topic.startswith("left") else -FX * BASELINE_M
            assert msg.p[3] == pytest.approx(expected_tx, abs=1e-6)
    assert source.last_grouper.frames == 3
    assert sum(source.last_grouper.dropped.values()) == 0


def test_plain_ros1_replay_keeps_topics_and_converts(ros1_bag):
    source = BagSource(ros1_bag, remaps={"/kitti/oxts/gps/fix": "/gps"}, start_s=0.05)
    assert "/gps" in source.outputs and "/kitti/camera_color_left/image_raw" in source.outputs
    items = list(source)
    assert len(items) == 2 * 5                   # the first frame is before --start
    info = next(deserialize(i) for i in items if i.topic.endswith("left/camera_info"))
    assert info.d[0] != 0 and info.header.frame_id == "camera_color_left"   # untouched


def test_ros2_bag_is_published_as_stored(ros2_bag):
    from rosbags.highlevel import AnyReader

    source = BagSource(ros2_bag, topics=["/left/image_raw"], remaps=dict(
        [parse_remap("/left/image_raw:=/stereo/left/image_raw")]))
    assert source.outputs == {"/stereo/left/image_raw": "sensor_msgs/msg/Image"}
    items = list(source)
    with AnyReader([ros2_bag]) as reader:
        stored = [raw for conn, _, raw in reader.messages()
                  if conn.topic == "/left/image_raw"]
    assert [i.cdr for i in items] == [bytes(raw) for raw in stored]


def test_grouper_drops_a_frame_missing_its_right_image(ros1_bag):
    from rosbags.highlevel import AnyReader
    from rosbags.typesys import Stores, get_typestore

    ts = get_typestore(Stores.ROS2_KILTED)
    preset = PRESETS["kitti2bag"]
    grouper = KittiStereoGrouper()
    frames = []
    with AnyReader([ros1_bag]) as reader:
        for conn, t, raw in reader.messages():
            role = preset.role_of(conn.topic)
            msg = ts.deserialize_cdr(ts.ros1_to_cdr(raw, conn.msgtype), conn.msgtype)
            if role is None or (role == "right_image" and msg.header.stamp.nanosec == 68245506):
                continue              # leave out the second frame's right image
            frames += grouper.push(role, msg, t)
    frames += grouper.flush()
    assert len(frames) == 2
    assert grouper.dropped["left_image"] == 1 and grouper.dropped["right_info"] == 1


def test_bad_input_errors(tmp_path, ros2_bag):
    with pytest.raises(BagError, match="no such bag"):
        BagSource(tmp_path / "nope")
    (tmp_path / "folder").mkdir()
    with pytest.raises(BagError, match="metadata.yaml"):
        BagSource(tmp_path / "folder")
    with pytest.raises(BagError, match="topics not in the bag: /x"):
        BagSource(ros2_bag, topics=["/x"])
    with pytest.raises(BagError, match="preset kitti2bag needs"):
        BagSource(ros2_bag, preset=PRESETS["kitti2bag"], topics=["/left/image_raw"])
    import argparse
    with pytest.raises(argparse.ArgumentTypeError):
        parse_remap("a:b")


# ---------------------------------------------------------------------- into the real node


@pytest.fixture(scope="module")
def stereo_node():
    """stereo_depth_node with SGBM (32 disparities) as a subprocess, plus an in-test peer that
    collects its outputs (subscribed before any replay so the lazy outputs are published)."""
    from ros_helpers import NodeProcess, RosTestContext, wait_for_publishers
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
    from ros_helpers import NodeProcess

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
    assert set(stamps) <= clock_ns


@pytest.mark.ros
def test_ros1_kitti2bag_bag_into_node(stereo_node, ros1_bag, tmp_path):
    node, collectors = stereo_node
    stats = _replay(ros1_bag, tmp_path, "--preset", "kitti2bag", "--frame-id",
                    "camera_left_optical_frame")
    stamps = [parse_kitti_timestamp(s) for s in LEFT_STAMPS[:3]]
    assert stats["ros1"] is True
    assert [f["stamp_ns"] for f in stats["frames"]] == stamps
    assert all(f["output_wall"] is not None for f in stats["frames"]), stats
    assert stats["published"] == {topic: 3 for topic in NODE_INPUTS}
    _check_outputs(collectors, stamps)
    disparity = collectors["disparity"].snapshot()[-1]
    assert disparity.header.frame_id == "camera_left_optical_frame"


# ------------------------------------------------------------------------------ launch file


def _load_launch_file(repo_root):
    import importlib.util
    path = repo_root / "launch" / "kitti_replay.launch.py"
    spec = importlib.util.spec_from_file_location("kitti_replay_launch", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_launch_file_with_stub_launch_modules(repo_root, monkeypatch):
    """The real launch packages are not installed here: run the file against recording stubs."""
    import types

    class Action:
        def __init__(self, *args, **kwargs):
            self.args, self.kwargs = args, kwargs

    stubs = {"launch": types.ModuleType("launch"),
             "launch.actions": types.ModuleType("launch.actions"),
             "launch_ros": types.ModuleType("launch_ros"),
             "launch_ros.actions": types.ModuleType("launch_ros.actions")}
    stubs["launch"].LaunchDescription = lambda actions: actions
    for name in ("DeclareLaunchArgument", "OpaqueFunction", "LogInfo"):
        setattr(stubs["launch.actions"], name, type(name, (Action,), {}))
    stubs["launch_ros.actions"].Node = type("Node", (Action,), {})
    for name, module in stubs.items():
        monkeypatch.setitem(sys.modules, name, module)

    launch = _load_launch_file(repo_root)
    description = launch.generate_launch_description()
    declared = {a.args[0]: a.kwargs["default_value"] for a in description[:-1]}
    assert declared["use_sim_time"] == "true" and declared["preset"] == ""
    assert {"bag", "namespace", "params_file", "rviz", "rate", "loop", "start"} <= set(declared)
    setup = description[-1].kwargs["function"]
    context = types.SimpleNamespace(launch_configurations={
        **declared, "bag": "/data/k.bag", "preset": "kitti2bag", "namespace": "stereo",
        "rviz": "true", "fixed_frame": "cam0_optical"})
    actions = setup(context)
    nodes = {a.kwargs.get("executable"): a.kwargs for a in actions if "executable" in a.kwargs}
    assert set(nodes) == {"stereo_depth_node", "stereo_depth_replay", "rviz2"}
    setup_py = (repo_root / "setup.py").read_text()
    for executable in ("stereo_depth_node", "stereo_depth_replay", "rviz2"):
        assert nodes[executable]["namespace"] == "stereo"      # RViz sees this node's outputs
    for executable in ("stereo_depth_node", "stereo_depth_replay"):
        assert f"{executable} = " in setup_py                 # console scripts exist
    assert nodes["stereo_depth_node"]["parameters"][1] == {"use_sim_time": True}
    assert nodes["stereo_depth_node"]["parameters"][0].endswith("config/stereo_depth.yaml")
    assert nodes["stereo_depth_replay"]["arguments"] == [
        "/data/k.bag", "--rate", "1.0", "--start", "0.0", "--preset", "kitti2bag",
        "--frame-id", "cam0_optical", "--clock"]
    flag, rviz_config = nodes["rviz2"]["arguments"]
    view = yaml.safe_load(Path(rviz_config).read_text())["Visualization Manager"]
    assert flag == "-d" and view["Global Options"]["Fixed Frame"] == "cam0_optical"
    # the replay arguments parse with the real CLI parser
    from stereo_depth_ros.tools.replay import build_parser
    parsed = build_parser().parse_args(nodes["stereo_depth_replay"]["arguments"])
    assert parsed.preset == "kitti2bag" and parsed.clock
    with pytest.raises(ValueError, match="needs bag"):
        launch.replay_arguments("")


def test_remap_arguments_survive_ros_argument_handling(monkeypatch):
    """`--remap FROM:=TO` looks like a ROS 1 remap to rcl, which drops it from the tool's
    arguments; only --ros-args sections are ROS arguments here."""
    from stereo_depth_ros.tools._cli import parse_ros_args, split_ros_args
    from stereo_depth_ros.tools.replay import build_parser

    argv = ["bag", "--remap", "/left/image_raw:=left/image_raw", "--ros-args", "-r",
            "__ns:=/kitti", "--", "--clock"]
    assert split_ros_args(argv) == (["bag", "--remap", "/left/image_raw:=left/image_raw",
                                     "--clock"], ["--ros-args", "-r", "__ns:=/kitti"])
    monkeypatch.setattr(sys, "argv", ["stereo_depth_replay", *argv])
    args = parse_ros_args(build_parser(), None)
    assert args.remap == [("/left/image_raw", "left/image_raw")] and args.clock
