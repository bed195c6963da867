"""The node runs of the parameter-effect tests (test_node_parameter_effects, test_node_in_process,
test_node_psmnet): a two-plane synthetic scene with known depths, starting and stopping a node,
sending one pair and reading its outputs, setting parameters live."""

from __future__ import annotations

import numpy as np

from helpers.ros import FRAME, Harness, NodeProcess
from helpers.ros_messages import as_array, image_msg, stereo_infos
from helpers.ros_nodes import set_parameters
from stereo_depth_ros.core.synthetic import make_scene


FX, BASELINE = 200.0, 0.1
BACKGROUND_D, FOREGROUND_D = 14.0, 22.0        # px: depth 1.43 m and 0.91 m
BACKGROUND_Z, FOREGROUND_Z = FX * BASELINE / BACKGROUND_D, FX * BASELINE / FOREGROUND_D
FOREGROUND = (slice(38, 58), slice(50, 80))    # inside the box u 42.7-85.3, v 32-64
BACKGROUND = (slice(72, 92), slice(44, 124))


def two_plane_scene():
    """96x128: a background plane at BACKGROUND_D px and a box at FOREGROUND_D px."""
    return make_scene(96, 128, background_disparity=BACKGROUND_D,
                      foreground_disparity=FOREGROUND_D, fx=FX, baseline_m=BASELINE,
                      texture_cell_px=2.0, seed=7)


def start_node(args: list[str], ready: str = r"ready: backend=sgbm",
               timeout: float = 60.0) -> NodeProcess:
    node = NodeProcess(args).start()
    try:
        node.wait_for_output(ready, timeout=timeout)
    except BaseException:
        node.stop()
        raise
    return node


def send_pair(h: Harness, left, right, rig, names, frame: str = FRAME, encoding="rgb8",
              image_frame: str = FRAME) -> dict:
    """Publish one pair (stamped now) with the rectified infos of rig; its outputs by name."""
    when = h.next_stamp()
    left_info, right_info = stereo_infos(rig, when, frame)
    h.send_msgs(image_msg(left, encoding, when, image_frame),
                image_msg(right, encoding, when, image_frame), left_info, right_info)
    return h.outputs_for(when, names)


def set_ok(h: Harness, values: dict) -> None:
    results = set_parameters(h.ctx.node, h.fqn, values)
    assert all(r.successful for r in results), [r.reason for r in results]


def valid_disparity(msg) -> np.ndarray:
    """Disparity values of a DisparityImage with NaN where the message marks them invalid."""
    d = as_array(msg.image).astype(np.float32)
    return np.where(d >= msg.min_disparity, d, np.nan)
