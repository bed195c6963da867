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
import json
import logging
import sys
from pathlib import Path

from stereo_depth_ros import topics
from stereo_depth_ros.bags.bag_writer import convert
from stereo_depth_ros.bags.kitti_layout import DEFAULT_FRAME_ID, DEFAULT_START_STAMP_S
from stereo_depth_ros.tools._cli import run_tool

LOG = logging.getLogger(__name__)
PROG = "stereo_depth_kitti2bag"


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
    _add_output_options(parser)
    parser.add_argument("--overwrite", action="store_true",
                        help="replace OUT if it is an existing bag folder")
    parser.add_argument("--summary-json", type=Path, default=None,
                        help="also write the summary as JSON here")
    return parser


def _add_output_options(parser: argparse.ArgumentParser) -> None:
    """--compress, and the raw drives' sensors besides the cameras (--lidar, --oxts)."""
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
