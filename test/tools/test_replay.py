"""stereo_depth_replay without a node: bag reading and fixing (kitti2bag preset, frame grouping,
/tf_static), its launch file (against stub launch modules), its remap arguments and its
command-line errors. Bags into the real node: test_replay_into_node.py."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

from helpers.kitti import BASELINE_M, FX, KITTI2BAG_SCAN_OFFSET_NS, LEFT_STAMPS
from helpers.kitti_lidar import camera_from_velodyne
from helpers.process import assert_clean_exit
from helpers.replay_bags import NODE_INPUTS, SIZE
from stereo_depth_ros.bags.kitti_layout import parse_kitti_timestamp
from stereo_depth_ros.bags import PRESETS, BagError, BagSource, KittiStereoGrouper, header_stamp_ns
from stereo_depth_ros.tools.replay import parse_remap


def deserialize(item):
    from rosbags.typesys import Stores, get_typestore
    return get_typestore(Stores.ROS2_KILTED).deserialize_cdr(item.cdr, item.msgtype)


# ------------------------------------------------------------------------------ without ROS


def test_kitti2bag_preset_fixes_ros1_bag(ros1_bag):
    source = BagSource(ros1_bag, preset=PRESETS["kitti2bag"])
    assert source.is_ros1
    # gps/fix is not part of the preset; the Velodyne and /tf_static are
    assert set(source.outputs) == NODE_INPUTS | {"velodyne_points", "/tf_static"}
    assert source.outputs["/tf_static"] == "tf2_msgs/msg/TFMessage"
    assert source.latched == {"/tf_static"}          # kitti2bag wrote it without latching
    everything = list(source)
    items = [i for i in everything if i.topic in NODE_INPUTS]
    assert [i.topic for i in items[:4]] == ["left/camera_info", "right/camera_info",
                                            "left/image_raw", "right/image_raw"]
    left_stamps = [parse_kitti_timestamp(s) for s in LEFT_STAMPS[:3]]
    assert [i.stamp_ns for i in items] == [t for t in left_stamps for _ in range(4)]
    assert all(i.in_frame for i in items)
    scans = [i for i in everything if i.topic == "velodyne_points"]
    # the scans keep their own stamps and are not stereo frames (--step does not wait on them)
    assert [i.stamp_ns for i in scans] == [t + KITTI2BAG_SCAN_OFFSET_NS for t in left_stamps]
    assert [i.frame_stamp_ns for i in scans] == [None] * 3
    cloud = deserialize(scans[1])
    assert cloud.header.frame_id == "velo_link" and cloud.width == 40
    xyz = np.frombuffer(cloud.data.tobytes(), "<f4").reshape(-1, 4)[:, :3]
    np.testing.assert_array_equal(xyz[5], [11.0, 5.0, 1.0])
    assert len([i for i in everything if i.topic == "/tf_static"]) == 3
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
    assert "/kitti/velo/pointcloud" in source.outputs         # no preset: names as stored
    items = list(source)
    # the first frame is before --start, except its latched /tf_static, played first at the start
    assert len(items) == 1 + 2 * 7
    assert items[0].topic == "/tf_static"
    assert items[0].t_ns < min(i.t_ns for i in items[1:])
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


def _tree_of(items):
    from stereo_depth_ros.core.transforms import TransformTree, static_transforms_from_message

    tree = TransformTree()
    for item in items:
        if item.topic.endswith("tf_static"):
            tree.add_all(static_transforms_from_message(deserialize(item)))
    return tree


def test_kitti2bag_preset_renames_the_camera_frame_in_tf_static(ros1_bag):
    """With --frame-id the images get the new frame id, and so do the transforms that named the
    old one: the Velodyne -> camera chain (velo_link - imu_link - camera) still resolves."""
    items = list(BagSource(ros1_bag, preset=PRESETS["kitti2bag"],
                           frame_id="camera_left_optical_frame"))
    tree = _tree_of(items)
    assert "camera_color_left" not in tree.frames()
    assert {"camera_left_optical_frame", "camera_color_right", "velo_link"} <= tree.frames()
    np.testing.assert_allclose(tree.lookup("camera_left_optical_frame", "velo_link"),
                               camera_from_velodyne(), atol=1e-9)
    kept = _tree_of(BagSource(ros1_bag, preset=PRESETS["kitti2bag"]))
    np.testing.assert_allclose(kept.lookup("camera_color_left", "velo_link"),
                               camera_from_velodyne(), atol=1e-9)


def test_evaluator_reads_tf_static_from_the_bag_as_the_replay_renames_it(ros1_bag):
    """`stereo_depth_eval --live --tf-bag BAG --preset kitti2bag --frame-id F` sees the frames the
    replay publishes: F (not camera_color_left) joined to velo_link through imu_link."""
    from stereo_depth_ros.bags.static_tf import read_static_transforms
    from stereo_depth_ros.core.transforms import TransformTree

    renamed = TransformTree(read_static_transforms(ros1_bag, preset="kitti2bag",
                                                   frame_id="camera_left_optical_frame"))
    assert "camera_color_left" not in renamed.frames()
    np.testing.assert_allclose(renamed.lookup("camera_left_optical_frame", "velo_link"),
                               camera_from_velodyne(), atol=1e-9)
    as_stored = TransformTree(read_static_transforms(ros1_bag))
    np.testing.assert_allclose(as_stored.lookup("camera_color_left", "velo_link"),
                               camera_from_velodyne(), atol=1e-9)


def test_ros2_bag_plays_lidar_and_latched_tf_static_as_recorded(lidar_bag):
    scene, bag = lidar_bag
    source = BagSource(bag)
    assert source.latched == {"/tf_static"}        # recorded transient local by the converter
    assert source.outputs["/velodyne_points"] == "sensor_msgs/msg/PointCloud2"
    items = list(source)
    scans = [i for i in items if i.topic == "/velodyne_points"]
    assert [i.stamp_ns for i in scans] == scene.scan_stamps_ns
    assert not any(i.in_frame for i in scans)
    frames = sorted({i.frame_stamp_ns for i in items} - {None})
    assert frames == scene.left_stamps_ns
    # --start past the first frame: the scans and images before it go, /tf_static does not
    later = list(BagSource(bag, start_s=0.15))
    assert later[0].topic == "/tf_static"
    assert [i.stamp_ns for i in later if i.topic == "/velodyne_points"] == \
        scene.scan_stamps_ns[2:]
    tree = _tree_of(later)
    np.testing.assert_allclose(tree.lookup("camera_left_optical_frame", "velodyne"),
                               camera_from_velodyne(), atol=1e-6)


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
    # a ROS 2 bag (no preset): the stored absolute names go into the namespace, the scans too
    plain = build_parser().parse_args(launch.replay_arguments("/data/drive_bag"))
    assert {("/left/image_raw", "left/image_raw"),
            ("/velodyne_points", "velodyne_points")} <= set(plain.remap)
    assert not any(source == "/tf_static" for source, _ in plain.remap)


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


# ------------------------------------------------------------------------ command line errors


def _assert_one_line_error(text: str, *fragments: str) -> None:
    assert_clean_exit(text)
    last = text.strip().splitlines()[-1]
    assert last.startswith("stereo_depth_replay: error: ")
    for fragment in fragments:
        assert fragment in last, text


def test_negative_rate_is_a_usage_error(ros2_bag, capsys):
    from stereo_depth_ros.tools.replay import main

    with pytest.raises(SystemExit) as exit_info:
        main([str(ros2_bag), "--rate", "-1"])
    assert exit_info.value.code == 2
    _assert_one_line_error(capsys.readouterr().err, "--rate", "'-1'")


@pytest.mark.parametrize("content, message", [
    (None, "no such file"),
    ("a: [1, 2\n", "not valid YAML at line 2"),
    ("", "the file is empty"),
    ("- 1\n- 2\n", "expected node names mapping to 'ros__parameters:' at the top, got list"),
    ("/**:\n  backend: sgbm\n", "expected node names mapping to 'ros__parameters:' under "
     "'backend', got str"),
    ("/**: {}\n", "no 'ros__parameters:' block"),
])
def test_bad_params_file_is_one_line_naming_it(ros2_bag, tmp_path, capsys, content, message):
    from stereo_depth_ros.tools.replay import main

    path = tmp_path / "params.yaml"
    if content is not None:
        path.write_text(content)
    code = main([str(ros2_bag), "--wait-timeout", "0", "--ros-args", "--params-file",
                 str(path)])
    assert code == 2
    _assert_one_line_error(capsys.readouterr().err, f"--params-file {path}: {message}")


def test_bag_error_is_one_line(tmp_path, capsys):
    from stereo_depth_ros.tools.replay import main

    assert main([str(tmp_path / "nope")]) == 1
    _assert_one_line_error(capsys.readouterr().err, "no such bag")


@pytest.mark.ros
def test_waiting_for_subscribers_says_for_what_and_how_long(ros2_bag, caplog, monkeypatch):
    """No subscriber ever comes (own domain): the wait names the topics and its limit, repeats
    what is still missing with the time left, then gives up with a warning."""
    import logging

    import rclpy
    from rclpy.context import Context

    from stereo_depth_ros.ros.bag_player import Player

    monkeypatch.setattr(Player, "WAIT_NOTE_PERIOD_S", 0.2)
    context = Context()
    rclpy.init(context=context)
    player = None
    try:
        # renamed: this module's stereo_node fixture may be subscribed to the real inputs
        source = BagSource(ros2_bag, remaps={"/left/image_raw": "/unheard/left",
                                             "/right/camera_info": "/unheard/right"})
        player = Player(source, context=context, rate=0, wait_timeout_s=1.0,
                        wait_topics=["/unheard/left", "/unheard/right"])
        with caplog.at_level(logging.INFO, logger="stereo_depth_ros.ros.bag_player"):
            assert player.wait_for_subscribers() is False
    finally:
        if player is not None:
            player.destroy()
        rclpy.try_shutdown(context=context)
    messages = [r.getMessage() for r in caplog.records]
    assert messages[0] == ("waiting up to 1 s for subscribers on: /unheard/left, "
                           "/unheard/right (start the node; --wait-timeout sets the limit, "
                           "0 plays at once)")
    still = [m for m in messages if m.startswith("still waiting for subscribers on: "
                                                 "/unheard/left, /unheard/right (")]
    assert still and all(m.endswith(" s left)") for m in still)
    assert messages[-1] == ("no subscriber after 1 s on: /unheard/left, /unheard/right; "
                            "playing anyway")
