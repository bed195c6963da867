"""The launch files (plain, managed, stereo_image_proc) started through the real launch API, on
the colcon-installed package (KITTI replay: test_launch_kitti_replay.py).

What `ros2 launch stereo_depth_ros <file> name:=value ...` does on a robot
(test/helpers/launch_runner.py: ament index lookup, IncludeLaunchDescription, LaunchService),
with the upstream `launch` and `launch_ros` (../shared/thirdparty/python; skipped with the reason
where that is absent). Each test checks that the node came up with the launch arguments applied
(read back from its parameter service, topics where the arguments put them) and that it
publishes correct depth.
"""

from __future__ import annotations

import time
from pathlib import Path

import cv2
import numpy as np
import pytest

pytest.importorskip("rclpy")

from helpers.launching import (FRAME, SIM_START_S, Launch, assert_scene_depth,  # noqa: E402
                               get_parameters, latest_status, launch_scene, send_scene,
                               start_and_connect, stereo_input_publishers, write_params)
from helpers.process import assert_clean_exit  # noqa: E402
from helpers.ros import RosTestContext, wait_for, wait_for_subscribers  # noqa: E402
from helpers.ros_messages import as_array, image_msg, stamp, stereo_infos  # noqa: E402

from stereo_depth_ros.core.camera import StereoRig  # noqa: E402

pytestmark = [pytest.mark.ros, pytest.mark.slow]

GOLDEN = Path(__file__).resolve().parents[1] / "reference" / "golden_real_weights"


@pytest.fixture(scope="module")
def install_space(real_ros_packages, colcon_install_space):
    return colcon_install_space


def test_stereo_depth_launch_applies_its_arguments_and_publishes_depth(install_space, tmp_path):
    from diagnostic_msgs.msg import DiagnosticArray
    from rosgraph_msgs.msg import Clock
    from sensor_msgs.msg import Image

    # The params file asks for PSMNet; the backend argument must override it.
    params = write_params(tmp_path / "params.yaml", backend="psmnet", queue_size=5,
                          diagnostics_period_seconds=0.25, **{"sgbm.num_disparities": 32})
    arguments = {"namespace": "robot", "left_namespace": "cam/left",
                 "right_namespace": "cam/right", "backend": "sgbm",
                 "weights_path": "/nowhere/weights_from_the_launch_argument.tar",
                 "use_sim_time": "true", "params_file": str(params)}
    scene = launch_scene()
    ctx = RosTestContext("launch_peer")
    launch = Launch(install_space, "stereo_depth.launch.py", arguments)
    try:
        clock = ctx.publisher(Clock, "/clock")
        started = time.monotonic()

        def tick():
            now_ns = SIM_START_S * 10**9 + int((time.monotonic() - started) * 1e9)
            clock.publish(Clock(clock=stamp(now_ns // 10**9, now_ns % 10**9)))
        timer = ctx.node.create_timer(0.05, tick)
        pubs = stereo_input_publishers(ctx, "/robot/cam")
        depth = ctx.collect(Image, "/robot/depth/image_rect")
        rect = ctx.collect(Image, "/robot/matcher/left/image_rect")
        diagnostics = ctx.collect(DiagnosticArray, "/diagnostics")
        node_name = "/robot/stereo_depth_node"
        start_and_connect(launch, r"ready: backend=sgbm", pubs, diagnostics, node_name,
                          ("depth/image_rect", "matcher/left/image_rect"))

        applied = get_parameters(ctx, node_name, ["use_sim_time", "backend", "weights_path",
                                                  "sgbm.num_disparities", "queue_size"])
        assert applied == {"use_sim_time": True, "backend": "sgbm",
                           "weights_path": arguments["weights_path"],
                           "sgbm.num_disparities": 32, "queue_size": 5}
        # use_sim_time in effect: the node's clock is the test's /clock, not the wall clock.
        status_stamp = diagnostics.snapshot()[-1].header.stamp.sec
        assert SIM_START_S <= status_stamp < SIM_START_S + 120

        when = stamp(SIM_START_S + 5, 0)
        send_scene(pubs, scene, when)
        depth_msg = depth.wait_for_stamp(when, 30.0)
        rect_msg = rect.wait_for_stamp(when, 30.0)
        ctx.node.destroy_timer(timer)
    finally:
        ctx.close()
        code = launch.stop()
    assert_clean_exit(launch.output(), code, what="the launch")
    assert "process has finished cleanly" in launch.output()

    assert depth_msg.header.frame_id == FRAME
    assert_scene_depth(depth_msg)
    np.testing.assert_array_equal(as_array(rect_msg), scene.left)


def test_stereo_depth_launch_with_weights_reproduces_the_official_output(
        install_space, kitti_weights, tmp_path):
    """backend:=psmnet weights_path:=<released KITTI 2015 weights>, a params file turning the
    default mask off: the node's disparity is the official implementation's on the golden
    crop."""
    from diagnostic_msgs.msg import DiagnosticArray
    from sensor_msgs.msg import Image
    from stereo_msgs.msg import DisparityImage

    left = cv2.imread(str(GOLDEN / "drivingstereo_crop_left.png"))      # BGR, 256x512
    right = cv2.imread(str(GOLDEN / "drivingstereo_crop_right.png"))
    official = np.load(GOLDEN / "official_disp_align_corners_true.npy")
    rig = StereoRig(fx=700.0, fy=700.0, cx_left=256.0, cx_right=256.0, cy=128.0,
                    baseline_m=0.54, width=512, height=256)
    # The network's own output, unmasked, to compare with the official one pixel by pixel.
    params = tmp_path / "unmasked.yaml"
    params.write_text("/**:\n  ros__parameters:\n    max_relative_uncertainty: 0.0\n"
                      "    max_disparity_uncertainty: 0.0\n")
    arguments = {"namespace": "psm", "backend": "psmnet", "weights_path": str(kitti_weights),
                 "params_file": str(params)}
    ctx = RosTestContext("launch_psmnet_peer")
    launch = Launch(install_space, "stereo_depth.launch.py", arguments)
    try:
        pubs = stereo_input_publishers(ctx, "/psm")
        disparity = ctx.collect(DisparityImage, "/psm/disparity")
        depth = ctx.collect(Image, "/psm/depth/image_rect")
        diagnostics = ctx.collect(DiagnosticArray, "/diagnostics")
        ready = start_and_connect(launch, r"ready: backend=psmnet.*", pubs, diagnostics,
                                  "/psm/stereo_depth_node", ("disparity", "depth/image_rect"),
                                  timeout=120.0)
        assert "engine=exact on cpu" in ready.group(0), ready.group(0)   # auto on the CPU
        when = stamp(int(time.time()), 0)
        left_info, right_info = stereo_infos(rig, when, FRAME)
        for pub, msg in zip(pubs, (image_msg(left, "bgr8", when, FRAME),
                                   image_msg(right, "bgr8", when, "cam_right_optical"),
                                   left_info, right_info)):
            pub.publish(msg)
        disparity_msg = disparity.wait_for_stamp(when, 180.0)
        depth_msg = depth.wait_for_stamp(when, 30.0)
    finally:
        ctx.close()
        code = launch.stop()
    assert_clean_exit(launch.output(), code, what="the launch")

    d = as_array(disparity_msg.image)
    valid = d >= disparity_msg.min_disparity
    assert valid.mean() > 0.99
    difference = np.abs(d[valid] - official[valid])
    assert difference.max() <= 1e-2 and difference.mean() <= 1e-3, \
        (difference.max(), difference.mean())
    z = as_array(depth_msg)
    positive = valid & (d > 0)
    np.testing.assert_allclose(z[positive], 700.0 * 0.54 / d[positive], rtol=1e-5)


def _managed_launch(install_space, tmp_path, namespace: str, **arguments) -> Launch:
    params = write_params(tmp_path / "sgbm.yaml", backend="sgbm", diagnostics_period_seconds=0.25,
                          **{"sgbm.num_disparities": 32})
    return Launch(install_space, "stereo_depth_managed.launch.py",
                  {"namespace": namespace, "params_file": str(params), **arguments})


def test_managed_launch_autostart_brings_the_node_to_active(install_space, tmp_path):
    """Default autostart: launch_ros configures the lifecycle node and, once it is inactive,
    activates it; it then publishes correct depth."""
    from diagnostic_msgs.msg import DiagnosticArray
    from helpers.ros_nodes import LifecycleClient
    from sensor_msgs.msg import Image

    scene = launch_scene()
    ctx = RosTestContext("managed_launch_peer")
    launch = _managed_launch(install_space, tmp_path, "managed",
                             left_namespace="cam/left", right_namespace="cam/right")
    lifecycle = None
    try:
        pubs = stereo_input_publishers(ctx, "/managed/cam")
        depth = ctx.collect(Image, "/managed/depth/image_rect")
        diagnostics = ctx.collect(DiagnosticArray, "/diagnostics")
        launch.start()
        launch.wait_for_output(r"active: subscribed to /managed/cam/left/image_raw", 60.0)
        lifecycle = LifecycleClient(ctx.node, "/managed/stereo_depth_node")
        assert lifecycle.state() == "active"
        for pub in pubs:
            wait_for_subscribers(pub)
        wait_for(lambda: int(latest_status(diagnostics, "/managed/stereo_depth_node").get(
            "subscribers./managed/depth/image_rect", 0)) >= 1, 30.0,
            what="the node to see our depth subscription")
        when = stamp(int(time.time()), 0)
        send_scene(pubs, scene, when)
        depth_msg = depth.wait_for_stamp(when, 30.0)
        status = wait_for(lambda: (lambda s: s if s.get("pairs_published") == "1" else None)(
            latest_status(diagnostics, "/managed/stereo_depth_node")), 30.0,
            what="diagnostics counting the published pair")
    finally:
        if lifecycle is not None:
            lifecycle.close()
        ctx.close()
        code = launch.stop()
    assert_clean_exit(launch.output(), code, what="the launch")
    assert "Failed to make transition" not in launch.output(), launch.output()
    assert status["lifecycle_state"] == "active" and status["backend_loads"] == "1"
    assert_scene_depth(depth_msg)


def test_managed_launch_without_autostart_leaves_the_node_unconfigured(install_space, tmp_path):
    """autostart:=false: the node waits, unconfigured, for a lifecycle manager; configured by
    hand it stays inactive (nothing activates it behind the manager's back)."""
    from diagnostic_msgs.msg import DiagnosticArray
    from helpers.ros_messages import statuses_of
    from helpers.ros_nodes import LifecycleClient

    ctx = RosTestContext("managed_manual_peer")
    launch = _managed_launch(install_space, tmp_path, "manual", autostart="false")
    fqn = "/manual/stereo_depth_node"
    lifecycle = None
    try:
        diagnostics = ctx.collect(DiagnosticArray, "/diagnostics")
        launch.start()
        lifecycle = LifecycleClient(ctx.node, fqn)
        # Several diagnostics periods after its services came up (autostart would have
        # configured an SGBM node long before), it is still unconfigured.
        wait_for(lambda: len(statuses_of(diagnostics, fqn)) >= 4, 30.0, what="diagnostics")
        assert lifecycle.state() == "unconfigured"
        assert {s["lifecycle_state"] for _, s in statuses_of(diagnostics, fqn)} == \
            {"unconfigured"}
        assert ctx.node.get_subscriptions_info_by_topic("/manual/left/image_raw") == []

        assert lifecycle.change("configure")
        seen = len(statuses_of(diagnostics, fqn))
        wait_for(lambda: len(statuses_of(diagnostics, fqn)) >= seen + 4, 30.0,
                 what="diagnostics after configure")
        assert lifecycle.state() == "inactive"
    finally:
        if lifecycle is not None:
            lifecycle.close()
        ctx.close()
        code = launch.stop()
    assert_clean_exit(launch.output(), code, what="the launch")
    assert "configured: backend=sgbm" in launch.output()
    assert "active: subscribed" not in launch.output()


def test_stereo_image_proc_launch_with_its_arguments_publishes_depth(install_space):
    """stereo_image_proc.launch.py with stereo_image_proc's arguments (the README's robot
    example, rectified inputs as with launch_image_proc:=False) plus backend: depth from the
    node in `namespace`, the algorithm arguments applied under both names."""
    from diagnostic_msgs.msg import DiagnosticArray
    from sensor_msgs.msg import CameraInfo, Image, PointCloud2
    from stereo_msgs.msg import DisparityImage

    arguments = {"namespace": "stereo", "left_namespace": "/camera/left",
                 "right_namespace": "/camera/right", "launch_image_proc": "False",
                 "approximate_sync": "True", "backend": "sgbm", "disparity_range": "32",
                 "correlation_window_size": "5", "uniqueness_ratio": "10.0"}
    scene = launch_scene()
    ctx = RosTestContext("sip_launch_peer")
    launch = Launch(install_space, "stereo_image_proc.launch.py", arguments)
    try:
        pubs = [ctx.publisher(Image, "/camera/left/image_rect"),
                ctx.publisher(Image, "/camera/right/image_rect"),
                ctx.publisher(CameraInfo, "/camera/left/camera_info"),
                ctx.publisher(CameraInfo, "/camera/right/camera_info")]
        depth = ctx.collect(Image, "/stereo/depth/image_rect")
        disparity = ctx.collect(DisparityImage, "/stereo/disparity")
        cloud = ctx.collect(PointCloud2, "/stereo/points2")
        diagnostics = ctx.collect(DiagnosticArray, "/diagnostics")
        start_and_connect(launch, r"ready: backend=sgbm", pubs, diagnostics,
                          "/stereo/stereo_depth_node",
                          ("depth/image_rect", "disparity", "points2"))
        applied = get_parameters(ctx, "/stereo/stereo_depth_node", [
            "backend", "sgbm.num_disparities", "disparity_range", "sgbm.block_size",
            "approximate_sync", "avoid_point_cloud_padding", "texture_threshold"])
        assert applied == {"backend": "sgbm", "sgbm.num_disparities": 32, "disparity_range": 32,
                           "sgbm.block_size": 5, "approximate_sync": True,
                           "avoid_point_cloud_padding": False, "texture_threshold": 10}
        when = stamp(int(time.time()), 0)
        send_scene(pubs, scene, when)
        depth_msg = depth.wait_for_stamp(when, 30.0)
        disparity_msg = disparity.wait_for_stamp(when, 30.0)
        cloud_msg = cloud.wait_for_stamp(when, 30.0)
    finally:
        ctx.close()
        code = launch.stop()
    assert_clean_exit(launch.output(), code, what="the launch")
    assert_scene_depth(depth_msg)
    assert (disparity_msg.min_disparity, disparity_msg.max_disparity) == (0.0, 31.0)
    assert cloud_msg.point_step == 32
