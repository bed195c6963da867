"""Stereo rectification from per-camera calibration (K, D, R, P), as in sensor_msgs/CameraInfo.

K: 3x3 intrinsics of the raw image. D: distortion coefficients (plumb_bob / rational_polynomial:
4, 5, 8, 12 or 14 values; equidistant: 4). R: 3x3 rectification rotation. P: 3x4 rectified
projection matrix. Flat ROS arrays (k[9], r[9], p[12]) are accepted as well.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import cv2
import numpy as np

from stereo_depth_ros.core.camera import StereoRig

DISTORTION_MODELS = ("plumb_bob", "rational_polynomial", "equidistant")
_PINHOLE_DISTORTION_SIZES = (0, 4, 5, 8, 12, 14)


def _matrix(name: str, value: object, shape: tuple[int, int]) -> np.ndarray:
    try:
        array = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be numeric, got {value!r}") from None
    if array.size == shape[0] * shape[1] and array.ndim == 1:
        array = array.reshape(shape)
    if array.shape != shape:
        raise ValueError(f"{name} must be {shape[0]}x{shape[1]}, got shape {array.shape}")
    if not np.all(np.isfinite(array)):
        raise ValueError(f"{name} contains non-finite values: {array.tolist()}")
    return array


@dataclass(frozen=True)
class CameraCalibration:
    """Validated calibration of one camera: K (3x3), D (N,), R (3x3), P (3x4), all float64."""

    K: np.ndarray
    D: np.ndarray
    R: np.ndarray
    P: np.ndarray
    distortion_model: str = "plumb_bob"

    @classmethod
    def create(cls, K: object, D: object, R: object, P: object,
               distortion_model: str = "plumb_bob", name: str = "camera") -> CameraCalibration:
        """Check shapes and values; raise ValueError naming the camera and the matrix."""
        if distortion_model not in DISTORTION_MODELS:
            raise ValueError(f"{name}: unsupported distortion model {distortion_model!r} "
                             f"(expected one of {', '.join(DISTORTION_MODELS)})")
        K = _matrix(f"{name} K", K, (3, 3))
        R = _matrix(f"{name} R", R, (3, 3))
        P = _matrix(f"{name} P", P, (3, 4))
        D = np.asarray([] if D is None else D, dtype=np.float64).ravel()
        if not np.all(np.isfinite(D)):
            raise ValueError(f"{name} D contains non-finite values: {D.tolist()}")
        if not np.any(K):
            raise ValueError(f"{name} K is all zero: the camera is not calibrated")
        if K[0, 0] <= 0 or K[1, 1] <= 0:
            raise ValueError(f"{name} K has non-positive focal length (fx={K[0, 0]}, "
                             f"fy={K[1, 1]})")
        if P[0, 0] <= 0 or P[1, 1] <= 0:
            raise ValueError(f"{name} P has non-positive focal length (fx={P[0, 0]}, "
                             f"fy={P[1, 1]}): the camera is not calibrated")
        if not np.allclose(R @ R.T, np.eye(3), atol=1e-4) or np.linalg.det(R) <= 0:
            raise ValueError(f"{name} R is not a rotation matrix: {R.tolist()}")
        if distortion_model == "equidistant":
            if D.size not in (0, 4):
                raise ValueError(f"{name} D must have 4 values for the equidistant model, "
                                 f"got {D.size}")
        elif D.size not in _PINHOLE_DISTORTION_SIZES:
            raise ValueError(f"{name} D must have 0, 4, 5, 8, 12 or 14 values, got {D.size}")
        return cls(K=K, D=D, R=R, P=P, distortion_model=distortion_model)


@dataclass(frozen=True)
class StereoCalibration:
    """A validated stereo pair calibration (from two CameraInfo, a KITTI file, ...).

    left, right: per-camera K, D, R, P. rig: the rectified pair (from both P; baseline from the
    difference of P[0,3]). already_rectified: both cameras have D = 0, R = I, K = P[:3,:3].
    frame_id: the left camera's optical frame, "" when unknown. note: e.g. "binning 2x2" when
    the cameras' K and P were reduced to the published image (REP 104).
    Compared by identity: build it once per calibration change (the pipeline caches its
    rectification maps per object).
    """

    left: CameraCalibration
    right: CameraCalibration
    rig: StereoRig
    already_rectified: bool
    frame_id: str = ""
    note: str = ""
    """How the calibration was adapted to the published image (binning, ROI), for messages."""
    depth_note: str = ""
    """Why the rig gives no metric depth (see StereoRig.depth_problem), naming the fields."""
    rectifiable: bool = True
    """False when there is no rectified camera to map to (P without a focal length): the images
    are matched as they come, whatever the rectify option says."""

    __hash__ = object.__hash__

    def __eq__(self, other: object) -> bool:
        return self is other

    @property
    def width(self) -> int:
        return self.rig.width

    @property
    def height(self) -> int:
        return self.rig.height


def _calibration(value: object, name: str) -> CameraCalibration:
    if isinstance(value, CameraCalibration):
        return value
    if isinstance(value, Sequence) and len(value) in (4, 5):
        return CameraCalibration.create(*value, name=name)
    raise ValueError(f"{name} calibration must be a CameraCalibration or a (K, D, R, P) tuple")


def undistort_points(points: np.ndarray, calibration: CameraCalibration,
                     iterations: int = 50) -> np.ndarray:
    """Raw pixel positions -> rectified pixel positions of one camera (the inverse of what the
    rectification maps sample), iterated to convergence.

    points: (N, 1, 2) or (N, 2) float64 raw px. Returns (N, 2) float64 rectified px (in the
    frame of P). Works with OpenCV 4.5.4 (Ubuntu 22.04 / ROS 2 Humble) through 5.
    """
    raw = np.asarray(points, dtype=np.float64).reshape(-1, 1, 2)
    criteria = (cv2.TERM_CRITERIA_COUNT | cv2.TERM_CRITERIA_EPS, iterations, 1e-10)
    K, D, R, P = calibration.K, calibration.D, calibration.R, calibration.P[:, :3]
    if calibration.distortion_model == "equidistant":
        D = D if D.size else np.zeros(4)
        try:
            rect = cv2.fisheye.undistortPoints(raw, K, D, R=R, P=P, criteria=criteria)
        except cv2.error:                                   # OpenCV < 4.6: no criteria
            rect = cv2.fisheye.undistortPoints(raw, K, D, R=R, P=P)
    elif hasattr(cv2, "undistortPointsIter"):               # OpenCV 4.x
        rect = cv2.undistortPointsIter(raw, K, D if D.size else None, R, P, criteria)
    else:                                                   # OpenCV 5: criteria in the call
        rect = cv2.undistortPoints(raw, K, D if D.size else None, R=R, P=P, criteria=criteria)
    return rect.reshape(-1, 2)


def is_already_rectified(K: object, D: object, R: object, P: object, atol: float = 1e-6) -> bool:
    """True when the image needs no remapping: D all zero, R identity and K == P[:3, :3].

    Tolerances: |D|, |R - I| <= atol; K vs P[:3, :3] relative atol (they may be printed with
    limited precision). Raises ValueError for malformed or uncalibrated input.
    """
    calib = CameraCalibration.create(K, D, R, P, name="camera")
    return bool(np.all(np.abs(calib.D) <= atol)
                and np.allclose(calib.R, np.eye(3), rtol=0.0, atol=atol)
                and np.allclose(calib.K, calib.P[:, :3], rtol=atol, atol=atol))


class Rectifier:
    """Rectifies stereo pairs with remap tables built once per calibration.

    left, right: CameraCalibration or (K, D, R, P) tuples. width, height: image size in px; the
    rectified images have the same size. interpolation: cv2 flag used by remap.
    When both cameras are already rectified, `rectify` returns its inputs unchanged.
    """

    def __init__(self, left: object, right: object, width: int, height: int,
                 interpolation: int = cv2.INTER_LINEAR) -> None:
        if int(width) <= 0 or int(height) <= 0:
            raise ValueError(f"image size must be positive, got width={width}, height={height}")
        self.left = _calibration(left, "left")
        self.right = _calibration(right, "right")
        self.width, self.height = int(width), int(height)
        self.interpolation = interpolation
        self.rig = StereoRig.from_projection_matrices(self.left.P, self.right.P, self.width,
                                                      self.height)
        self.is_identity = all(
            is_already_rectified(c.K, c.D, c.R, c.P) for c in (self.left, self.right))
        self._maps = None if self.is_identity else (self._build_maps(self.left),
                                                    self._build_maps(self.right))

    def _build_maps(self, calib: CameraCalibration) -> tuple[np.ndarray, np.ndarray]:
        size = (self.width, self.height)
        new_camera = calib.P[:, :3]
        if calib.distortion_model == "equidistant":
            distortion = calib.D if calib.D.size else np.zeros(4)
            return cv2.fisheye.initUndistortRectifyMap(calib.K, distortion, calib.R, new_camera,
                                                       size, cv2.CV_16SC2)
        return cv2.initUndistortRectifyMap(calib.K, calib.D if calib.D.size else None, calib.R,
                                           new_camera, size, cv2.CV_16SC2)

    def fixed_point_maps(self, index: int) -> tuple[np.ndarray, np.ndarray] | None:
        """cv2's remap tables of camera `index` (0 left, 1 right): (H, W, 2) int16 integer
        source columns/rows and (H, W) uint16 5-bit fractions (row * 32 + column); None when the
        pair needs no remapping. A device implementation reproduces cv2.remap from these."""
        return None if self._maps is None else self._maps[index]

    def _remap(self, image: np.ndarray, index: int, name: str) -> np.ndarray:
        image = np.asarray(image)
        if image.ndim not in (2, 3) or image.shape[:2] != (self.height, self.width):
            raise ValueError(f"{name} image has shape {image.shape}, expected "
                             f"({self.height}, {self.width}[, C]) from the calibration")
        if self._maps is None:
            return image
        map1, map2 = self._maps[index]
        return cv2.remap(image, map1, map2, self.interpolation, borderMode=cv2.BORDER_CONSTANT,
                         borderValue=0)

    def rectify_left(self, image: np.ndarray) -> np.ndarray:
        """Rectify one left image: (H, W) or (H, W, C) -> same shape and dtype."""
        return self._remap(image, 0, "left")

    def rectify_right(self, image: np.ndarray) -> np.ndarray:
        """Rectify one right image: (H, W) or (H, W, C) -> same shape and dtype."""
        return self._remap(image, 1, "right")

    def rectify(self, left: np.ndarray, right: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Rectify a raw pair; returns (left_rect, right_rect) at the calibration's size."""
        return self.rectify_left(left), self.rectify_right(right)
