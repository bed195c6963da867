"""CameraInfo pair validation; output messages (DisparityImage, depth, PointCloud2, info)."""

from __future__ import annotations

import math
import re

import numpy as np
import pytest

pytest.importorskip("rclpy")

from helpers.ros_messages import camera_info_msg, stamp, stereo_infos  # noqa: E402
from sensor_msgs.msg import PointField  # noqa: E402
from std_msgs.msg import Header  # noqa: E402
from stereo_depth_ros.core.camera import StereoRig  # noqa: E402
from stereo_depth_ros.core.synthetic import make_unrectified_pair  # noqa: E402
from stereo_depth_ros.ros import messages as m  # noqa: E402

pytestmark = pytest.mark.ros

RIG = StereoRig(fx=700.0, fy=690.0, cx_left=330.0, cx_right=326.0, cy=240.0, baseline_m=0.12,
                width=640, height=480)


def _infos(rig=RIG):
    return stereo_infos(rig, stamp(5), "cam_left_optical")


def test_rectified_pair_gives_the_rig_back():
    left, right = _infos()
    calib = m.stereo_calibration(left, right)
    assert calib.already_rectified
    assert calib.frame_id == "cam_left_optical"
    assert calib.rig.fx == pytest.approx(700.0) and calib.rig.fy == pytest.approx(690.0)
    assert calib.rig.baseline_m == pytest.approx(0.12)
    assert calib.rig.cx_offset == pytest.approx(4.0)
    assert (calib.width, calib.height) == (640, 480)


def test_kitti_colour_cameras_baseline_from_the_difference_of_both_tx():
    p2 = np.array([[721.5377, 0, 609.5593, 44.85728], [0, 721.5377, 172.854, 0.2163791],
                   [0, 0, 1, 0.002745884]])
    p3 = np.array([[721.5377, 0, 609.5593, -339.5242], [0, 721.5377, 172.854, 2.199936],
                   [0, 0, 1, 0.002729905]])
    left = camera_info_msg(p2[:, :3], np.zeros(5), np.eye(3), p2, 1242, 375, stamp(0), "c2")
    right = camera_info_msg(p3[:, :3], np.zeros(5), np.eye(3), p3, 1242, 375, stamp(0), "c3")
    rig = m.stereo_calibration(left, right).rig
    assert rig.baseline_m == pytest.approx((44.85728 + 339.5242) / 721.5377)  # 0.5327, not 0.4706


def test_unrectified_calibration_is_detected():
    pair = make_unrectified_pair(height=48, width=64)
    lc, rc = pair.left_calibration, pair.right_calibration
    left = camera_info_msg(lc.K, lc.D, lc.R, lc.P, 64, 48, stamp(0), "l")
    right = camera_info_msg(rc.K, rc.D, rc.R, rc.P, 64, 48, stamp(0), "r")
    calib = m.stereo_calibration(left, right)
    assert not calib.already_rectified
    np.testing.assert_allclose(calib.left.D, lc.D)


@pytest.mark.parametrize("field, index, text", [
    ("k", 4, r"nan in left/camera_info K\[1,1\]"),
    ("d", 2, r"nan in left/camera_info D\[2\]"),
    ("r", 0, r"nan in left/camera_info R\[0,0\]"),
    ("p", 2, r"nan in left/camera_info P\[0,2\]"),
])
def test_nan_in_calibration_names_the_field(field, index, text):
    left, right = _infos()
    values = list(getattr(left, field))
    values[index] = math.nan
    setattr(left, field, np.asarray(values) if field != "d" else values)
    with pytest.raises(m.CalibrationError, match=text) as info:
        m.stereo_calibration(left, right)
    assert info.value.reason == m.NAN_IN_CALIBRATION


def test_p_all_zero_is_uncalibrated():
    left, right = _infos()
    right.p = np.zeros(12)
    with pytest.raises(m.CalibrationError, match="right/camera_info P is all zero") as info:
        m.stereo_calibration(left, right)
    assert info.value.reason == m.UNCALIBRATED


def test_k_all_zero_with_p_is_taken_as_rectified_through_p():
    """stereo_image_proc's fixtures and KITTI odometry bags carry only P (image_geometry uses P
    for rectified images)."""
    left, right = _infos()
    full = m.stereo_calibration(left, right)
    for info in (left, right):
        info.k = np.zeros(9)
        info.r = np.zeros(9)
    calib = m.stereo_calibration(left, right)
    assert calib.already_rectified and calib.rig == full.rig and calib.rig.has_depth
    np.testing.assert_array_equal(calib.left.K, np.asarray(left.p).reshape(3, 4)[:, :3])
    np.testing.assert_array_equal(calib.right.R, np.eye(3))
    assert "left/camera_info: K is all zero: the image is taken as rectified" in calib.note


def test_k_all_zero_with_distortion_is_uncalibrated():
    left, right = _infos()
    right.k = np.zeros(9)
    right.d = [0.1, 0.0, 0.0, 0.0, 0.0]
    with pytest.raises(m.CalibrationError, match=r"right/camera_info K is all zero but "
                       r"D=\[0.1, 0.0, 0.0, 0.0, 0.0\] is not") as info:
        m.stereo_calibration(left, right)
    assert info.value.reason == m.UNCALIBRATED


def _with_right_tx(right, value):
    p = np.asarray(right.p, np.float64).copy()
    p[3] = value
    right.p = p
    return right


@pytest.mark.parametrize("tx, problem, text", [
    (0.0, "zero_baseline", r"left/camera_info P\[0,3\]=0.0 and right/camera_info "
     r"P\[0,3\]=0.0 give baseline 0 m: the right camera's P\[0,3\] must be -fx\*baseline"),
    (84.0, "negative_baseline", r"give baseline -0.12 m: .*are left and right swapped\?"),
    (math.nan, "non_finite_baseline", r"P\[0,3\]=nan give baseline nan m: P\[0,3\] must be "
     r"finite"),
    (math.inf, "non_finite_baseline", r"P\[0,3\]=inf give baseline -inf m"),
])
def test_baseline_without_depth_still_gives_a_disparity_rig(tx, problem, text):
    """Disparity but no metric depth (stereo_image_proc still publishes disparity)."""
    left, right = _infos()
    calib = m.stereo_calibration(left, _with_right_tx(right, tx))
    assert calib.rig.depth_problem == problem and not calib.rig.has_depth
    assert re.search(text, calib.depth_note), calib.depth_note
    assert calib.rectifiable
    with pytest.raises(ValueError, match=problem):
        calib.rig.focal_baseline


def test_zero_focal_length_gives_a_disparity_rig_matched_as_it_comes():
    left, right = _infos()
    for info in (left, right):
        p = np.asarray(info.p, np.float64).copy()
        p[0] = 0.0
        info.p = p
        info.k = np.zeros(9)
    calib = m.stereo_calibration(left, right)
    assert calib.rig.depth_problem == "non_positive_focal_length"
    assert not calib.rectifiable and calib.already_rectified
    assert "left/camera_info P[0,0]=0.0" in calib.depth_note


def test_camera_info_sizes_must_agree():
    left, right = _infos()
    right.width = 320
    with pytest.raises(m.CalibrationError, match="left/camera_info is 640x480, "
                       "right/camera_info is 320x480") as info:
        m.stereo_calibration(left, right)
    assert info.value.reason == m.INFO_SIZE_MISMATCH


def test_not_a_rotation_is_invalid():
    left, right = _infos()
    left.r = np.diag([1.0, 2.0, 1.0]).ravel()
    with pytest.raises(m.CalibrationError, match="not a rotation") as info:
        m.stereo_calibration(left, right)
    assert info.value.reason == m.INVALID_CALIBRATION


def test_calibration_key_changes_with_the_calibration():
    left, right = _infos()
    key = m.calibration_key(left, right)
    left2, right2 = _infos()
    left2.header.stamp = stamp(99)
    assert m.calibration_key(left2, right2) == key
    d = list(left2.d)
    d[0] = 0.01
    left2.d = d
    assert m.calibration_key(left2, right2) != key


def test_disparity_image_fields_follow_the_message_definition():
    rig = StereoRig(fx=200.0, fy=200.0, cx_left=80.0, cx_right=77.0, cy=60.0, baseline_m=0.1,
                    width=8, height=6)
    disparity = np.full((6, 8), 13.0, np.float32)  # as matched: x_left - x_right
    disparity[:, :2] = np.nan
    disparity[5, :] = np.nan
    header = Header(frame_id="cam", stamp=stamp(3, 4))
    msg = m.make_disparity_image(disparity, header, rig, 0.0, 2.0, 1.0 / 16)
    assert msg.header.frame_id == "cam" and msg.image.header.stamp == stamp(3, 4)
    assert msg.image.encoding == "32FC1" and msg.image.step == 4 * 8
    assert msg.f == pytest.approx(200.0) and msg.t == pytest.approx(0.1)
    # Published values and the searched range are adjusted by -(cx_left - cx_right).
    # max_disparity is the largest disparity reportable: min + range - 1 (inclusive).
    assert (msg.min_disparity, msg.max_disparity) == (-3.0, -2.0)
    assert msg.delta_d == pytest.approx(1.0 / 16)
    values = np.frombuffer(msg.image.data, np.float32).reshape(6, 8)
    assert values[0, 4] == pytest.approx(10.0)
    assert msg.f * msg.t / values[0, 4] == pytest.approx(2.0)  # Z = f T / d
    assert np.all(values[:, :2] < msg.min_disparity) and np.all(values[5] < msg.min_disparity)
    roi = msg.valid_window
    assert (roi.x_offset, roi.y_offset, roi.width, roi.height) == (2, 0, 6, 5)


def test_valid_window_is_the_matchers_reach_narrowed_to_the_valid_pixels():
    # stereo_image_proc's window: x from range + min + border - 1, border off the other sides.
    assert m.search_window(100, 40, 0, 32, 2) == (33, 2, 65, 36)
    assert m.search_window(100, 40, 8, 32, 0) == (39, 0, 53, 40)     # min > 0 loses the right
    assert m.search_window(100, 40, -16, 32, 2) == (17, 2, 67, 36)   # negative min: 16 px
    assert m.search_window(20, 10, 0, 32, 0)[2] == 0                 # range wider than image
    rig = StereoRig(fx=200.0, fy=200.0, cx_left=50.0, cx_right=50.0, cy=20.0, baseline_m=0.1,
                    width=100, height=40)
    disparity = np.full((40, 100), 5.0, np.float32)
    msg = m.make_disparity_image(disparity, Header(), rig, 0.0, 32.0, 1.0 / 16, border=2)
    roi = msg.valid_window
    assert (roi.x_offset, roi.y_offset, roi.width, roi.height) == (33, 2, 65, 36)
    assert msg.max_disparity == 31.0
    disparity[:, :50] = np.nan                                        # fewer valid pixels
    roi = m.make_disparity_image(disparity, Header(), rig, 0.0, 32.0, 1.0, border=2).valid_window
    assert (roi.x_offset, roi.width) == (50, 48)


def test_pointcloud2_padded_layout_is_stereo_image_procs_default():
    points = np.arange(2 * 3 * 3, dtype=np.float32).reshape(2, 3, 3)
    colours = np.full((2, 3, 3), 7, np.uint8)
    msg = m.make_pointcloud2(points, Header(frame_id="cam"), colours, padded=True)
    assert (msg.point_step, msg.row_step, len(msg.data)) == (32, 96, 2 * 96)
    assert [(f.name, f.offset) for f in msg.fields] == [("x", 0), ("y", 4), ("z", 8),
                                                        ("rgb", 16)]
    raw = np.frombuffer(bytes(msg.data), np.uint8).reshape(6, 32)
    assert not raw[:, 12:16].any() and not raw[:, 20:].any()         # padding is zero
    cloud = m.pointcloud2_to_numpy(msg)
    np.testing.assert_array_equal(cloud["y"], points[..., 1])
    np.testing.assert_array_equal(m.unpack_rgb(cloud["rgb"]), colours)
    plain = m.make_pointcloud2(points, Header(), padded=True)
    assert plain.point_step == 16 and [(f.name, f.offset) for f in plain.fields] == [
        ("x", 0), ("y", 4), ("z", 8)]
    np.testing.assert_array_equal(m.pointcloud2_to_numpy(plain)["z"], points[..., 2])


def test_empty_valid_window_when_nothing_is_valid():
    roi = m.valid_window(np.zeros((3, 4), bool))
    assert (roi.width, roi.height) == (0, 0)


def test_pointcloud2_layout_and_colour_packing():
    points = np.arange(2 * 3 * 3, dtype=np.float32).reshape(2, 3, 3)
    points[1, 2] = np.nan
    colours = np.zeros((2, 3, 3), np.uint8)
    colours[0, 0] = (255, 0, 0)
    colours[0, 1] = (1, 2, 3)
    msg = m.make_pointcloud2(points, Header(frame_id="cam"), colours)
    assert (msg.height, msg.width, msg.point_step, msg.row_step) == (2, 3, 16, 48)
    assert not msg.is_dense and not msg.is_bigendian
    assert [(f.name, f.offset, f.datatype, f.count) for f in msg.fields] == [
        ("x", 0, PointField.FLOAT32, 1), ("y", 4, PointField.FLOAT32, 1),
        ("z", 8, PointField.FLOAT32, 1), ("rgb", 12, PointField.FLOAT32, 1)]
    assert len(msg.data) == 2 * 48
    cloud = m.pointcloud2_to_numpy(msg)
    np.testing.assert_array_equal(cloud["x"], points[..., 0])
    assert np.isnan(cloud["z"][1, 2])
    bits = cloud["rgb"].view(np.uint32)
    assert bits[0, 0] == 0xFF0000 and bits[0, 1] == 0x010203
    np.testing.assert_array_equal(m.unpack_rgb(cloud["rgb"]), colours)
    plain = m.make_pointcloud2(points, Header(frame_id="cam"))
    assert plain.point_step == 12 and [f.name for f in plain.fields] == ["x", "y", "z"]


def test_rectified_camera_info_matches_the_rig():
    header = Header(frame_id="cam", stamp=stamp(8))
    info = m.rectified_camera_info(RIG.scaled(0.5), header)
    assert (info.width, info.height) == (320, 240)
    k = np.asarray(info.k).reshape(3, 3)
    p = np.asarray(info.p).reshape(3, 4)
    np.testing.assert_allclose(k, p[:, :3])
    assert k[0, 0] == pytest.approx(350.0) and k[0, 2] == pytest.approx(165.0)
    assert p[0, 3] == 0.0 and list(info.d) == [0.0] * 5
    np.testing.assert_allclose(np.asarray(info.r).reshape(3, 3), np.eye(3))
    right = m.rectified_camera_info(RIG, header, right=True)
    assert np.asarray(right.p)[3] == pytest.approx(-700.0 * 0.12)


def test_binning_and_roi_reduce_k_and_p_as_image_geometry_does():
    """ROI first (principal point moves by the offset), then binning (row 0 by binning_x,
    row 1 by binning_y, Tx with fx); the reduced size; an ROI outside the sensor is refused."""
    K = np.array([[800.0, 0, 640], [0, 810.0, 480], [0, 0, 1]])
    P = np.hstack([K, np.array([[-80.0], [0], [0]])])
    info = camera_info_msg(K, np.zeros(5), np.eye(3), P, 1280, 960, stamp(1), "cam")
    info.binning_x, info.binning_y = 2, 4
    info.roi.x_offset, info.roi.y_offset, info.roi.width, info.roi.height = 100, 40, 800, 600
    matrices = m.camera_info_matrices(info, "cam/camera_info")
    reduced, size, note = m.reduced_camera(info, matrices, "cam/camera_info")
    assert size == (400, 150)
    np.testing.assert_allclose(reduced["K"], [[400, 0, 270], [0, 202.5, 110], [0, 0, 1]])
    np.testing.assert_allclose(reduced["P"][0], [400, 0, 270, -40])
    np.testing.assert_allclose(reduced["P"][1], [0, 202.5, 110, 0])
    assert note == "binning 2x4, roi 800x600 at (100, 40)"
    info.roi.x_offset = 600                                  # 600 + 800 > 1280
    with pytest.raises(m.CalibrationError, match=r"roi x_offset=600.*1280x960") as error:
        m.reduced_camera(info, matrices, "cam/camera_info")
    assert error.value.reason == "invalid_calibration"


def test_16uc1_depth_is_millimetres_clamped_and_counted():
    depth = np.array([[1.2344, np.nan, -1.0, 70.0, 0.0002]], np.float32)
    msg, clamped = m.make_depth_image(depth, None, "16UC1")
    assert msg.encoding == "16UC1" and clamped == 1
    np.testing.assert_array_equal(np.frombuffer(msg.data, np.uint16), [1234, 0, 0, 65535, 0])
    msg, clamped = m.make_depth_image(depth, None, "32FC1")
    assert msg.encoding == "32FC1" and clamped == 0
