"""stereo_depth_point_cloud_node's message conversions, without a node: the camera_info pair ->
rig (P alone, binning, all-zero infos, bad fields named), DisparityImage -> values (encodings, a
resized scale), colours from camera encodings."""

from __future__ import annotations

import math
import re

import numpy as np
import pytest

pytest.importorskip("rclpy")

from helpers.point_cloud import (RIG, colour_image, disparity_msg,  # noqa: E402
                                 disparity_values)
from helpers.ros_messages import image_msg, stamp, stereo_infos  # noqa: E402

from stereo_depth_ros import drop_reasons  # noqa: E402
from stereo_depth_ros.core.camera import NON_POSITIVE_FOCAL_LENGTH  # noqa: E402
from stereo_depth_ros.drop_reasons import FrameDropped  # noqa: E402
from stereo_depth_ros.ros.image_conversion import (ImageDataError,  # noqa: E402
                                                   UnsupportedEncodingError)
from stereo_depth_ros.ros.messages import (CalibrationError, disparity_image_values,  # noqa: E402
                                           rectified_rig)
from stereo_depth_ros.ros.point_cloud import cloud_colours, cloud_geometry  # noqa: E402


# ------------------------------------------------------------------------ messages -> arrays
def test_rig_from_the_two_p_matrices_alone():
    left, right = stereo_infos(RIG, stamp(1))
    left.k = np.zeros(9)                       # a rectified stream that carries only P
    left.d = [0.1, 0.0, 0.0, 0.0, 0.0]         # the raw camera's D: not used for the cloud
    rig, note = rectified_rig(left, right)
    assert note == "" and rig == RIG


def test_rig_honours_binning():
    left, right = stereo_infos(RIG.scaled(2.0), stamp(1))
    for info in (left, right):
        info.binning_x = info.binning_y = 2
    rig, _ = rectified_rig(left, right)
    assert (rig.width, rig.height, rig.fx, rig.cx_left) == (8, 6, 100.0, 3.5)


def test_all_zero_camera_info_gives_a_rig_without_metric_depth_and_says_why():
    """stereo_image_proc's point cloud fixture publishes CameraInfos with only the size set."""
    from sensor_msgs.msg import CameraInfo
    info = CameraInfo(width=8, height=6)
    rig, note = rectified_rig(info, info, "/l/camera_info", "/r/camera_info")
    assert rig.depth_problem == NON_POSITIVE_FOCAL_LENGTH
    assert note == ("/l/camera_info P[0,0]=0.0, P[1,1]=0.0: a focal length must be > 0 for "
                    "metric depth; P is all zero: the camera is not calibrated")


@pytest.mark.parametrize("change, reason, text", [
    (lambda left, right: left.p.__setitem__(5, math.nan), drop_reasons.NAN_IN_CALIBRATION,
     "nan in left/camera_info P[1,1]"),
    (lambda left, right: setattr(right, "width", 10), drop_reasons.INFO_SIZE_MISMATCH,
     "camera_info sizes differ: left/camera_info is 8x6, right/camera_info is 10x6"),
    (lambda left, right: right.p.__setitem__(0, 140.0), drop_reasons.INVALID_CALIBRATION,
     "differ in fx"),
])
def test_bad_camera_info_names_the_field(change, reason, text):
    left, right = stereo_infos(RIG, stamp(1))
    change(left, right)
    with pytest.raises(CalibrationError, match=re.escape(text)) as caught:
        rectified_rig(left, right)
    assert caught.value.reason == reason


def test_disparity_values_accept_32fc1_and_an_empty_encoding_only():
    values = disparity_values()
    for encoding in ("32FC1", ""):
        read = disparity_image_values(disparity_msg(values, stamp(1), encoding=encoding))
        np.testing.assert_array_equal(read, values)
    with pytest.raises(UnsupportedEncodingError, match="'16UC1': a DisparityImage carries"):
        disparity_image_values(disparity_msg(values, stamp(1), encoding="16UC1"))
    short = disparity_msg(values, stamp(1))
    short.image.data = bytes(short.image.data)[:-4]
    with pytest.raises(ImageDataError, match="shorter than step"):
        disparity_image_values(short)


def test_a_disparity_at_a_resized_scale_gets_the_scaled_rig():
    """The depth node publishes with input_scale: a half-size disparity of a 16x12 camera."""
    left, right = stereo_infos(RIG.scaled(2.0), stamp(1))
    geometry = cloud_geometry(left, right, 8, 6)
    assert geometry.scaled_from == (16, 12) and geometry.rig == RIG
    with pytest.raises(FrameDropped, match="disparity is 8x3 but left/camera_info is 16x12") \
            as caught:
        cloud_geometry(left, right, 8, 3)
    assert caught.value.reason == drop_reasons.INFO_SIZE_MISMATCH


def test_colours_from_camera_encodings_and_the_problems_named():
    bgr = colour_image()
    np.testing.assert_array_equal(cloud_colours(image_msg(bgr, "bgr8", stamp(1)), (6, 8)),
                                  bgr[..., ::-1])
    assert cloud_colours(image_msg(bgr[..., 0], "mono8", stamp(1)), (6, 8)).shape == (6, 8)
    for msg, reason, text in (
            (image_msg(bgr, "bgr8", stamp(1)), drop_reasons.SIZE_MISMATCH,
             "left/image_rect_color is 8x6 but disparity is 9x6"),
            (image_msg(np.ones((6, 8), np.float32), "32FC1", stamp(1)),
             drop_reasons.UNSUPPORTED_ENCODING, "set use_color false")):
        with pytest.raises(FrameDropped, match=text) as caught:
            cloud_colours(msg, (6, 9) if reason == drop_reasons.SIZE_MISMATCH else (6, 8))
        assert caught.value.reason == reason
