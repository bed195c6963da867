"""Play a ROS 2 bag (sqlite3 or MCAP folder) or a ROS 1 `.bag` into live ROS 2 topics.

    stereo_depth_replay BAG [--rate R] [--loop] [--start S] [--topics T ...]
                            [--remap FROM:=TO ...] [--clock] [--preset kitti2bag]
                            [--wait-timeout S] [--watch TOPIC --step]

A substitute for `ros2 bag play` that needs only rclpy and `rosbags` (no rosbag2, no ROS 1):

* ROS 2 bags: the stored CDR bytes are published as they are (rclpy raw publish).
* ROS 1 bags: each message is converted to ROS 2 CDR with the ROS 2 typestore (`Header.seq` goes).
  Topics whose type has no ROS 2 Python package installed are skipped with a warning.
* `--preset kitti2bag` (or `kitti2bag-gray`) plays the colour (grey) camera pair of a bag made by
  tomas789/kitti2bag into the stereo node's inputs `left/image_raw`, `right/image_raw`,
  `left/camera_info`, `right/camera_info` (relative, so `--namespace` applies) and fixes what
  kitti2bag gets wrong for rectified images: camera_info gets D = 0, R = I, K = P[:3, :3], left
  P[0, 3] = 0, right P[0, 3] = -fx * B with B from the difference of the two P[0, 3] terms, the
  size of the actual image; the two cameras' messages are grouped into one stereo frame that
  carries the left stamp and one frame id (the left image's, or `--frame-id`). The bag's LiDAR
  ground truth is played too when present: `/kitti/velo/pointcloud` as `velodyne_points` (own
  stamps) and `/tf_static` (the left camera's frame renamed with `--frame-id`).
* Latched topics are published transient local: /tf_static always, otherwise as recorded (a ROS 2
  bag's offered QoS, a ROS 1 connection's latching flag); `--start` does not skip them. A stereo
  frame (for `--watch`/`--step`) is the images and camera_infos of one stamp; scans and IMU
  messages keep their own stamps and are not frames. /tf_static needs the tf2_msgs Python package
  (part of ROS 2, not on PyPI); without it the topic is skipped with a warning.
* Publishers wait until the stereo input topics (`*image_raw`, `*camera_info`; `--wait-topics`)
  have subscribers, at most `--wait-timeout` s, then play. `--clock` publishes /clock (bag time)
  for nodes running with use_sim_time.
* `--watch TOPIC` records, per frame, when the first message with that frame's stamp arrives on
  TOPIC (e.g. `disparity`); `--step` waits for it (at most `--step-timeout` s) before playing the
  next frame, so a slow consumer (PSMNet on a CPU) sees every frame; a frame whose output has not
  come after a third of that is published again (twice at most: a node that had not yet discovered
  this replay lost it). With `--watch`, playing
  also waits for a publisher on TOPIC and for `--watch-subscribers` subscriptions on it.
  `--stats-json` writes what was published and when.

rclpy is imported inside the functions that need it, so this module imports without ROS.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

from stereo_depth_ros.bags import PRESETS, BagSource
from stereo_depth_ros.ros.bag_player import Player, has_message_package
from stereo_depth_ros.ros.interrupts import Interrupted
from stereo_depth_ros.tools._cli import (non_negative_float, parse_ros_args, positive_float,
                                         ros_session, run_tool)

LOG = logging.getLogger(__name__)
PROG = "stereo_depth_replay"


def parse_remap(spec: str) -> tuple[str, str]:
    """'FROM:=TO' -> (FROM, TO)."""
    source, sep, target = spec.partition(":=")
    if not sep or not source or not target:
        raise argparse.ArgumentTypeError(f"remap must look like FROM:=TO, got {spec!r}")
    return source, target


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Play a ROS 2 bag (sqlite3/MCAP folder) or a ROS 1 .bag into ROS 2 topics.",
        epilog="Examples: stereo_depth_replay drive5_bag --clock --loop;  stereo_depth_replay "
               "kitti_2011_09_26_drive_0002_synced.bag --preset kitti2bag --clock")
    parser.add_argument("bag", type=Path, help="ROS 2 bag folder or ROS 1 .bag file")
    parser.add_argument("--rate", type=non_negative_float, default=1.0,
                        help="playback speed factor (default 1; 0 = as fast as possible)")
    parser.add_argument("--loop", action="store_true", help="play again and again")
    parser.add_argument("--start", type=non_negative_float, default=0.0, dest="start_s",
                        help="skip this many seconds at the start of the bag")
    parser.add_argument("--topics", nargs="+", default=None,
                        help="bag topics to play (default: all, or the preset's)")
    parser.add_argument("--remap", action="append", type=parse_remap, default=[],
                        metavar="FROM:=TO", help="rename an output topic (repeatable)")
    parser.add_argument("--namespace", default="",
                        help="namespace of the replay node (applies to relative output names)")
    parser.add_argument("--clock", action="store_true",
                        help="publish /clock with the bag time (for use_sim_time)")
    parser.add_argument("--clock-hz", type=positive_float, default=40.0,
                        help="/clock rate (default 40)")
    parser.add_argument("--preset", choices=sorted(PRESETS), default=None,
                        help="kitti2bag: play /kitti/camera_color_{left,right}/{image_raw,"
                             "camera_info} as the node's inputs with fixed camera_info, and "
                             "/kitti/velo/pointcloud (as velodyne_points) and /tf_static when "
                             "the bag has them")
    parser.add_argument("--frame-id", default=None,
                        help="preset: frame id for both cameras (default: the left image's)")
    parser.add_argument("--pair-tolerance", type=non_negative_float, default=0.02,
                        dest="pair_tolerance_s",
                        help="preset: max left/right stamp difference in s (default 0.02)")
    parser.add_argument("--wait-topics", nargs="*", default=None,
                        help="output topics (as published, /clock included) that need a "
                             "subscriber before playing (default: the *image_raw and "
                             "*camera_info ones)")
    parser.add_argument("--wait-timeout", type=non_negative_float, default=30.0,
                        dest="wait_timeout_s",
                        help="max seconds to wait for subscribers (0: do not wait)")
    parser.add_argument("--qos-depth", type=int, default=10, help="publisher queue depth")
    parser.add_argument("--watch", default=None,
                        help="topic whose messages mark a frame as processed (e.g. disparity)")
    parser.add_argument("--watch-type", default="stereo_msgs/msg/DisparityImage",
                        help="message type of --watch (default stereo_msgs/msg/DisparityImage)")
    parser.add_argument("--step", action="store_true",
                        help="wait for each frame's --watch output before the next frame")
    parser.add_argument("--step-timeout", type=positive_float, default=60.0, dest="step_timeout_s",
                        help="seconds to wait for a frame's output (it is published again after "
                             "each third of this)")
    parser.add_argument("--watch-subscribers", type=int, default=1,
                        help="before playing, also wait until the ROS graph shows this many "
                             "subscriptions on --watch (this replay's own included), e.g. 2 when "
                             "stereo_depth_dump must see every frame")
    parser.add_argument("--linger", type=non_negative_float, default=None,
                        help="seconds to keep waiting for --watch outputs after the last frame "
                             "(default: --step-timeout when --watch is given)")
    parser.add_argument("--stats-json", type=Path, default=None,
                        help="write per-frame publish/output times and counts here")
    parser.add_argument("--list", action="store_true", help="list the bag's topics and exit")
    return parser


def main(argv: list[str] | None = None) -> int:
    """Console script: 0 played, 1 a bag or ROS error, 2 a bad command line, 130 interrupted."""
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    args = parse_ros_args(build_parser(), argv)
    return run_tool(PROG, lambda: replay(args, argv))


def replay(args: argparse.Namespace, argv: list[str] | None) -> None:
    """Open the bag, then (unless --list) play it; the published counts (and --stats-json) are
    written however playing ends. Raises BagError, KeyboardInterrupt or Interrupted."""
    source = BagSource(args.bag, topics=args.topics, remaps=dict(args.remap),
                       start_s=args.start_s,
                       preset=PRESETS[args.preset] if args.preset else None,
                       frame_id=args.frame_id, pair_tolerance_s=args.pair_tolerance_s,
                       can_publish=has_message_package)
    if args.list:
        for topic, count in sorted(source.message_counts.items()):
            LOG.info("%s: %d messages", topic, count)
        return
    with ros_session(argv, interrupt=Interrupted):
        player = Player(source, namespace=args.namespace, rate=args.rate, clock=args.clock,
                        clock_hz=args.clock_hz, qos_depth=args.qos_depth,
                        wait_topics=args.wait_topics, wait_timeout_s=args.wait_timeout_s,
                        watch=args.watch, watch_type=args.watch_type, step=args.step,
                        step_timeout_s=args.step_timeout_s,
                        watch_subscribers=args.watch_subscribers)
        try:
            _play(player, source, args)
        finally:
            stats = player.stats()
            LOG.info("published %s",
                     ", ".join(f"{t} x{n}" for t, n in stats["published"].items()))
            if args.stats_json is not None:
                args.stats_json.write_text(json.dumps(stats, indent=2))
            player.destroy()


def _play(player: Player, source: BagSource, args: argparse.Namespace) -> None:
    player.wait_for_subscribers()
    LOG.info("playing %s (%s) -> %s", args.bag, "ROS 1" if source.is_ros1 else "ROS 2",
             ", ".join(sorted(player.publishers)))
    while True:
        player.play_once()
        if not args.loop:
            break
    linger = args.linger if args.linger is not None else (
        args.step_timeout_s if args.watch else 0.0)
    player.linger(linger)


if __name__ == "__main__":
    sys.exit(main())
