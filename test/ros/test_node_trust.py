"""The node's calibration-drift alarm, rate governor and cloud decimation, by their effects.

Real rclpy and Fast DDS, one SGBM node (a subprocess) with a rectification check every 0.2 s:
a real OAK-D pair with its own calibration reports `rectification_error_px` below the WARN
threshold and an OK status; the same images with the right camera_info's principal point moved by
1.5 px (the node rectifies with it, as it would after a bump) turn /diagnostics WARN within 3
checks. `target_rate_hz` beyond reach takes the working scale to `min_input_scale`, shown in
/diagnostics and in every output's geometry; `points_decimation` 2 and 4 give the organised cloud
of every 2nd/4th pixel, equal to the depth image there.
"""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("rclpy")

from helpers.process import assert_clean_exit  # noqa: E402
from helpers.ros import FRAME, Harness, NodeProcess  # noqa: E402
from helpers.ros_messages import as_array, camera_info_msg, image_msg, stereo_infos  # noqa: E402
from helpers.ros_nodes import set_parameters  # noqa: E402

from stereo_depth_ros.config import SPECS  # noqa: E402
from stereo_depth_ros.core.rectification_check import misaligned_calibration  # noqa: E402
from stereo_depth_ros.data.shipped_samples import shipped_pairs  # noqa: E402
from stereo_depth_ros.ros.messages import pointcloud2_to_numpy, unpack_rgb  # noqa: E402

pytestmark = [pytest.mark.ros, pytest.mark.slow]

WARN_PX = SPECS["rectification_check.warn_px"].default
NAMES = {"depth/image_rect": "sensor_msgs/Image", "depth/camera_info": "sensor_msgs/CameraInfo",
         "points2": "sensor_msgs/PointCloud2", "disparity": "stereo_msgs/DisparityImage"}
ARGS = ["-p", "backend:=sgbm", "-p", "sgbm.num_disparities:=64", "-p", "queue_size:=2",
        "-p", "diagnostics_period_seconds:=0.2", "-p", "rectification_check.period_seconds:=0.2",
        "-p", "min_input_scale:=0.25"]


@pytest.fixture(scope="module")
def oak_pair(assets_dir):
    [pair] = [p for p in shipped_pairs(assets_dir / "samples") if p.name == "oak-d/desk"]
    return pair.load()


@pytest.fixture(scope="module")
def node():
    process = NodeProcess(ARGS).start()
    harness = None
    try:
        process.wait_for_output(r"ready: backend=sgbm", timeout=60.0)
        harness = Harness(process, NAMES)
        harness.wait_until_connected()
        yield harness
    finally:
        if harness is not None:
            harness.close()
        code = process.stop()
        assert_clean_exit(process.output(), code)


def infos(calibration, when):
    """camera_info pair of a core.rectify.StereoCalibration."""
    rig = calibration.rig
    return tuple(camera_info_msg(c.K, c.D, c.R, c.P, rig.width, rig.height, when,
                                 FRAME if side == "left" else "right_camera_optical_frame")
                 for side, c in (("left", calibration.left), ("right", calibration.right)))


def send(h: Harness, left, right, left_info, right_info) -> dict:
    when = h.next_stamp()
    left_info.header.stamp = right_info.header.stamp = when
    h.send_msgs(image_msg(left, "rgb8", when, FRAME), image_msg(right, "rgb8", when, FRAME),
                left_info, right_info)
    return h.outputs_for(when, list(NAMES), timeout=60.0)


def checks(status: dict) -> int:
    return int(status.get("rectification_check.evaluations", 0))


def send_until(h: Harness, calibration, left, right, predicate, what, frames: int = 40):
    """Send the pair with this calibration until the node's status satisfies predicate."""
    for _ in range(frames):
        send(h, left, right, *infos(calibration, h.next_stamp()))
        status = h.latest_status()
        if status and predicate(status):
            return status
    raise AssertionError(f"{what} not seen after {frames} pairs: {h.latest_status()}")


def test_drift_alarm_ok_with_the_calibration_and_warn_with_a_perturbed_one(node, oak_pair):
    left, right, rig = oak_pair
    status = send_until(node, misaligned_calibration(rig), left, right,
                        lambda s: "rectification_error_px" in s, "a first check")
    assert float(status["rectification_error_px"]) < WARN_PX
    assert status["_level"] == 0 and status["rectification_check"] == "measured"
    assert int(status["rectification_check.matches"]) >= 30
    before = checks(status)
    bumped = misaligned_calibration(rig, cy_shift_px=1.5)
    status = send_until(node, bumped, left, right, lambda s: s["_level"] == 1,
                        "WARN after the principal point moved")
    assert checks(status) - before <= 3
    assert float(status["rectification_error_px"]) >= WARN_PX
    assert "rectification error" in status["_message"] and "drifted" in status["_message"]
    error = float(status["rectification_error_px"])
    results = set_parameters(node.ctx.node, node.fqn, {"rectification_check.warn_px": error + 1})
    assert all(r.successful for r in results), [r.reason for r in results]
    try:                                          # a live threshold change reaches the check
        send_until(node, bumped, left, right, lambda s: s["_level"] == 0, "OK above the error")
        rejected = set_parameters(node.ctx.node, node.fqn, {"rectification_check.warn_px": 3.5})
        assert not rejected[0].successful and "must be below" in rejected[0].reason
    finally:
        set_parameters(node.ctx.node, node.fqn, {"rectification_check.warn_px": WARN_PX})
    send_until(node, misaligned_calibration(rig), left, right,     # recalibrated: OK again
               lambda s: s["_level"] == 0 and float(s["rectification_error_px"]) < WARN_PX,
               "OK after the calibration was restored")


def test_an_unreachable_target_rate_takes_the_scale_to_its_minimum(node, oak_pair):
    left, right, rig = oak_pair
    left_info, right_info = stereo_infos(rig, node.next_stamp())
    try:
        results = set_parameters(node.ctx.node, node.fqn, {"target_rate_hz": 1000.0})
        assert all(r.successful for r in results), [r.reason for r in results]
        status = send_until(node, misaligned_calibration(rig), left, right,
                            lambda s: s.get("input_scale_in_use") == "0.25",
                            "the governor at min_input_scale")
        assert status["rate_governor.target_rate_hz"] == "1000"
        assert int(status["rate_governor.scale_changes"]) >= 1
        out = send(node, left, right, left_info, right_info)
        info, disparity = out["depth/camera_info"], out["disparity"]
        assert (info.width, info.height) == (160, 120)
        assert info.k[0] == pytest.approx(rig.fx * 0.25) and info.p[2] == pytest.approx(
            rig.cx_left * 0.25)
        assert disparity.f == pytest.approx(rig.fx * 0.25)
        assert (disparity.image.width, out["depth/image_rect"].width) == (160, 160)
        assert (out["points2"].width, out["points2"].height) == (160, 120)
    finally:
        set_parameters(node.ctx.node, node.fqn, {"target_rate_hz": 0.0})
    status = send_until(node, misaligned_calibration(rig), left, right,
                        lambda s: s.get("input_scale_in_use") == "1", "the scale back at 1")
    assert "rate_governor.target_rate_hz" not in status


@pytest.mark.parametrize("step", [2, 4])
def test_points_decimation_keeps_every_nth_pixel_of_the_depth(node, oak_pair, step):
    left, right, rig = oak_pair
    results = set_parameters(node.ctx.node, node.fqn, {"points_decimation": step})
    assert all(r.successful for r in results), [r.reason for r in results]
    try:
        out = send(node, left, right, *stereo_infos(rig, node.next_stamp()))
    finally:
        set_parameters(node.ctx.node, node.fqn, {"points_decimation": 1})
    depth = as_array(out["depth/image_rect"])
    cloud = out["points2"]
    assert (cloud.height, cloud.width) == (480 // step, 640 // step)
    points = pointcloud2_to_numpy(cloud)
    sampled = depth[::step, ::step]
    assert np.isfinite(sampled).mean() > 0.3
    np.testing.assert_array_equal(np.isnan(points["z"]), np.isnan(sampled))
    np.testing.assert_allclose(points["z"], sampled, rtol=1e-6)
    rows, cols = np.mgrid[0:480:step, 0:640:step]
    valid = np.isfinite(sampled)
    np.testing.assert_allclose(points["x"][valid],
                               ((cols - rig.cx_left) * sampled / rig.fx)[valid],
                               rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(points["y"][valid], ((rows - rig.cy) * sampled / rig.fy)[valid],
                               rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(unpack_rgb(points["rgb"]), left[::step, ::step])
    rejected = set_parameters(node.ctx.node, node.fqn, {"points_decimation": 3})
    assert not rejected[0].successful and "1, 2 or 4" in rejected[0].reason
