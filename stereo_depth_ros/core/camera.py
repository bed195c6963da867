"""Rectified stereo camera model: intrinsics, baseline and image size of a rectified pair.

Pixel coordinates follow OpenCV/ROS: u to the right, v down, integer values at pixel centres.
Disparity is ``u_left - u_right`` in px; depth follows stereo_msgs/DisparityImage,
``Z = fx * baseline_m / (d - cx_offset)`` with ``cx_offset = cx_left - cx_right``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import numpy as np

# Relative tolerance for "the two rectified cameras share fx, fy and cy".
_SHARED_INTRINSICS_RTOL = 1e-3


def _finite_float(name: str, value: object) -> float:
    try:
        number = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a number, got {value!r}") from None
    if not math.isfinite(number):
        raise ValueError(f"{name} must be finite, got {number}")
    return number


def _positive_int(name: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        if isinstance(value, (float, np.floating)) and float(value).is_integer():
            value = int(value)
        else:
            raise ValueError(f"{name} must be a positive integer, got {value!r}")
    if int(value) <= 0:
        raise ValueError(f"{name} must be a positive integer, got {value}")
    return int(value)


def _projection_matrix(name: str, value: object, finite_tx: bool = True) -> np.ndarray:
    array = np.asarray(value, dtype=np.float64)
    if array.shape == (12,):
        array = array.reshape(3, 4)
    if array.shape != (3, 4):
        raise ValueError(f"{name} must be a 3x4 projection matrix (or 12 values), "
                         f"got shape {array.shape}")
    checked = array if finite_tx else np.delete(array.ravel(), 3)
    if not np.all(np.isfinite(checked)):
        raise ValueError(f"{name} contains non-finite values: {array.tolist()}")
    return array


# Why a rig gives disparity but no metric depth (`StereoRig.depth_problem`); the node counts
# them as depth_unavailable.<key>.
ZERO_BASELINE = "zero_baseline"
NEGATIVE_BASELINE = "negative_baseline"
NON_FINITE_BASELINE = "non_finite_baseline"
NON_POSITIVE_FOCAL_LENGTH = "non_positive_focal_length"
DEPTH_PROBLEMS = (ZERO_BASELINE, NEGATIVE_BASELINE, NON_FINITE_BASELINE,
                  NON_POSITIVE_FOCAL_LENGTH)


def depth_problem_of(fx: float, fy: float, baseline_m: float) -> str:
    """The DEPTH_PROBLEMS key that stops metric depth for these values, "" when there is none."""
    if not (fx > 0 and fy > 0):
        return NON_POSITIVE_FOCAL_LENGTH
    if not math.isfinite(baseline_m):
        return NON_FINITE_BASELINE
    if baseline_m == 0:
        return ZERO_BASELINE
    if baseline_m < 0:
        return NEGATIVE_BASELINE
    return ""


@dataclass(frozen=True)
class StereoRig:
    """A rectified stereo pair (both cameras share fx, fy and cy; rows are epipolar lines).

    fx, fy: focal lengths in px (> 0). cx_left, cx_right, cy: principal points in px.
    baseline_m: distance between the optical centres in metres (> 0; the right camera sits at
    +baseline_m along the left camera's x axis). width, height: image size in px.
    depth_problem: "" for a metric rig. One of DEPTH_PROBLEMS for a rig that still gives
    disparity (the images are rectified) but no metric depth: then fx, fy and baseline_m are kept
    as the calibration gave them (zero, negative or non-finite) and every depth method raises.
    """

    fx: float
    fy: float
    cx_left: float
    cx_right: float
    cy: float
    baseline_m: float
    width: int
    height: int
    depth_problem: str = ""

    def __post_init__(self) -> None:
        for name in ("width", "height"):
            object.__setattr__(self, name, _positive_int(name, getattr(self, name)))
        if self.depth_problem:
            if self.depth_problem not in DEPTH_PROBLEMS:
                raise ValueError(f"depth_problem={self.depth_problem!r}: expected one of "
                                 f"{', '.join(DEPTH_PROBLEMS)}")
            for name in ("cx_left", "cx_right", "cy"):
                object.__setattr__(self, name, _finite_float(name, getattr(self, name)))
            for name in ("fx", "fy", "baseline_m"):
                object.__setattr__(self, name, float(getattr(self, name)))
            return
        for name in ("fx", "fy", "cx_left", "cx_right", "cy", "baseline_m"):
            object.__setattr__(self, name, _finite_float(name, getattr(self, name)))
        for name in ("fx", "fy"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be > 0 px, got {getattr(self, name)}")
        if self.baseline_m <= 0:
            raise ValueError(f"baseline_m must be > 0 m, got {self.baseline_m} (are left and "
                             "right swapped, or is the right camera's P[0,3] missing?)")

    @classmethod
    def from_projection_matrices(cls, P_left: object, P_right: object, width: int,
                                 height: int, *, require_depth: bool = True) -> StereoRig:
        """Build from the two rectified 3x4 projection matrices (ROS CameraInfo.p, KITTI P_rect).

        baseline_m = (P_left[0,3] - P_right[0,3]) / fx: the difference, because KITTI's colour
        cameras (P_rect_02, P_rect_03) both carry a non-zero Tx. The matrices' translation is in
        the unit the calibration uses (metres for ROS and KITTI).
        require_depth=False: a zero, negative or non-finite baseline or a non-positive focal
        length gives a disparity-only rig (`depth_problem` set) instead of a ValueError.
        """
        left = _projection_matrix("P_left", P_left, finite_tx=require_depth)
        right = _projection_matrix("P_right", P_right, finite_tx=require_depth)
        fx, fy, cy = left[0, 0], left[1, 1], left[1, 2]
        if not require_depth:
            for label, a, b in (("fx", fx, right[0, 0]), ("fy", fy, right[1, 1]),
                                ("cy", cy, right[1, 2])):
                if not math.isclose(a, b, rel_tol=_SHARED_INTRINSICS_RTOL, abs_tol=1e-6):
                    raise ValueError(f"left and right projection matrices differ in {label} "
                                     f"({a} vs {b}): the pair is not rectified")
            with np.errstate(divide="ignore", invalid="ignore"):
                baseline_m = float(np.float64(left[0, 3] - right[0, 3]) / np.float64(fx))
            return cls(fx=fx, fy=fy, cx_left=left[0, 2], cx_right=right[0, 2], cy=cy,
                       baseline_m=baseline_m, width=width, height=height,
                       depth_problem=depth_problem_of(fx, fy, baseline_m))
        if fx <= 0 or fy <= 0:
            raise ValueError(f"P_left has non-positive focal length (fx={fx}, fy={fy}); "
                             "is the camera calibrated?")
        for label, a, b in (("fx", fx, right[0, 0]), ("fy", fy, right[1, 1]),
                            ("cy", cy, right[1, 2])):
            if not math.isclose(a, b, rel_tol=_SHARED_INTRINSICS_RTOL, abs_tol=1e-6):
                raise ValueError(f"left and right projection matrices differ in {label} "
                                 f"({a} vs {b}): the pair is not rectified")
        baseline_m = (left[0, 3] - right[0, 3]) / fx
        if baseline_m <= 0:
            raise ValueError(f"baseline from P_left[0,3]={left[0, 3]} and P_right[0,3]="
                             f"{right[0, 3]} is {baseline_m} m (must be > 0): right P needs "
                             "Tx = -fx * baseline; are left and right swapped?")
        return cls(fx=fx, fy=fy, cx_left=left[0, 2], cx_right=right[0, 2], cy=cy,
                   baseline_m=baseline_m, width=width, height=height)

    @property
    def cx_offset(self) -> float:
        """cx_left - cx_right in px: subtract from a disparity before Z = fx * B / d."""
        return self.cx_left - self.cx_right

    @property
    def has_depth(self) -> bool:
        """False for a disparity-only rig (see depth_problem)."""
        return not self.depth_problem

    def _require_depth(self) -> None:
        if self.depth_problem:
            raise ValueError(f"this rig gives no metric depth ({self.depth_problem}: fx="
                             f"{self.fx}, baseline_m={self.baseline_m})")

    @property
    def focal_baseline(self) -> float:
        """fx * baseline_m (px * m): depth = focal_baseline / (disparity - cx_offset)."""
        self._require_depth()
        return self.fx * self.baseline_m

    @property
    def size(self) -> tuple[int, int]:
        """(width, height) in px, the order OpenCV takes."""
        return self.width, self.height

    def scaled(self, sx: float, sy: float | None = None) -> StereoRig:
        """The rig for images resized by sx horizontally and sy vertically (sy defaults to sx).

        fx, cx_* scale by sx; fy, cy by sy; the size is rounded to whole px; the baseline is
        unchanged. Disparities measured on the resized images scale by sx as well.
        Uses the plain ``c * s`` convention (as ROS image_proc's resize does).
        """
        sx = _finite_float("sx", sx)
        sy = sx if sy is None else _finite_float("sy", sy)
        if sx <= 0 or sy <= 0:
            raise ValueError(f"scale factors must be > 0, got sx={sx}, sy={sy}")
        return replace(self, fx=self.fx * sx, fy=self.fy * sy, cx_left=self.cx_left * sx,
                       cx_right=self.cx_right * sx, cy=self.cy * sy,
                       width=max(1, round(self.width * sx)),
                       height=max(1, round(self.height * sy)))

    def scaled_to(self, width: int, height: int) -> StereoRig:
        """The rig for images resized to (width, height) px."""
        width = _positive_int("width", width)
        height = _positive_int("height", height)
        return replace(self.scaled(width / self.width, height / self.height), width=width,
                       height=height)

    def K(self) -> np.ndarray:
        """Left camera matrix, 3x3 float64."""
        return np.array([[self.fx, 0.0, self.cx_left],
                         [0.0, self.fy, self.cy],
                         [0.0, 0.0, 1.0]])

    def projection_matrices(self) -> tuple[np.ndarray, np.ndarray]:
        """Canonical rectified (P_left, P_right), 3x4 float64: left Tx = 0, right Tx = -fx * B."""
        left = np.zeros((3, 4))
        left[:, :3] = self.K()
        right = left.copy()
        right[0, 2] = self.cx_right
        right[0, 3] = -self.fx * self.baseline_m
        return left, right

    def Q(self) -> np.ndarray:
        """4x4 reprojection matrix (OpenCV convention): [u, v, d, 1] -> [X, Y, Z, W], in metres.

        Gives Z = fx * B / (d - cx_offset) and uses fx for both axes, so it matches the pinhole
        model only when fx == fy (use core.geometry.disparity_to_points otherwise).
        """
        self._require_depth()
        b = self.baseline_m
        return np.array([[1.0, 0.0, 0.0, -self.cx_left],
                         [0.0, 1.0, 0.0, -self.cy],
                         [0.0, 0.0, 0.0, self.fx],
                         [0.0, 0.0, 1.0 / b, -self.cx_offset / b]])

    def depth_to_disparity(self, depth_m: float) -> float:
        """Disparity in px of a point at depth_m metres (> 0)."""
        depth_m = _finite_float("depth_m", depth_m)
        if depth_m <= 0:
            raise ValueError(f"depth_m must be > 0, got {depth_m}")
        return self.focal_baseline / depth_m + self.cx_offset

    def disparity_to_depth(self, disparity: float) -> float:
        """Depth in metres for one disparity in px; NaN when d - cx_offset <= 0."""
        self._require_depth()
        adjusted = float(disparity) - self.cx_offset
        return self.focal_baseline / adjusted if adjusted > 0 else math.nan
