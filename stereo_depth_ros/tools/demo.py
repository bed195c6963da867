"""The embedded demo: real stereo pairs -> bag -> stereo_depth_node (PSMNet, CPU) -> files.

    make demo                       # = python -m stereo_depth_ros.tools.demo
    python -m stereo_depth_ros.tools.demo --frames 2 --input-scale 0.3 --backend sgbm   # quick

What it does, with nothing but the sample assets (`make assets`):

1. builds a small ROS 2 bag (MCAP) with stereo_depth_kitti2bag's code path from
   * the DrivingStereo sequence 2018-07-11-14-48-52 (5 pairs, 881x400) with its real KITTI-style
     calibration (P_rect_101/103; baseline 0.5446 m from the camera translation, since the file's
     P_rect_103 is in full-resolution pixels), and
   * the KITTI 2015 pair 000046 (1242x375). Its calibration is not in the sample; the demo uses
     KITTI's typical colour-camera P_rect_02/03 (2011_09_26: fx 721.5 px, baseline 0.5327 m),
     so its depth is illustrative, not metrically exact;
2. starts stereo_depth_node (PSMNet stackhourglass with the official KITTI 2015 weights on the
   CPU, `--input-scale` 0.5 by default) and stereo_depth_dump as subprocesses;
3. replays the bag one frame at a time (the replay waits for each frame's disparity, so a slow
   CPU drops nothing), the dumper writes out/demo/frames/NNNNNN_{montage,disparity,depth_mm}.png,
   _depth.npy and _points.ply;
4. prints a summary (frames in/out, drops, per-stage latency from the node's /diagnostics,
   end-to-end latency, depth range per frame) and writes it to out/demo/demo_summary.json.

ROS traffic stays on this machine in a free ROS domain (`--ros-domain-id`, default: picked like
the tests do). Every process the demo starts runs in its own process group and is stopped on
exit, on failure and on Ctrl-C / SIGTERM (SIGINT, then SIGTERM, then SIGKILL); on Linux the
children also get SIGTERM if the demo itself dies.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import sys
import time
from pathlib import Path

from stereo_depth_ros.bags import bag_writer
from stereo_depth_ros.config import SPECS
from stereo_depth_ros.demo import DemoError
from stereo_depth_ros.demo.frames import demo_frames
from stereo_depth_ros.demo.output import MARKER, prepare_out_dir
from stereo_depth_ros.demo.processes import Child
from stereo_depth_ros.demo.summary import build_summary, format_summary, source_label
from stereo_depth_ros.ros_domain import reserve_domain_id
from stereo_depth_ros.tools._cli import run_tool, spec_type

__all__ = ["MARKER", "DemoError", "build_parser", "main", "prepare_out_dir", "run"]

PROG = "stereo_depth_demo"
LOG = logging.getLogger(PROG)

REPO_ROOT = Path(__file__).resolve().parents[2]
WEIGHTS = Path("weights/pretrained_model_KITTI2015.tar")


def default_assets_dir() -> Path:
    env = os.environ.get("STEREO_DEPTH_ASSETS")
    return Path(env) if env else REPO_ROOT / "assets"


def _raise_interrupt(signum, frame):  # noqa: ARG001
    raise KeyboardInterrupt


def run(args: argparse.Namespace) -> dict:
    started = time.monotonic()
    assets = args.assets.resolve()
    weights = (args.weights or assets / WEIGHTS).resolve()
    if args.backend == "psmnet" and not weights.is_file():
        raise DemoError(f"{weights} not found: run `make assets` (or pass --weights)")
    out_dir = args.out.resolve()
    prepare_out_dir(out_dir)
    (out_dir / "logs").mkdir()

    LOG.info("building the bag from the sample pairs ...")
    frames = demo_frames(assets, out_dir, args.frames)
    bag_summary = bag_writer.write_bag(frames, out_dir / "bag", storage="mcap")
    for calib in bag_summary["calibrations"]:
        LOG.info("  %dx%d fx=%.1f baseline=%.4f m from %s", calib["width"], calib["height"],
                 calib["fx"], calib["baseline_m"], source_label(calib["source"]))
    LOG.info("  %d frames -> %s", bag_summary["frames"], bag_summary["bag"])
    n_frames = bag_summary["frames"]
    replay_stats = _run_processes(args, weights, out_dir, n_frames)
    summary_path = out_dir / "dump_summary.json"
    dump_summary = json.loads(summary_path.read_text()) if summary_path.is_file() else {}
    settings = {"backend": args.backend, "input_scale": args.input_scale,
                "max_relative_uncertainty": args.max_relative_uncertainty,
                "max_disparity_uncertainty": args.max_disparity_uncertainty,
                "device": args.device if args.backend == "psmnet" else "cpu (opencv)",
                "precision": args.precision, "max_disparity": args.max_disparity,
                "frames": n_frames}
    summary = build_summary(bag_summary, replay_stats, dump_summary, settings,
                            time.monotonic() - started)
    (out_dir / "demo_summary.json").write_text(json.dumps(summary, indent=2))
    LOG.info("%s", format_summary(summary, out_dir))
    return summary


def _child_environment(args: argparse.Namespace):
    """(the environment of the node, the player and the dumper, the domain id's lock or None):
    this package on PYTHONPATH, unbuffered output, the chosen ROS domain, the large-image
    transport profile."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO_ROOT), env.get("PYTHONPATH")) if p)
    env["PYTHONUNBUFFERED"] = "1"
    env["RCUTILS_COLORIZED_OUTPUT"] = "0"
    lock = None
    if args.ros_domain_id != "inherit":
        env["ROS_AUTOMATIC_DISCOVERY_RANGE"] = "LOCALHOST"
        env.pop("ROS_LOCALHOST_ONLY", None)
        if args.ros_domain_id == "auto":
            domain_id, lock = reserve_domain_id()
        else:
            domain_id = int(args.ros_domain_id)
        env["ROS_DOMAIN_ID"] = str(domain_id)
    from stereo_depth_ros.ros.transport import use_large_image_profile
    note = use_large_image_profile(env)          # the node, the player and the dumper share it
    if note:
        LOG.info("%s", note)
    return env, lock


def _commands(args: argparse.Namespace, weights: Path, out_dir: Path, n_frames: int
              ) -> tuple[list[str], list[str], list[str]]:
    """The command lines of stereo_depth_node, stereo_depth_dump and stereo_depth_replay."""
    node_argv = [sys.executable, "-m", "stereo_depth_ros.ros.stereo_depth_node", "--ros-args",
                 "--params-file", str(REPO_ROOT / "config" / "stereo_depth.yaml"),
                 "-p", f"backend:={args.backend}", "-p", f"input_scale:={args.input_scale}",
                 "-p", f"max_relative_uncertainty:={args.max_relative_uncertainty}",
                 "-p", f"max_disparity_uncertainty:={args.max_disparity_uncertainty}",
                 "-p", "diagnostics_period_seconds:=0.5"]
    if args.backend == "psmnet":
        node_argv += ["-p", f"weights_path:={weights}", "-p", f"device:={args.device}",
                      "-p", f"precision:={args.precision}",
                      "-p", f"max_disparity:={args.max_disparity}"]
    dump_argv = [sys.executable, "-m", "stereo_depth_ros.tools.dump", "--out",
                 str(out_dir / "frames"), "--max-frames", str(n_frames),
                 "--timeout", str(args.frame_timeout), "--summary-json",
                 str(out_dir / "dump_summary.json")]
    replay_argv = [sys.executable, "-m", "stereo_depth_ros.tools.replay", str(out_dir / "bag"),
                   "--wait-timeout", str(args.start_timeout), "--watch", "disparity",
                   "--watch-subscribers", "2", "--step", "--step-timeout",
                   str(args.frame_timeout), "--linger", "0", "--stats-json",
                   str(out_dir / "replay_stats.json")]
    return node_argv, dump_argv, replay_argv


def _run_processes(args: argparse.Namespace, weights: Path, out_dir: Path,
                   n_frames: int) -> dict:
    """Node, dumper and player until the player has sent every frame; the player's stats.
    Every process started is stopped again, whatever happens."""
    logs = out_dir / "logs"
    env, lock = _child_environment(args)
    node_argv, dump_argv, replay_argv = _commands(args, weights, out_dir, n_frames)
    children: list[Child] = []
    try:
        LOG.info("starting stereo_depth_node (%s, input_scale %s) ...", args.backend,
                 args.input_scale)
        node = Child("stereo_depth_node", node_argv, logs / "node.log", env, REPO_ROOT)
        children.append(node)
        node.wait_for_line(r"ready:", args.start_timeout)
        dump = Child("stereo_depth_dump", dump_argv, logs / "dump.log", env, REPO_ROOT)
        children.append(dump)
        dump.wait_for_line(r"publisher found on", args.start_timeout)
        LOG.info("replaying %d frames (each waits for its disparity) ...", n_frames)
        replay = Child("stereo_depth_replay", replay_argv, logs / "replay.log", env,
                       REPO_ROOT)
        children.append(replay)
        budget = args.start_timeout + n_frames * args.frame_timeout
        code = replay.wait(budget)
        if code != 0:
            raise DemoError(f"stereo_depth_replay {'timed out' if code is None else 'failed'} "
                            f"(log {replay.log_path}):\n{replay._tail()}")
        code = dump.wait(args.frame_timeout + 10)
        if code is None:
            LOG.warning("stereo_depth_dump still waiting for frames; stopping it")
        return json.loads((out_dir / "replay_stats.json").read_text())
    finally:
        for child in reversed(children):
            child.stop()
        if lock is not None:
            lock.close()


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Embedded demo: sample stereo pairs -> bag -> stereo_depth_node -> files "
                    "in out/demo.")
    parser.add_argument("--out", type=Path, default=REPO_ROOT / "out" / "demo",
                        help="output folder (default out/demo); an earlier run there is "
                             "moved aside to OUT.<YYYYmmdd-HHMMSS>, never deleted")
    parser.add_argument("--assets", type=Path, default=default_assets_dir(),
                        help="sample assets folder (default ./assets or $STEREO_DEPTH_ASSETS)")
    parser.add_argument("--backend", type=spec_type("backend"), default="psmnet",
                        help="psmnet or sgbm")
    parser.add_argument("--input-scale", type=spec_type("input_scale"), default=0.5,
                        help="node input_scale (default 0.5: ~2-4 s per PSMNet frame on 2 cores)")
    parser.add_argument("--max-relative-uncertainty", type=spec_type("max_relative_uncertainty"),
                        default=SPECS["max_relative_uncertainty"].default,
                        help="the node's default mask (sigma_Z/Z limit at full resolution, "
                             "so it keeps the same pixels at --input-scale 0.5; 0 = publish "
                             "every pixel)")
    parser.add_argument("--max-disparity-uncertainty",
                        type=spec_type("max_disparity_uncertainty"),
                        default=SPECS["max_disparity_uncertainty"].default,
                        help="the node's default mask (sigma_d limit, px in the matcher's px; "
                             "0 with --max-relative-uncertainty 0 = publish every pixel)")
    parser.add_argument("--frames", type=int, default=None,
                        help="number of frames (default all 6: 5 DrivingStereo + 1 KITTI 2015)")
    parser.add_argument("--weights", type=Path, default=None,
                        help="PSMNet checkpoint (default assets/weights/"
                             "pretrained_model_KITTI2015.tar)")
    parser.add_argument("--device", type=spec_type("device"), default="cpu",
                        help="PSMNet device (default cpu)")
    parser.add_argument("--precision", type=spec_type("precision"), default="fp32")
    parser.add_argument("--max-disparity", type=spec_type("max_disparity"), default=192)
    parser.add_argument("--start-timeout", type=float, default=180.0,
                        help="seconds allowed for each process to start (model loading)")
    parser.add_argument("--frame-timeout", type=float, default=300.0,
                        help="seconds allowed per frame")
    parser.add_argument("--ros-domain-id", default="auto",
                        help="'auto' (a free id, localhost-only discovery), a number, or "
                             "'inherit' (use the caller's ROS environment as it is)")
    parser.add_argument("-v", "--verbose", action="store_true")
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point: 0 ok, 1 failure (message on stderr), 2 bad command line, 130 interrupted."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(message)s")
    previous = signal.signal(signal.SIGTERM, _raise_interrupt)
    try:
        return run_tool(PROG, lambda: run(args) and None,
                        interrupted_hint="all demo processes stopped")
    finally:
        signal.signal(signal.SIGTERM, previous)


if __name__ == "__main__":
    sys.exit(main())
