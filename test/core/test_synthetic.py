"""The synthetic scene generator: exact disparity, occlusion, determinism, calibration."""

from __future__ import annotations

import numpy as np
import pytest

from stereo_depth_ros.core import geometry
from stereo_depth_ros.core.synthetic import make_scene, make_unrectified_pair


def test_integer_disparity_right_is_left_shifted_exactly():
    scene = make_scene(96, 128, background_disparity=5.0, foreground_disparity=14.0, seed=1)
    assert scene.left.shape == (96, 128, 3) and scene.left.dtype == np.uint8
    assert scene.disparity.dtype == np.float32 and scene.depth.dtype == np.float32
    v, u = np.nonzero(scene.valid)
    u_right = u - scene.disparity[v, u].astype(int)
    np.testing.assert_array_equal(scene.left[v, u], scene.right[v, u_right])
    assert set(np.unique(scene.disparity[scene.valid])) == {5.0, 14.0}


def test_subpixel_disparity_is_a_consistent_shift():
    # The texture is linear between grid knots, and with a 3 px cell the knots sit on integer
    # columns, so linear interpolation between left pixels reproduces the texture at u + d
    # exactly: the right view must match it up to uint8 rounding of both views.
    scene = make_scene(64, 96, background_disparity=4.25, foreground_disparity=None, seed=2,
                       texture_cell_px=3.0)
    left = scene.left.astype(np.float64)
    cols = np.arange(30, 90)
    u = cols + 4.25
    lo = np.floor(u).astype(int)
    frac = (u - lo)[None, :, None]
    interp = left[:, lo] * (1 - frac) + left[:, lo + 1] * frac
    error = np.abs(interp - scene.right[:, cols])
    assert error.max() <= 1.0 + 1e-9
    assert np.isfinite(scene.disparity[:, 5:]).all() and (scene.disparity[:, 5:] == 4.25).all()


def test_foreground_occludes_and_out_of_view_pixels_are_nan():
    scene = make_scene(60, 90, background_disparity=6.0, foreground_disparity=20.0,
                       foreground_box=(40, 20, 70, 40), seed=0)
    assert np.isnan(scene.disparity[:, :6]).all()  # u - d < 0: outside the right image
    assert np.isfinite(scene.disparity[:, 6:20][scene.disparity[:, 6:20] == 6.0]).all()
    # Background just left of the foreground is hidden in the right view: u in [40-14, 40).
    assert np.isnan(scene.disparity[30, 26:40]).all()
    assert scene.disparity[30, 25] == 6.0 and scene.disparity[30, 45] == 20.0
    assert scene.disparity[10, 30] == 6.0  # above the box nothing is occluded
    # Depth is known everywhere, including occluded pixels.
    assert np.isfinite(scene.depth).all()
    assert scene.depth[30, 45] == pytest.approx(200.0 * 0.1 / 20.0)


def test_depth_matches_the_rig_and_geometry():
    scene = make_scene(80, 100, background_disparity=9.0, background_slope=0.05,
                       foreground_disparity=25.5, cx_offset=3.0, fx=180.0, fy=170.0,
                       baseline_m=0.25, seed=4)
    rig = scene.rig
    assert rig.cx_offset == pytest.approx(3.0) and (rig.width, rig.height) == (100, 80)
    depth = geometry.disparity_to_depth(scene.disparity, rig.fx, rig.baseline_m, rig.cx_offset)
    valid = scene.valid
    np.testing.assert_allclose(depth[valid], scene.depth[valid], rtol=1e-6)
    # The tilted background: disparity grows by 0.05 px per row.
    column = scene.disparity[:, 95]
    rows = np.nonzero(np.isfinite(column))[0]
    np.testing.assert_allclose(np.diff(column[rows]), 0.05, atol=1e-5)


def test_deterministic_and_seed_dependent():
    a, b, c = make_scene(seed=7), make_scene(seed=7), make_scene(seed=8)
    np.testing.assert_array_equal(a.left, b.left)
    np.testing.assert_array_equal(a.right, b.right)
    assert not np.array_equal(a.left, c.left)
    noisy = make_scene(seed=7, noise_std=3.0)
    assert 0 < np.abs(noisy.left.astype(int) - a.left).mean() < 5


def test_bad_scene_parameters():
    with pytest.raises(ValueError, match="behind infinity"):
        make_scene(background_disparity=2.0, cx_offset=2.0)
    with pytest.raises(ValueError, match="8x8"):
        make_scene(4, 4)


def test_unrectified_pair_calibration():
    pair = make_unrectified_pair(height=90, width=120, seed=5)
    scene = pair.scene
    assert pair.left.shape == scene.left.shape == (90, 120, 3)
    p_left, p_right = scene.rig.projection_matrices()
    np.testing.assert_array_equal(pair.left_calibration.P, p_left)
    np.testing.assert_array_equal(pair.right_calibration.P, p_right)
    assert pair.left_calibration.D.shape == (5,) and np.any(pair.left_calibration.D)
    assert not np.allclose(pair.left_calibration.R, np.eye(3))
    assert not np.array_equal(pair.left, scene.left)  # the raw views really are distorted
