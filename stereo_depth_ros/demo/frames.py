"""The demo's stereo pairs from the sample assets (`make assets`)."""

from __future__ import annotations

from pathlib import Path

from stereo_depth_ros.bags import kitti_layout
from stereo_depth_ros.core.kitti_calib import (KITTI_2011_09_26_P_RECT_02,
                                               KITTI_2011_09_26_P_RECT_03, format_calib_text)
from stereo_depth_ros.demo import DemoError

DRIVINGSTEREO = Path("samples/drivingstereo/2018-07-11-14-48-52")
KITTI2015 = Path("samples/kitti2015")


def demo_frames(assets: Path, work: Path, frames: int | None) -> list[kitti_layout.FramePair]:
    """The demo's stereo pairs with stamps 0.1 s apart: DrivingStereo first, the KITTI pair last.

    frames: None = all 6; 1 = the first DrivingStereo pair; n >= 2 = n-1 DrivingStereo pairs and
    the KITTI pair (so a reduced run still covers both cameras and an image-size change).
    """
    sequence = assets / DRIVINGSTEREO
    kitti = assets / KITTI2015
    for path in (sequence, kitti / "kitti_000046_left.png", kitti / "kitti_000046_right.png"):
        if not path.exists():
            raise DemoError(f"{path} not found: run `make assets` (or set STEREO_DEPTH_ASSETS)")
    start = kitti_layout.DEFAULT_START_STAMP_S
    period = kitti_layout.DEFAULT_PERIOD_S
    driving = kitti_layout.discover_frames(sequence, layout="pairs", skip_unpaired=True,
                                           start_stamp_s=start, period_s=period)
    calib = work / "kitti2015_typical_calib.txt"
    calib.write_text("# NOT the calibration of KITTI 2015 frame 000046 (not in the sample): "
                     "KITTI raw 2011_09_26 colour cameras, used as typical values\n"
                     + format_calib_text({"P2": KITTI_2011_09_26_P_RECT_02,
                                          "P3": KITTI_2011_09_26_P_RECT_03}))
    kitti_pair = kitti_layout.discover_frames(kitti, layout="pairs", calib=calib,
                                              start_stamp_s=start + len(driving) * period,
                                              period_s=period)
    if frames is None:
        return driving + kitti_pair
    if frames < 1:
        raise DemoError("--frames must be at least 1")
    if frames == 1:
        return driving[:1]
    chosen = driving[:frames - 1] + kitti_pair
    # keep stamps increasing and 0.1 s apart after the selection
    return [kitti_layout.FramePair(f.name, f.left_path, f.right_path,
                                   int(round((start + k * period) * 1e9)), f.calib_path,
                                   f.calib_keys, f.gt_path) for k, f in enumerate(chosen)]
