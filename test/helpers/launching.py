"""The launch files through the real launch API, as `ros2 launch` runs them on a robot: `Launch`
(the launch runner in the sourced colcon install space, stopped as Ctrl-C in a terminal stops
it), the node's parameters read back, its input publishers and diagnostics, a params file; and the
scene facts the launch tests share."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import yaml

from helpers.colcon import clean_env, sourced
from helpers.ros import NodeProcess, RosTestContext, wait_for, wait_for_subscribers


RUNNER = Path(__file__).resolve().parent / "launch_runner.py"
FRAME = "cam_left_optical"
SIM_START_S = 1000      # sim time the test's /clock starts at: far from wall time
FX, BASELINE_M = 200.0, 0.1
BACKGROUND_D, FOREGROUND_D = 10.0, 16.0


def launch_scene():
    """96x128: a background plane at BACKGROUND_D px and a box at FOREGROUND_D px."""
    from stereo_depth_ros.core.synthetic import make_scene
    return make_scene(96, 128, background_disparity=BACKGROUND_D,
                      foreground_disparity=FOREGROUND_D, fx=FX, baseline_m=BASELINE_M,
                      texture_cell_px=2.0, seed=4)


def assert_scene_depth(depth_msg) -> None:
    """The depth image of `launch_scene` (32FC1): the background below the box and the box
    itself at their planes' depths, within 1 %."""
    import numpy as np
    import pytest

    from helpers.ros_messages import as_array
    z = as_array(depth_msg)
    assert np.nanmedian(z[75:92, 40:120]) == pytest.approx(FX * BASELINE_M / BACKGROUND_D,
                                                           rel=0.01)     # below the box
    assert np.nanmedian(z[36:60, 52:76]) == pytest.approx(FX * BASELINE_M / FOREGROUND_D,
                                                          rel=0.01)


class Launch(NodeProcess):
    """The launch runner as a subprocess in the sourced install space. stop() is Ctrl-C in a
    terminal: SIGINT to the whole process group (so every node gets it from the terminal and
    again from the launch service), then whatever is left is ended."""

    def __init__(self, install: Path, launch_file: str, arguments: dict[str, str]) -> None:
        pairs = " ".join(f"'{name}:={value}'" for name, value in arguments.items())
        command = f"exec {sys.executable} {RUNNER} stereo_depth_ros {launch_file} {pairs}"
        super().__init__(argv=sourced(install, command), env=clean_env(), cwd=install.parent)

    def stop(self, timeout: float = 20.0) -> int | None:
        if self.process is not None and self.process.poll() is None:
            try:
                os.killpg(self.process.pid, signal.SIGINT)
                self.process.wait(timeout)
            except (ProcessLookupError, subprocess.TimeoutExpired):
                pass
        code = super().stop(timeout)
        if self.process is not None:
            try:
                os.killpg(self.process.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        return code


def get_parameters(ctx: RosTestContext, node_name: str, names: list[str]) -> dict:
    from rcl_interfaces.srv import GetParameters
    from rclpy.parameter import parameter_value_to_python

    client = ctx.node.create_client(GetParameters, f"{node_name}/get_parameters")
    try:
        assert client.wait_for_service(timeout_sec=20.0), f"no parameter service on {node_name}"
        future = client.call_async(GetParameters.Request(names=names))
        wait_for(future.done, 20.0, what=f"parameters of {node_name}")
        return {name: parameter_value_to_python(value)
                for name, value in zip(names, future.result().values)}
    finally:
        ctx.node.destroy_client(client)


def stereo_input_publishers(ctx: RosTestContext, prefix: str) -> list:
    """Publishers of <prefix>/{left,right}/image_raw and .../camera_info, in the order the
    scenes are sent (left image, right image, left info, right info)."""
    from sensor_msgs.msg import CameraInfo, Image
    return [ctx.publisher(Image, f"{prefix}/left/image_raw"),
            ctx.publisher(Image, f"{prefix}/right/image_raw"),
            ctx.publisher(CameraInfo, f"{prefix}/left/camera_info"),
            ctx.publisher(CameraInfo, f"{prefix}/right/camera_info")]


def send_scene(pubs: list, scene, when) -> None:
    """Publish a synthetic scene's pair (rgb8) and camera_infos stamped `when` on the publishers
    of `stereo_input_publishers` order (left image, right image, left info, right info)."""
    from helpers.ros_messages import image_msg, stereo_infos
    left_info, right_info = stereo_infos(scene.rig, when, FRAME)
    for pub, msg in zip(pubs, (image_msg(scene.left, "rgb8", when, FRAME),
                               image_msg(scene.right, "rgb8", when, "cam_right_optical"),
                               left_info, right_info)):
        pub.publish(msg)


def latest_status(diagnostics, hardware_id: str) -> dict[str, str]:
    from stereo_depth_ros.ros.diagnostics import key_values_to_dict
    for array in reversed(diagnostics.snapshot()):
        for status in array.status:
            if status.hardware_id == hardware_id:
                return key_values_to_dict(status)
    return {}


def start_and_connect(launch: Launch, ready_pattern: str, pubs: list, diagnostics,
                      node_name: str, outputs: tuple[str, ...], timeout: float = 60.0):
    """Start `launch`; wait for the node's ready line (its match is returned), for the node to
    subscribe to each of `pubs`, and for its /diagnostics to count our subscription on each of
    `outputs` (topic names in the node's namespace)."""
    launch.start()
    ready = launch.wait_for_output(ready_pattern, timeout=timeout)
    for pub in pubs:
        wait_for_subscribers(pub)
    namespace = node_name.rsplit("/", 1)[0]
    wait_for(lambda: all(int(latest_status(diagnostics, node_name).get(
        f"subscribers.{namespace}/{topic}", 0)) >= 1 for topic in outputs), 30.0,
        what=f"{node_name} to see our output subscriptions")
    return ready


def write_params(path: Path, **params) -> Path:
    path.write_text(yaml.safe_dump({"/**": {"ros__parameters": params}}))
    return path
