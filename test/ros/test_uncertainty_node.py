"""depth/uncertainty and points2's depth_std through the real node (rclpy, Fast DDS), by value:
PSMNet (released weights, a real KITTI crop) publishes sigma_Z = Z^2 sigma_d / (f B) with depth's
header and NaN exactly where depth is invalid; SGBM does not advertise the topic."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("rclpy")

from helpers.parameter_effects import start_node  # noqa: E402
from helpers.ros import Harness, wait_for  # noqa: E402
from helpers.ros_messages import as_array, image_msg, stereo_infos  # noqa: E402
from helpers.samples import kitti_crop  # noqa: E402

from stereo_depth_ros import topics  # noqa: E402
from stereo_depth_ros.ros.messages import pointcloud2_to_numpy  # noqa: E402

pytestmark = [pytest.mark.ros, pytest.mark.slow]

FRAME = "stereo_left_optical_frame"
NAMES = {"depth/image_rect": "sensor_msgs/Image", topics.DEPTH_UNCERTAINTY: "sensor_msgs/Image",
         "points2": "sensor_msgs/PointCloud2"}
LIMIT = 0.08                         # a relative-uncertainty limit that splits the crop
SIGMA_LIMIT = 2.0                    # a disparity-uncertainty limit (px) that removes a few


def _offline(kitti_weights, left, right, rig):
    """What the node should compute: the same pipeline in this process, nothing masked."""
    from stereo_depth_ros.backends.psmnet import PsmnetBackend
    from stereo_depth_ros.pipeline import PipelineOptions, StereoPipeline
    backend = PsmnetBackend(kitti_weights, device="cpu", engine="exact", max_disparity=64)
    options = PipelineOptions(confidence_threshold=0.0, max_relative_uncertainty=0.0,
                              max_disparity_uncertainty=0.0)
    return StereoPipeline(backend, options).process(left, right, rig)


def test_psmnet_node_publishes_depth_uncertainty_and_depth_std(assets_dir, kitti_weights):
    left, right, rig = kitti_crop(assets_dir)
    node = start_node(["-r", "__ns:=/unc", "-p", "backend:=psmnet", "-p",
                       f"weights_path:={kitti_weights}", "-p", "device:=cpu", "-p",
                       "engine:=exact", "-p", "max_disparity:=64", "-p", "use_color:=false",
                       "-p", "points_depth_std:=true", "-p", "confidence_threshold:=0.0",
                       "-p", f"max_relative_uncertainty:={LIMIT}",
                       "-p", f"max_disparity_uncertainty:={SIGMA_LIMIT}",
                       "-p", "diagnostics_period_seconds:=0.5"], r"ready: backend=psmnet",
                      timeout=120.0)
    h = None
    try:
        h = Harness(node, NAMES, namespace="/unc")
        h.wait_until_connected(list(NAMES))
        when = h.next_stamp()
        h.send_msgs(image_msg(left, "rgb8", when, FRAME), image_msg(right, "rgb8", when, FRAME),
                    *stereo_infos(rig, when, FRAME))
        out = h.outputs_for(when, list(NAMES), timeout=120.0)
    finally:
        if h is not None:
            h.close()
        assert node.stop() == 0, node.output()
    depth_msg, sigma_msg = out["depth/image_rect"], out[topics.DEPTH_UNCERTAINTY]
    assert sigma_msg.encoding == "32FC1"
    assert sigma_msg.header == depth_msg.header and sigma_msg.header.frame_id == FRAME
    depth, sigma_z = as_array(depth_msg), as_array(sigma_msg)
    expected = _offline(kitti_weights, left, right, rig)
    # the mask: exactly the pixels whose sigma_d / d or sigma_d exceeds its limit, in a
    # fattened band or hidden from the right camera (fattening_filter and occlusion_filter, on
    # by default), are gone, in both
    from stereo_depth_ros.core.fattening import fattened
    from stereo_depth_ros.core.occlusion import occluded
    relative = expected.uncertainty_px / (expected.disparity - rig.cx_offset)
    filtered = (fattened(expected.left, expected.disparity, rig.cx_offset)
                | occluded(expected.disparity))
    dropped = (relative > LIMIT) | (expected.uncertainty_px > SIGMA_LIMIT) | filtered
    assert 0.02 < dropped.mean() < 0.9, dropped.mean()
    assert ((expected.uncertainty_px > SIGMA_LIMIT) & ~(relative > LIMIT)).any()
    np.testing.assert_array_equal(np.isnan(depth), dropped)
    np.testing.assert_array_equal(np.isnan(sigma_z), dropped)
    # the values: first-order sigma_Z of the offline sigma_d
    kept = ~dropped
    np.testing.assert_allclose(sigma_z[kept], expected.depth_std_m[kept], rtol=1e-4)
    z = depth[kept].astype(np.float64)
    np.testing.assert_allclose(
        sigma_z[kept], z ** 2 * expected.uncertainty_px[kept] / (rig.fx * rig.baseline_m),
        rtol=1e-3)
    assert 0.0 < np.median(sigma_z[kept]) < np.median(z)
    cloud = pointcloud2_to_numpy(out["points2"])
    np.testing.assert_array_equal(cloud["depth_std"], sigma_z)


def test_sgbm_node_does_not_advertise_depth_uncertainty():
    node = start_node(["-r", "__ns:=/nounc", "-p", "backend:=sgbm", "-p", "queue_size:=5"],
                      r"ready: backend=sgbm", timeout=60.0)
    h = None
    try:
        h = Harness(node, {"depth/image_rect": "sensor_msgs/Image"}, namespace="/nounc")
        graph = h.ctx.node
        wait_for(lambda: graph.get_publishers_info_by_topic("/nounc/depth/image_rect"), 20.0,
                 what="the node's depth publisher in the graph")
        assert graph.get_publishers_info_by_topic(f"/nounc/{topics.DEPTH_UNCERTAINTY}") == []
    finally:
        if h is not None:
            h.close()
        assert node.stop() == 0, node.output()
