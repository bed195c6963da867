"""stereo_depth_point_cloud_node (stereo_image_proc's point_cloud_node): disparity + left image +
camera_infos -> points2, values read back.

The node in this process fed a tiny 8x6 set over real DDS (XYZ as hand-computed, colours, NaN for
invalid disparities, stereo_image_proc's four layouts, approximate sync), then the node as a
subprocess fed bad sets (a specific log line and a counted drop each, and it keeps publishing).
The conversions alone are in test_point_cloud_messages.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("rclpy")

from rclpy.parameter import Parameter  # noqa: E402
from helpers.point_cloud import (FRAME, MODULE, RIG, InProcessCloudNode, Peer,  # noqa: E402
                                 colour_image, disparity_msg, disparity_values,
                                 expected_points)
from helpers.process import assert_clean_exit  # noqa: E402
from helpers.ros import NodeProcess, wait_for  # noqa: E402
from helpers.ros_messages import image_msg, stamp, stereo_infos  # noqa: E402

from stereo_depth_ros.ros.messages import pointcloud2_to_numpy, unpack_rgb  # noqa: E402


@pytest.fixture
def cloud_node(request):
    """(node, peer) factory; everything started is stopped afterwards."""
    made = []

    def factory(namespace: str, **parameters):
        node = InProcessCloudNode(namespace, parameters)
        made.append(node)
        peer = Peer(namespace, parameters.get("image_transport") == "compressed")
        made.append(peer)
        peer.connect(node.node)
        return node.node, peer

    yield factory
    for thing in reversed(made):
        thing.close()


def xyz(cloud: np.ndarray) -> np.ndarray:
    return np.stack([cloud["x"], cloud["y"], cloud["z"]], axis=-1)


@pytest.mark.ros
def test_cloud_values_colours_and_nan_for_invalid_disparities(cloud_node):
    node, peer = cloud_node("/pc_values")
    msg = peer.cloud()
    assert (msg.header.frame_id, msg.height, msg.width, msg.is_dense) == (FRAME, 6, 8, False)
    # stereo_image_proc's default layout: x y z at 0/4/8, rgb at 16, point_step 32
    assert msg.point_step == 32 and msg.row_step == 32 * 8
    assert [(f.name, f.offset, f.datatype, f.count) for f in msg.fields] == [
        ("x", 0, 7, 1), ("y", 4, 7, 1), ("z", 8, 7, 1), ("rgb", 16, 7, 1)]
    cloud = pointcloud2_to_numpy(msg)
    np.testing.assert_allclose(xyz(cloud), expected_points(), rtol=1e-6, equal_nan=True)
    assert np.isnan(xyz(cloud)[0, :2]).all()           # the min - 1 marker and NaN
    np.testing.assert_array_equal(unpack_rgb(cloud["rgb"]), colour_image()[..., ::-1])


@pytest.mark.ros
def test_the_four_layouts_of_stereo_image_proc_live(cloud_node):
    node, peer = cloud_node("/pc_layouts")
    layouts = {(False, True): (32, ["x", "y", "z", "rgb"], [0, 4, 8, 16]),
               (False, False): (16, ["x", "y", "z"], [0, 4, 8]),
               (True, True): (16, ["x", "y", "z", "rgb"], [0, 4, 8, 12]),
               (True, False): (12, ["x", "y", "z"], [0, 4, 8])}
    for (avoid_padding, use_color), (step, names, offsets) in layouts.items():
        results = node.set_parameters([Parameter("avoid_point_cloud_padding", value=avoid_padding),
                                       Parameter("use_color", value=use_color)])
        assert all(result.successful for result in results)
        msg = peer.cloud()
        assert msg.point_step == step, (avoid_padding, use_color)
        assert [f.name for f in msg.fields] == names and [f.offset for f in msg.fields] == offsets
        np.testing.assert_allclose(xyz(pointcloud2_to_numpy(msg)), expected_points(), rtol=1e-6,
                                   equal_nan=True)
    refused = node.set_parameters([Parameter("queue_size", value=9)])[0]
    assert not refused.successful                           # read-only, as in config.py


@pytest.mark.ros
def test_approximate_sync_pairs_nearby_stamps_and_keeps_the_disparity_stamp(cloud_node):
    node, peer = cloud_node("/pc_approx", approximate_sync=True,
                            approximate_sync_tolerance_seconds=0.02)
    assert node.get_parameter("queue_size").value == 5        # stereo_image_proc's default
    msg = peer.cloud(info_offset_ns=5_000_000)                  # infos 5 ms after the images
    assert np.isfinite(xyz(pointcloud2_to_numpy(msg))[3, 3]).all()


@pytest.mark.ros
def test_colours_from_a_compressed_image_with_image_transport_compressed(cloud_node):
    import cv2
    from sensor_msgs.msg import CompressedImage
    namespace = "/pc_png"
    node, peer = cloud_node(namespace, image_transport="compressed")
    png = CompressedImage(format="bgr8; png compressed bgr8",
                          data=cv2.imencode(".png", colour_image())[1].tobytes())
    png.header.frame_id = FRAME
    cloud = pointcloud2_to_numpy(peer.cloud(image=png))
    np.testing.assert_array_equal(unpack_rgb(cloud["rgb"]), colour_image()[..., ::-1])
    np.testing.assert_allclose(xyz(cloud), expected_points(), rtol=1e-6, equal_nan=True)


INPUTS = ("disparity", "left/image_rect_color", "left/camera_info", "right/camera_info")


@pytest.mark.ros
@pytest.mark.parametrize("namespace, parameters, reliability", [
    ("/pc_qos0", {}, dict.fromkeys(INPUTS, "BEST_EFFORT")),            # REP 2003 sensor data
    ("/pc_qos1", {"use_system_default_qos": True}, dict.fromkeys(INPUTS, "SYSTEM_DEFAULT")),
    ("/pc_qos2",                                   # stereo_image_proc's own test does this
     {"qos_overrides./pc_qos2/left/image_rect_color.subscription.reliability": "reliable"},
     {**dict.fromkeys(INPUTS, "BEST_EFFORT"), "left/image_rect_color": "RELIABLE"}),
])
def test_input_qos_follows_use_system_default_qos_and_qos_overrides(
        cloud_node, namespace, parameters, reliability):
    from rclpy.qos import ReliabilityPolicy
    node, _ = cloud_node(namespace, **parameters)
    requested = {sub.topic_name: sub.qos_profile.reliability for sub in node.subscriptions}
    assert requested == {f"{namespace}/{topic}": ReliabilityPolicy[name]
                         for topic, name in reliability.items()}


# ------------------------------------------------------------------------ node, subprocess
@pytest.mark.ros
def test_bad_sets_are_logged_and_counted_and_the_node_keeps_publishing():
    from diagnostic_msgs.msg import DiagnosticArray
    from stereo_depth_ros.ros.diagnostics import key_values_to_dict

    namespace = "/pc_bad"
    with NodeProcess(["-r", f"__ns:={namespace}", "-p", "diagnostics_period_seconds:=0.2"],
                     module=MODULE) as process:
        process.wait_for_output(r"ready: /pc_bad/points2 from /pc_bad/disparity")
        peer = Peer(namespace)
        try:
            diagnostics = peer.ctx.collect(DiagnosticArray, "/diagnostics")
            wait_for(lambda: all(p.get_subscription_count() for p in peer.pubs), 20.0,
                     what="the node subscribing")

            def status() -> dict:
                for array in reversed(diagnostics.snapshot()):
                    for item in array.status:
                        if item.hardware_id == f"{namespace}/point_cloud_node":
                            return key_values_to_dict(item)
                return {}

            wait_for(lambda: status().get(f"subscribers.{namespace}/points2") == "1", 20.0,
                     what="the node seeing our points2 subscription")
            wide = image_msg(np.zeros((6, 10, 3), np.uint8), "bgr8", stamp(1), FRAME)
            nan_left, right = stereo_infos(RIG, stamp(1), FRAME)
            nan_left.p = [math.nan] + list(nan_left.p)[1:]
            cases = [
                (dict(image=wide), "size_mismatch",
                 r"/pc_bad/left/image_rect_color is 10x6 but /pc_bad/disparity is 8x6: the "
                 r"colours must come from the image the disparity was computed on -> set "
                 r"dropped \(dropped.size_mismatch\)"),
                (dict(disparity=disparity_msg(disparity_values(), stamp(1), encoding="16UC1")),
                 "unsupported_encoding",
                 r"/pc_bad/disparity: disparity image encoding '16UC1': a DisparityImage "
                 r"carries 32FC1 -> set dropped \(dropped.unsupported_encoding\)"),
                (dict(infos=(nan_left, right)), "nan_in_calibration",
                 r"nan in /pc_bad/left/camera_info P\[0,0\]: the calibration must be finite "
                 r"-> set dropped \(dropped.nan_in_calibration\)"),
            ]
            for kwargs, reason, pattern in cases:
                line = len(process.lines())

                def logged():
                    peer.send(**kwargs)
                    try:
                        return process.wait_for_output(pattern, 0.5, start_line=line)
                    except AssertionError:
                        return None
                wait_for(logged, 30.0, interval=0.0, what=f"the {reason} line")
                wait_for(lambda: int(status().get(f"dropped.{reason}", 0)) >= 1, 20.0,
                         what=f"dropped.{reason} in /diagnostics")
            # stereo_image_proc's fixture camera_info (only the size): NaN points, counted, WARN
            from sensor_msgs.msg import CameraInfo
            line = len(process.lines())
            msg = peer.cloud(infos=(CameraInfo(width=8, height=6), CameraInfo(width=8, height=6)))
            cloud = pointcloud2_to_numpy(msg)
            assert np.isnan(xyz(cloud)).all() and cloud.shape == (6, 8)
            process.wait_for_output(r"WARN.*points2 carries NaN for every pixel "
                                    r"\(depth_unavailable.non_positive_focal_length\)",
                                    start_line=line)
            wait_for(lambda: int(status().get(
                "depth_unavailable.non_positive_focal_length", 0)) >= 1, 20.0,
                what="the NaN cloud counted")
            # and a good set afterwards comes out with its values
            msg = peer.cloud()
            np.testing.assert_allclose(xyz(pointcloud2_to_numpy(msg)), expected_points(),
                                       rtol=1e-6, equal_nan=True)
            final = status()
            drops = {key: int(value) for key, value in final.items()
                     if key.startswith("dropped.")}
            assert set(drops) == {f"dropped.{reason}" for _, reason, _ in cases}
            assert int(final["dropped_total"]) == sum(drops.values())
        finally:
            peer.close()
        assert_clean_exit(process.output(), process.stop(), what="the point cloud node")


def test_help_lists_the_point_cloud_parameters_only():
    import subprocess
    import sys
    result = subprocess.run([sys.executable, "-m", MODULE, "--help"], capture_output=True,
                            text=True, timeout=60)
    assert_clean_exit(result.stdout + result.stderr, result.returncode, what="--help")
    assert result.stdout.startswith("usage: stereo_depth_point_cloud_node ")
    for name in ("use_color", "avoid_point_cloud_padding", "approximate_sync", "queue_size",
                 "use_system_default_qos", "image_transport"):
        assert f"\n  {name} (default " in result.stdout
    assert "backend" not in result.stdout and "input_scale" not in result.stdout
    assert "config/stereo_depth.yaml" not in result.stdout       # the depth node's file
    setup = (Path(__file__).resolve().parents[2] / "setup.py").read_text()
    assert '"stereo_depth_point_cloud_node = stereo_depth_ros.ros.point_cloud_node:main"' in setup


@pytest.mark.ros
@pytest.mark.slow
def test_behind_the_depth_node_it_rebuilds_the_depth_nodes_own_cloud(cloud_node):
    """stereo_depth_node (sgbm) publishes disparity and points2 of a verged pair (cx_left -
    cx_right = 3 px, fx != fy); this node, fed that disparity, gives the same points and
    colours: the published disparity's offset and inclusive range are read as they are meant."""
    from sensor_msgs.msg import Image, PointCloud2
    from stereo_depth_ros.core.synthetic import make_scene

    scene = make_scene(64, 96, background_disparity=12.0, foreground_disparity=19.0, fx=80.0,
                       fy=90.0, cx_offset=3.0, texture_cell_px=2.0, seed=3)
    namespace = "/pc_chain"
    with NodeProcess(["-r", f"__ns:={namespace}", "-r", "points2:=depth_node_points2",
                      "-p", "backend:=sgbm", "-p", "sgbm.num_disparities:=32"]) as depth_node:
        depth_node.wait_for_output(r"ready: backend=sgbm", timeout=60.0)
        node, peer = cloud_node(namespace)
        raw = [peer.ctx.publisher(Image, f"{namespace}/{side}/image_raw")
               for side in ("left", "right")]
        theirs = peer.ctx.collect(PointCloud2, f"{namespace}/depth_node_points2")
        wait_for(lambda: all(p.get_subscription_count() for p in raw), 20.0,
                 what="the depth node subscribing")
        sent: dict = {}

        def both_clouds():
            when = stamp(1000 + len(sent))
            left_info, right_info = stereo_infos(scene.rig, when, FRAME)
            image = image_msg(scene.left, "rgb8", when, FRAME)
            raw[0].publish(image)
            raw[1].publish(image_msg(scene.right, "rgb8", when, FRAME))
            sent[len(sent)] = when
            for pub, msg in zip(peer.pubs[1:], (image, left_info, right_info)):
                pub.publish(msg)       # the cloud node's inputs besides the depth node's disparity
            mine = {m.header.stamp.sec: m for m in peer.points.snapshot()}
            for msg in theirs.snapshot():
                if msg.header.stamp.sec in mine:
                    return msg, mine[msg.header.stamp.sec]
            return None
        reference, rebuilt = wait_for(both_clouds, 60.0, interval=0.5,
                                      what="both clouds of one pair")
        depth_node.stop()
    ours, depth_nodes = pointcloud2_to_numpy(rebuilt), pointcloud2_to_numpy(reference)
    assert rebuilt.header.frame_id == reference.header.frame_id == FRAME
    assert (rebuilt.point_step, ours.shape) == (reference.point_step, (64, 96))
    valid = np.isfinite(xyz(depth_nodes)).all(-1)
    assert valid.mean() > 0.5
    np.testing.assert_allclose(xyz(ours), xyz(depth_nodes), rtol=2e-6, equal_nan=True)
    np.testing.assert_array_equal(unpack_rgb(ours["rgb"]), unpack_rgb(depth_nodes["rgb"]))
    # the foreground: raw disparity 19 px includes the 3 px offset, Z = 80 * 0.1 / 16 m
    assert np.nanmedian(xyz(ours)[..., 2][24:40, 40:56]) == pytest.approx(0.5, rel=0.02)
