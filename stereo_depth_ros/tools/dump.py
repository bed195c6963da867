"""Write the stereo node's outputs to files, for people without RViz.

    stereo_depth_dump --out out/dump [--max-frames N] [--timeout S] [--namespace /stereo]

Subscribes (relative names, so `--namespace` or ROS remapping applies) to `disparity`
(stereo_msgs/DisparityImage, required), and when they are published also `depth/image_rect`,
`depth/camera_info`, `points2` and `left/image_rect`; /diagnostics is recorded for the summary.
The parts of one frame are matched by header stamp; a frame is written when every output topic
that has a publisher has arrived, or `--grace` s after its disparity. Per frame (NNNNNN = index):

* `NNNNNN_disparity.png`  colour disparity (BGR, TURBO map over the frame's 1st-99th percentile,
                          invalid black);
* `NNNNNN_depth_mm.png`   depth as 16-bit PNG in millimetres, 0 = invalid or beyond 65.535 m
                          (the OpenNI / depth_image_proc 16UC1 convention);
* `NNNNNN_depth.npy`      depth as float32 metres, NaN = invalid (REP 118);
* `NNNNNN_points.ply`     the valid points with colour: `x y z` float32 metres in the left optical
                          frame (x right, y down, z forward) and `red green blue` uchar;
                          binary little-endian by default, `--ply ascii` for text, `--ply none`
                          to skip;
* `NNNNNN_montage.png`    left image | colour disparity | colour depth (near bright), labelled.

`summary.json` lists every frame (stamp, arrival time, valid fraction, depth percentiles, files),
the topics' message counts and the node's last diagnostics key/values. Depth comes from
`depth/image_rect` when it is published, otherwise from the disparity (Z = f * T / d). Points come
from `points2` (its rgb field gives the colours), otherwise from the depth and the K of
`depth/camera_info`; without either the PLY is skipped.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path

from stereo_depth_ros.tools._cli import (EXIT_FAILURE, EXIT_INTERRUPTED, REPORTED_ERRORS,
                                         parse_ros_args, report_error, ros_session)

LOG = logging.getLogger(__name__)
PROG = "stereo_depth_dump"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Write stereo_depth_node outputs (disparity, depth, points, montage) "
                    "to files.",
        epilog="Example: stereo_depth_dump --out out/dump --max-frames 10 --namespace /stereo")
    parser.add_argument("--out", type=Path, default=Path("out/dump"),
                        help="output folder (default out/dump)")
    parser.add_argument("--max-frames", type=int, default=None,
                        help="stop after writing this many frames")
    parser.add_argument("--timeout", type=float, default=None, dest="timeout_s",
                        help="stop when no frame has been written for this many seconds")
    parser.add_argument("--namespace", default="",
                        help="namespace of the node's outputs, e.g. /stereo")
    parser.add_argument("--grace", type=float, default=1.0, dest="grace_s",
                        help="seconds to wait for a frame's other outputs after its disparity")
    parser.add_argument("--ply", choices=("binary", "ascii", "none"), default="binary",
                        help="point cloud file format (default binary little-endian PLY)")
    parser.add_argument("--diagnostics-wait", type=float, default=3.0, dest="diagnostics_wait_s",
                        help="after the last frame, wait up to this long for the node's "
                             "/diagnostics to count it (for the summary)")
    parser.add_argument("--summary-json", type=Path, default=None,
                        help="summary file (default OUT/summary.json)")
    return parser


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    from rclpy.executors import SingleThreadedExecutor

    from stereo_depth_ros.ros.dump_node import DISPARITY, Dumper

    args = parse_ros_args(build_parser(), argv)
    dumper = None
    code = 0
    with ros_session(argv):
        try:
            dumper = Dumper(args.out, namespace=args.namespace, max_frames=args.max_frames,
                            grace_s=args.grace_s, ply=args.ply)
            executor = SingleThreadedExecutor()
            executor.add_node(dumper.node)
            LOG.info("writing frames from %s to %s", dumper.resolved[DISPARITY], args.out)
            while not dumper.done:
                executor.spin_once(timeout_sec=0.1)
                if args.timeout_s is not None and \
                        time.monotonic() - dumper.last_frame_time > args.timeout_s:
                    LOG.warning("no frame for %.0f s; stopping after %d frame(s)",
                                args.timeout_s, len(dumper.frames))
                    code = 0 if dumper.frames and args.max_frames is None else 1
                    break
            if dumper.done and args.diagnostics_wait_s > 0:
                # let the node's next /diagnostics (with the last frame counted) reach the summary
                deadline = time.monotonic() + args.diagnostics_wait_s
                while time.monotonic() < deadline and (dumper.node_published() or 0) < \
                        len(dumper.frames):
                    executor.spin_once(timeout_sec=0.1)
            executor.remove_node(dumper.node)
            executor.shutdown()
        except KeyboardInterrupt:
            LOG.info("interrupted")
            code = EXIT_INTERRUPTED
        except REPORTED_ERRORS as error:
            report_error(PROG, error)
            code = EXIT_FAILURE
        finally:
            if dumper is not None:
                summary_path = args.summary_json or args.out / "summary.json"
                summary_path.parent.mkdir(parents=True, exist_ok=True)
                summary_path.write_text(json.dumps(dumper.summary(), indent=2))
                LOG.info("%d frame(s) written to %s", len(dumper.frames), args.out)
                dumper.destroy()
    return code


if __name__ == "__main__":
    sys.exit(main())
