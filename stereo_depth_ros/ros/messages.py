"""ROS messages <-> the package's pure types.

In: a CameraInfo pair -> `StereoCalibration` (validated K, D, R, P per camera, the rectified
`StereoRig`, a key that changes when the calibration does). Every problem raises `CalibrationError`
with a `reason` (the diagnostics counter) and a message naming the topic, field and value.

Out: stereo_msgs/DisparityImage, REP 118 depth Image, organized PointCloud2 (built from a numpy
structured array; sensor_msgs_py is not needed), the rectified CameraInfo for depth/camera_info.
"""

from __future__ import annotations

import array

import numpy as np
from sensor_msgs.msg import CameraInfo, Image, PointCloud2, PointField, RegionOfInterest
from stereo_msgs.msg import DisparityImage

from stereo_depth_ros.config import DEPTH_ENCODINGS
from stereo_depth_ros.core.camera import (NEGATIVE_BASELINE, NON_FINITE_BASELINE,
                                          NON_POSITIVE_FOCAL_LENGTH, ZERO_BASELINE, StereoRig)
from stereo_depth_ros.core.geometry import depth_to_millimetres
from stereo_depth_ros.core.rectify import (CameraCalibration, StereoCalibration,
                                           is_already_rectified)
from stereo_depth_ros.drop_reasons import (INFO_SIZE_MISMATCH, INVALID_CALIBRATION,
                                           NAN_IN_CALIBRATION, UNCALIBRATED, FrameDropped)
from stereo_depth_ros.ros.image_conversion import image_to_numpy, numpy_to_image
from stereo_depth_ros.ros.image_conversion import UnsupportedEncodingError, decode_raw


class CalibrationError(FrameDropped, ValueError):
    """Unusable camera_info; `reason` is a diagnostics key, the message names field + value."""


_MATRICES = (("K", "k", (3, 3)), ("D", "d", None), ("R", "r", (3, 3)), ("P", "p", (3, 4)))


def _index_text(flat_index: int, shape: tuple[int, int] | None) -> str:
    if shape is None:
        return f"[{flat_index}]"
    row, col = divmod(flat_index, shape[1])
    return f"[{row},{col}]"


def camera_info_matrices(info: CameraInfo, topic: str) -> dict[str, np.ndarray]:
    """K (3x3), D (N,), R (3x3), P (3x4) float64 of one CameraInfo; CalibrationError when unusable.

    Checks: no NaN/inf (P's translation column excepted: a non-finite Tx costs the depth, not the
    disparity); P not all zero (an uncalibrated camera driver publishes zeros). A K that is all
    zero while P is set (a rectified stream that carries only P, as stereo_image_proc's fixtures
    and KITTI odometry bags do) is replaced by P's left 3x3 with D = 0 and R = I: the image is
    taken as rectified, as image_geometry does for rectified images. `info_notes` says so.
    """
    matrices = {}
    for name, attr, shape in _MATRICES:
        values = np.asarray(getattr(info, attr), dtype=np.float64).ravel()
        acceptable = np.isfinite(values)
        if name == "P":
            acceptable[3::4] = True        # P[i,3], the translation: judged by the rig
        bad = np.flatnonzero(~acceptable)
        if bad.size:
            index = int(bad[0])
            raise CalibrationError(
                NAN_IN_CALIBRATION,
                f"{values[index]} in {topic} {name}{_index_text(index, shape)}: the calibration "
                "must be finite")
        matrices[name] = values.reshape(shape) if shape else values
    if not np.any(np.nan_to_num(matrices["P"])):
        raise CalibrationError(
            UNCALIBRATED,
            f"{topic} P is all zero: the camera is not calibrated (run camera_calibration, or "
            "publish the calibration in camera_info)")
    if not np.any(matrices["K"]):
        if np.any(matrices["D"]):
            raise CalibrationError(
                UNCALIBRATED, f"{topic} K is all zero but D={matrices['D'].tolist()} is not: "
                "the image cannot be undistorted without K (publish K, or D = 0 for a "
                "rectified image)")
        matrices.update(K=matrices["P"][:, :3].copy(), D=np.zeros(0), R=np.eye(3))
    return matrices


def k_is_zero(info: CameraInfo) -> bool:
    """True when the CameraInfo carries no K (all zero): its image is taken as rectified."""
    return not np.any(np.asarray(info.k, dtype=np.float64))


def calibration_key(left_info: CameraInfo, right_info: CameraInfo) -> tuple:
    """Hashable summary of everything the rectification maps depend on."""
    def one(info: CameraInfo) -> tuple:
        roi = info.roi
        return (int(info.width), int(info.height), str(info.distortion_model),
                np.asarray(info.k, np.float64).tobytes(), np.asarray(info.d, np.float64).tobytes(),
                np.asarray(info.r, np.float64).tobytes(), np.asarray(info.p, np.float64).tobytes(),
                int(info.binning_x), int(info.binning_y), int(roi.x_offset), int(roi.y_offset),
                int(roi.width), int(roi.height))
    return one(left_info) + one(right_info)


def reduced_camera(info: CameraInfo, matrices: dict[str, np.ndarray], topic: str
                   ) -> tuple[dict[str, np.ndarray], tuple[int, int], str]:
    """K and P of the image actually published when camera_info has binning or an ROI (REP 104),
    as image_geometry computes them: the ROI offset moves the principal points, then binning
    divides the first two rows; the size is the ROI (or full) size divided by the binning.

    Returns (matrices with K and P replaced, (width, height), a note for logs, "" when the image
    is the full calibrated one). CalibrationError (invalid_calibration) for an ROI outside the
    calibrated image or a binning larger than it.
    """
    width, height = int(info.width), int(info.height)
    bin_x, bin_y = max(1, int(info.binning_x)), max(1, int(info.binning_y))
    roi = info.roi
    x0, y0, roi_w, roi_h = (int(roi.x_offset), int(roi.y_offset), int(roi.width),
                            int(roi.height))
    full_roi = roi_w == 0 and roi_h == 0 and x0 == 0 and y0 == 0
    if full_roi:
        roi_w, roi_h = width, height
    elif roi_w <= 0 or roi_h <= 0 or x0 + roi_w > width or y0 + roi_h > height:
        raise CalibrationError(INVALID_CALIBRATION, (
            f"{topic} roi x_offset={x0}, y_offset={y0}, width={roi_w}, height={roi_h} does not "
            f"lie inside the calibrated {width}x{height} image"))
    if roi_w // bin_x < 1 or roi_h // bin_y < 1:
        raise CalibrationError(INVALID_CALIBRATION, (
            f"{topic} binning_x={bin_x}, binning_y={bin_y} is larger than the {roi_w}x{roi_h} "
            "image"))
    if full_roi and bin_x == 1 and bin_y == 1:
        return matrices, (width, height), ""
    K, P = matrices["K"].copy(), matrices["P"].copy()
    K[0, 2] -= x0
    K[1, 2] -= y0
    P[0, 2] -= x0
    P[1, 2] -= y0
    for matrix, columns in ((K, (0, 2)), (P, (0, 2, 3))):      # image_geometry's elements
        for column in columns:
            matrix[0, column] /= bin_x
        for column in (1,) + columns[1:]:
            matrix[1, column] /= bin_y
    parts = [f"binning {bin_x}x{bin_y}"] if bin_x > 1 or bin_y > 1 else []
    if not full_roi:
        parts.append(f"roi {roi_w}x{roi_h} at ({x0}, {y0})")
    return {**matrices, "K": K, "P": P}, (roi_w // bin_x, roi_h // bin_y), ", ".join(parts)


def _distortion_model(info: CameraInfo, d: np.ndarray, topic: str) -> str:
    model = str(info.distortion_model).strip()
    if not model:
        if np.any(d):
            raise CalibrationError(INVALID_CALIBRATION, f"{topic} has non-zero D but an empty "
                                   "distortion_model")
        return "plumb_bob"
    return model


def stereo_calibration(left_info: CameraInfo, right_info: CameraInfo,
                       left_topic: str = "left/camera_info",
                       right_topic: str = "right/camera_info") -> StereoCalibration:
    """Validate a CameraInfo pair and build the rectified rig; CalibrationError on any problem."""
    left = camera_info_matrices(left_info, left_topic)
    right = camera_info_matrices(right_info, right_topic)
    for topic, info in ((left_topic, left_info), (right_topic, right_info)):
        if int(info.width) <= 0 or int(info.height) <= 0:
            raise CalibrationError(INFO_SIZE_MISMATCH, f"{topic} has an empty image size "
                                   f"width={info.width}, height={info.height}")
    left, left_size, left_note = reduced_camera(left_info, left, left_topic)
    right, right_size, right_note = reduced_camera(right_info, right, right_topic)
    if left_size != right_size:
        raise CalibrationError(
            INFO_SIZE_MISMATCH, f"camera_info sizes differ: {left_topic} is {left_size[0]}x"
            f"{left_size[1]}, {right_topic} is {right_size[0]}x{right_size[1]}")
    try:
        rig = StereoRig.from_projection_matrices(left["P"], right["P"], *left_size,
                                                 require_depth=False)
        if rig.depth_problem == NON_POSITIVE_FOCAL_LENGTH:
            # No rectified camera to map to: the images are matched as they come.
            calibrations = [_taken_as_rectified(), _taken_as_rectified()]
            rectified = True
        else:
            calibrations = [
                CameraCalibration.create(m["K"], m["D"], m["R"], _finite_tx(m["P"]),
                                         distortion_model=_distortion_model(info, m["D"], topic),
                                         name=topic)
                for m, info, topic in ((left, left_info, left_topic),
                                       (right, right_info, right_topic))]
            rectified = all(is_already_rectified(c.K, c.D, c.R, c.P) for c in calibrations)
    except ValueError as error:
        raise CalibrationError(INVALID_CALIBRATION, str(error)) from None
    depth_note = _depth_problem_text(rig, left["P"], right["P"], left_topic, right_topic)
    notes = [(topic, text) for topic, text in ((left_topic, left_note), (right_topic, right_note))
             if text]
    notes += [(topic, "K is all zero: the image is taken as rectified and P is used")
              for topic, info in ((left_topic, left_info), (right_topic, right_info))
              if k_is_zero(info)]
    note = "; ".join(f"{topic}: {text}" for topic, text in notes)
    return StereoCalibration(left=calibrations[0], right=calibrations[1], rig=rig,
                             already_rectified=rectified,
                             frame_id=str(left_info.header.frame_id), note=note,
                             depth_note=depth_note,
                             rectifiable=rig.depth_problem != NON_POSITIVE_FOCAL_LENGTH)


def _finite_tx(p: np.ndarray) -> np.ndarray:
    """P for the rectification maps, which use only P[:, :3]: a non-finite translation (the rig
    reports it as non_finite_baseline) becomes 0 there."""
    return np.where(np.isfinite(p), p, 0.0)


def _taken_as_rectified() -> CameraCalibration:
    """The camera model of an image taken as rectified when P has no usable focal length
    (disparity only): identity intrinsics stand in; no maps are ever built from it."""
    return CameraCalibration(K=np.eye(3), D=np.zeros(0), R=np.eye(3),
                             P=np.hstack([np.eye(3), np.zeros((3, 1))]))


def _depth_problem_text(rig: StereoRig, p_left: np.ndarray, p_right: np.ndarray,
                        left_topic: str, right_topic: str) -> str:
    """Why this calibration gives no metric depth, naming the fields; "" when it does."""
    problem = rig.depth_problem
    if not problem:
        return ""
    if problem == NON_POSITIVE_FOCAL_LENGTH:
        return (f"{left_topic} P[0,0]={p_left[0, 0]}, P[1,1]={p_left[1, 1]}: a focal length "
                "must be > 0 for metric depth")
    fields = (f"{left_topic} P[0,3]={p_left[0, 3]} and {right_topic} P[0,3]={p_right[0, 3]} "
              f"give baseline {rig.baseline_m:.6g} m")
    hint = {ZERO_BASELINE: f"the right camera's P[0,3] must be -fx*baseline, e.g. "
                           f"{-rig.fx * 0.1:.4g} for fx={rig.fx:.6g} and a 0.1 m baseline",
            NEGATIVE_BASELINE: "the right camera's P[0,3] must be -fx*baseline: are left and "
                               "right swapped?",
            NON_FINITE_BASELINE: "P[0,3] must be finite"}[problem]
    return f"{fields}: {hint}"


def rectified_rig(left_info: CameraInfo, right_info: CameraInfo,
                  left_topic: str = "left/camera_info",
                  right_topic: str = "right/camera_info") -> tuple[StereoRig, str]:
    """The rig of an already rectified pair from its CameraInfos' P alone (binning and ROI
    applied as `reduced_camera` does), as image_geometry's StereoCameraModel takes it for
    stereo_image_proc's point cloud; K, D and R describe the raw camera and are not used.

    Returns (rig, note): a P without a usable focal length or baseline (all zero, as an
    uncalibrated driver and stereo_image_proc's fixtures publish it) gives a disparity-only rig
    (`rig.depth_problem`) and a note naming the fields; the note is "" otherwise.
    CalibrationError for a P that is not 12 finite values (its translation column excepted), an
    empty or differing image size, an ROI outside the image, or Ps that differ in fx, fy or cy.
    """
    reduced = []
    for info, topic in ((left_info, left_topic), (right_info, right_topic)):
        values = np.asarray(info.p, dtype=np.float64).ravel()
        if values.size != 12:
            raise CalibrationError(INVALID_CALIBRATION, f"{topic} P has {values.size} values, "
                                   "expected 12 (3x4)")
        finite = np.isfinite(values)
        finite[3::4] = True                # P[i,3], the translation: judged by the rig
        if not finite.all():
            index = int(np.flatnonzero(~finite)[0])
            raise CalibrationError(NAN_IN_CALIBRATION, f"{values[index]} in {topic} "
                                   f"P{_index_text(index, (3, 4))}: the calibration must be "
                                   "finite")
        if int(info.width) <= 0 or int(info.height) <= 0:
            raise CalibrationError(INFO_SIZE_MISMATCH, f"{topic} has an empty image size "
                                   f"width={info.width}, height={info.height}")
        p = values.reshape(3, 4)
        matrices, size, _ = reduced_camera(info, {"K": p[:, :3].copy(), "P": p}, topic)
        reduced.append((matrices["P"], size))
    (p_left, left_size), (p_right, right_size) = reduced
    if left_size != right_size:
        raise CalibrationError(
            INFO_SIZE_MISMATCH, f"camera_info sizes differ: {left_topic} is {left_size[0]}x"
            f"{left_size[1]}, {right_topic} is {right_size[0]}x{right_size[1]}")
    try:
        with np.errstate(invalid="ignore", divide="ignore"):
            rig = StereoRig.from_projection_matrices(p_left, p_right, *left_size,
                                                     require_depth=False)
    except ValueError as error:
        raise CalibrationError(INVALID_CALIBRATION, str(error)) from None
    note = _depth_problem_text(rig, p_left, p_right, left_topic, right_topic)
    if note and not np.any(np.nan_to_num(p_left)):
        note += "; P is all zero: the camera is not calibrated"
    return rig, note


def disparity_image_values(msg: DisparityImage) -> np.ndarray:
    """(H, W) float32 disparities of a stereo_msgs/DisparityImage as published (adjusted by
    -cx offset; invalid pixels keep their marker: see core.geometry.disparity_image_valid).

    The image must be 32FC1; an empty encoding is read as 32FC1 too (the message defines a
    floating point image; stereo_image_proc's test fixtures leave it empty). Raises
    UnsupportedEncodingError or ImageDataError (both ValueError) naming the field.
    """
    image = msg.image
    encoding = image.encoding or "32FC1"
    if encoding != "32FC1":
        raise UnsupportedEncodingError(f"disparity image encoding {encoding!r}: a "
                                       "DisparityImage carries 32FC1", "encoding")
    return decode_raw("32FC1", int(image.width), int(image.height), int(image.step),
                      bool(image.is_bigendian), image.data)


def rectified_camera_info(rig: StereoRig, header, distortion_model: str = "plumb_bob",
                          right: bool = False) -> CameraInfo:
    """CameraInfo of the rectified (and possibly resized) left or right camera of `rig`.

    D = 0, R = I, K = P[:3,:3], P from `rig.projection_matrices()` (right: P[0,3] = -fx*B).
    """
    p_left, p_right = rig.projection_matrices()
    p = p_right if right else p_left
    info = CameraInfo()
    info.header = header
    info.width, info.height = int(rig.width), int(rig.height)
    info.distortion_model = distortion_model
    info.d = array.array("d", [0.0] * 5)
    info.k = p[:, :3].ravel().astype(np.float64)
    info.r = np.eye(3).ravel()
    info.p = p.ravel().astype(np.float64)
    return info


def valid_window(valid: np.ndarray) -> RegionOfInterest:
    """Bounding box of the valid pixels (zero-size ROI when none is valid)."""
    roi = RegionOfInterest()
    rows = np.flatnonzero(valid.any(axis=1))
    cols = np.flatnonzero(valid.any(axis=0))
    if rows.size and cols.size:
        roi.y_offset, roi.x_offset = int(rows[0]), int(cols[0])
        roi.height = int(rows[-1] - rows[0] + 1)
        roi.width = int(cols[-1] - cols[0] + 1)
    return roi


def search_window(width: int, height: int, min_disparity: int, disparity_range: int,
                  border: int) -> tuple[int, int, int, int]:
    """(x_offset, y_offset, width, height) of the pixels a block matcher can possibly match,
    by stereo_image_proc's formula (DisparityNode): the left band that cannot see
    min_disparity + disparity_range - 1 px to the right, the right band a negative
    min_disparity loses, and `border` (half the matching window) on every side. Its right and
    bottom edges count as inside (stereo_image_proc's width = right - left drops one column).
    Sizes clamp at 0.
    """
    left = disparity_range + min_disparity + border - 1
    lost_right = border + min_disparity if min_disparity >= 0 else max(border, -min_disparity)
    right = width - 1 - lost_right
    top, bottom = border, height - 1 - border
    return left, top, max(0, right - left + 1), max(0, bottom - top + 1)


def make_disparity_image(disparity: np.ndarray, header, rig: StereoRig, min_disparity: float,
                         max_disparity: float, delta_d: float, *, border: int = 0
                         ) -> DisparityImage:
    """stereo_msgs/DisparityImage at rig's resolution, its fields as stereo_image_proc fills them.

    disparity: (H, W) float32 px as matched (x_left - x_right), NaN invalid. min_disparity,
    max_disparity: the searched range [min, max) px. border: pixels the matcher loses at each
    side (half its window; 0 for PSMNet). The published values are adjusted by -cx_offset so that
    Z = f * T / d holds as the message defines; min/max_disparity get the same adjustment, and
    max_disparity is the largest disparity the matcher can report, min + range - 1 (inclusive,
    as stereo_image_proc). Invalid pixels get `min_disparity - 1` (below min_disparity, the
    message's invalid marker). valid_window: stereo_image_proc's window of potentially valid
    pixels (`search_window`), narrowed to the box of the pixels actually valid.
    """
    offset = np.float32(rig.cx_offset)
    values = np.asarray(disparity, dtype=np.float32) - offset
    valid = np.isfinite(values)
    low = float(min_disparity) - float(offset)
    high = float(max_disparity) - float(offset)
    published = np.where(valid, values, np.float32(low - 1.0)).astype(np.float32)
    msg = DisparityImage()
    msg.header = header
    msg.image = numpy_to_image(published, "32FC1", header)
    msg.f = float(rig.fx)
    msg.t = float(rig.baseline_m)
    height, width = published.shape
    msg.valid_window = _intersect(
        search_window(width, height, int(np.floor(min_disparity)),
                      int(np.ceil(max_disparity - min_disparity)), int(border)),
        valid_window(valid))
    msg.min_disparity = low
    msg.max_disparity = high - 1.0
    msg.delta_d = float(delta_d)
    return msg


def _intersect(window: tuple[int, int, int, int], roi: RegionOfInterest) -> RegionOfInterest:
    x0, y0 = max(window[0], roi.x_offset), max(window[1], roi.y_offset)
    x1 = min(window[0] + window[2], roi.x_offset + roi.width)
    y1 = min(window[1] + window[3], roi.y_offset + roi.height)
    out = RegionOfInterest()
    if x1 > x0 and y1 > y0:
        out.x_offset, out.y_offset, out.width, out.height = int(x0), int(y0), int(x1 - x0), \
            int(y1 - y0)
    return out


def make_float_image(values: np.ndarray, header) -> Image:
    """32FC1 Image (depth in metres with NaN invalid, or confidence in [0, 1])."""
    return numpy_to_image(np.asarray(values, dtype=np.float32), "32FC1", header)


def make_depth_image(depth_m: np.ndarray, header, encoding: str = "32FC1"
                     ) -> tuple[Image, int]:
    """A REP 118 depth image and the number of pixels clamped.

    32FC1: metres, NaN invalid (nothing clamped). 16UC1: millimetres rounded, 0 invalid (NaN,
    <= 0 or under 0.5 mm), depths beyond 65.535 m clamped to 65535 and counted
    (`core.geometry.depth_to_millimetres`, the dump's PNG rule too).
    """
    depth = np.asarray(depth_m, dtype=np.float32)
    if encoding == "32FC1":
        return make_float_image(depth, header), 0
    if encoding != "16UC1":
        raise ValueError(f"depth encoding {encoding!r}: expected 32FC1 or 16UC1")
    values, clamped = depth_to_millimetres(depth)
    return numpy_to_image(values, "16UC1", header), clamped


def depth_image_metres(msg: Image) -> np.ndarray:
    """make_depth_image's inverse: (H, W) float32 metres of a REP 118 depth image (32FC1 m, or
    16UC1 mm with 0 invalid), invalid pixels NaN. ValueError naming the encoding otherwise."""
    if msg.encoding not in DEPTH_ENCODINGS:
        raise ValueError(f"depth image encoding {msg.encoding!r}: expected 32FC1 (m) or 16UC1 "
                         "(mm)")
    array = image_to_numpy(msg, use_cv_bridge=False)
    if msg.encoding == "16UC1":
        metres = array.astype(np.float32) / np.float32(1000.0)
        metres[array == 0] = np.nan
        return metres
    return np.asarray(array, dtype=np.float32)


def pack_rgb(colors: np.ndarray) -> np.ndarray:
    """(H, W, 3) uint8 RGB -> (H, W) float32 holding 0x00RRGGBB (PCL's packed 'rgb' field)."""
    colors = np.asarray(colors, dtype=np.uint8)
    if colors.ndim == 2:
        colors = np.repeat(colors[:, :, None], 3, axis=2)
    packed = (colors[..., 0].astype(np.uint32) << 16) | (colors[..., 1].astype(np.uint32) << 8) \
        | colors[..., 2].astype(np.uint32)
    return packed.view(np.float32)


def _cloud_dtype(with_rgb: bool, padded: bool = False, with_depth_std: bool = False
                 ) -> np.dtype:
    names = ["x", "y", "z"] + (["rgb"] if with_rgb else []) + \
        (["depth_std"] if with_depth_std else [])
    if padded:      # PCL's aligned layout: x y z pad | rgb [depth_std] pad ...
        offsets = [0, 4, 8, 16, 20][:len(names)]
        itemsize = 32 if len(names) > 3 else 16
    else:
        offsets, itemsize = [4 * i for i in range(len(names))], 4 * len(names)
    return np.dtype({"names": names, "formats": ["<f4"] * len(names), "offsets": offsets,
                     "itemsize": itemsize})


def make_pointcloud2(points: np.ndarray, header, colors: np.ndarray | None = None,
                     depth_std: np.ndarray | None = None, *, padded: bool = False) -> PointCloud2:
    """Organized PointCloud2 (height x width) with x, y, z float32 [+ packed rgb float32]
    [+ depth_std float32].

    points: (H, W, 3) float32 metres, NaN invalid (kept as NaN: is_dense = False).
    colors: (H, W, 3) uint8 RGB or (H, W) mono, or None for no rgb field.
    depth_std: (H, W) float32 sigma_Z metres (NaN invalid), or None for no depth_std field.
    padded: stereo_image_proc's default layout (avoid_point_cloud_padding false): x, y, z at 0,
        4, 8, rgb at 16 (depth_std after it), point_step 32 (16 with x, y, z only), the padding
        zero; False packs the fields: point_step 16 (12 without rgb; +4 with depth_std).
    """
    points = np.asarray(points, dtype=np.float32)
    if points.ndim != 3 or points.shape[2] != 3:
        raise ValueError(f"points must be (H, W, 3), got shape {points.shape}")
    height, width = points.shape[:2]
    dtype = _cloud_dtype(colors is not None, padded, depth_std is not None)
    cloud = np.zeros((height, width), dtype=dtype)
    cloud["x"], cloud["y"], cloud["z"] = points[..., 0], points[..., 1], points[..., 2]
    if depth_std is not None:
        if depth_std.shape != (height, width):
            raise ValueError(f"depth_std shape {depth_std.shape} does not match points "
                             f"{points.shape}")
        cloud["depth_std"] = depth_std
    if colors is not None:
        if colors.shape[:2] != (height, width):
            raise ValueError(f"colors shape {colors.shape} does not match points {points.shape}")
        cloud["rgb"] = pack_rgb(colors)
    msg = PointCloud2()
    msg.header = header
    msg.height, msg.width = height, width
    msg.fields = [PointField(name=name, offset=dtype.fields[name][1],
                             datatype=PointField.FLOAT32, count=1) for name in dtype.names]
    msg.is_bigendian = False
    msg.point_step = dtype.itemsize
    msg.row_step = dtype.itemsize * width
    msg.is_dense = False
    msg.data = array.array("B", cloud.tobytes())
    return msg


def pointcloud2_to_numpy(msg: PointCloud2) -> np.ndarray:
    """(H, W) structured array of a FLOAT32-field PointCloud2 (e.g. one from make_pointcloud2)."""
    fields = sorted(msg.fields, key=lambda f: f.offset)
    for f in fields:
        if f.datatype != PointField.FLOAT32 or f.count != 1:
            raise ValueError(f"field {f.name!r}: only FLOAT32 x1 fields are supported")
    dtype = np.dtype({"names": [f.name for f in fields],
                      "formats": [(">f4" if msg.is_bigendian else "<f4")] * len(fields),
                      "offsets": [f.offset for f in fields], "itemsize": msg.point_step})
    raw = np.frombuffer(msg.data, dtype=np.uint8)
    rows = raw[:msg.row_step * msg.height].reshape(msg.height, msg.row_step)
    return np.ascontiguousarray(rows[:, :msg.point_step * msg.width]).view(dtype).reshape(
        msg.height, msg.width)


def unpack_rgb(packed: np.ndarray) -> np.ndarray:
    """Inverse of pack_rgb: (H, W) float32 -> (H, W, 3) uint8 RGB."""
    bits = np.ascontiguousarray(packed, dtype=np.float32).view(np.uint32)
    return np.stack([(bits >> 16) & 255, (bits >> 8) & 255, bits & 255], axis=-1).astype(np.uint8)
