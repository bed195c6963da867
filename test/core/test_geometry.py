"""Disparity <-> depth <-> points: definitions, NaN handling, cx offset, scaling."""

from __future__ import annotations

import numpy as np
import pytest

from stereo_depth_ros.core import geometry
from stereo_depth_ros.core.camera import StereoRig


@pytest.fixture
def rig() -> StereoRig:
    return StereoRig(fx=721.5377, fy=719.25, cx_left=609.5593, cx_right=598.25, cy=172.854,
                     baseline_m=0.5327, width=1242, height=375)


def random_disparity(rig: StereoRig, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.uniform(rig.cx_offset + 0.5, 190.0, (rig.height, rig.width)).astype(np.float32)


def test_depth_matches_f_b_over_d_to_float_precision(rig):
    disparity = random_disparity(rig)
    depth = geometry.disparity_to_depth(disparity, rig.fx, rig.baseline_m, rig.cx_offset)
    assert depth.dtype == np.float32 and depth.shape == disparity.shape
    expected = rig.fx * rig.baseline_m / (disparity.astype(np.float64) - rig.cx_offset)
    np.testing.assert_allclose(depth, expected, rtol=2e-6)


def test_zero_negative_and_nonfinite_disparity_give_nan_never_zero_or_inf():
    disparity = np.array([[0.0, -1.0, np.nan, np.inf, -np.inf, 2.0, 3.0]], dtype=np.float32)
    depth = geometry.disparity_to_depth(disparity, 100.0, 0.1)
    assert np.isnan(depth[0, :5]).all()
    np.testing.assert_allclose(depth[0, 5:], [5.0, 10.0 / 3.0], rtol=1e-7)
    # With a cx offset of 2.5 px, d = 2 and d = 2.5 are at or beyond infinity.
    depth = geometry.disparity_to_depth(np.array([[2.0, 2.5, 3.5]]), 100.0, 0.1, cx_offset=2.5)
    assert np.isnan(depth[0, :2]).all() and depth[0, 2] == pytest.approx(10.0)


def test_depth_disparity_round_trip(rig):
    disparity = random_disparity(rig, seed=1)
    depth = geometry.disparity_to_depth(disparity, rig.fx, rig.baseline_m, rig.cx_offset)
    back = geometry.depth_to_disparity(depth, rig.fx, rig.baseline_m, rig.cx_offset)
    np.testing.assert_allclose(back, disparity, rtol=1e-5, atol=1e-4)
    bad = geometry.depth_to_disparity(np.array([[0.0, -2.0, np.nan, 1.0]]), 10.0, 1.0)
    assert np.isnan(bad[0, :3]).all() and bad[0, 3] == 10.0


def test_points_follow_the_pinhole_model(rig):
    disparity = random_disparity(rig, seed=2)
    disparity[10, 20] = np.nan
    disparity[11, 21] = rig.cx_offset  # at infinity
    points = geometry.disparity_to_points(disparity, rig)
    assert points.shape == (rig.height, rig.width, 3) and points.dtype == np.float32
    v, u = np.mgrid[0:rig.height, 0:rig.width].astype(np.float64)
    z = rig.fx * rig.baseline_m / (disparity.astype(np.float64) - rig.cx_offset)
    z[11, 21] = np.nan
    expected = np.stack([(u - rig.cx_left) * z / rig.fx, (v - rig.cy) * z / rig.fy, z], axis=2)
    np.testing.assert_allclose(points, expected, rtol=5e-6, atol=1e-6)
    assert np.isnan(points[10, 20]).all() and np.isnan(points[11, 21]).all()
    # Reprojecting the points gives back the pixel coordinates.
    valid = np.isfinite(points[:, :, 2])
    reproj_u = rig.fx * points[:, :, 0] / points[:, :, 2] + rig.cx_left
    reproj_v = rig.fy * points[:, :, 1] / points[:, :, 2] + rig.cy
    np.testing.assert_allclose(reproj_u[valid], u[valid], atol=1e-3)
    np.testing.assert_allclose(reproj_v[valid], v[valid], atol=1e-3)


def test_points_agree_with_q_when_fx_equals_fy():
    rig = StereoRig(fx=500.0, fy=500.0, cx_left=80.0, cx_right=70.0, cy=60.0, baseline_m=0.2,
                    width=160, height=120)
    disparity = np.full((120, 160), 30.0, dtype=np.float32)
    points = geometry.disparity_to_points(disparity, rig)
    v, u = np.mgrid[0:120, 0:160]
    homogeneous = np.stack([u, v, disparity, np.ones_like(disparity)], axis=-1) @ rig.Q().T
    np.testing.assert_allclose(points, homogeneous[..., :3] / homogeneous[..., 3:], rtol=1e-5)
    assert points[0, 0, 2] == pytest.approx(500.0 * 0.2 / 20.0)


def test_points_reject_a_size_mismatch(rig):
    with pytest.raises(ValueError, match="scaled_to"):
        geometry.disparity_to_points(np.ones((10, 10), np.float32), rig)
    with pytest.raises(ValueError, match="2-D"):
        geometry.disparity_to_depth(np.ones((2, 3, 1)), 1.0, 1.0)
    with pytest.raises(ValueError, match="baseline_m"):
        geometry.disparity_to_depth(np.ones((2, 3)), 1.0, 0.0)


def test_plane_depth_is_invariant_under_image_scaling(rig):
    plane_depth_m = 7.5
    depth = np.full((rig.height, rig.width), plane_depth_m, dtype=np.float32)
    disparity = geometry.depth_to_disparity(depth, rig.fx, rig.baseline_m, rig.cx_offset)
    for width, height in ((621, 188), (311, 94), (2484, 750)):
        small_rig = rig.scaled_to(width, height)
        small = geometry.resize_disparity(disparity, width, height)
        assert small.shape == (height, width)
        np.testing.assert_allclose(small, disparity[0, 0] * width / rig.width, rtol=1e-6)
        points = geometry.disparity_to_points(small, small_rig)
        np.testing.assert_allclose(points[:, :, 2], plane_depth_m, rtol=1e-4)
        # A pixel's ray keeps its direction: the point at the image centre stays put.
        centre = points[height // 2, width // 2]
        u_full = (width // 2) / (width / rig.width)
        assert centre[0] == pytest.approx((u_full - rig.cx_left) * plane_depth_m / rig.fx,
                                          abs=2e-3)


def test_resize_disparity_keeps_nan_local():
    disparity = np.arange(16, dtype=np.float32).reshape(4, 4)
    disparity[0, 0] = np.nan
    big = geometry.resize_disparity(disparity, 8, 8)
    assert np.isnan(big).sum() == 4
    np.testing.assert_array_equal(big[7, 7], 30.0)
    np.testing.assert_array_equal(geometry.scale_disparity(disparity, 2.0)[1], [8, 10, 12, 14])


def test_clip_depth():
    depth = np.array([[0.2, 1.0, 5.0, 50.0, np.nan]], dtype=np.float32)
    clipped = geometry.clip_depth(depth, 0.5, 10.0)
    np.testing.assert_array_equal(clipped, [[np.nan, 1.0, 5.0, np.nan, np.nan]])
    np.testing.assert_array_equal(geometry.clip_depth(depth, None, 10.0)[0, :3], depth[0, :3])
    assert depth[0, 0] == np.float32(0.2)  # input untouched


def test_depth_std_grows_quadratically():
    sigma = geometry.depth_std_from_disparity_std(np.array([[1.0, 2.0, 4.0]]), 100.0, 0.1, 0.5)
    np.testing.assert_allclose(sigma, [[0.05, 0.2, 0.8]], rtol=1e-6)
