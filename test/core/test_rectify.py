"""Rectification maps from (K, D, R, P): identity detection, validation, distorted round trip."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from stereo_depth_ros.core.camera import StereoRig
from stereo_depth_ros.core.rectify import (CameraCalibration, Rectifier, is_already_rectified,
                                           undistort_points)
from stereo_depth_ros.core.synthetic import make_unrectified_pair


def rectified_calibrations(rig: StereoRig):
    p_left, p_right = rig.projection_matrices()
    return ((p_left[:, :3], np.zeros(5), np.eye(3), p_left),
            (p_right[:, :3], np.zeros(5), np.eye(3), p_right))


@pytest.fixture(scope="module")
def raw_pair():
    return make_unrectified_pair(height=120, width=160, seed=3)


def test_is_already_rectified():
    rig = StereoRig(700.0, 700.0, 320.0, 320.0, 240.0, 0.1, 640, 480)
    left, right = rectified_calibrations(rig)
    assert is_already_rectified(*left) and is_already_rectified(*right)
    K, D, R, P = left
    assert is_already_rectified(K.ravel(), [], R.ravel(), P.ravel())  # flat CameraInfo arrays
    assert is_already_rectified(K + 1e-9, D, R, P)
    assert not is_already_rectified(K, [0.1, 0, 0, 0, 0], R, P)
    rotated, _ = cv2.Rodrigues(np.array([0.0, 0.01, 0.0]))
    assert not is_already_rectified(K, D, rotated, P)
    other_k = K.copy()
    other_k[0, 2] += 1.0
    assert not is_already_rectified(other_k, D, R, P)


@pytest.mark.parametrize("change, match", [
    (lambda c: c.update(K=np.zeros((3, 3))), "not calibrated"),
    (lambda c: c.update(P=np.zeros((3, 4))), "not calibrated"),
    (lambda c: c.update(K=np.full((3, 3), np.nan)), "non-finite"),
    (lambda c: c.update(D=[np.inf, 0, 0, 0, 0]), "non-finite"),
    (lambda c: c.update(K=np.eye(4)), "3x3"),
    (lambda c: c.update(P=np.eye(3)), "3x4"),
    (lambda c: c.update(D=[0.1, 0.2, 0.3]), "D must have"),
    (lambda c: c.update(R=np.zeros((3, 3))), "rotation"),
    (lambda c: c.update(distortion_model="fancy"), "distortion model"),
])
def test_bad_calibration_gives_a_clear_error(change, match):
    rig = StereoRig(700.0, 700.0, 320.0, 320.0, 240.0, 0.1, 640, 480)
    K, D, R, P = rectified_calibrations(rig)[0]
    calib = dict(K=K, D=D, R=R, P=P)
    change(calib)
    with pytest.raises(ValueError, match=match):
        CameraCalibration.create(**calib, name="left")
    if "distortion_model" not in calib:
        with pytest.raises(ValueError, match=match):
            is_already_rectified(**calib)


def test_identity_calibration_passes_images_through():
    rig = StereoRig(200.0, 200.0, 80.0, 80.0, 60.0, 0.1, 160, 120)
    rectifier = Rectifier(*rectified_calibrations(rig), 160, 120)
    assert rectifier.is_identity and rectifier.rig == rig
    image = np.random.default_rng(0).integers(0, 255, (120, 160, 3), dtype=np.uint8)
    left, right = rectifier.rectify(image, image[:, :, 0])
    assert left is image and right.shape == (120, 160)
    with pytest.raises(ValueError, match=r"\(120, 160"):
        rectifier.rectify(image[:100], image)


def test_distorted_pair_rectifies_back_to_the_scene(raw_pair):
    scene = raw_pair.scene
    rig = scene.rig
    rectifier = Rectifier(raw_pair.left_calibration, raw_pair.right_calibration,
                          rig.width, rig.height)
    assert not rectifier.is_identity
    assert rectifier.rig == rig
    left, right = rectifier.rectify(raw_pair.left, raw_pair.right)
    assert left.shape == scene.left.shape and left.dtype == np.uint8
    inner = (slice(12, -12), slice(12, -12))
    raw_error = np.abs(raw_pair.left.astype(int) - scene.left)[inner].mean()
    for rectified, truth in ((left, scene.left), (right, scene.right)):
        error = np.abs(rectified.astype(int) - truth)[inner]
        # Bilinear resampling of a 2 px random-dot texture costs a few grey levels; a wrong map
        # (mis-registered by a pixel or more) gives the ~60-level error of unrelated texture.
        assert np.median(error) <= 8 and error.mean() < 0.3 * raw_error


def test_rectified_pair_has_the_known_disparity(raw_pair):
    scene = raw_pair.scene
    rectifier = Rectifier(raw_pair.left_calibration, raw_pair.right_calibration,
                          scene.rig.width, scene.rig.height)
    left, right = rectifier.rectify(raw_pair.left, raw_pair.right)
    matcher = cv2.StereoSGBM_create(0, 32, 5, 8 * 25, 32 * 25, 1, 63, 10, 100, 2)
    raw = matcher.compute(cv2.cvtColor(left, cv2.COLOR_RGB2GRAY),
                          cv2.cvtColor(right, cv2.COLOR_RGB2GRAY))
    disparity = np.where(raw >= 0, raw / 16.0, np.nan)
    region = scene.valid.copy()
    region[:, :32] = False
    region[:8] = region[-8:] = False
    region[:, -8:] = False
    error = np.abs(disparity - scene.disparity)[region]
    assert np.mean(error <= 1.0) >= 0.85


def pattern(u: np.ndarray, v: np.ndarray) -> np.ndarray:
    return 128.0 + 90.0 * np.sin(u / 4.0) * np.cos(v / 5.0)


@pytest.mark.parametrize("model, distortion", [("plumb_bob", [-0.2, 0.05, 0.002, -0.001, 0.0]),
                                               ("rational_polynomial", [-0.2, 0.05, 0.0, 0.0,
                                                                        0.0, 0.01, 0.0, 0.0]),
                                               ("equidistant", [0.05, -0.02, 0.01, 0.0])])
def test_maps_invert_the_distortion_model(model, distortion):
    rig = StereoRig(150.0, 150.0, 79.5, 79.5, 59.5, 0.1, 160, 120)
    p_left, p_right = rig.projection_matrices()
    K = np.array([[145.0, 0.0, 82.0], [0.0, 146.0, 58.0], [0.0, 0.0, 1.0]])
    R, _ = cv2.Rodrigues(np.array([0.01, 0.02, -0.005]))
    D = np.array(distortion)
    # Raw image: each raw pixel shows the pattern at its rectified position.
    v, u = np.mgrid[0:120, 0:160].astype(np.float64)
    raw_points = np.stack([u.ravel(), v.ravel()], axis=1)
    camera = CameraCalibration.create(K, D, R, p_left, distortion_model=model, name="left")
    rect = undistort_points(raw_points, camera).reshape(120, 160, 2)
    raw = np.clip(pattern(rect[..., 0], rect[..., 1]), 0, 255).astype(np.float32)
    left = CameraCalibration.create(K, D, R, p_left, distortion_model=model, name="left")
    right = CameraCalibration.create(K, D, R, p_right, distortion_model=model, name="right")
    rectified = Rectifier(left, right, 160, 120).rectify_left(raw)
    inner = (slice(15, -15), slice(15, -15))
    np.testing.assert_allclose(rectified[inner], pattern(u, v)[inner], atol=4.0)
