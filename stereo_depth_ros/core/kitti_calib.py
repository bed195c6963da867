"""KITTI-style calibration files -> camera_info parameters for an already rectified stereo pair.

Pure (numpy only). Understands the files these datasets ship:

* KITTI raw `calib_cam_to_cam.txt` (also KITTI 2015's `calib_cam_to_cam/NNNNNN.txt`): `S_rect_0X`,
  `P_rect_0X`, `T_0X`, ... for cameras 00..03;
* KITTI stereo 2012 / odometry `calib/NNNNNN.txt` / `calib.txt`: `P0`..`P3` (12 numbers each);
* DrivingStereo: `P_rect_101` / `P_rect_103`, `T_101` / `T_103`, `S_rect_10X`.

The rectified camera_info this module produces follows sensor_msgs/CameraInfo for rectified
images: D = 0, R = I, K = P[:3, :3], left P[0, 3] = 0 and right P[0, 3] = -fx * B. The baseline B
comes from the *difference* of the two P[0, 3] terms, B = (P_left[0, 3] - P_right[0, 3]) / fx.
KITTI's colour cameras have a non-zero left term (P_rect_02[0, 3] = +44.86 px on 2011_09_26), so B
from P_rect_03 alone would be 0.4706 m instead of 0.5327 m.

When the file also holds the raw camera translations (`T_0X`, `T_10X`), the distance between the
two camera centres is a second, independent measure of B. DrivingStereo's half-resolution
calibration is the known case where they disagree: its P_rect_103[0, 3] is in full-resolution
pixels, so the P difference gives 1.089 m while |T_103 - T_101| = 0.5446 m. With
`baseline_source="auto"` (default) the translation wins when the two disagree by more than
`BASELINE_TOLERANCE`, and the choice is recorded in `notes`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from stereo_depth_ros.core.camera import StereoRig

#: Relative disagreement between the P- and the T-derived baseline above which "auto" uses T.
BASELINE_TOLERANCE = 0.05

#: Allowed difference (px) between the calibration's S_rect size and the actual image size before a
#: note is recorded (KITTI sizes vary by a pixel or two between recording days).
SIZE_TOLERANCE_PX = 2

#: KITTI raw 2011_09_26 colour cameras (calib_cam_to_cam.txt): the textbook left Tx != 0 case.
KITTI_2011_09_26_P_RECT_02 = np.array([
    [721.5377, 0.0, 609.5593, 44.85728],
    [0.0, 721.5377, 172.854, 0.2163791],
    [0.0, 0.0, 1.0, 0.002745884]])
KITTI_2011_09_26_P_RECT_03 = np.array([
    [721.5377, 0.0, 609.5593, -339.5242],
    [0.0, 721.5377, 172.854, 2.199936],
    [0.0, 0.0, 1.0, 0.002729905]])

# Projection key pairs tried in order when the caller names none: (left, right, T left, T right).
_PAIR_CANDIDATES = (
    ("P_rect_02", "P_rect_03", "T_02", "T_03"),     # KITTI raw / 2015 colour cameras
    ("P2", "P3", None, None),                       # KITTI 2012 / odometry colour cameras
    ("P_rect_101", "P_rect_103", "T_101", "T_103"),  # DrivingStereo
    ("P_rect_00", "P_rect_01", "T_00", "T_01"),     # KITTI raw grey cameras
    ("P0", "P1", None, None),                       # KITTI 2012 / odometry grey cameras
)

_NUMBER = re.compile(r"^[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?$")


class CalibrationFileError(ValueError):
    """A calibration file is missing, malformed or not a rectified stereo pair."""


@dataclass(frozen=True)
class RectifiedStereoCalibration:
    """camera_info parameters of a rectified stereo pair (sensor_msgs/CameraInfo conventions).

    k_left, k_right: (3, 3) float64 intrinsics (= P[:3, :3]); p_left, p_right: (3, 4) float64 with
    p_left[0, 3] = 0 and p_right[0, 3] = -fx * baseline_m; width, height: image size in px.
    """

    width: int
    height: int
    k_left: np.ndarray
    k_right: np.ndarray
    p_left: np.ndarray
    p_right: np.ndarray
    baseline_m: float
    source: str = ""
    notes: tuple[str, ...] = field(default_factory=tuple)

    @property
    def fx(self) -> float:
        return float(self.p_left[0, 0])

    @property
    def fy(self) -> float:
        return float(self.p_left[1, 1])

    def camera_info_fields(self, side: str) -> dict:
        """CameraInfo values for `side` ("left"/"right") as plain floats and lists."""
        if side not in ("left", "right"):
            raise ValueError(f"side must be 'left' or 'right', got {side!r}")
        k = self.k_left if side == "left" else self.k_right
        p = self.p_left if side == "left" else self.p_right
        return {
            "width": int(self.width),
            "height": int(self.height),
            "distortion_model": "plumb_bob",
            "d": [0.0] * 5,
            "k": [float(v) for v in k.reshape(-1)],
            "r": [float(v) for v in np.eye(3).reshape(-1)],
            "p": [float(v) for v in p.reshape(-1)],
        }

    def stereo_rig(self) -> StereoRig:
        """The same pair as a `core.camera.StereoRig` (what geometry and the pipeline take)."""
        return StereoRig.from_projection_matrices(self.p_left, self.p_right, self.width,
                                                  self.height)

    def scaled(self, sx: float, sy: float | None = None) -> "RectifiedStereoCalibration":
        """The same rig for an image resized by (sx, sy); the baseline in metres is unchanged."""
        sy = sx if sy is None else sy
        scale = np.diag([sx, sy, 1.0])
        p_left = scale @ self.p_left
        p_right = scale @ self.p_right
        return RectifiedStereoCalibration(
            width=int(round(self.width * sx)), height=int(round(self.height * sy)),
            k_left=p_left[:, :3].copy(), k_right=p_right[:, :3].copy(), p_left=p_left,
            p_right=p_right, baseline_m=self.baseline_m, source=self.source, notes=self.notes)


def parse_calib_text(text: str, source: str = "<text>") -> dict[str, np.ndarray]:
    """Parse `key: v1 v2 ...` lines into float64 arrays; lines whose values are not numbers (for
    example `calib_time: 09-Jan-2012 13:57:47`) are skipped. Raises CalibrationFileError on no
    keys."""
    values: dict[str, np.ndarray] = {}
    for line in text.splitlines():
        if ":" not in line:
            continue
        key, _, rest = line.partition(":")
        tokens = rest.split()
        if not tokens or not all(_NUMBER.match(tok) for tok in tokens):
            continue
        values[key.strip()] = np.array([float(tok) for tok in tokens], dtype=np.float64)
    if not values:
        raise CalibrationFileError(
            f"{source}: no 'key: numbers' lines found; not a KITTI calibration file")
    return values


def parse_calib_file(path: str | Path) -> dict[str, np.ndarray]:
    """Read and parse a KITTI-style calibration text file (see `parse_calib_text`)."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError as exc:
        raise CalibrationFileError(f"{path}: cannot read calibration file ({exc.strerror})") \
            from None
    return parse_calib_text(text, source=str(path))


def _projection(values: dict[str, np.ndarray], key: str, source: str) -> np.ndarray:
    if key not in values:
        raise CalibrationFileError(
            f"{source}: key {key!r} not found (keys: {', '.join(sorted(values))})")
    array = values[key]
    if array.size != 12:
        raise CalibrationFileError(f"{source}: {key} must have 12 numbers (3x4), got {array.size}")
    return array.reshape(3, 4)


def find_projection_keys(values: dict[str, np.ndarray],
                         source: str = "<calibration>") -> tuple[str, str, str | None, str | None]:
    """Pick the (left P, right P, left T, right T) key names present in `values`."""
    for left, right, t_left, t_right in _PAIR_CANDIDATES:
        if left in values and right in values:
            return left, right, t_left, t_right
    tried = ", ".join(f"{left}/{right}" for left, right, _, _ in _PAIR_CANDIDATES)
    raise CalibrationFileError(f"{source}: no stereo projection pair found (tried {tried}; "
                               f"keys present: {', '.join(sorted(values))})")


def translation_keys_for(left_key: str, right_key: str) -> tuple[str | None, str | None]:
    """The raw translation keys that belong to two projection keys (P_rect_02 -> T_02), if any."""
    match_l = re.fullmatch(r"P_rect_(\d+)", left_key)
    match_r = re.fullmatch(r"P_rect_(\d+)", right_key)
    if match_l and match_r:
        return f"T_{match_l.group(1)}", f"T_{match_r.group(1)}"
    return None, None


def _choose_baseline(p_left: np.ndarray, p_right: np.ndarray, label: str,
                     translation_baseline_m: float | None, baseline_source: str,
                     baseline_m: float | None, notes: list[str]) -> float:
    """The baseline (m) `rectified_stereo_calibration` uses, with a note in `notes` when it is
    not the P difference; CalibrationFileError when it is not positive."""
    fx = p_left[0, 0]
    projection_baseline = (p_left[0, 3] - p_right[0, 3]) / fx
    if baseline_m is not None:
        chosen = float(baseline_m)
        notes.append(f"baseline {chosen:.4f} m given explicitly (P difference: "
                     f"{projection_baseline:.4f} m)")
    elif baseline_source == "translation":
        if translation_baseline_m is None:
            raise CalibrationFileError(f"{label}: baseline_source='translation' but the file "
                                       "has no camera translations (T_xx)")
        chosen = float(translation_baseline_m)
    else:
        chosen = float(projection_baseline)
        if (baseline_source == "auto" and translation_baseline_m is not None
                and translation_baseline_m > 0
                and abs(projection_baseline - translation_baseline_m)
                > BASELINE_TOLERANCE * translation_baseline_m):
            chosen = float(translation_baseline_m)
            notes.append(
                f"baseline from the P difference ({projection_baseline:.4f} m) disagrees with the "
                f"camera translations ({translation_baseline_m:.4f} m); using the translations")
    if not (np.isfinite(chosen) and chosen > 0):
        raise CalibrationFileError(
            f"{label}: baseline must be positive (got {chosen:.6g} m from P_left[0,3]="
            f"{p_left[0, 3]:.6g}, P_right[0,3]={p_right[0, 3]:.6g}); are left and right swapped?")
    return chosen


def rectified_stereo_calibration(p_left: np.ndarray, p_right: np.ndarray, width: int, height: int,
                                 *, translation_baseline_m: float | None = None,
                                 baseline_source: str = "auto", baseline_m: float | None = None,
                                 source: str = "", rect_size: tuple[int, int] | None = None,
                                 ) -> RectifiedStereoCalibration:
    """Build the canonical rectified pair from two (3, 4) projection matrices.

    width, height: the actual image size in px (camera_info must describe the images sent).
    translation_baseline_m: |T_right - T_left| from the raw calibration, when known.
    baseline_source: "auto" (P difference; T when they disagree by more than BASELINE_TOLERANCE),
        "projection" or "translation". baseline_m: explicit override in metres (wins over both).
    rect_size: (width, height) the calibration was made for (S_rect), to note a size mismatch.
    """
    p_left = np.asarray(p_left, dtype=np.float64).reshape(3, 4)
    p_right = np.asarray(p_right, dtype=np.float64).reshape(3, 4)
    label = source or "calibration"
    if baseline_source not in ("auto", "projection", "translation"):
        raise ValueError(f"baseline_source must be auto, projection or translation, "
                         f"got {baseline_source!r}")
    if int(width) <= 0 or int(height) <= 0:
        raise CalibrationFileError(f"{label}: image size must be positive, got {width}x{height}")
    fx, fy = p_left[0, 0], p_left[1, 1]
    if not (fx > 0 and fy > 0):
        raise CalibrationFileError(f"{label}: focal lengths must be positive (fx={fx}, fy={fy})")
    if not (np.isclose(p_right[0, 0], fx, rtol=1e-6) and np.isclose(p_right[1, 1], fy, rtol=1e-6)
            and np.isclose(p_right[1, 2], p_left[1, 2], rtol=1e-6, atol=1e-6)):
        raise CalibrationFileError(
            f"{label}: left and right projections do not describe a rectified pair "
            f"(fx {fx} vs {p_right[0, 0]}, fy {fy} vs {p_right[1, 1]}, cy {p_left[1, 2]} vs "
            f"{p_right[1, 2]})")
    notes: list[str] = []
    chosen = _choose_baseline(p_left, p_right, label, translation_baseline_m, baseline_source,
                              baseline_m, notes)
    if rect_size is not None:
        rect_w, rect_h = rect_size
        if abs(rect_w - width) > SIZE_TOLERANCE_PX or abs(rect_h - height) > SIZE_TOLERANCE_PX:
            notes.append(f"calibration is for {rect_w}x{rect_h} but the images are "
                         f"{width}x{height}; intrinsics used unscaled")
    k_left = p_left[:, :3].copy()
    k_right = p_right[:, :3].copy()
    k_left[2] = k_right[2] = (0.0, 0.0, 1.0)
    canon_left = np.hstack([k_left, np.zeros((3, 1))])
    canon_right = np.hstack([k_right, np.array([[-fx * chosen], [0.0], [0.0]])])
    return RectifiedStereoCalibration(
        width=int(width), height=int(height), k_left=k_left, k_right=k_right, p_left=canon_left,
        p_right=canon_right, baseline_m=chosen, source=source, notes=tuple(notes))


def stereo_calibration_from_values(values: dict[str, np.ndarray], width: int, height: int, *,
                                   keys: tuple[str, str] | None = None,
                                   baseline_source: str = "auto", baseline_m: float | None = None,
                                   source: str = "<calibration>") -> RectifiedStereoCalibration:
    """Rectified calibration from parsed calibration values (see `parse_calib_text`).

    keys: (left P key, right P key), e.g. ("P_rect_00", "P_rect_01"); default: first pair found in
    the order colour KITTI (P_rect_02/03, P2/P3), DrivingStereo (P_rect_101/103), grey KITTI.
    """
    if keys is None:
        left_key, right_key, t_left_key, t_right_key = find_projection_keys(values, source)
    else:
        left_key, right_key = keys
        t_left_key, t_right_key = translation_keys_for(left_key, right_key)
    p_left = _projection(values, left_key, source)
    p_right = _projection(values, right_key, source)
    translation_baseline = None
    if t_left_key in values and t_right_key in values:
        t_left, t_right = values[t_left_key], values[t_right_key]
        if t_left.size == 3 and t_right.size == 3:
            translation_baseline = float(np.linalg.norm(t_right - t_left))
    rect_size = None
    suffix = left_key[len("P_rect_"):] if left_key.startswith("P_rect_") else None
    size_key = f"S_rect_{suffix}"
    if suffix is not None and size_key in values and values[size_key].size == 2:
        rect_w, rect_h = values[size_key]
        rect_size = (int(round(rect_w)), int(round(rect_h)))
    return rectified_stereo_calibration(
        p_left, p_right, width, height, translation_baseline_m=translation_baseline,
        baseline_source=baseline_source, baseline_m=baseline_m,
        source=f"{source} [{left_key}/{right_key}]", rect_size=rect_size)


def load_stereo_calibration(path: str | Path, width: int, height: int, *,
                            keys: tuple[str, str] | None = None, baseline_source: str = "auto",
                            baseline_m: float | None = None) -> RectifiedStereoCalibration:
    """Read a KITTI / DrivingStereo calibration file and build the rectified pair for images of
    width x height px (the size of the images actually sent, not the file's S_rect)."""
    values = parse_calib_file(path)
    return stereo_calibration_from_values(values, width, height, keys=keys,
                                          baseline_source=baseline_source,
                                          baseline_m=baseline_m, source=str(path))


def format_calib_text(entries: dict[str, np.ndarray | list[float]]) -> str:
    """Write `key: v1 v2 ...` lines (KITTI text format, %e numbers) for the given entries."""
    lines = []
    for key, value in entries.items():
        flat = np.asarray(value, dtype=np.float64).reshape(-1)
        lines.append(f"{key}: " + " ".join(f"{v:.6e}" for v in flat))
    return "\n".join(lines) + "\n"


# ------------------------------------------------------------------ LiDAR / IMU extrinsics
#
# KITTI raw: `calib_velo_to_cam.txt` holds R (3x3) and T (3) taking Velodyne points into the
# *unrectified* camera 0 frame; `calib_cam_to_cam.txt` holds R_rect_00 (into the rectified camera 0
# frame, shared by all rectified cameras) and P_rect_0X = K [I | t_X] of each rectified camera,
# whose t_X = K^-1 P_rect_0X[:, 3] is that camera's offset from rectified camera 0 (about +0.06 m
# along x for camera 2). The devkit projects a Velodyne point into image X as
# P_rect_0X @ R_rect_00 @ [R | T] @ x_velo; `velodyne_to_camera` returns the rigid T_camX_velo for
# which K @ (T_camX_velo @ x_velo) is the same pixel and whose z is the depth in camera X.


def _key_values(values: dict[str, np.ndarray], key: str, size: int, source: str) -> np.ndarray:
    if key not in values:
        raise CalibrationFileError(
            f"{source}: key {key!r} not found (keys: {', '.join(sorted(values))})")
    array = values[key]
    if array.size != size:
        raise CalibrationFileError(f"{source}: {key} must have {size} numbers, got {array.size}")
    return array


def rigid_from_values(values: dict[str, np.ndarray], source: str, rotation_key: str = "R",
                      translation_key: str = "T") -> np.ndarray:
    """(4, 4) transform from a KITTI `R: 9 numbers` / `T: 3 numbers` pair (calib_velo_to_cam.txt,
    calib_imu_to_velo.txt); CalibrationFileError naming the file and key."""
    from stereo_depth_ros.core.transforms import check_rotation, rigid

    rotation = _key_values(values, rotation_key, 9, source).reshape(3, 3)
    translation = _key_values(values, translation_key, 3, source)
    try:
        check_rotation(rotation, f"{source}: {rotation_key}")
    except ValueError as exc:
        raise CalibrationFileError(str(exc)) from None
    return rigid(rotation, translation)


def rectified_camera_offset(p_rect: np.ndarray) -> np.ndarray:
    """t (3,) in metres with P = K [I | t], K = P[:, :3]: where rectified camera 0's origin is in
    this rectified camera's frame (t = K^-1 P[:, 3]; for KITTI's camera 2 about (0.06, 0, 0))."""
    p_rect = np.asarray(p_rect, dtype=np.float64).reshape(3, 4)
    return np.linalg.solve(p_rect[:, :3], p_rect[:, 3])


def velodyne_to_camera(velo_values: dict[str, np.ndarray], cam_values: dict[str, np.ndarray], *,
                       camera_key: str = "P_rect_02", velo_source: str = "calib_velo_to_cam",
                       cam_source: str = "calib_cam_to_cam") -> np.ndarray:
    """T_cam_velo (4, 4): Velodyne points into the rectified camera `camera_key` (REP 103 optical
    axes: x right, y down, z forward), i.e. t_X + R_rect_00 @ (R @ x_velo + T)."""
    from stereo_depth_ros.core.transforms import check_rotation, rigid

    velo_to_cam0 = rigid_from_values(velo_values, velo_source)
    r_rect = _key_values(cam_values, "R_rect_00", 9, cam_source).reshape(3, 3)
    try:
        check_rotation(r_rect, f"{cam_source}: R_rect_00")
    except ValueError as exc:
        raise CalibrationFileError(str(exc)) from None
    p_rect = _key_values(cam_values, camera_key, 12, cam_source).reshape(3, 4)
    if not (p_rect[0, 0] > 0 and p_rect[1, 1] > 0):
        raise CalibrationFileError(f"{cam_source}: {camera_key} has non-positive focal lengths")
    return rigid(np.eye(3), rectified_camera_offset(p_rect)) @ rigid(r_rect, np.zeros(3)) \
        @ velo_to_cam0


def load_velodyne_to_camera(velo_to_cam_path: str | Path, cam_to_cam_path: str | Path, *,
                            camera_key: str = "P_rect_02") -> np.ndarray:
    """T_cam_velo from `calib_velo_to_cam.txt` and `calib_cam_to_cam.txt` (see
    `velodyne_to_camera`); a missing file or key is an error naming it."""
    for path in (velo_to_cam_path, cam_to_cam_path):
        if not Path(path).is_file():
            raise CalibrationFileError(f"{path}: calibration file not found")
    return velodyne_to_camera(parse_calib_file(velo_to_cam_path),
                              parse_calib_file(cam_to_cam_path), camera_key=camera_key,
                              velo_source=str(velo_to_cam_path), cam_source=str(cam_to_cam_path))
