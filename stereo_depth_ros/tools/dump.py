"""Write the stereo node's outputs to files, for people without RViz.

    stereo_depth_dump --out out/dump [--max-frames N] [--timeout S] [--namespace /stereo]

Subscribes (relative names, so `--namespace` or ROS remapping applies) to `disparity`
(stereo_msgs/DisparityImage, required), and when they are published also `depth/image_rect`,
`depth/uncertainty`, `depth/camera_info`, `points2` and `matcher/left/image_rect`;
/diagnostics is recorded for the summary.
The parts of one frame are matched by header stamp; a frame is written when every output topic
that has a publisher has arrived, or `--grace` s after its disparity. Per frame (NNNNNN = index):

* `NNNNNN_disparity.png`  colour disparity (BGR, TURBO map over the frame's 1st-99th percentile,
                          invalid black);
* `NNNNNN_depth_mm.png`   depth as 16-bit PNG in millimetres, 0 = invalid, beyond 65.535 m
                          clamped (the node's 16UC1 rule; the OpenNI / depth_image_proc
                          convention);
* `NNNNNN_depth.npy`      depth as float32 metres, NaN = invalid (REP 118);
* `NNNNNN_depth_uncertainty.npy`  sigma_Z as float32 metres, NaN = invalid, when the node
                          publishes `depth/uncertainty` (PSMNet; README "Which depth to trust");
* `NNNNNN_points.ply`     the valid points with colour: `x y z` float32 metres in the left optical
                          frame (x right, y down, z forward) and `red green blue` uchar;
                          binary little-endian by default, `--ply ascii` for text, `--ply none`
                          to skip;
* `NNNNNN_montage.png`    left image | colour disparity | colour depth (near bright), labelled.

It stops after `--max-frames`, after `--timeout` s without a frame, or when the stream ends: the
node's input `left/image_raw` (in the same namespace) or its `disparity` had a publisher and has
none any more (the bag replay, camera or node stopped); it then waits `--end-grace` s for outputs
still on their way. A stream that ends short of `--max-frames` is a normal end (exit 0, with a
warning), unless no frame was written at all (exit 1).

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
import os
import sys
import time
from pathlib import Path

from stereo_depth_ros.tools._cli import (EXIT_FAILURE, EXIT_OK, ToolError, non_negative_float,
                                         parse_ros_args, positive_float, positive_int, ros_session,
                                         run_tool)

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
    parser.add_argument("--max-frames", type=positive_int, default=None,
                        help="stop after writing this many frames")
    parser.add_argument("--timeout", type=positive_float, default=None, dest="timeout_s",
                        help="stop when no frame has been written for this many seconds")
    parser.add_argument("--namespace", default="",
                        help="namespace of the node's outputs, e.g. /stereo")
    parser.add_argument("--grace", type=non_negative_float, default=1.0, dest="grace_s",
                        help="seconds to wait for a frame's other outputs after its disparity")
    parser.add_argument("--ply", choices=("binary", "ascii", "none"), default="binary",
                        help="point cloud file format (default binary little-endian PLY)")
    parser.add_argument("--diagnostics-wait", type=non_negative_float, default=3.0,
                        dest="diagnostics_wait_s",
                        help="after the last frame, wait up to this long for the node's "
                             "/diagnostics to count it (for the summary)")
    parser.add_argument("--end-grace", type=non_negative_float, default=5.0,
                        dest="end_grace_s",
                        help="when the stream ends before --max-frames (the node's left/image_raw "
                             "or its disparity loses its publisher: the bag, camera or node "
                             "stopped), stop once no frame has arrived for this many seconds "
                             "(default 5; raise it for a slow matcher)")
    parser.add_argument("--summary-json", type=Path, default=None,
                        help="summary file (default OUT/summary.json)")
    return parser


def main(argv: list[str] | None = None) -> int:
    """Console script: 0 done, 1 an error (or --timeout before --max-frames), 2 a bad command
    line, 130 interrupted."""
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    args = parse_ros_args(build_parser(), argv)
    return run_tool(PROG, lambda: dump(args, argv))


def check_output_folder(path: Path) -> None:
    """Create `path` (and its parents) or raise ToolError saying why it cannot hold the files."""
    if path.exists() and not path.is_dir():
        raise ToolError(f"--out {path}: exists and is not a folder")
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise ToolError(f"--out {path}: cannot create the folder "
                        f"({error.strerror or error})") from None
    if not os.access(path, os.W_OK | os.X_OK):
        raise ToolError(f"--out {path}: the folder is not writable")


def dump(args: argparse.Namespace, argv: list[str] | None) -> int:
    """Write frames until --max-frames, --timeout or the end of the stream; the summary is
    written however it ends. Returns the exit status."""
    from stereo_depth_ros.ros.dump_node import Dumper

    check_output_folder(args.out)
    if args.summary_json is not None:
        check_output_folder(args.summary_json.parent)
    with ros_session(argv):
        dumper = Dumper(args.out, namespace=args.namespace, max_frames=args.max_frames,
                        grace_s=args.grace_s, ply=args.ply, end_grace_s=args.end_grace_s)
        try:
            return _spin(dumper, args)
        finally:
            summary_path = args.summary_json or args.out / "summary.json"
            summary_path.write_text(json.dumps(dumper.summary(), indent=2))
            LOG.info("%d frame(s) written to %s", len(dumper.frames), args.out)
            dumper.destroy()


def _spin(dumper, args: argparse.Namespace) -> int:
    from rclpy.executors import SingleThreadedExecutor

    from stereo_depth_ros.ros.dump_node import DISPARITY

    executor = SingleThreadedExecutor()
    executor.add_node(dumper.node)
    try:
        LOG.info("writing frames from %s to %s", dumper.resolved[DISPARITY], args.out)
        while not dumper.finished:
            executor.spin_once(timeout_sec=0.1)
            if args.timeout_s is not None and \
                    time.monotonic() - dumper.last_frame_time > args.timeout_s:
                LOG.warning("no frame for %.0f s; stopping after %d frame(s)",
                            args.timeout_s, len(dumper.frames))
                return EXIT_OK if dumper.frames and args.max_frames is None else EXIT_FAILURE
        if not dumper.done:
            if not dumper.frames:
                raise ToolError(f"the stream ended before any frame was written: "
                                f"{dumper.stream_end}")
            LOG.warning("stream ended after %d frame(s)%s", len(dumper.frames),
                        f" of --max-frames {args.max_frames}" if args.max_frames else "")
        if args.diagnostics_wait_s > 0:
            # let the node's next /diagnostics (with the last frame counted) reach the summary
            deadline = time.monotonic() + args.diagnostics_wait_s
            while time.monotonic() < deadline and (dumper.node_published() or 0) < \
                    len(dumper.frames):
                executor.spin_once(timeout_sec=0.1)
    finally:
        executor.remove_node(dumper.node)
        executor.shutdown()
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
