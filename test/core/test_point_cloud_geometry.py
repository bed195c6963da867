"""A stereo_msgs/DisparityImage's values -> points (core.geometry, no ROS): hand-computed XYZ,
the message's invalid rules, a verged pair (cx_left != cx_right), a rig without metric depth."""

from __future__ import annotations

import numpy as np
import pytest

from stereo_depth_ros.core import geometry
from stereo_depth_ros.core.camera import NON_POSITIVE_FOCAL_LENGTH, StereoRig

# fx != fy and cx_left != cx_right (1 px), so a wrong focal length or an offset applied a
# second time shows in the numbers.
RIG = StereoRig(fx=100.0, fy=120.0, cx_left=3.5, cx_right=2.5, cy=2.5, baseline_m=0.2,
                width=8, height=6)


def test_known_disparity_gives_hand_computed_points():
    values = np.full((6, 8), 10.0, np.float32)
    values[5, 7] = 40.0
    points = geometry.disparity_image_to_points(values, RIG, 2.0, 63.0)
    assert points.shape == (6, 8, 3) and points.dtype == np.float32
    # Z = fx * B / d = 100 * 0.2 / 10 = 2 m; X = (u - 3.5) * Z / 100; Y = (v - 2.5) * Z / 120
    np.testing.assert_allclose(points[0, 0], [-0.07, -2.5 * 2.0 / 120.0, 2.0], rtol=1e-6)
    np.testing.assert_allclose(points[2, 4], [0.01, -0.5 * 2.0 / 120.0, 2.0], rtol=1e-6)
    # d = 40 at (u=7, v=5): Z = 0.5, X = 3.5 * 0.5 / 100 = 0.0175, Y = 2.5 * 0.5 / 120
    np.testing.assert_allclose(points[5, 7], [0.0175, 2.5 * 0.5 / 120.0, 0.5], rtol=1e-6)


def test_message_values_are_already_offset_so_no_second_correction():
    """The message's d is x_l - x_r - (cx_l - cx_r): Z = f*T/d as it says. stereo_image_proc's
    Q subtracts cx_l - cx_r again (Z = 20 / (10 - 1) here); this must stay 2 m."""
    points = geometry.disparity_image_to_points(np.full((6, 8), 10.0, np.float32), RIG, 0.0,
                                                63.0)
    assert np.all(points[..., 2] == np.float32(2.0))


def test_the_same_points_as_the_depth_node_from_its_raw_disparity():
    """The depth node publishes raw - cx_offset; reprojecting that equals its own points."""
    rng = np.random.default_rng(3)
    raw = rng.uniform(2.0, 60.0, (6, 8)).astype(np.float32)
    published = raw - np.float32(RIG.cx_offset)
    np.testing.assert_allclose(geometry.disparity_image_to_points(published, RIG, 0.0, 63.0),
                               geometry.disparity_to_points(raw, RIG), rtol=2e-6)


@pytest.mark.parametrize("value, valid", [
    (1.0, False),        # below min_disparity (2): the message's invalid marker (min - 1)
    (2.0, True),         # min_disparity itself is valid
    (np.float32(2.0) - np.float32(1e-5), True),    # ... within float32 rounding of it
    (63.0, True),        # max_disparity (inclusive, as stereo_image_proc reports it)
    (63.5, False),       # beyond the searched range
    (np.nan, False), (np.inf, False), (-np.inf, False),
])
def test_invalid_disparities_give_nan_in_x_y_and_z(value, valid):
    values = np.full((6, 8), 10.0, np.float32)
    values[3, 4] = value
    points = geometry.disparity_image_to_points(values, RIG, 2.0, 63.0)
    assert np.isfinite(points[3, 4]).all() == valid
    assert np.isnan(points[3, 4]).all() == (not valid)
    assert np.isfinite(np.delete(points.reshape(-1, 3), 3 * 8 + 4, axis=0)).all()


def test_zero_or_negative_disparity_has_no_point_even_inside_the_range():
    values = np.array([[0.0, -3.0, 5.0]], np.float32)
    mask = geometry.disparity_image_valid(values, -16.0, 47.0)
    assert mask.tolist() == [[False, False, True]]


def test_unset_range_sets_no_upper_bound():
    """min = max = 0 (a publisher that fills neither, as stereo_image_proc's fixtures)."""
    values = np.array([[-1.0, 0.0, 0.5, 500.0]], np.float32)
    assert geometry.disparity_image_valid(values, 0.0, 0.0).tolist() == [
        [False, False, True, True]]


def test_rig_without_metric_depth_gives_nan_everywhere():
    zero = np.zeros((3, 4))
    rig = StereoRig.from_projection_matrices(zero, zero, 8, 6, require_depth=False)
    assert rig.depth_problem == NON_POSITIVE_FOCAL_LENGTH
    points = geometry.disparity_image_to_points(np.full((6, 8), 10.0, np.float32), rig, 0, 63)
    assert points.shape == (6, 8, 3) and np.isnan(points).all()


def test_shape_must_match_the_rig():
    with pytest.raises(ValueError, match=r"disparity shape \(6, 7\) does not match"):
        geometry.disparity_image_to_points(np.ones((6, 7), np.float32), RIG, 0.0, 63.0)
