"""How far a rectified stereo pair is from rectified: vertical misalignment from sparse matches.

A bumped or drifting rig keeps publishing depth, only worse: after rectification the same scene
point no longer lies on the same row in both images. This module measures that, with no ROS:

1. ORB (or AKAZE) features in both images, matched by Hamming distance with Lowe's ratio test;
   matches that cannot be stereo matches (a negative disparity beyond `MAX_NEGATIVE_DISPARITY_PX`,
   a vertical offset beyond `max_vertical_px`) are dropped.
2. Each match's vertical offset dy = y_right - y_left refined to a fraction of a pixel by
   normalised cross-correlation of a small patch of the left image in a window of the right one
   (ORB keypoints at coarse pyramid levels are only good to a pixel or two).
3. A robust line through the offsets, dy = offset + slope * (x - cx): started from the median of
   dy and refit on the matches within 3 robust standard deviations (MAD) of the line. `offset`
   is a vertical principal-point error; `slope` is a roll of one camera about its optical axis.
4. `error_px` is the largest |dy| that line gives across the image width (at the left or right
   edge): a 0.2 degree roll moves the edges of a 640 px image by about 1.1 px but the median
   feature by only half that, so the line, not the median of |dy|, is what the thresholds see.
   The median of |dy| over the matches is reported beside it (`median_abs_dy_px`).

Fewer than `min_matches` usable matches (a blank wall, darkness, a covered lens) is a result of its
own, "not enough features", never a number, so a textureless view raises no alarm.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np

from stereo_depth_ros.core.rectify import CameraCalibration, StereoCalibration

DETECTORS = ("orb", "akaze")
#: Matches with a disparity below this (px) cannot be a scene point in front of the rig.
MAX_NEGATIVE_DISPARITY_PX = 2.0
MIN_MATCHES = 30
PATCH_RADIUS_PX = 7
SEARCH_RADIUS_PX = 3
MIN_CORRELATION = 0.8
MIN_PATCH_STD = 2.0


@dataclass(frozen=True)
class RectificationMeasurement:
    """One measurement of a rectified pair.

    error_px: largest vertical misalignment across the image width (px, >= 0) of the robust
        offset + roll line, or None when there were not enough features.
    offset_px: dy at the principal point column (px, right minus left), or None.
    roll_deg: the relative roll the line's slope amounts to (degrees), or None.
    median_abs_dy_px: median |dy| over the inlier matches (px), or None.
    matches: usable (refined) matches. inliers: those the line kept.
    reason: "" when measured, else why not (e.g. "not enough features: 4 matches, need 30").
    """

    error_px: float | None
    offset_px: float | None
    roll_deg: float | None
    median_abs_dy_px: float | None
    matches: int
    inliers: int
    reason: str = ""

    @property
    def measured(self) -> bool:
        return self.error_px is not None


def to_gray(image: np.ndarray) -> np.ndarray:
    """(H, W) uint8 luma of an (H, W) or (H, W, 3) RGB uint8 image (no copy for mono)."""
    image = np.asarray(image)
    if image.ndim == 3 and image.shape[2] == 3:
        return cv2.cvtColor(image, cv2.COLOR_RGB2GRAY)
    if image.ndim == 3 and image.shape[2] == 1:
        return image[:, :, 0]
    if image.ndim != 2:
        raise ValueError(f"expected an (H, W) or (H, W, 3) image, got shape {image.shape}")
    return image


def _detector(name: str, max_features: int):
    if name == "orb":
        return cv2.ORB_create(nfeatures=max_features)
    if name == "akaze":
        create = getattr(cv2, "AKAZE_create", None)
        if create is None:
            raise ValueError(f"detector='akaze' needs OpenCV's AKAZE (OpenCV 4, or the contrib "
                             f"modules in OpenCV 5); this OpenCV {cv2.__version__} has none: use "
                             "'orb'")
        return create()
    raise ValueError(f"detector={name!r}: expected one of {', '.join(DETECTORS)}")


def match_features(left: np.ndarray, right: np.ndarray, *, detector: str = "orb",
                   max_features: int = 2000, ratio: float = 0.8,
                   max_vertical_px: float = 8.0) -> tuple[np.ndarray, np.ndarray]:
    """Ratio-test matches between two (H, W) uint8 images that can be stereo correspondences.

    Returns (points_left, points_right): (N, 2) float32 (x, y) px.
    """
    features = _detector(detector, max_features)
    keys_left, desc_left = features.detectAndCompute(left, None)
    keys_right, desc_right = features.detectAndCompute(right, None)
    empty = np.zeros((0, 2), np.float32)
    if desc_left is None or desc_right is None or len(keys_right) < 2:
        return empty, empty
    pairs = cv2.BFMatcher(cv2.NORM_HAMMING).knnMatch(desc_left, desc_right, k=2)
    good = [pair[0] for pair in pairs
            if len(pair) == 2 and pair[0].distance < ratio * pair[1].distance]
    if not good:
        return empty, empty
    points_left = np.float32([keys_left[m.queryIdx].pt for m in good])
    points_right = np.float32([keys_right[m.trainIdx].pt for m in good])
    dy = points_right[:, 1] - points_left[:, 1]
    disparity = points_left[:, 0] - points_right[:, 0]
    keep = (np.abs(dy) <= max_vertical_px) & (disparity >= -MAX_NEGATIVE_DISPARITY_PX)
    return points_left[keep], points_right[keep]


def refine_vertical_offsets(left: np.ndarray, right: np.ndarray, points_left: np.ndarray,
                            points_right: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Sub-pixel dy of each match by patch correlation (parabola through the peak's rows).

    left, right: (H, W) uint8. Returns (x_left, y_left, dy), each (M,) float64, for the matches
    whose patch is textured, inside both images, and correlates >= MIN_CORRELATION with its
    peak inside the search window.
    """
    r, s = PATCH_RADIUS_PX, SEARCH_RADIUS_PX
    height, width = left.shape
    x_out, y_out, dy_out = [], [], []
    for (xl, yl), (xr, yr) in zip(np.rint(points_left).astype(int),
                                  np.rint(points_right).astype(int)):
        if not (r <= xl < width - r and r <= yl < height - r
                and r + s <= xr < width - r - s and r + s <= yr < height - r - s):
            continue
        patch = left[yl - r:yl + r + 1, xl - r:xl + r + 1].astype(np.float32)
        if patch.std() < MIN_PATCH_STD:
            continue
        window = right[yr - r - s:yr + r + s + 1, xr - r - s:xr + r + s + 1].astype(np.float32)
        scores = cv2.matchTemplate(window, patch, cv2.TM_CCOEFF_NORMED)
        _, best, _, (px, py) = cv2.minMaxLoc(scores)
        if best < MIN_CORRELATION or not (0 < px < 2 * s and 0 < py < 2 * s):
            continue
        above, peak, below = scores[py - 1, px], scores[py, px], scores[py + 1, px]
        curvature = above - 2.0 * peak + below
        fraction = 0.5 * (above - below) / curvature if curvature < 0 else 0.0
        x_out.append(float(xl))
        y_out.append(float(yl))
        dy_out.append(float(yr - s + py + fraction - yl))
    return (np.asarray(x_out, np.float64), np.asarray(y_out, np.float64),
            np.asarray(dy_out, np.float64))


def fit_misalignment(x: np.ndarray, y: np.ndarray, dy: np.ndarray, cx: float, cy: float,
                     iterations: int = 4) -> tuple[np.ndarray, np.ndarray]:
    """Robust plane dy = offset + roll * (x - cx) + scale * (y - cy): started at the median of dy,
    then least squares on the matches within 3 robust standard deviations (MAD) of the plane.

    Returns ((offset_px, roll (px per px), scale (px per px)), inlier mask).
    """
    coefficients = np.array([float(np.median(dy)), 0.0, 0.0])
    inliers = np.ones(dy.shape, bool)
    design = np.column_stack([np.ones_like(x), x - cx, y - cy])
    for _ in range(iterations):
        residual = dy - design @ coefficients
        spread = 1.4826 * float(np.median(np.abs(residual[inliers])))
        inliers = np.abs(residual) <= max(3.0 * spread, 0.25)
        if inliers.sum() < 4:
            break
        coefficients, *_ = np.linalg.lstsq(design[inliers], dy[inliers], rcond=None)
    return coefficients, inliers


def measure_rectification(left: np.ndarray, right: np.ndarray, *, cx: float | None = None,
                          cy: float | None = None,
                          detector: str = "orb", min_matches: int = MIN_MATCHES,
                          max_features: int = 2000, ratio: float = 0.8
                          ) -> RectificationMeasurement:
    """Vertical misalignment of a rectified pair (see the module docstring).

    left, right: rectified (H, W) or (H, W, 3) RGB uint8 images of one size.
    cx: the rectified principal point's column (px; default the image centre): roll turns about
        it. detector: "orb" or "akaze". min_matches: fewer usable matches -> not measured.
    """
    left, right = to_gray(left), to_gray(right)
    if left.shape != right.shape:
        raise ValueError(f"left {left.shape} and right {right.shape} differ in size")
    height, width = left.shape
    cx = (width - 1) / 2.0 if cx is None else float(cx)
    cy = (height - 1) / 2.0 if cy is None else float(cy)
    points_left, points_right = match_features(left, right, detector=detector,
                                               max_features=max_features, ratio=ratio)
    x, y, dy = refine_vertical_offsets(left, right, points_left, points_right)
    if len(dy) < min_matches:
        return RectificationMeasurement(None, None, None, None, len(dy), 0, (
            f"not enough features: {len(dy)} usable matches, need {min_matches}"))
    (offset, slope, _), inliers = fit_misalignment(x, y, dy, cx, cy)
    edges = [abs(offset + slope * (edge - cx)) for edge in (0.0, width - 1.0)]
    return RectificationMeasurement(
        error_px=float(max(edges)), offset_px=offset,
        roll_deg=math.degrees(math.atan(slope)),
        median_abs_dy_px=float(np.median(np.abs(dy[inliers]))), matches=int(len(dy)),
        inliers=int(inliers.sum()))


def misaligned_right_camera(rig, *, cy_shift_px: float = 0.0, roll_deg: float = 0.0
                            ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(K, D, R, P) of a right camera whose calibration no longer fits it, for checks.

    Rectifying a rectified right image of `rig` with these (core.rectify.Rectifier, as the node
    does) gives what a rig bumped after calibration delivers: its rows shifted by cy_shift_px
    (the intrinsic principal point K[1, 2] moved; P stays that of the rectified rig, so the
    calibration still passes every check) and turned by roll_deg about the principal point.
    rig: a core.camera.StereoRig.
    """
    K = np.array([[rig.fx, 0.0, rig.cx_right], [0.0, rig.fy, rig.cy], [0.0, 0.0, 1.0]])
    P = np.zeros((3, 4))
    P[:, :3] = K
    P[0, 3] = -rig.fx * rig.baseline_m
    K[1, 2] -= cy_shift_px
    angle = math.radians(roll_deg)
    R = np.array([[math.cos(angle), -math.sin(angle), 0.0],
                  [math.sin(angle), math.cos(angle), 0.0], [0.0, 0.0, 1.0]])
    return K, np.zeros(5), R, P


def misaligned_calibration(rig, *, cy_shift_px: float = 0.0, roll_deg: float = 0.0):
    """A core.rectify.StereoCalibration of `rig` (already rectified images) whose right camera
    is described as misaligned_right_camera describes it: what the node would hold for a rig
    bumped after calibration. Zero shift and roll: the exact (identity) calibration."""
    left_P, _ = rig.projection_matrices()
    left = CameraCalibration.create(rig.K(), np.zeros(5), np.eye(3), left_P, name="left")
    right = CameraCalibration.create(*misaligned_right_camera(
        rig, cy_shift_px=cy_shift_px, roll_deg=roll_deg), name="right")
    identity = cy_shift_px == 0.0 and roll_deg == 0.0
    return StereoCalibration(left=left, right=right, rig=rig, already_rectified=identity)
