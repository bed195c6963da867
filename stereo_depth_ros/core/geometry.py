"""Disparity, depth and 3-D points for a rectified pair: pure numpy, float32, NaN = invalid.

Depth follows stereo_msgs/DisparityImage: ``Z = fx * B / (d - cx_offset)``; points are in the left
optical frame (x right, y down, z forward; REP 103) with the pinhole model
``x = (u - cx_left) * Z / fx``, ``y = (v - cy) * Z / fy``.
"""

from __future__ import annotations

import cv2
import numpy as np

from stereo_depth_ros.core.camera import StereoRig


def _as_2d_float32(name: str, array: object) -> np.ndarray:
    values = np.asarray(array)
    if values.ndim != 2:
        raise ValueError(f"{name} must be a 2-D (H, W) array, got shape {values.shape}")
    return values.astype(np.float32, copy=False)


def _check_scalar(name: str, value: float, positive: bool = True) -> float:
    value = float(value)
    if not np.isfinite(value) or (positive and value <= 0):
        raise ValueError(f"{name} must be a finite{' positive' if positive else ''} number, "
                         f"got {value}")
    return value


def disparity_to_depth(disparity: np.ndarray, fx: float, baseline_m: float,
                       cx_offset: float = 0.0) -> np.ndarray:
    """Depth in metres from disparity.

    disparity: (H, W) px. fx: px. baseline_m: metres. cx_offset: cx_left - cx_right in px.
    Returns (H, W) float32 ``fx * baseline_m / (d - cx_offset)``, NaN where the adjusted disparity
    is <= 0 or not finite (never 0 or inf).
    """
    focal_baseline = np.float32(_check_scalar("fx", fx) * _check_scalar("baseline_m", baseline_m))
    adjusted = _as_2d_float32("disparity", disparity) - np.float32(
        _check_scalar("cx_offset", cx_offset, positive=False))
    valid = np.isfinite(adjusted) & (adjusted > 0)
    depth = np.full(adjusted.shape, np.nan, dtype=np.float32)
    np.divide(focal_baseline, adjusted, out=depth, where=valid)
    return depth


def depth_to_disparity(depth_m: np.ndarray, fx: float, baseline_m: float,
                       cx_offset: float = 0.0) -> np.ndarray:
    """Disparity in px from depth: (H, W) float32 ``fx * B / Z + cx_offset``; NaN where Z <= 0."""
    focal_baseline = np.float32(_check_scalar("fx", fx) * _check_scalar("baseline_m", baseline_m))
    offset = np.float32(_check_scalar("cx_offset", cx_offset, positive=False))
    depth = _as_2d_float32("depth_m", depth_m)
    valid = np.isfinite(depth) & (depth > 0)
    disparity = np.full(depth.shape, np.nan, dtype=np.float32)
    np.divide(focal_baseline, depth, out=disparity, where=valid)
    disparity[valid] += offset
    return disparity


def depth_to_points(depth_m: np.ndarray, fx: float, fy: float, cx: float,
                    cy: float) -> np.ndarray:
    """Organized (H, W, 3) float32 points in metres in the camera's optical frame.

    depth_m: (H, W) metres, NaN/<= 0 invalid. Invalid pixels give NaN in all three coordinates.
    """
    depth = _as_2d_float32("depth_m", depth_m)
    fx = _check_scalar("fx", fx)
    fy = _check_scalar("fy", fy)
    height, width = depth.shape
    # Precomputed (u - cx) / fx and (v - cy) / fy rays; broadcasting keeps this to 3 passes.
    ray_x = ((np.arange(width, dtype=np.float64) - cx) / fx).astype(np.float32)
    ray_y = ((np.arange(height, dtype=np.float64) - cy) / fy).astype(np.float32)
    z = np.where(np.isfinite(depth) & (depth > 0), depth, np.float32(np.nan))
    points = np.empty((height, width, 3), dtype=np.float32)
    np.multiply(z, ray_x[None, :], out=points[:, :, 0])
    np.multiply(z, ray_y[:, None], out=points[:, :, 1])
    points[:, :, 2] = z
    return points


def disparity_to_points(disparity: np.ndarray, rig: StereoRig) -> np.ndarray:
    """Organized (H, W, 3) float32 points in metres in the left optical frame, NaN invalid.

    disparity: (H, W) px at the rig's resolution (rig.height, rig.width).
    """
    disparity = _as_2d_float32("disparity", disparity)
    if disparity.shape != (rig.height, rig.width):
        raise ValueError(f"disparity shape {disparity.shape} does not match the rig's "
                         f"(height, width) = {(rig.height, rig.width)}; use rig.scaled_to()")
    depth = disparity_to_depth(disparity, rig.fx, rig.baseline_m, rig.cx_offset)
    return depth_to_points(depth, rig.fx, rig.fy, rig.cx_left, rig.cy)


DISPARITY_RANGE_TOLERANCE_PX = 1e-3
"""Slack on a DisparityImage's min/max_disparity bounds: a value equal to a bound may differ
from it by a float32 rounding (the publisher adjusts both by -cx offset separately)."""


def disparity_image_valid(disparity: np.ndarray, min_disparity: float,
                          max_disparity: float) -> np.ndarray:
    """(H, W) bool: the pixels of a stereo_msgs/DisparityImage that carry a disparity.

    disparity: (H, W) px as the message carries them. A pixel is invalid where its value is not
    finite, below min_disparity (the message's rule: invalid pixels are marked below it), above
    max_disparity (outside the searched range; only when max_disparity > min_disparity, so a
    message that leaves both 0 sets no upper bound) or <= 0 (no point in front of the camera:
    Z = f * T / d). The bounds allow DISPARITY_RANGE_TOLERANCE_PX of rounding.
    """
    values = _as_2d_float32("disparity", disparity)
    low = np.float32(float(min_disparity) - DISPARITY_RANGE_TOLERANCE_PX)
    with np.errstate(invalid="ignore"):
        valid = np.isfinite(values) & (values > 0) & (values >= low)
        if float(max_disparity) > float(min_disparity):
            valid &= values <= np.float32(float(max_disparity) + DISPARITY_RANGE_TOLERANCE_PX)
    return valid


def disparity_image_to_points(disparity: np.ndarray, rig: StereoRig, min_disparity: float,
                              max_disparity: float) -> np.ndarray:
    """Organized (H, W, 3) float32 points in metres in the left optical frame from the values
    of a stereo_msgs/DisparityImage; NaN in x, y and z where invalid (`disparity_image_valid`).

    disparity: (H, W) px as the message defines them, already adjusted by -(cx_left - cx_right),
    so Z = fx * baseline_m / d with no further offset; X = (u - cx_left) * Z / fx and
    Y = (v - cy) * Z / fy (the pinhole model; stereo_image_proc's Q matrix gives the same when
    cx_left == cx_right). rig: the rectified pair at the disparity's resolution (H, W). A rig
    without metric depth (`rig.depth_problem`: zero focal length or baseline) gives NaN
    everywhere.
    """
    values = _as_2d_float32("disparity", disparity)
    if values.shape != (rig.height, rig.width):
        raise ValueError(f"disparity shape {values.shape} does not match the rig's "
                         f"(height, width) = {(rig.height, rig.width)}; use rig.scaled_to()")
    if rig.depth_problem:
        return np.full(values.shape + (3,), np.nan, dtype=np.float32)
    valid = disparity_image_valid(values, min_disparity, max_disparity)
    depth = disparity_to_depth(np.where(valid, values, np.float32(np.nan)), rig.fx,
                               rig.baseline_m)
    return depth_to_points(depth, rig.fx, rig.fy, rig.cx_left, rig.cy)


DEPTH_16UC1_MAX_MM = 65535


def depth_to_millimetres(depth_m: np.ndarray) -> tuple[np.ndarray, int]:
    """REP 118's 16UC1 depth: (H, W) uint16 millimetres, rounded, 0 invalid (NaN, <= 0 or under
    0.5 mm), depths beyond 65.535 m clamped to 65535; and how many pixels were clamped."""
    depth = np.asarray(depth_m, dtype=np.float32)
    millimetres = np.where(np.isfinite(depth) & (depth > 0), depth * np.float32(1000.0),
                           np.float32(0.0))
    clamped = int(np.count_nonzero(millimetres > DEPTH_16UC1_MAX_MM + 0.5))
    return np.rint(np.minimum(millimetres, DEPTH_16UC1_MAX_MM)).astype(np.uint16), clamped


def clip_depth(depth_m: np.ndarray, min_m: float | None = None,
               max_m: float | None = None) -> np.ndarray:
    """Copy of depth (float32) with values outside [min_m, max_m] set to NaN; None = no bound."""
    depth = np.asarray(depth_m, dtype=np.float32)
    if min_m is None and max_m is None:
        return depth.copy()
    keep = None  # NaN fails every comparison, so it stays NaN
    if min_m is not None:
        keep = depth >= np.float32(min_m)
    if max_m is not None:
        below = depth <= np.float32(max_m)
        keep = below if keep is None else keep & below
    return np.where(keep, depth, np.float32(np.nan))


def depth_std_from_disparity_std(depth_m: np.ndarray, fx: float, baseline_m: float,
                                 disparity_std: float | np.ndarray) -> np.ndarray:
    """First-order depth standard deviation in metres: sigma_Z = Z^2 / (fx * B) * sigma_d."""
    depth = np.asarray(depth_m, dtype=np.float32)
    focal_baseline = np.float32(_check_scalar("fx", fx) * _check_scalar("baseline_m", baseline_m))
    return (depth * depth / focal_baseline * np.asarray(disparity_std, np.float32)).astype(
        np.float32)


def scale_disparity(disparity: np.ndarray, sx: float) -> np.ndarray:
    """Disparity values for an image resized by sx horizontally: d * sx (float32, NaN kept)."""
    return np.asarray(disparity, dtype=np.float32) * np.float32(_check_scalar("sx", sx))


def resize_disparity(disparity: np.ndarray, width: int, height: int, *,
                     interpolation: str = "nearest") -> np.ndarray:
    """Resize a disparity map to (height, width) and rescale its values by width / W_in.

    interpolation: "nearest" (NaN never bleeds into valid pixels) or "linear" (bilinear on the
    finite values, normalised by the resized validity, so holes neither spread nor pull values
    towards 0; a pixel is NaN where less than half of its support was valid). Returns float32.
    """
    source = _as_2d_float32("disparity", disparity)
    if int(width) <= 0 or int(height) <= 0:
        raise ValueError(f"target size must be positive, got width={width}, height={height}")
    if interpolation not in ("nearest", "linear"):
        raise ValueError(f"interpolation must be 'nearest' or 'linear', got {interpolation!r}")
    if source.shape == (height, width):
        return source.copy()
    size = (int(width), int(height))
    ratio = np.float32(int(width) / source.shape[1])
    if interpolation == "nearest":
        resized = cv2.resize(source, size, interpolation=cv2.INTER_NEAREST)
        return scale_disparity(resized, int(width) / source.shape[1])
    finite = np.isfinite(source)
    values = cv2.resize(np.where(finite, source, 0.0).astype(np.float32), size,
                        interpolation=cv2.INTER_LINEAR)
    weight = cv2.resize(finite.astype(np.float32), size, interpolation=cv2.INTER_LINEAR)
    out = np.full((int(height), int(width)), np.nan, dtype=np.float32)
    ok = weight > 0.5
    out[ok] = values[ok] / weight[ok] * ratio
    return out
