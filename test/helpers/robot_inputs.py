"""The robot-input node tests' scene (120x160, two planes of known depth), SGBM settings and
nodes: each node in its own namespace (a module's nodes must not hear each other's inputs),
and the depth one pair gives."""

from __future__ import annotations

import numpy as np

from helpers.ros import FRAME, OUTPUTS, Harness, NodeProcess
from helpers.ros_messages import as_array, stereo_infos
from stereo_depth_ros.core.synthetic import make_scene


FX, BASELINE = 200.0, 0.1
BACKGROUND_D, FOREGROUND_D = 14.0, 22.0          # px: depth 1.43 m and 0.91 m
SGBM = ["-p", "backend:=sgbm", "-p", "sgbm.num_disparities:=32", "-p", "sgbm.block_size:=5",
        "-p", "diagnostics_period_seconds:=0.25", "-p", "queue_size:=5"]
DEPTH_OUT = {"depth/image_rect": OUTPUTS["depth/image_rect"]}


def robot_scene():
    return make_scene(120, 160, background_disparity=BACKGROUND_D,
                      foreground_disparity=FOREGROUND_D, fx=FX, baseline_m=BASELINE,
                      texture_cell_px=3.0, seed=5)


def node_in_namespace(extra: list[str], namespace: str, outputs=DEPTH_OUT,
                      ready: str = r"ready: backend=sgbm", harness_class=Harness):
    """A node in its own namespace (the module's nodes must not hear each other's inputs)."""
    node = NodeProcess(SGBM + ["-r", f"__ns:={namespace}"] + extra).start()
    node.wait_for_output(ready, timeout=60)
    return node, harness_class(node, outputs=outputs, namespace=namespace)


def depth_of(harness: Harness, left_msg, right_msg, rig) -> np.ndarray:
    when = left_msg.header.stamp
    left_info, right_info = stereo_infos(rig, when, FRAME)
    harness.send_msgs(left_msg, right_msg, left_info, right_info)
    msg = harness.outputs_for(when, ["depth/image_rect"])["depth/image_rect"]
    return as_array(msg)
