"""`stereo_depth_eval --live`: the running node's depth against LiDAR, scan by scan, while a bag
plays (e.g. a KITTI raw drive converted by stereo_depth_kitti2bag and played by
stereo_depth_replay).

    stereo_depth_eval --live [--tf-bag BAG | --kitti-calib DATE_DIR] [--tolerance 0.05]
                             [--out DIR] [--idle-timeout S] [--duration S] [--ros-args ...]

Each scan on `velodyne_points` is matched to the `depth/image_rect` frame with the nearest stamp
within `--tolerance` seconds, projected into it with the static LiDAR -> camera transform and
compared where the image has a depth (core.lidar: nearest pixel, points behind the camera and off
the image counted). Per scan: points compared, MAE and RMSE (m), mean |dz|/z and the share of
points with |dz| > 1 m and > 5 %, overall and per range band 0-10, 10-20, 20-40, 40-80 m (by the
LiDAR depth). A scan with no depth frame within the tolerance is reported and counted, never
dropped silently. Motion within a scan is ignored (KITTI's raw scans are not motion compensated;
see core.lidar).

The transform: /tf_static (subscribed when the tf2_msgs Python package is installed, as on a ROS 2
install), `--tf-bag BAG` (the /tf_static stored in the bag being played; with `--preset` /
`--frame-id` as given to the replay) or `--kitti-calib DIR` (calib_velo_to_cam.txt and
calib_cam_to_cam.txt of a KITTI date folder; then used whatever the frame ids).

Output: a running table on stdout, diagnostic_msgs/DiagnosticArray on `depth_error` per scan, and
with `--out DIR` at the end: depth_error_frames.csv (a row per scan and range band),
depth_error_summary.json, depth_error_vs_range.csv and, when matplotlib is installed,
depth_error_vs_range.png. Stops on Ctrl-C (results are still written), after `--duration` s, or
after `--idle-timeout` s without input once something arrived. Exit status: 0 ok, 1 error.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path

from stereo_depth_ros import topics
from stereo_depth_ros.bags.kitti2bag_fix import PRESETS
from stereo_depth_ros.core.depth_error import RANGE_BANDS_M
from stereo_depth_ros.core.lidar import DEFAULT_MIN_DEPTH_M
from stereo_depth_ros.core.lidar_eval import FrameReport, LiveEvaluation
from stereo_depth_ros.core.stamps import seconds_to_ns
from stereo_depth_ros.core.transforms import TransformTree
from stereo_depth_ros.evaluation.live_report import (make_summary, summary_table, table_header,
                                                     table_row, write_outputs)
from stereo_depth_ros.ros.interrupts import Interrupted
from stereo_depth_ros.tools._cli import (ToolError, parse_ros_args, positive_float, ros_session,
                                         run_tool)

LOG = logging.getLogger(__name__)
PROG = "stereo_depth_eval --live"
MOTION_NOTE = ("none: every point is taken as measured at its scan's stamp (KITTI raw scans "
               "are not motion compensated)")
CAMERAS = ("00", "01", "02", "03")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG, description="Compare the stereo node's depth/image_rect with LiDAR scans "
        "live (per scan and per range band), e.g. while stereo_depth_replay plays a KITTI "
        "drive converted by stereo_depth_kitti2bag.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    topics_group = parser.add_argument_group("topics (relative names take --ros-args -r "
                                             "__ns:=/NS)")
    topics_group.add_argument("--lidar-topic", default=topics.LIDAR_POINTS,
                              help="sensor_msgs/PointCloud2 with float x, y, z")
    topics_group.add_argument("--depth-topic", default=topics.DEPTH,
                              help="32FC1 (m) or 16UC1 (mm) depth image")
    topics_group.add_argument("--depth-info-topic", default=topics.DEPTH_INFO,
                              help="camera_info of the depth image (its P gives K)")
    topics_group.add_argument("--error-topic", default=topics.DEPTH_ERROR,
                              help="where each scan's result is published "
                              "(diagnostic_msgs/DiagnosticArray)")
    topics_group.add_argument("--lidar-best-effort", action="store_true",
                              help="subscribe to the LiDAR best effort (default reliable)")
    transform = parser.add_argument_group("LiDAR -> camera transform (default: /tf_static)")
    exclusive = transform.add_mutually_exclusive_group()
    exclusive.add_argument("--tf-bag", type=Path, default=None,
                           help="read /tf_static from this bag (the one being played)")
    exclusive.add_argument("--kitti-calib", type=Path, default=None,
                           help="KITTI date folder with calib_velo_to_cam.txt and "
                           "calib_cam_to_cam.txt")
    transform.add_argument("--kitti-camera", choices=CAMERAS, default="02",
                           help="--kitti-calib: the rectified camera of the depth image "
                           "(P_rect_XX)")
    transform.add_argument("--preset", choices=sorted(PRESETS), default=None,
                           help="--tf-bag: as given to stereo_depth_replay (renames the camera "
                           "frame like the replay does)")
    transform.add_argument("--frame-id", default=None,
                           help="--tf-bag with --preset: the replay's --frame-id")
    transform.add_argument("--no-tf-static", action="store_true",
                           help="do not subscribe to /tf_static")
    matching = parser.add_argument_group("matching and comparison")
    matching.add_argument("--tolerance", type=positive_float, default=0.05,
                          dest="tolerance_s", help="largest |scan - depth frame| stamp "
                          "difference in s")
    matching.add_argument("--min-depth", type=positive_float, default=DEFAULT_MIN_DEPTH_M,
                          dest="min_depth_m", help="points closer than this along the optical "
                          "axis count as behind the camera (m)")
    run = parser.add_argument_group("running and output")
    run.add_argument("--out", type=Path, default=None,
                     help="write depth_error_frames.csv, depth_error_summary.json, "
                     "depth_error_vs_range.csv/.png here at the end")
    run.add_argument("--duration", type=positive_float, default=None, dest="duration_s",
                     help="stop after this many seconds")
    run.add_argument("--idle-timeout", type=positive_float, default=None, dest="idle_timeout_s",
                     help="stop when nothing arrived for this many seconds (after the first "
                     "message)")
    run.add_argument("--quiet", action="store_true", help="no running table (summary only)")
    return parser


# ------------------------------------------------------------------------------ transforms

def transform_source(args: argparse.Namespace) -> tuple[TransformTree, object, str]:
    """(tree that /tf_static adds to, transform function for LiveEvaluation, description)."""
    tree = TransformTree()
    if args.kitti_calib is not None:
        from stereo_depth_ros.core.kitti_calib import CalibrationFileError, load_velodyne_to_camera
        folder = args.kitti_calib
        try:
            fixed = load_velodyne_to_camera(folder / "calib_velo_to_cam.txt",
                                            folder / "calib_cam_to_cam.txt",
                                            camera_key=f"P_rect_{args.kitti_camera}")
        except CalibrationFileError as exc:
            raise ToolError(f"--kitti-calib: {exc}") from None
        return tree, (lambda target, source: fixed), \
            f"KITTI calibration in {folder} (P_rect_{args.kitti_camera}; frame ids not used)"
    if args.tf_bag is not None:
        from stereo_depth_ros.bags import BagError
        from stereo_depth_ros.bags.static_tf import read_static_transforms
        try:
            tree.add_all(read_static_transforms(args.tf_bag, preset=args.preset,
                                                frame_id=args.frame_id))
        except (BagError, ValueError) as exc:
            raise ToolError(f"--tf-bag: {exc}") from None
        edges = ", ".join(f"{e.parent}->{e.child}" for e in tree.edges())
        return tree, tree.lookup, f"/tf_static of {args.tf_bag} ({edges})"
    return tree, tree.lookup, "/tf_static"


# ------------------------------------------------------------------------------ main

def main(argv: list[str] | None = None) -> int:
    """`stereo_depth_eval --live`: 0 done (Ctrl-C is the usual way to finish: the summary is
    still printed and written), 1 an error, 2 a bad command line."""
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    args = parse_ros_args(build_parser(), argv)
    return run_tool(PROG, lambda: live_eval(args, argv))


def live_eval(args: argparse.Namespace, argv: list[str] | None) -> None:
    """Compare until --duration, --idle-timeout or Ctrl-C/SIGTERM, then print the summary and
    write --out. Raises ToolError or OSError."""
    if (args.preset or args.frame_id) and args.tf_bag is None:
        raise ToolError("--preset and --frame-id apply to --tf-bag only")
    tree, transform, transform_text = transform_source(args)
    evaluation = LiveEvaluation(transform, tolerance_ns=seconds_to_ns(args.tolerance_s),
                                min_depth_m=args.min_depth_m)
    settings = {"lidar_topic": args.lidar_topic, "depth_topic": args.depth_topic,
                "tolerance_s": args.tolerance_s, "transform": transform_text,
                "motion_compensation": MOTION_NOTE, "min_depth_m": args.min_depth_m,
                "range_bands_m": [list(b) for b in RANGE_BANDS_M],
                "range_is": "LiDAR depth along the camera's optical axis (z)"}
    stdout = sys.stdout
    if not args.quiet:
        stdout.write(table_header() + "\n")
        stdout.flush()

    def print_reports(reports: list[FrameReport]) -> None:
        if args.quiet:
            return
        for report in reports:
            stdout.write(table_row(report, args.tolerance_s) + "\n")
        stdout.flush()

    from stereo_depth_ros.ros.live_eval import LiveEvalNode

    with ros_session(argv, interrupt=Interrupted):
        from rclpy.executors import SingleThreadedExecutor

        node = LiveEvalNode(evaluation, tree, lidar_topic=args.lidar_topic,
                            depth_topic=args.depth_topic, depth_info_topic=args.depth_info_topic,
                            error_topic=args.error_topic,
                            subscribe_tf=not args.no_tf_static and args.kitti_calib is None,
                            lidar_best_effort=args.lidar_best_effort, on_reports=print_reports)
        if args.kitti_calib is None and args.tf_bag is None and not node.tf_subscribed:
            LOG.warning("the tf2_msgs Python package is not installed, so /tf_static cannot be "
                        "read here: pass --tf-bag BAG or --kitti-calib DIR")
        LOG.info("comparing %s with %s (transform: %s; tolerance %g s)", node.lidar_topic,
                 args.depth_topic, transform_text, args.tolerance_s)
        executor = SingleThreadedExecutor()
        executor.add_node(node.node)
        try:
            _spin_until_done(executor, node, args)
            node.finish()
            summary = make_summary(evaluation, settings)
            stdout.write(summary_table(summary) + "\n")
            stdout.flush()
            if args.out is not None:
                written = write_outputs(args.out, evaluation, summary)
                LOG.info("wrote %s", ", ".join(str(p) for p in written))
        finally:
            executor.remove_node(node.node)
            executor.shutdown()
            node.destroy()


def _spin_until_done(executor, node, args: argparse.Namespace) -> None:
    """Spin until --duration, --idle-timeout (after the first input) or Ctrl-C/SIGTERM."""
    start = time.monotonic()
    try:
        while True:
            executor.spin_once(timeout_sec=0.1)
            now = time.monotonic()
            if args.duration_s is not None and now - start >= args.duration_s:
                return
            if args.idle_timeout_s is not None and node.last_message is not None \
                    and now - node.last_message >= args.idle_timeout_s:
                LOG.info("no input for %g s: finishing", args.idle_timeout_s)
                return
    except (KeyboardInterrupt, Interrupted):
        LOG.info("interrupted: finishing")


if __name__ == "__main__":
    sys.exit(main())
