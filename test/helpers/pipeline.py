"""A small synthetic rig for the pipeline tests (host and device stages): 120x200 pixels,
fx 150 px, baseline 0.2 m, a distorted calibration with rectifying rotations, a textured pair."""

from __future__ import annotations

import cv2
import numpy as np

from stereo_depth_ros.core.camera import StereoRig
from stereo_depth_ros.core.rectify import CameraCalibration, StereoCalibration

HEIGHT, WIDTH, FX, BASELINE = 120, 200, 150.0, 0.2


def make_calibration(distorted: bool = True, width: int = WIDTH,
                     height: int = HEIGHT) -> StereoCalibration:
    K = np.array([[FX, 0, width / 2 + 3.2], [0, FX, height / 2 - 1.7], [0, 0, 1.0]])
    D = np.array([-0.3, 0.12, 0.0005, -0.001, -0.02]) if distorted else np.zeros(5)
    angle = 0.004 if distorted else 0.0
    R = np.array([[np.cos(angle), 0, np.sin(angle)], [0, 1, 0],
                  [-np.sin(angle), 0, np.cos(angle)]])
    P_left = np.hstack([K, np.zeros((3, 1))])
    P_right = np.hstack([K, np.array([[-FX * BASELINE], [0], [0]])])
    return StereoCalibration(
        left=CameraCalibration.create(K, D, R, P_left, name="left"),
        right=CameraCalibration.create(K, D, R.T, P_right, name="right"),
        rig=StereoRig.from_projection_matrices(P_left, P_right, width, height),
        already_rectified=not distorted, frame_id="cam")


def textured_pair(shift: int = 8, height: int = HEIGHT, width: int = WIDTH):
    rng = np.random.default_rng(1)
    wide = cv2.GaussianBlur(rng.integers(0, 256, (height, width + shift, 3), np.uint8),
                            (3, 3), 0.8)
    return np.ascontiguousarray(wide[:, shift:]), np.ascontiguousarray(wide[:, :width])


class FixedOutputBackend:
    """A backend that returns the same disparity, confidence and sigma_d (px) for every pair:
    sigma None = a backend without uncertainty (like SGBM); confidence None = all ones."""

    name = "fixed"
    min_disparity, max_disparity, delta_d = 0.0, 64.0, 1.0 / 256

    def __init__(self, disparity, confidence=None, sigma=None) -> None:
        self.outputs = (disparity, confidence, sigma)
        self.provides_uncertainty = sigma is not None

    def check_input_size(self, width, height):
        pass

    def compute(self, left, right):
        from stereo_depth_ros.backends.base import DisparityResult
        disparity, confidence, sigma = (None if a is None else np.array(a, np.float32)
                                        for a in self.outputs)
        if confidence is None:
            confidence = np.ones_like(disparity)
        return DisparityResult(disparity=disparity, confidence=confidence, uncertainty=sigma)
