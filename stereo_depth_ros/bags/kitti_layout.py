"""KITTI folders (raw synced drives, stereo 2015/2012 splits) and `<id>_left/<id>_right` pair
folders as a list of `FramePair`s: which files form a stereo pair, their stamps, calibration
files, ground truth and the per-frame Velodyne/OXTS files of raw drives. Used by
`stereo_depth_kitti2bag` and the demo; `bags.bag_writer` writes the frames into a bag. The
layouts are described in `tools/kitti2bag.py`'s docstring (the command's help).
"""

from __future__ import annotations

import datetime as dt
import logging
import re
from dataclasses import dataclass
from pathlib import Path

from stereo_depth_ros import topics
from stereo_depth_ros.core.stamps import NS_PER_S, seconds_to_ns

LOG = logging.getLogger(__name__)

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
