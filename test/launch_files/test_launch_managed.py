"""launch/stereo_depth_managed.launch.py through the real launch API on the colcon-installed
package: with autostart launch_ros brings the lifecycle node to active (it then publishes
depth); without it the node stays unconfigured until a lifecycle client drives it."""

from __future__ import annotations

import time

import numpy as np
import pytest

pytest.importorskip("rclpy")

from helpers.launching import (BACKGROUND_D, BASELINE_M, FOREGROUND_D, FRAME, FX,  # noqa: E402
                               Launch, latest_status, stereo_input_publishers, write_params)
from helpers.process import assert_clean_exit  # noqa: E402
from helpers.ros import RosTestContext, wait_for, wait_for_subscribers  # noqa: E402
from helpers.ros_messages import as_array, image_msg, stamp, stereo_infos  # noqa: E402

from stereo_depth_ros.core.synthetic import make_scene  # noqa: E402

pytestmark = [pytest.mark.ros, pytest.mark.slow]


@pytest.fixture(scope="module")
def install_space(real_ros_packages, colcon_install_space):
    return colcon_install_space


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

    scene = make_scene(96, 128, background_disparity=BACKGROUND_D,
                       foreground_disparity=FOREGROUND_D, fx=FX, baseline_m=BASELINE_M,
                       texture_cell_px=2.0, seed=4)
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
        left_info, right_info = stereo_infos(scene.rig, when, FRAME)
        for pub, msg in zip(pubs, (image_msg(scene.left, "rgb8", when, FRAME),
                                   image_msg(scene.right, "rgb8", when, "cam_right_optical"),
                                   left_info, right_info)):
            pub.publish(msg)
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
    z = as_array(depth_msg)
    assert np.nanmedian(z[75:92, 40:120]) == pytest.approx(FX * BASELINE_M / BACKGROUND_D,
                                                           rel=0.01)
    assert np.nanmedian(z[36:60, 52:76]) == pytest.approx(FX * BASELINE_M / FOREGROUND_D,
                                                          rel=0.01)


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
