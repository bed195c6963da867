"""StereoRig: validation, baseline from projection matrices, scaling, K/P/Q."""

from __future__ import annotations

import math

import numpy as np
import pytest

from stereo_depth_ros.core.camera import StereoRig

# KITTI raw 2011_09_26 calib_cam_to_cam.txt, rectified colour cameras 02 (left) and 03 (right).
KITTI_P_RECT_02 = np.array([[7.215377e+02, 0.0, 6.095593e+02, 4.485728e+01],
                            [0.0, 7.215377e+02, 1.728540e+02, 2.163791e-01],
                            [0.0, 0.0, 1.0, 2.745884e-03]])
KITTI_P_RECT_03 = np.array([[7.215377e+02, 0.0, 6.095593e+02, -3.395242e+02],
                            [0.0, 7.215377e+02, 1.728540e+02, 2.199936e+00],
                            [0.0, 0.0, 1.0, 2.729905e-03]])


def make_rig(**overrides) -> StereoRig:
    values = dict(fx=700.0, fy=710.0, cx_left=320.0, cx_right=300.0, cy=240.0, baseline_m=0.12,
                  width=640, height=480)
    values.update(overrides)
    return StereoRig(**values)


def test_kitti_baseline_uses_the_difference_of_tx():
    rig = StereoRig.from_projection_matrices(KITTI_P_RECT_02, KITTI_P_RECT_03, 1242, 375)
    assert rig.baseline_m == pytest.approx(0.5327, abs=1e-4)
    # The naive -P_right[0,3] / fx (image_geometry's baseline()) would give 0.4706 m.
    assert -KITTI_P_RECT_03[0, 3] / KITTI_P_RECT_03[0, 0] == pytest.approx(0.4706, abs=1e-4)
    assert (rig.fx, rig.fy, rig.cy) == (721.5377, 721.5377, 172.854)
    assert rig.cx_offset == 0.0
    assert rig.size == (1242, 375)


def test_from_projection_matrices_accepts_flat_ros_arrays_and_round_trips():
    rig = make_rig(fy=700.0)
    p_left, p_right = rig.projection_matrices()
    assert p_left[0, 3] == 0.0
    assert p_right[0, 3] == pytest.approx(-rig.fx * rig.baseline_m)
    again = StereoRig.from_projection_matrices(p_left.ravel().tolist(), p_right.ravel(), 640, 480)
    assert again == rig


@pytest.mark.parametrize("p_right_tx, match", [(0.0, "baseline"), (+84.0, "swapped")])
def test_non_positive_baseline_is_rejected(p_right_tx, match):
    p_left, p_right = make_rig().projection_matrices()
    p_right[0, 3] = p_right_tx
    with pytest.raises(ValueError, match=match):
        StereoRig.from_projection_matrices(p_left, p_right, 640, 480)


def test_unrectified_or_malformed_projection_matrices_are_rejected():
    p_left, p_right = make_rig().projection_matrices()
    bad = p_right.copy()
    bad[1, 2] += 5.0
    with pytest.raises(ValueError, match="cy"):
        StereoRig.from_projection_matrices(p_left, bad, 640, 480)
    with pytest.raises(ValueError, match="3x4"):
        StereoRig.from_projection_matrices(p_left[:, :3], p_right, 640, 480)
    nan = p_left.copy()
    nan[0, 0] = np.nan
    with pytest.raises(ValueError, match="non-finite"):
        StereoRig.from_projection_matrices(nan, p_right, 640, 480)
    with pytest.raises(ValueError, match="focal"):
        StereoRig.from_projection_matrices(np.zeros((3, 4)), np.zeros((3, 4)), 640, 480)


@pytest.mark.parametrize("field, value", [("fx", 0.0), ("fy", -1.0), ("baseline_m", 0.0),
                                          ("baseline_m", -0.1), ("cx_left", math.nan),
                                          ("cy", math.inf), ("width", 0), ("height", 2.5),
                                          ("fx", "abc")])
def test_validation_names_the_field(field, value):
    with pytest.raises(ValueError, match=field):
        make_rig(**{field: value})


def test_rig_is_frozen_and_coerces_types():
    rig = make_rig(width=np.int64(640), fx=np.float32(700.0))
    assert type(rig.width) is int and type(rig.fx) is float
    with pytest.raises(AttributeError):
        rig.fx = 1.0  # type: ignore[misc]


def test_scaled_rescales_intrinsics_not_baseline():
    rig = make_rig()
    half = rig.scaled(0.5)
    assert (half.fx, half.fy, half.cx_left, half.cx_right, half.cy) == (
        350.0, 355.0, 160.0, 150.0, 120.0)
    assert (half.width, half.height, half.baseline_m) == (320, 240, rig.baseline_m)
    assert half.cx_offset == pytest.approx(rig.cx_offset * 0.5)
    anisotropic = rig.scaled(2.0, 0.5)
    assert (anisotropic.fx, anisotropic.fy, anisotropic.width, anisotropic.height) == (
        1400.0, 355.0, 1280, 240)
    assert rig.scaled_to(320, 240) == half
    with pytest.raises(ValueError, match="scale"):
        rig.scaled(0.0)


def test_scaled_depth_is_invariant():
    rig = make_rig()
    depth_m = 4.2
    for sx in (0.25, 0.5, 1.5, 3.0):
        scaled = rig.scaled(sx)
        disparity = rig.depth_to_disparity(depth_m) * sx  # disparity scales with the image
        assert scaled.disparity_to_depth(disparity) == pytest.approx(depth_m, rel=1e-12)


def test_k_and_q_matrices_reproduce_depth_with_cx_offset():
    rig = make_rig(fy=700.0)
    np.testing.assert_array_equal(rig.K(), [[700.0, 0, 320.0], [0, 700.0, 240.0], [0, 0, 1]])
    u, v, depth_m = 400.0, 100.0, 3.0
    d = rig.depth_to_disparity(depth_m)
    assert d == pytest.approx(700.0 * 0.12 / 3.0 + 20.0)
    x, y, z, w = rig.Q() @ np.array([u, v, d, 1.0])
    np.testing.assert_allclose([x / w, y / w, z / w],
                               [(u - 320.0) * depth_m / 700.0, (v - 240.0) * depth_m / 700.0,
                                depth_m], rtol=1e-12)
    assert math.isnan(rig.disparity_to_depth(rig.cx_offset))
    assert math.isnan(rig.disparity_to_depth(rig.cx_offset - 1.0))


@pytest.mark.parametrize("tx, problem", [(0.0, "zero_baseline"), (84.0, "negative_baseline"),
                                         (math.nan, "non_finite_baseline")])
def test_disparity_only_rig_keeps_the_values_and_refuses_depth(tx, problem):
    p_left, p_right = make_rig().projection_matrices()
    p_right[0, 3] = tx
    rig = StereoRig.from_projection_matrices(p_left, p_right, 640, 480, require_depth=False)
    assert rig.depth_problem == problem and not rig.has_depth
    assert rig.cx_offset == pytest.approx(20.0)
    for depth_use in (lambda: rig.focal_baseline, rig.Q, lambda: rig.disparity_to_depth(10.0),
                      lambda: rig.depth_to_disparity(5.0)):
        with pytest.raises(ValueError, match=problem):
            depth_use()
    half = rig.scaled(0.5)          # scaling keeps the problem (and the raw values)
    assert half.depth_problem == problem and half.width == 320
    assert rig.scaled_to(100, 50).depth_problem == problem


def test_metric_rig_from_projection_matrices_has_no_depth_problem():
    p_left, p_right = make_rig().projection_matrices()
    rig = StereoRig.from_projection_matrices(p_left, p_right, 640, 480, require_depth=False)
    assert rig.has_depth and rig == StereoRig.from_projection_matrices(p_left, p_right, 640, 480)
