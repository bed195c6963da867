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
from stereo_depth_ros.core.stamps import NS_PER_S, ns_to_sec_nanosec, seconds_to_ns
from stereo_depth_ros.core.kitti_calib import RectifiedStereoCalibration, load_stereo_calibration
from stereo_depth_ros.tools._cli import run_tool

LOG = logging.getLogger(__name__)
PROG = "stereo_depth_kitti2bag"

DEFAULT_FRAME_ID = "camera_left_optical_frame"
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
                period_s: float | None, skip_unpaired: bool) -> list[FramePair]:
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
    if period_s is not None or start_stamp_s is not None:
        stamps = _synthetic_stamps(len(ids), start_stamp_s, period_s)
    else:
        stamp_file = drive / left_name / "timestamps.txt"
        if not stamp_file.is_file():
            raise LayoutError(f"{stamp_file} not found; pass --period to use synthetic stamps")
        lines = [ln for ln in stamp_file.read_text().splitlines() if ln.strip()]
        stamps = []
        for frame in ids:
            if not frame.isdigit() or int(frame) >= len(lines):
                raise LayoutError(f"{stamp_file}: no timestamp for frame {left[frame].name} "
                                  f"({len(lines)} lines)")
            try:
                stamps.append(parse_kitti_timestamp(lines[int(frame)]))
            except ValueError as exc:
                raise LayoutError(f"{stamp_file} line {int(frame) + 1}: {exc}") from None
    return [FramePair(frame, left[frame], right[frame], stamp, calib, keys)
            for frame, stamp in zip(ids, stamps)]


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
                    max_frames: int | None = None,
                    skip_unpaired: bool = False) -> list[FramePair]:
    """List the stereo pairs of a KITTI / pair folder, paired by frame id, with stamps assigned.

    cameras: "color" or "gray" (raw and stereo layouts; default colour). frame_suffix: stereo
    layout frames to take ("10", "11" or "all"). start_stamp_s / period_s: synthetic stamps (raw
    drives use timestamps.txt unless one of them is given). skip_unpaired: leave out (with a
    warning) frames found on one side only instead of failing. Raises LayoutError naming the
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
    if layout == "raw":
        frames = _raw_frames(source, calib=calib, cameras=cameras or "color",
                             start_stamp_s=start_stamp_s, period_s=period_s,
                             skip_unpaired=skip_unpaired)
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

    def camera_info(self, fields: dict, stamp_ns: int, frame_id: str):
        roi = self.types["sensor_msgs/msg/RegionOfInterest"](
            x_offset=0, y_offset=0, height=0, width=0, do_rectify=False)
        return self.types["sensor_msgs/msg/CameraInfo"](
            header=self.header(stamp_ns, frame_id), height=fields["height"],
            width=fields["width"], distortion_model=fields["distortion_model"],
            d=np.array(fields["d"], dtype=np.float64), k=np.array(fields["k"], dtype=np.float64),
            r=np.array(fields["r"], dtype=np.float64), p=np.array(fields["p"], dtype=np.float64),
            binning_x=0, binning_y=0, roi=roi)


def write_bag(frames: list[FramePair], out: str | Path, *, storage: str = "mcap",
              namespace: str = "", frame_id: str = DEFAULT_FRAME_ID,
              baseline_source: str = "auto", baseline_m: float | None = None,
              overwrite: bool = False, compress: str | None = None) -> dict:
    """Write `frames` to a ROS 2 bag folder `out` (MCAP or sqlite3) and return a summary dict.

    compress: None (sensor_msgs/Image on left|right/image_raw) or "jpeg"/"png"
    (sensor_msgs/CompressedImage on left|right/image_raw/compressed, image_transport's names).

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
            TOPIC_DISPARITY_GT)
    names = {key: _topic(namespace, key) for key in keys}
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
                    conns[key] = writer.add_connection(names[key], msgtype, typestore=typestore)
                writer.write(conns[key], stamp_ns,
                             bytes(typestore.serialize_cdr(msg, msgtype)))
                counts[names[key]] += 1

            for frame in frames:
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
                     "max_frames", "skip_unpaired"}
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
            overwrite=args.overwrite, compress=args.compress)
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
