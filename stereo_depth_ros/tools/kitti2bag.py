"""Convert KITTI folders (and DrivingStereo-like pair folders) to a ROS 2 bag for the stereo node.

    stereo_depth_kitti2bag SOURCE OUT_BAG [--storage mcap|sqlite3] [--layout auto|raw|stereo|pairs]

Layouts (`--layout auto` picks by what SOURCE contains):

* raw     a KITTI raw synced drive, `<date>/<date>_drive_XXXX_sync/` with `image_02/data/*.png`,
          `image_03/data/*.png`, `image_02/timestamps.txt`; calibration
          `<date>/calib_cam_to_cam.txt`. `--cameras gray` uses image_00/image_01 and P_rect_00/01.
* stereo  a KITTI stereo 2015 or 2012 `training` / `testing` folder: `image_2`+`image_3` (2015) or
          `colored_0`+`colored_1` (2012, `image_0`+`image_1` with `--cameras gray`), frames
          `NNNNNN_10.png` (`--frame-suffix`), calibration per scene from
          `calib_cam_to_cam/NNNNNN.txt` (2015, data_scene_flow_calib extracted into the same
          folder) or `calib/NNNNNN.txt` (P2/P3), ground truth from `disp_occ_0/` (2015) or
          `disp_occ/` (2012) when present.
* pairs   files named `<id>_left.<ext>` / `<id>_right.<ext>` plus one KITTI-style calibration text
          (`--calib`, or the only `*.txt` in the folder), e.g. a DrivingStereo sequence folder.

Every pair is written with one stamp (the left camera's timestamp for raw drives; `--start-stamp`
+ k * `--period` otherwise) on `<ns>/left/image_raw`, `<ns>/right/image_raw`,
`<ns>/left/camera_info`, `<ns>/right/camera_info` and, when ground truth exists,
`<ns>/left/disparity_gt` (32FC1 px, NaN invalid). Both sides carry one frame id (`--frame-id`, the
left optical frame). camera_info describes the rectified images as they are: D = 0, R = I,
K = P[:3, :3], right P[0, 3] = -fx * B with B from the difference of the two P[0, 3] terms (see
stereo_depth_ros.core.kitti_calib), size from the image. Frames are paired by id; a frame missing
on one side is an error that names the files.

Raw drives also carry their ground truth for a depth check (`stereo_depth_eval --live`): when the
drive has `velodyne_points/` (or with `--lidar`; `--no-lidar` leaves it out), each frame's scan
`velodyne_points/data/<id>.bin` goes on `<ns>/velodyne_points` (PointCloud2 x, y, z, intensity,
frame `velodyne`, stamped from `velodyne_points/timestamps.txt`), and /tf_static (written once,
transient local) holds `velodyne` -> the camera frame: T = [I | t_2] R_rect_00 [R | T] from
`calib_velo_to_cam.txt` and `calib_cam_to_cam.txt`, with t_2 = K^-1 P_rect_02[:, 3] the rectified
colour camera's offset from rectified camera 0 (so a point projects exactly where the devkit's
P_rect_02 R_rect_00 [R | T] puts it). `--oxts` adds `oxts/data/<id>.txt` as sensor_msgs/Imu and
NavSatFix (frame `imu_link`, plus `imu_link` -> `velodyne` from `calib_imu_to_velo.txt`). A
missing calibration, timestamp or scan file is an error that names it.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import logging
import re
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from stereo_depth_ros import topics
from stereo_depth_ros.core.disparity_io import read_kitti_png
from stereo_depth_ros.core.kitti_calib import (RectifiedStereoCalibration, find_projection_keys,
                                               load_stereo_calibration, load_velodyne_to_camera,
                                               parse_calib_file, rigid_from_values)
from stereo_depth_ros.core.kitti_oxts import read_oxts_packet
from stereo_depth_ros.core.lidar import XYZI_FIELDS, XYZI_POINT_STEP, pack_xyzi, read_velodyne_bin
from stereo_depth_ros.core.stamps import NS_PER_S, ns_to_sec_nanosec, seconds_to_ns
from stereo_depth_ros.core.transforms import StaticTransform, invert_rigid
from stereo_depth_ros.tools._cli import run_tool

LOG = logging.getLogger(__name__)
PROG = "stereo_depth_kitti2bag"

DEFAULT_FRAME_ID = topics.CAMERA_FRAME
#: Synthetic stamps (layouts without timestamps) start here: 1e9 s = 2001-09-09T01:46:40Z.
DEFAULT_START_STAMP_S = 1.0e9
DEFAULT_PERIOD_S = 0.1
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".ppm", ".bmp", ".tif", ".tiff")

TOPIC_LEFT_IMAGE, TOPIC_RIGHT_IMAGE, TOPIC_LEFT_INFO, TOPIC_RIGHT_INFO = topics.INPUTS
TOPIC_DISPARITY_GT = "left/disparity_gt"
"""Ground-truth disparity of the stereo benchmark folders (not a node topic)."""

_CAMERAS_RAW = {"color": ("image_02", "image_03", ("P_rect_02", "P_rect_03")),
                "gray": ("image_00", "image_01", ("P_rect_00", "P_rect_01"))}
# stereo benchmark folders: (left dir, right dir, ground-truth dir, camera set)
_STEREO_DIRS = (("image_2", "image_3", "disp_occ_0", "color"),     # KITTI 2015
                ("colored_0", "colored_1", "disp_occ", "color"),   # KITTI 2012 colour
                ("image_0", "image_1", "disp_occ", "gray"))        # KITTI 2012 grey
_STEREO_KEYS = {"calib_cam_to_cam": {"color": ("P_rect_02", "P_rect_03"),
                                     "gray": ("P_rect_00", "P_rect_01")},
                "calib": {"color": ("P2", "P3"), "gray": ("P0", "P1")}}


class LayoutError(ValueError):
    """The source folder is not one of the supported layouts, or its files do not pair up."""


@dataclass(frozen=True)
class FramePair:
    """One stereo pair to write: files, stamp (ns since the epoch) and its calibration file.

    calib_keys: the (left, right) projection keys in calib_path, or None for the default search.
    """

    name: str
    left_path: Path
    right_path: Path
    stamp_ns: int
    calib_path: Path
    calib_keys: tuple[str, str] | None = None
    gt_path: Path | None = None
    lidar: "SidecarFile | None" = None
    oxts: "SidecarFile | None" = None


@dataclass(frozen=True)
class SidecarFile:
    """A per-frame file of another sensor (Velodyne scan, OXTS packet) with its own stamp (ns)
    and the calibration file that places it (calib_velo_to_cam.txt, calib_imu_to_velo.txt;
    None where there is none)."""

    path: Path
    stamp_ns: int
    calib_path: Path | None = None


# ----------------------------------------------------------------------------------- discovery


def _image_files(folder: Path, suffix_filter: str | None = None) -> dict[str, Path]:
    """Map frame id (file stem) -> path for the image files in `folder`."""
    files = {}
    for path in folder.iterdir():
        if path.is_file() and path.suffix.lower() in IMAGE_SUFFIXES:
            if suffix_filter is None or path.stem.endswith(f"_{suffix_filter}"):
                if path.stem in files:
                    raise LayoutError(f"{folder}: two images share the frame id {path.stem!r}: "
                                      f"{files[path.stem].name}, {path.name}")
                files[path.stem] = path
    return files


def _pair_by_id(left: dict[str, Path], right: dict[str, Path], left_dir: Path,
                right_dir: Path, skip_unpaired: bool = False) -> list[str]:
    """Frame ids present on both sides, sorted; an error naming the files without a partner
    (a warning naming them, and the frame left out, with `skip_unpaired`)."""
    only_left = sorted(set(left) - set(right))
    only_right = sorted(set(right) - set(left))

    def names(ids, files):
        shown = ", ".join(files[i].name for i in ids[:10])
        return shown + (f" (+{len(ids) - 10} more)" if len(ids) > 10 else "")

    if (only_left or only_right) and skip_unpaired:
        for ids, files in ((only_left, left), (only_right, right)):
            if ids:
                LOG.warning("skipping images without a partner: %s", names(ids, files))
        left = {k: v for k, v in left.items() if k in right}
        right = {k: v for k, v in right.items() if k in left}
    elif only_left or only_right:
        parts = [f"{len(left)} left images in {left_dir} vs {len(right)} right images in "
                 f"{right_dir}"]
        if only_left:
            parts.append(f"no right image for: {names(only_left, left)}")
        if only_right:
            parts.append(f"no left image for: {names(only_right, right)}")
        raise LayoutError("left and right frames do not pair up by id: " + "; ".join(parts)
                          + " (pass --skip-unpaired to leave them out)")
    if not left:
        raise LayoutError(f"no images found in {left_dir} and {right_dir}")
    return sorted(left)


def parse_kitti_timestamp(text: str) -> int:
    """'2011-09-26 13:02:25.964389445' -> ns since the epoch, read as UTC (no local-time guess)."""
    match = re.fullmatch(r"\s*(\d{4}-\d{2}-\d{2}) (\d{2}:\d{2}:\d{2})(?:\.(\d{1,9}))?\s*", text)
    if not match:
        raise ValueError(f"not a KITTI timestamp: {text.strip()!r}")
    base = dt.datetime.strptime(f"{match.group(1)} {match.group(2)}", "%Y-%m-%d %H:%M:%S")
    seconds = int(base.replace(tzinfo=dt.timezone.utc).timestamp())
    fraction = (match.group(3) or "0").ljust(9, "0")
    return seconds * NS_PER_S + int(fraction)


def _synthetic_stamps(count: int, start_stamp_s: float | None,
                      period_s: float | None) -> list[int]:
    start = seconds_to_ns(DEFAULT_START_STAMP_S if start_stamp_s is None else start_stamp_s)
    period = seconds_to_ns(DEFAULT_PERIOD_S if period_s is None else period_s)
    if period <= 0:
        raise ValueError(f"period must be positive, got {period_s}")
    return [start + k * period for k in range(count)]


def detect_layout(source: Path) -> str:
    """'raw', 'stereo' or 'pairs' from the folder's content; LayoutError with what was expected."""
    source = Path(source)
    if not source.is_dir():
        raise LayoutError(f"{source}: not a directory")
    if any((source / left / "data").is_dir() for left, _, _ in _CAMERAS_RAW.values()):
        return "raw"
    if any((source / left).is_dir() for left, _, _, _ in _STEREO_DIRS):
        return "stereo"
    images = [p for p in source.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES]
    if any(p.stem.endswith("_left") for p in images):
        return "pairs"
    drives = sorted(p.name for p in source.glob("*_drive_*_sync") if p.is_dir())
    if drives:
        raise LayoutError(f"{source} is a KITTI raw date folder; pass one drive folder, e.g. "
                          f"{source / drives[0]} (drives here: {', '.join(drives)})")
    splits = [name for name in ("training", "testing") if (source / name).is_dir()]
    if splits:
        raise LayoutError(f"{source} holds KITTI stereo splits; pass one of "
                          + ", ".join(str(source / s) for s in splits))
    raise LayoutError(
        f"{source}: unrecognised layout; expected a KITTI raw drive (image_02/data, "
        "image_03/data), "
        "a KITTI stereo 2015/2012 split (image_2+image_3 or colored_0+colored_1) or a folder of "
        "<id>_left.<ext>/<id>_right.<ext> pairs with a calibration .txt")


def _raw_frames(drive: Path, *, calib: Path | None, cameras: str, start_stamp_s: float | None,
                period_s: float | None, skip_unpaired: bool, lidar: bool | None = None,
                oxts: bool = False) -> list[FramePair]:
    left_name, right_name, keys = _CAMERAS_RAW[cameras]
    left_dir, right_dir = drive / left_name / "data", drive / right_name / "data"
    for folder in (left_dir, right_dir):
        if not folder.is_dir():
            raise LayoutError(f"{drive}: missing {folder.relative_to(drive)} "
                              f"(KITTI raw synced drive layout, cameras={cameras})")
    left, right = _image_files(left_dir), _image_files(right_dir)
    ids = _pair_by_id(left, right, left_dir, right_dir, skip_unpaired)
    if calib is None:
        candidates = [drive.parent / "calib_cam_to_cam.txt", drive / "calib_cam_to_cam.txt"]
        calib = next((c for c in candidates if c.is_file()), None)
        if calib is None:
            raise LayoutError(f"{drive}: calibration not found (looked for "
                              + " and ".join(str(c) for c in candidates) + "); pass --calib")
    synthetic = period_s is not None or start_stamp_s is not None
    if synthetic:
        stamps = _synthetic_stamps(len(ids), start_stamp_s, period_s)
    else:
        stamps = _read_stamps(drive / left_name / "timestamps.txt", ids,
                              "pass --period to use synthetic stamps")
    lidar_files = _sidecars(drive, ids, stamps if synthetic else None, lidar, "lidar")
    oxts_files = _sidecars(drive, ids, stamps if synthetic else None, oxts, "oxts")
    return [FramePair(frame, left[frame], right[frame], stamp, calib, keys,
                      lidar=lidar_files[index] if lidar_files else None,
                      oxts=oxts_files[index] if oxts_files else None)
            for index, (frame, stamp) in enumerate(zip(ids, stamps))]


def _read_stamps(stamp_file: Path, ids: list[str], hint: str) -> list[int]:
    """The timestamps.txt line of each frame id (the line number is the frame number)."""
    if not stamp_file.is_file():
        raise LayoutError(f"{stamp_file} not found; {hint}")
    lines = [ln for ln in stamp_file.read_text().splitlines() if ln.strip()]
    stamps = []
    for frame in ids:
        if not frame.isdigit() or int(frame) >= len(lines):
            raise LayoutError(f"{stamp_file}: no timestamp for frame {frame} "
                              f"({len(lines)} lines)")
        try:
            stamps.append(parse_kitti_timestamp(lines[int(frame)]))
        except ValueError as exc:
            raise LayoutError(f"{stamp_file} line {int(frame) + 1}: {exc}") from None
    return stamps


# sensor -> (folder in the drive, file suffix, calibration file in the date folder, required)
_SIDECARS = {"lidar": ("velodyne_points", ".bin", "calib_velo_to_cam.txt", True),
             "oxts": ("oxts", ".txt", "calib_imu_to_velo.txt", False)}


def _sidecars(drive: Path, ids: list[str], synthetic_stamps: list[int] | None,
              wanted: bool | None, sensor: str) -> list[SidecarFile] | None:
    """One SidecarFile per frame id for `sensor` ("lidar": velodyne_points/data/<id>.bin,
    "oxts": oxts/data/<id>.txt), or None when not written.

    wanted: True (required: a missing folder is an error), None (written when the folder
    exists) or False. Each file keeps its own timestamps.txt stamp, unless the frames have
    synthetic stamps (then it takes its frame's). Missing files are errors that name them.
    """
    folder_name, suffix, calib_name, calib_required = _SIDECARS[sensor]
    hint = ("pass --no-lidar to convert without the scans" if sensor == "lidar"
            else "leave out --oxts to convert without the OXTS packets")
    data = drive / folder_name / "data"
    if wanted is False:
        return None
    if not data.is_dir():
        if wanted:
            raise LayoutError(f"{data}: not found (KITTI raw {folder_name}); {hint}")
        LOG.warning("%s: no %s/data, so the bag gets no Velodyne scans (pass --no-lidar to "
                    "silence this)", drive, folder_name)
        return None
    candidates = [drive.parent / calib_name, drive / calib_name]
    calib = next((c for c in candidates if c.is_file()), None)
    if calib is None and calib_required:
        raise LayoutError(f"{drive}: {calib_name} not found (looked for "
                          + " and ".join(str(c) for c in candidates) + f"); {hint}")
    if calib is None:
        LOG.warning("%s not found beside %s: no %s transform in /tf_static", calib_name, drive,
                    sensor)
    paths = [data / f"{frame}{suffix}" for frame in ids]
    missing = [p for p in paths if not p.is_file()]
    if missing:
        shown = ", ".join(str(p) for p in missing[:5])
        more = f" (+{len(missing) - 5} more)" if len(missing) > 5 else ""
        raise LayoutError(f"{sensor} file missing for {len(missing)} of {len(ids)} frames: "
                          f"{shown}{more}; {hint}")
    if synthetic_stamps is not None:
        stamps = synthetic_stamps
    else:
        stamps = _read_stamps(drive / folder_name / "timestamps.txt", ids, hint)
    return [SidecarFile(path, stamp, calib) for path, stamp in zip(paths, stamps)]


def _stereo_frames(split: Path, *, calib: Path | None, cameras: str | None, frame_suffix: str,
                   start_stamp_s: float | None, period_s: float | None,
                   skip_unpaired: bool) -> list[FramePair]:
    chosen = None
    for left_name, right_name, gt_name, camera_set in _STEREO_DIRS:
        if cameras not in (None, camera_set):
            continue
        if (split / left_name).is_dir():
            chosen = (left_name, right_name, gt_name, camera_set)
            break
    if chosen is None:
        raise LayoutError(f"{split}: no {cameras or 'colour or grey'} image folders "
                          "(image_2/image_3, colored_0/colored_1, image_0/image_1)")
    left_name, right_name, gt_name, camera_set = chosen
    left_dir, right_dir = split / left_name, split / right_name
    if not right_dir.is_dir():
        raise LayoutError(f"{split}: {left_name}/ exists but {right_name}/ is missing")
    suffix = None if frame_suffix in ("all", "") else frame_suffix
    left, right = _image_files(left_dir, suffix), _image_files(right_dir, suffix)
    ids = _pair_by_id(left, right, left_dir, right_dir, skip_unpaired)
    stamps = _synthetic_stamps(len(ids), start_stamp_s, period_s)
    frames = []
    for frame, stamp in zip(ids, stamps):
        scene = frame.split("_")[0]
        if calib is not None:
            calib_path, keys = calib, None
        else:
            calib_path = keys = None
            for folder, key_sets in _STEREO_KEYS.items():
                candidate = split / folder / f"{scene}.txt"
                if candidate.is_file():
                    calib_path, keys = candidate, key_sets[camera_set]
                    break
            if calib_path is None:
                raise LayoutError(
                    f"{split}: no calibration for {left[frame].name}: expected "
                    f"calib_cam_to_cam/{scene}.txt (KITTI 2015 data_scene_flow_calib) or "
                    f"calib/{scene}.txt (KITTI 2012), or pass --calib")
        gt_path = split / gt_name / f"{frame}.png"
        frames.append(FramePair(frame, left[frame], right[frame], stamp, calib_path, keys,
                                gt_path if gt_path.is_file() else None))
    return frames


def _pair_frames(folder: Path, *, calib: Path | None, start_stamp_s: float | None,
                 period_s: float | None, skip_unpaired: bool) -> list[FramePair]:
    left, right = {}, {}
    for path in folder.iterdir():
        if not path.is_file() or path.suffix.lower() not in IMAGE_SUFFIXES:
            continue
        for tag, files in (("_left", left), ("_right", right)):
            if path.stem.endswith(tag):
                files[path.stem[: -len(tag)]] = path
    ids = _pair_by_id(left, right, folder, folder, skip_unpaired)
    if calib is None:
        texts = sorted(folder.glob("*.txt"))
        if len(texts) != 1:
            raise LayoutError(f"{folder}: expected exactly one calibration .txt, found "
                              f"{len(texts)} ({', '.join(p.name for p in texts) or 'none'}); "
                              "pass --calib")
        calib = texts[0]
    stamps = _synthetic_stamps(len(ids), start_stamp_s, period_s)
    return [FramePair(frame, left[frame], right[frame], stamp, calib)
            for frame, stamp in zip(ids, stamps)]


def discover_frames(source: str | Path, *, layout: str = "auto", calib: str | Path | None = None,
                    cameras: str | None = None, frame_suffix: str = "10",
                    start_stamp_s: float | None = None, period_s: float | None = None,
                    max_frames: int | None = None, skip_unpaired: bool = False,
                    lidar: bool | None = None, oxts: bool = False) -> list[FramePair]:
    """List the stereo pairs of a KITTI / pair folder, paired by frame id, with stamps assigned.

    cameras: "color" or "gray" (raw and stereo layouts; default colour). frame_suffix: stereo
    layout frames to take ("10", "11" or "all"). start_stamp_s / period_s: synthetic stamps (raw
    drives use timestamps.txt unless one of them is given). skip_unpaired: leave out (with a
    warning) frames found on one side only instead of failing. lidar (raw drives): True = the
    Velodyne scans are required, None = written when `velodyne_points/` exists, False = not
    written; oxts (raw drives): also write the OXTS packets. Raises LayoutError naming the
    offending files.
    """
    source = Path(source)
    if layout == "auto":
        layout = detect_layout(source)
    elif not source.is_dir():
        raise LayoutError(f"{source}: not a directory")
    calib = Path(calib) if calib is not None else None
    if calib is not None and not calib.is_file():
        raise LayoutError(f"{calib}: calibration file not found")
    if cameras not in (None, "color", "gray"):
        raise ValueError(f"cameras must be 'color' or 'gray', got {cameras!r}")
    if layout != "raw" and (lidar or oxts):
        raise LayoutError(f"{source}: --lidar and --oxts need a KITTI raw drive (layout raw), "
                          f"this is layout {layout}")
    if layout == "raw":
        frames = _raw_frames(source, calib=calib, cameras=cameras or "color",
                             start_stamp_s=start_stamp_s, period_s=period_s,
                             skip_unpaired=skip_unpaired, lidar=lidar, oxts=oxts)
    elif layout == "stereo":
        frames = _stereo_frames(source, calib=calib, cameras=cameras, frame_suffix=frame_suffix,
                                start_stamp_s=start_stamp_s, period_s=period_s,
                                skip_unpaired=skip_unpaired)
    elif layout == "pairs":
        frames = _pair_frames(source, calib=calib, start_stamp_s=start_stamp_s, period_s=period_s,
                              skip_unpaired=skip_unpaired)
    else:
        raise ValueError(f"layout must be auto, raw, stereo or pairs, got {layout!r}")
    if max_frames is not None:
        frames = frames[:max_frames]
    return frames


# ------------------------------------------------------------------------------------- writing


def read_image_for_ros(path: Path) -> tuple[np.ndarray, str]:
    """Read an image file as (array, ROS encoding): bgr8 (alpha dropped), mono8 or mono16."""
    image = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if image is None:
        raise LayoutError(f"{path}: cannot be read as an image")
    if image.ndim == 3 and image.shape[2] == 4:
        image = cv2.cvtColor(image, cv2.COLOR_BGRA2BGR)
    if image.ndim == 3 and image.shape[2] == 1:
        image = image[:, :, 0]
    if image.ndim == 3 and image.dtype == np.uint8:
        return np.ascontiguousarray(image), "bgr8"
    if image.ndim == 2 and image.dtype == np.uint8:
        return image, "mono8"
    if image.ndim == 2 and image.dtype == np.uint16:
        return image, "mono16"
    raise LayoutError(f"{path}: unsupported image type {image.dtype} with shape {image.shape}")


def _topic(namespace: str, name: str) -> str:
    parts = [p for p in namespace.strip("/").split("/") if p] + [name]
    return "/" + "/".join(parts)


class _MessageFactory:
    """rosbags message objects for one typestore (ROS 2 by default)."""

    def __init__(self, typestore):
        self.ts = typestore
        self.types = typestore.types

    def header(self, stamp_ns: int, frame_id: str):
        sec, nanosec = ns_to_sec_nanosec(stamp_ns)
        time = self.types["builtin_interfaces/msg/Time"](sec=sec, nanosec=nanosec)
        return self.types["std_msgs/msg/Header"](stamp=time, frame_id=frame_id)

    def compressed_image(self, array: np.ndarray, encoding: str, compression: str,
                         stamp_ns: int, frame_id: str):
        """image_transport "compressed": JPEG or PNG of an 8-bit mono/bgr image, with the format
        string "<encoding>; <jpeg|png> compressed <encoding>" as compressed_image_transport
        writes it."""
        if encoding not in ("mono8", "bgr8"):
            raise LayoutError(f"--compress {compression}: images are {encoding}; only mono8 and "
                              "bgr8 images are compressed")
        ok, data = cv2.imencode(".jpg" if compression == "jpeg" else ".png", array,
                                [cv2.IMWRITE_JPEG_QUALITY, 95] if compression == "jpeg" else [])
        if not ok:
            raise LayoutError(f"OpenCV could not encode a {compression} image")
        return self.types["sensor_msgs/msg/CompressedImage"](
            header=self.header(stamp_ns, frame_id),
            format=f"{encoding}; {compression} compressed {encoding}",
            data=np.frombuffer(data.tobytes(), dtype=np.uint8))

    def image(self, array: np.ndarray, encoding: str, stamp_ns: int, frame_id: str):
        """(H, W) or (H, W, C) array of the encoding's dtype (little-endian) -> Image."""
        array = np.ascontiguousarray(array)
        height, width = array.shape[:2]
        data = np.frombuffer(array.tobytes(), dtype=np.uint8)
        return self.types["sensor_msgs/msg/Image"](
            header=self.header(stamp_ns, frame_id), height=height, width=width, encoding=encoding,
            is_bigendian=0, step=data.size // height, data=data)

    def point_cloud(self, points: np.ndarray, stamp_ns: int, frame_id: str):
        """(N, 4) x, y, z, intensity -> unorganized PointCloud2 (XYZI_FIELDS, little-endian)."""
        point_field = self.types["sensor_msgs/msg/PointField"]
        return self.types["sensor_msgs/msg/PointCloud2"](
            header=self.header(stamp_ns, frame_id), height=1, width=len(points),
            fields=[point_field(name=name, offset=offset, datatype=datatype, count=count)
                    for name, offset, datatype, count in XYZI_FIELDS],
            is_bigendian=False, point_step=XYZI_POINT_STEP,
            row_step=XYZI_POINT_STEP * len(points),
            data=np.frombuffer(pack_xyzi(points), dtype=np.uint8),
            is_dense=bool(np.all(np.isfinite(points[:, :3]))))

    def tf_message(self, transforms: list[StaticTransform], stamp_ns: int):
        """tf2_msgs/TFMessage of static transforms (header.frame_id = parent)."""
        types = self.types
        items = []
        for edge in transforms:
            (x, y, z), (qx, qy, qz, qw) = edge.translation, edge.quaternion
            items.append(types["geometry_msgs/msg/TransformStamped"](
                header=self.header(stamp_ns, edge.parent), child_frame_id=edge.child,
                transform=types["geometry_msgs/msg/Transform"](
                    translation=types["geometry_msgs/msg/Vector3"](x=x, y=y, z=z),
                    rotation=types["geometry_msgs/msg/Quaternion"](x=qx, y=qy, z=qz, w=qw))))
        return types["tf2_msgs/msg/TFMessage"](transforms=items)

    def imu(self, packet, stamp_ns: int, frame_id: str):
        """sensor_msgs/Imu of an OXTS packet: orientation from roll/pitch/yaw, angular velocity
        and linear acceleration in the unit's frame; covariances unknown (all zero)."""
        types = self.types
        vector = types["geometry_msgs/msg/Vector3"]
        qx, qy, qz, qw = packet.orientation
        return types["sensor_msgs/msg/Imu"](
            header=self.header(stamp_ns, frame_id),
            orientation=types["geometry_msgs/msg/Quaternion"](x=qx, y=qy, z=qz, w=qw),
            orientation_covariance=np.zeros(9),
            angular_velocity=vector(*(float(v) for v in packet.angular_velocity)),
            angular_velocity_covariance=np.zeros(9),
            linear_acceleration=vector(*(float(v) for v in packet.linear_acceleration)),
            linear_acceleration_covariance=np.zeros(9))

    def nav_sat_fix(self, packet, stamp_ns: int, frame_id: str):
        """sensor_msgs/NavSatFix of an OXTS packet (GPS fix; covariance from pos_accuracy)."""
        status = self.types["sensor_msgs/msg/NavSatStatus"]
        variance = float(packet.position_accuracy_m) ** 2
        return self.types["sensor_msgs/msg/NavSatFix"](
            header=self.header(stamp_ns, frame_id),
            status=status(status=status.STATUS_FIX, service=status.SERVICE_GPS),
            latitude=float(packet.latitude_deg), longitude=float(packet.longitude_deg),
            altitude=float(packet.altitude_m),
            position_covariance=np.diag([variance] * 3).reshape(-1),
            position_covariance_type=1)          # COVARIANCE_TYPE_APPROXIMATED

    def camera_info(self, fields: dict, stamp_ns: int, frame_id: str):
        roi = self.types["sensor_msgs/msg/RegionOfInterest"](
            x_offset=0, y_offset=0, height=0, width=0, do_rectify=False)
        return self.types["sensor_msgs/msg/CameraInfo"](
            header=self.header(stamp_ns, frame_id), height=fields["height"],
            width=fields["width"], distortion_model=fields["distortion_model"],
            d=np.array(fields["d"], dtype=np.float64), k=np.array(fields["k"], dtype=np.float64),
            r=np.array(fields["r"], dtype=np.float64), p=np.array(fields["p"], dtype=np.float64),
            binning_x=0, binning_y=0, roi=roi)


def static_transforms(frames: list[FramePair], *, frame_id: str = DEFAULT_FRAME_ID,
                      lidar_frame_id: str = topics.LIDAR_FRAME,
                      imu_frame_id: str = topics.IMU_FRAME) -> list[StaticTransform]:
    """The /tf_static edges of a raw drive's sensors: `lidar_frame_id` -> `frame_id` (the
    rectified left camera, from calib_velo_to_cam.txt, R_rect_00 and the left camera's P_rect;
    see core.kitti_calib.velodyne_to_camera) when scans are written, and `imu_frame_id` ->
    `lidar_frame_id` (calib_imu_to_velo.txt) when OXTS packets are written with it."""
    edges = []
    first = frames[0]
    if first.lidar is not None:
        keys = first.calib_keys or find_projection_keys(parse_calib_file(first.calib_path),
                                                        str(first.calib_path))[:2]
        camera_from_lidar = load_velodyne_to_camera(first.lidar.calib_path, first.calib_path,
                                                    camera_key=keys[0])
        edges.append(StaticTransform(lidar_frame_id, frame_id, invert_rigid(camera_from_lidar)))
    if first.oxts is not None and first.oxts.calib_path is not None:
        path = first.oxts.calib_path
        lidar_from_imu = rigid_from_values(parse_calib_file(path), str(path))
        edges.append(StaticTransform(imu_frame_id, lidar_frame_id, invert_rigid(lidar_from_imu)))
    return edges


def _latched_qos():
    """rosbag2's offered QoS of a latched topic (reliable, transient local, keep last 1)."""
    from rosbags.interfaces import (Qos, QosDurability, QosHistory, QosLiveliness,
                                    QosReliability, QosTime)
    zero = QosTime(0, 0)
    return Qos(QosHistory.KEEP_LAST, 1, QosReliability.RELIABLE, QosDurability.TRANSIENT_LOCAL,
               zero, zero, QosLiveliness.AUTOMATIC, zero, False)


def write_bag(frames: list[FramePair], out: str | Path, *, storage: str = "mcap",
              namespace: str = "", frame_id: str = DEFAULT_FRAME_ID,
              baseline_source: str = "auto", baseline_m: float | None = None,
              overwrite: bool = False, compress: str | None = None,
              lidar_frame_id: str = topics.LIDAR_FRAME) -> dict:
    """Write `frames` to a ROS 2 bag folder `out` (MCAP or sqlite3) and return a summary dict.

    compress: None (sensor_msgs/Image on left|right/image_raw) or "jpeg"/"png"
    (sensor_msgs/CompressedImage on left|right/image_raw/compressed, image_transport's names).
    Frames with a Velodyne scan add `<ns>/velodyne_points` (PointCloud2 x, y, z, intensity in
    `lidar_frame_id`, stamped with the scan's own timestamp) and, once at the start, /tf_static
    (transient local) with `lidar_frame_id` -> `frame_id`; frames with an OXTS packet add
    `<ns>/oxts/imu` and `<ns>/oxts/gps/fix` (frame imu_link, the packet's timestamp).

    The summary holds the bag path, storage, frame count, topics with message counts, the stamp
    range (ns) and one entry per distinct calibration (source, size, fx, baseline_m, notes).
    The output folder is removed again if writing fails.
    """
    from rosbags.rosbag2 import StoragePlugin, Writer
    from rosbags.typesys import Stores, get_typestore

    if not frames:
        raise LayoutError("no frames to write")
    if compress not in (None, "jpeg", "png"):
        raise ValueError(f"compress must be jpeg or png, got {compress!r}")
    plugins = {"mcap": StoragePlugin.MCAP, "sqlite3": StoragePlugin.SQLITE3}
    if storage not in plugins:
        raise ValueError(f"storage must be mcap or sqlite3, got {storage!r}")
    out = Path(out)
    if out.exists():
        if not overwrite:
            raise FileExistsError(f"{out} exists; choose a new path or pass --overwrite")
        if out.is_dir() and ((out / "metadata.yaml").is_file() or not any(out.iterdir())):
            shutil.rmtree(out)
        else:
            raise FileExistsError(f"{out} exists and does not look like a bag; not removing it")
    stamps = [f.stamp_ns for f in frames]
    if len(set(stamps)) != len(stamps) or stamps != sorted(stamps):
        raise ValueError("frame stamps must be strictly increasing")

    typestore = get_typestore(Stores.ROS2_KILTED)
    make = _MessageFactory(typestore)
    keys = (TOPIC_LEFT_IMAGE, TOPIC_RIGHT_IMAGE, TOPIC_LEFT_INFO, TOPIC_RIGHT_INFO,
            TOPIC_DISPARITY_GT, topics.LIDAR_POINTS, topics.IMU, topics.GPS_FIX)
    names = {key: _topic(namespace, key) for key in keys}
    names[topics.TF_STATIC] = topics.TF_STATIC
    lidar_files = [f.lidar for f in frames if f.lidar is not None]
    oxts_files = [f.oxts for f in frames if f.oxts is not None]
    for files in (lidar_files, oxts_files):
        for earlier, later in zip(files, files[1:]):
            if later.stamp_ns < earlier.stamp_ns:
                stamp_file = later.path.parent.parent / "timestamps.txt"
                raise LayoutError(
                    f"{stamp_file}: the stamp of {later.path.name} ({later.stamp_ns} ns) is "
                    f"before that of {earlier.path.name} ({earlier.stamp_ns} ns); stamps must "
                    "not decrease")
    lidar_stamps = [f.stamp_ns for f in lidar_files]
    oxts_stamps = [f.stamp_ns for f in oxts_files]
    edges = static_transforms(frames, frame_id=frame_id, lidar_frame_id=lidar_frame_id)
    if compress:
        for key in (TOPIC_LEFT_IMAGE, TOPIC_RIGHT_IMAGE):
            names[key] += topics.COMPRESSED_SUFFIX
    counts = {name: 0 for name in names.values()}
    calibrations: dict[tuple, RectifiedStereoCalibration] = {}
    try:
        with Writer(out, version=9, storage_plugin=plugins[storage]) as writer:
            conns = {}

            def put(key: str, msg, msgtype: str, stamp_ns: int) -> None:
                if key not in conns:
                    qos = [_latched_qos()] if key == topics.TF_STATIC else []
                    conns[key] = writer.add_connection(names[key], msgtype, typestore=typestore,
                                                       offered_qos_profiles=qos)
                writer.write(conns[key], stamp_ns,
                             bytes(typestore.serialize_cdr(msg, msgtype)))
                counts[names[key]] += 1

            if edges:
                t0 = min(stamps + lidar_stamps + oxts_stamps)
                put(topics.TF_STATIC, make.tf_message(edges, t0), "tf2_msgs/msg/TFMessage", t0)
            for frame in frames:
                if frame.lidar is not None:
                    try:
                        scan = read_velodyne_bin(frame.lidar.path)
                    except ValueError as exc:
                        raise LayoutError(str(exc)) from None
                    put(topics.LIDAR_POINTS,
                        make.point_cloud(scan, frame.lidar.stamp_ns, lidar_frame_id),
                        "sensor_msgs/msg/PointCloud2", frame.lidar.stamp_ns)
                if frame.oxts is not None:
                    packet = read_oxts_packet(frame.oxts.path)
                    t_oxts = frame.oxts.stamp_ns
                    put(topics.IMU, make.imu(packet, t_oxts, topics.IMU_FRAME),
                        "sensor_msgs/msg/Imu", t_oxts)
                    put(topics.GPS_FIX, make.nav_sat_fix(packet, t_oxts, topics.IMU_FRAME),
                        "sensor_msgs/msg/NavSatFix", t_oxts)
                left, left_enc = read_image_for_ros(frame.left_path)
                right, right_enc = read_image_for_ros(frame.right_path)
                if left.shape != right.shape or left_enc != right_enc:
                    raise LayoutError(
                        f"frame {frame.name}: {frame.left_path.name} is {left.shape} {left_enc} "
                        f"but {frame.right_path.name} is {right.shape} {right_enc}")
                height, width = left.shape[:2]
                key = (frame.calib_path, frame.calib_keys, width, height)
                if key not in calibrations:
                    calibrations[key] = load_stereo_calibration(
                        frame.calib_path, width, height, keys=frame.calib_keys,
                        baseline_source=baseline_source, baseline_m=baseline_m)
                    for note in calibrations[key].notes:
                        LOG.warning("%s: %s", frame.calib_path, note)
                calib = calibrations[key]
                t = frame.stamp_ns
                put(TOPIC_LEFT_INFO, make.camera_info(calib.camera_info_fields("left"), t,
                                                      frame_id),
                    "sensor_msgs/msg/CameraInfo", t)
                put(TOPIC_RIGHT_INFO, make.camera_info(calib.camera_info_fields("right"), t,
                                                       frame_id),
                    "sensor_msgs/msg/CameraInfo", t)
                for key, image in ((TOPIC_LEFT_IMAGE, left), (TOPIC_RIGHT_IMAGE, right)):
                    if compress:
                        put(key, make.compressed_image(image, left_enc, compress, t, frame_id),
                            "sensor_msgs/msg/CompressedImage", t)
                    else:
                        put(key, make.image(image, left_enc, t, frame_id),
                            "sensor_msgs/msg/Image", t)
                if frame.gt_path is not None:
                    disparity = read_kitti_png(frame.gt_path)
                    if disparity.shape != (height, width):
                        raise LayoutError(f"{frame.gt_path}: ground truth is {disparity.shape}, "
                                          f"images are {(height, width)}")
                    put(TOPIC_DISPARITY_GT,
                        make.image(disparity.astype("<f4"), "32FC1", t, frame_id),
                        "sensor_msgs/msg/Image", t)
    except BaseException:
        if out.exists():
            shutil.rmtree(out, ignore_errors=True)
        raise
    return {
        "bag": str(out),
        "storage": storage,
        "frames": len(frames),
        "frame_id": frame_id,
        "topics": {name: n for name, n in counts.items() if n},
        "tf_static": [{"parent": e.parent, "child": e.child, "translation": list(e.translation),
                       "quaternion_xyzw": list(e.quaternion)} for e in edges],
        "first_stamp_ns": stamps[0],
        "stamps_ns": stamps,
        "last_stamp_ns": stamps[-1],
        "calibrations": [
            {"source": c.source, "width": c.width, "height": c.height, "fx": c.fx,
             "baseline_m": c.baseline_m, "notes": list(c.notes)} for c in calibrations.values()],
    }


def convert(source: str | Path, out: str | Path, **options) -> dict:
    """discover_frames(source, ...) then write_bag(...); options are split between the two."""
    discover_keys = {"layout", "calib", "cameras", "frame_suffix", "start_stamp_s", "period_s",
                     "max_frames", "skip_unpaired", "lidar", "oxts"}
    discover = {k: v for k, v in options.items() if k in discover_keys}
    write = {k: v for k, v in options.items() if k not in discover_keys}
    return write_bag(discover_frames(source, **discover), out, **write)


# ----------------------------------------------------------------------------------------- CLI


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Convert a KITTI raw drive, a KITTI stereo 2015/2012 split or a folder of "
                    "<id>_left/<id>_right pairs to a ROS 2 bag (MCAP or sqlite3) with rectified "
                    "camera_info for stereo_depth_node.",
        epilog="Example: stereo_depth_kitti2bag ~/kitti/2011_09_26/2011_09_26_drive_0005_sync "
               "drive5_bag")
    parser.add_argument("source", type=Path, help="KITTI drive / split / pair folder")
    parser.add_argument("out", type=Path, help="output bag folder (must not exist)")
    parser.add_argument("--storage", choices=("mcap", "sqlite3"), default="mcap",
                        help="bag storage plugin (default: mcap)")
    parser.add_argument("--layout", choices=("auto", "raw", "stereo", "pairs"), default="auto")
    parser.add_argument("--calib", type=Path, default=None,
                        help="calibration file for every frame (overrides the layout's own)")
    parser.add_argument("--cameras", choices=("color", "gray"), default=None,
                        help="KITTI camera pair: color (02/03, default) or gray (00/01)")
    parser.add_argument("--frame-suffix", default="10",
                        help="stereo layout: which frames, '10', '11' or 'all' (default: 10)")
    parser.add_argument("--period", type=float, default=None, dest="period_s",
                        help="synthetic stamp step in s (default 0.1; raw drives use "
                             "timestamps.txt unless this or --start-stamp is given)")
    parser.add_argument("--start-stamp", type=float, default=None, dest="start_stamp_s",
                        help=f"first synthetic stamp in s since the epoch "
                             f"(default {DEFAULT_START_STAMP_S:.0f})")
    parser.add_argument("--max-frames", type=int, default=None)
    parser.add_argument("--skip-unpaired", action="store_true",
                        help="leave out (with a warning) images that have no partner instead of "
                             "failing")
    parser.add_argument("--frame-id", default=DEFAULT_FRAME_ID,
                        help=f"frame id of both cameras (default: {DEFAULT_FRAME_ID})")
    parser.add_argument("--namespace", default="", help="topic prefix, e.g. /stereo (default: /)")
    parser.add_argument("--baseline-source", choices=("auto", "projection", "translation"),
                        default="auto",
                        help="baseline from the P difference ('projection'), the raw camera "
                             "translations ('translation') or P unless T disagrees ('auto')")
    parser.add_argument("--baseline-m", type=float, default=None,
                        help="override the baseline (metres)")
    parser.add_argument("--compress", choices=("jpeg", "png"), default=None,
                        help="write the images as image_transport \"compressed\" "
                             "(sensor_msgs/CompressedImage on left|right/image_raw/compressed; "
                             "play into a node with image_transport: compressed)")
    parser.add_argument("--lidar", action=argparse.BooleanOptionalAction, default=None,
                        help="raw drives: write the Velodyne scans (velodyne_points/data/*.bin, "
                             "each with its velodyne_points/timestamps.txt stamp) as "
                             "PointCloud2 on <ns>/velodyne_points and the Velodyne -> camera "
                             "transform (calib_velo_to_cam.txt, R_rect_00, P_rect) on "
                             "/tf_static; default: when the drive has velodyne_points/, "
                             "--lidar: required, --no-lidar: never")
    parser.add_argument("--lidar-frame-id", default=topics.LIDAR_FRAME,
                        help=f"frame id of the scans (default: {topics.LIDAR_FRAME})")
    parser.add_argument("--oxts", action="store_true",
                        help="raw drives: also write the OXTS packets (oxts/data/*.txt) as "
                             "sensor_msgs/Imu on <ns>/oxts/imu and NavSatFix on "
                             f"<ns>/oxts/gps/fix (frame {topics.IMU_FRAME}; imu -> Velodyne "
                             "from calib_imu_to_velo.txt on /tf_static)")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace OUT if it is an existing bag folder")
    parser.add_argument("--summary-json", type=Path, default=None,
                        help="also write the summary as JSON here")
    return parser


def main(argv: list[str] | None = None) -> int:
    """Console entry point: 0 ok, 1 failure (message on stderr), 2 bad command line."""
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    args = build_parser().parse_args(argv)

    def run() -> None:
        summary = convert(
            args.source, args.out, layout=args.layout, calib=args.calib, cameras=args.cameras,
            frame_suffix=args.frame_suffix, start_stamp_s=args.start_stamp_s,
            period_s=args.period_s, max_frames=args.max_frames,
            skip_unpaired=args.skip_unpaired, storage=args.storage,
            namespace=args.namespace, frame_id=args.frame_id,
            baseline_source=args.baseline_source, baseline_m=args.baseline_m,
            overwrite=args.overwrite, compress=args.compress, lidar=args.lidar,
            oxts=args.oxts, lidar_frame_id=args.lidar_frame_id)
        if args.summary_json is not None:
            args.summary_json.write_text(json.dumps(summary, indent=2))
        LOG.info("wrote %d frames to %s (%s): %s", summary["frames"], summary["bag"],
                 summary["storage"],
                 ", ".join(f"{t} x{n}" for t, n in summary["topics"].items()))
        for calib in summary["calibrations"]:
            LOG.info("calibration %s: %dx%d fx=%.3f baseline=%.4f m", calib["source"],
                     calib["width"], calib["height"], calib["fx"], calib["baseline_m"])

    return run_tool(PROG, run)


if __name__ == "__main__":
    sys.exit(main())
