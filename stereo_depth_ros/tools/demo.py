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
import random
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from stereo_depth_ros.core.kitti_calib import (KITTI_2011_09_26_P_RECT_02,
                                               KITTI_2011_09_26_P_RECT_03, format_calib_text)
from stereo_depth_ros.bags import bag_writer, kitti_layout
from stereo_depth_ros.config import SPECS
from stereo_depth_ros.tools._cli import ToolError, run_tool, spec_type

PROG = "stereo_depth_demo"
LOG = logging.getLogger(PROG)

REPO_ROOT = Path(__file__).resolve().parents[2]
DRIVINGSTEREO = Path("samples/drivingstereo/2018-07-11-14-48-52")
KITTI2015 = Path("samples/kitti2015")
WEIGHTS = Path("weights/pretrained_model_KITTI2015.tar")
MARKER = ".stereo_depth_demo"
STAGES = ("convert", "rectify", "infer", "postprocess", "publish", "total")


class DemoError(ToolError):
    """Something the user can fix (assets missing, output folder in use, a process failed)."""


def default_assets_dir() -> Path:
    env = os.environ.get("STEREO_DEPTH_ASSETS")
    return Path(env) if env else REPO_ROOT / "assets"


def _reserve_domain_id() -> tuple[int, socket.socket]:
    """A ROS domain id in 1..100 no other demo/test run on this host holds (TCP port lock)."""
    candidates = list(range(1, 101))
    random.Random(os.getpid()).shuffle(candidates)
    for domain_id in candidates:
        lock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            lock.bind(("127.0.0.1", 32768 + domain_id))
        except OSError:
            lock.close()
            continue
        return domain_id, lock
    raise DemoError("no free ROS domain id in 1..100 on this host")


# --------------------------------------------------------------------------------- the bag


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


# ---------------------------------------------------------------------------- processes


def _die_with_parent() -> None:
    """preexec_fn: ask Linux to SIGTERM the child if the demo dies (best effort)."""
    try:
        import ctypes
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except Exception:  # noqa: BLE001  (not Linux / no libc: the finally clause still stops us)
        pass


class Child:
    """A subprocess in its own process group, output to a log file."""

    def __init__(self, name: str, argv: list[str], log_path: Path, env: dict) -> None:
        self.name = name
        self.argv = argv
        self.log_path = log_path
        self._log = log_path.open("w")
        LOG.debug("starting %s: %s", name, " ".join(argv))
        self.process = subprocess.Popen(argv, stdout=self._log, stderr=subprocess.STDOUT,
                                        env=env, cwd=REPO_ROOT, start_new_session=True,
                                        preexec_fn=_die_with_parent)
        with (log_path.parent / "pids.txt").open("a") as pids:
            pids.write(f"{self.process.pid} {name}\n")

    def running(self) -> bool:
        return self.process.poll() is None

    def output(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def wait_for_line(self, pattern: str, timeout_s: float) -> None:
        """Poll the log for a line matching pattern; DemoError if the process exits first."""
        regex = re.compile(pattern)
        deadline = time.monotonic() + timeout_s
        while True:
            if regex.search(self.output()):
                return
            if not self.running():
                raise DemoError(f"{self.name} exited with code {self.process.returncode} "
                                f"(log {self.log_path}):\n{self._tail()}")
            if time.monotonic() > deadline:
                raise DemoError(f"{self.name} not ready after {timeout_s:.0f} s "
                                f"(log {self.log_path}):\n{self._tail()}")
            time.sleep(0.2)

    def wait(self, timeout_s: float) -> int | None:
        try:
            return self.process.wait(timeout_s)
        except subprocess.TimeoutExpired:
            return None

    def _tail(self, lines: int = 15) -> str:
        return "\n".join(self.output().splitlines()[-lines:])

    def stop(self) -> int | None:
        """SIGINT, then SIGTERM, then SIGKILL to the process group; returns the exit code."""
        for sig, wait_s in ((signal.SIGINT, 10.0), (signal.SIGTERM, 5.0), (signal.SIGKILL, 5.0)):
            if self.process.poll() is not None:
                break
            try:
                os.killpg(self.process.pid, sig)
            except (ProcessLookupError, PermissionError):
                break
            try:
                self.process.wait(wait_s)
            except subprocess.TimeoutExpired:
                continue
        self._log.close()
        return self.process.returncode


def _raise_interrupt(signum, frame):  # noqa: ARG001
    raise KeyboardInterrupt


# -------------------------------------------------------------------------------- summary


def _source_label(source: str) -> str:
    """'/a/b/calib.txt [P2/P3]' -> 'calib.txt [P2/P3]'."""
    path, sep, keys = source.partition(" [")
    return Path(path).name + (f" [{keys}" if sep else "")


def _float(values: dict, key: str) -> float | None:
    try:
        return float(values[key])
    except (KeyError, ValueError):
        return None


def build_summary(bag_summary: dict, replay_stats: dict, dump_summary: dict,
                  settings: dict, wall_s: float) -> dict:
    """Numbers for the console and demo_summary.json."""
    diag = {}
    for name, values in dump_summary.get("diagnostics", {}).items():
        if "stereo depth" in name:
            diag = values
    frames_in = len(replay_stats.get("frames", []))
    written = dump_summary.get("frames", [])
    latency = {stage: {stat: _float(diag, f"latency_ms.{stage}.{stat}")
                       for stat in ("mean", "p50", "max")} for stage in STAGES}
    end_to_end = [f["latency_s"] for f in replay_stats.get("frames", [])
                  if f.get("latency_s") is not None]
    drops = {key[len("dropped."):]: int(value) for key, value in diag.items()
             if key.startswith("dropped.")}
    per_frame = []
    for entry in written:
        per_frame.append({key: entry.get(key) for key in (
            "index", "stamp_ns", "valid_fraction", "depth_p5_m", "depth_median_m", "depth_p95_m",
            "disparity_min_px", "disparity_max_px")} | {"montage": entry["files"]["montage_png"]})
    return {
        "settings": settings,
        "bag": {"path": bag_summary["bag"], "frames": bag_summary["frames"],
                "calibrations": bag_summary["calibrations"]},
        "frames_in": frames_in,
        "frames_out": len(written),
        "frames_without_output": frames_in - len(written),
        "node": {"pairs_in": diag.get("pairs_in"), "pairs_published": diag.get("pairs_published"),
                 "dropped_total": diag.get("dropped_total"), "dropped": drops},
        "latency_ms": latency,
        "end_to_end_s": end_to_end,
        "frames": per_frame,
        "wall_s": wall_s,
    }


def format_summary(summary: dict, out_dir: Path) -> str:
    lines = ["", "=== stereo_depth_ros demo summary ==="]
    settings = summary["settings"]
    lines.append(f"backend {settings['backend']}, input_scale {settings['input_scale']}, "
                 f"device {settings['device']}; bag {summary['bag']['path']}")
    for calib in summary["bag"]["calibrations"]:
        lines.append(f"  camera {calib['width']}x{calib['height']}: fx {calib['fx']:.1f} px, "
                     f"baseline {calib['baseline_m']:.4f} m  ({_source_label(calib['source'])})")
    node = summary["node"]
    lines.append(f"frames in {summary['frames_in']}, frames out {summary['frames_out']}, "
                 f"without output {summary['frames_without_output']}; node: pairs in "
                 f"{node['pairs_in']}, published {node['pairs_published']}, dropped "
                 f"{node['dropped_total']} {node['dropped'] or ''}".rstrip())
    stage_text = []
    for stage in STAGES:
        mean = summary["latency_ms"][stage]["mean"]
        if mean is not None:
            stage_text.append(f"{stage} {mean:.0f}")
    if stage_text:
        lines.append("node latency per stage, mean ms: " + ", ".join(stage_text))
    if summary["end_to_end_s"]:
        values = summary["end_to_end_s"]
        lines.append(f"end-to-end (replay publish -> disparity received): mean "
                     f"{sum(values) / len(values):.2f} s, max {max(values):.2f} s")
    lines.append("frame  valid  depth p5 / median / p95 (m)   montage")
    for frame in summary["frames"]:
        if frame.get("depth_median_m") is None:
            depth = "no valid depth"
        else:
            depth = (f"{frame['depth_p5_m']:6.1f} / {frame['depth_median_m']:6.1f} / "
                     f"{frame['depth_p95_m']:6.1f}")
        lines.append(f"{frame['index']:5d}  {frame['valid_fraction']:5.0%}  {depth:27s}  "
                     f"{out_dir / 'frames' / frame['montage']}")
    lines.append(f"total wall time {summary['wall_s']:.1f} s; everything is in {out_dir}")
    return "\n".join(lines)


# ------------------------------------------------------------------------------------ run


def prepare_out_dir(out_dir: Path) -> Path | None:
    """Create an empty out_dir. An earlier demo run there is moved aside, not deleted, to the
    sibling `<out_dir>.<YYYYmmdd-HHMMSS>` (when that run started; `-2`, `-3` ... added if taken),
    whose path is returned (None: nothing to keep). A folder the demo did not make is refused."""
    kept = None
    if out_dir.exists():
        if not out_dir.is_dir():
            raise DemoError(f"{out_dir} exists and is not a folder")
        if any(out_dir.iterdir()):
            if not (out_dir / MARKER).is_file():
                raise DemoError(f"{out_dir} exists and was not made by the demo; choose --out")
            kept = _previous_run_folder(out_dir)
            out_dir.rename(kept)
            LOG.info("the previous run's output was moved to %s", kept)
        else:
            out_dir.rmdir()
    out_dir.mkdir(parents=True)
    (out_dir / MARKER).write_text("made by python -m stereo_depth_ros.tools.demo\n")
    return kept


def _previous_run_folder(out_dir: Path) -> Path:
    """A free sibling name for the earlier run in out_dir, stamped with its start (local time)."""
    started = time.strftime("%Y%m%d-%H%M%S",
                            time.localtime((out_dir / MARKER).stat().st_mtime))
    candidate = out_dir.with_name(f"{out_dir.name}.{started}")
    number = 2
    while candidate.exists():
        candidate = out_dir.with_name(f"{out_dir.name}.{started}-{number}")
        number += 1
    return candidate


def run(args: argparse.Namespace) -> dict:
    started = time.monotonic()
    assets = args.assets.resolve()
    weights = (args.weights or assets / WEIGHTS).resolve()
    if args.backend == "psmnet" and not weights.is_file():
        raise DemoError(f"{weights} not found: run `make assets` (or pass --weights)")
    out_dir = args.out.resolve()
    prepare_out_dir(out_dir)
    logs = out_dir / "logs"
    logs.mkdir()

    LOG.info("building the bag from the sample pairs ...")
    frames = demo_frames(assets, out_dir, args.frames)
    bag_summary = bag_writer.write_bag(frames, out_dir / "bag", storage="mcap")
    for calib in bag_summary["calibrations"]:
        LOG.info("  %dx%d fx=%.1f baseline=%.4f m from %s", calib["width"], calib["height"],
                 calib["fx"], calib["baseline_m"], _source_label(calib["source"]))
    LOG.info("  %d frames -> %s", bag_summary["frames"], bag_summary["bag"])

    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO_ROOT), env.get("PYTHONPATH")) if p)
    env["PYTHONUNBUFFERED"] = "1"
    env["RCUTILS_COLORIZED_OUTPUT"] = "0"
    lock = None
    if args.ros_domain_id != "inherit":
        env["ROS_AUTOMATIC_DISCOVERY_RANGE"] = "LOCALHOST"
        env.pop("ROS_LOCALHOST_ONLY", None)
        if args.ros_domain_id == "auto":
            domain_id, lock = _reserve_domain_id()
        else:
            domain_id = int(args.ros_domain_id)
        env["ROS_DOMAIN_ID"] = str(domain_id)
    from stereo_depth_ros.ros.transport import use_large_image_profile
    note = use_large_image_profile(env)          # the node, the player and the dumper share it
    if note:
        LOG.info("%s", note)

    node_argv = [sys.executable, "-m", "stereo_depth_ros.ros.stereo_depth_node", "--ros-args",
                 "--params-file", str(REPO_ROOT / "config" / "stereo_depth.yaml"),
                 "-p", f"backend:={args.backend}", "-p", f"input_scale:={args.input_scale}",
                 "-p", f"max_relative_uncertainty:={args.max_relative_uncertainty}",
                 "-p", "diagnostics_period_seconds:=0.5"]
    if args.backend == "psmnet":
        node_argv += ["-p", f"weights_path:={weights}", "-p", f"device:={args.device}",
                      "-p", f"precision:={args.precision}",
                      "-p", f"max_disparity:={args.max_disparity}"]
    n_frames = bag_summary["frames"]
    dump_argv = [sys.executable, "-m", "stereo_depth_ros.tools.dump", "--out",
                 str(out_dir / "frames"), "--max-frames", str(n_frames),
                 "--timeout", str(args.frame_timeout), "--summary-json",
                 str(out_dir / "dump_summary.json")]
    replay_argv = [sys.executable, "-m", "stereo_depth_ros.tools.replay", str(out_dir / "bag"),
                   "--wait-timeout", str(args.start_timeout), "--watch", "disparity",
                   "--watch-subscribers", "2", "--step", "--step-timeout",
                   str(args.frame_timeout), "--linger", "0", "--stats-json",
                   str(out_dir / "replay_stats.json")]
    children: list[Child] = []
    try:
        LOG.info("starting stereo_depth_node (%s, input_scale %s) ...", args.backend,
                 args.input_scale)
        node = Child("stereo_depth_node", node_argv, logs / "node.log", env)
        children.append(node)
        node.wait_for_line(r"ready:", args.start_timeout)
        dump = Child("stereo_depth_dump", dump_argv, logs / "dump.log", env)
        children.append(dump)
        dump.wait_for_line(r"publisher found on", args.start_timeout)
        LOG.info("replaying %d frames (each waits for its disparity) ...", n_frames)
        replay = Child("stereo_depth_replay", replay_argv, logs / "replay.log", env)
        children.append(replay)
        budget = args.start_timeout + n_frames * args.frame_timeout
        code = replay.wait(budget)
        if code != 0:
            raise DemoError(f"stereo_depth_replay {'timed out' if code is None else 'failed'} "
                            f"(log {replay.log_path}):\n{replay._tail()}")
        code = dump.wait(args.frame_timeout + 10)
        if code is None:
            LOG.warning("stereo_depth_dump still waiting for frames; stopping it")
        replay_stats = json.loads((out_dir / "replay_stats.json").read_text())
    finally:
        for child in reversed(children):
            child.stop()
        if lock is not None:
            lock.close()
    summary_path = out_dir / "dump_summary.json"
    dump_summary = json.loads(summary_path.read_text()) if summary_path.is_file() else {}
    settings = {"backend": args.backend, "input_scale": args.input_scale,
                "max_relative_uncertainty": args.max_relative_uncertainty,
                "device": args.device if args.backend == "psmnet" else "cpu (opencv)",
                "precision": args.precision, "max_disparity": args.max_disparity,
                "frames": n_frames}
    summary = build_summary(bag_summary, replay_stats, dump_summary, settings,
                            time.monotonic() - started)
    (out_dir / "demo_summary.json").write_text(json.dumps(summary, indent=2))
    LOG.info("%s", format_summary(summary, out_dir))
    return summary


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
