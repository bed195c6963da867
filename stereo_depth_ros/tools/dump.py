"""Write the stereo node's outputs to files, for people without RViz.

    stereo_depth_dump --out out/dump [--max-frames N] [--timeout S] [--namespace /stereo]

Subscribes (relative names, so `--namespace` or ROS remapping applies) to `disparity`
(stereo_msgs/DisparityImage, required), and when they are published also `depth/image_rect`,
`depth/camera_info`, `points2` and `matcher/left/image_rect`; /diagnostics is recorded for the
summary.
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
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from stereo_depth_ros import topics
from stereo_depth_ros.core.disparity_io import colorize
from stereo_depth_ros.core.stamps import ns_to_sec_nanosec, stamp_to_ns
from stereo_depth_ros.tools._cli import (EXIT_FAILURE, EXIT_INTERRUPTED, REPORTED_ERRORS,
                                         parse_ros_args, report_error, ros_session)

LOG = logging.getLogger(__name__)
PROG = "stereo_depth_dump"

DISPARITY, DEPTH, DEPTH_INFO, POINTS = (topics.DISPARITY, topics.DEPTH, topics.DEPTH_INFO,
                                        topics.POINTS)
LEFT = topics.LEFT_RECT
OPTIONAL_TOPICS = (DEPTH, DEPTH_INFO, POINTS, LEFT)
MAX_DEPTH_MM = 65535


# ------------------------------------------------------------------------- pure file writers


def depth_to_mm_png(depth_m: np.ndarray) -> np.ndarray:
    """(H, W) float32 metres (NaN invalid) -> uint16 mm; 0 = invalid or out of range."""
    depth = np.asarray(depth_m, dtype=np.float64)
    mm = np.zeros(depth.shape, dtype=np.uint16)
    valid = np.isfinite(depth) & (depth > 0)
    scaled = np.zeros(depth.shape, dtype=np.float64)
    scaled[valid] = np.round(depth[valid] * 1000.0)
    valid &= (scaled >= 1) & (scaled <= MAX_DEPTH_MM)
    mm[valid] = scaled[valid].astype(np.uint16)
    return mm


def write_ply(path: Path, points: np.ndarray, colors: np.ndarray | None = None,
              binary: bool = True) -> int:
    """Write the finite points of (H, W, 3) or (N, 3) float32 metres with uint8 RGB colours.

    binary: `format binary_little_endian 1.0` (15 bytes per vertex: 3 float32 + 3 uchar), else
    `format ascii 1.0`. Returns the number of vertices written.
    """
    xyz = np.asarray(points, dtype=np.float32).reshape(-1, 3)
    rgb = (np.full(xyz.shape, 200, dtype=np.uint8) if colors is None
           else np.asarray(colors, dtype=np.uint8).reshape(-1, 3))
    if rgb.shape != xyz.shape:
        raise ValueError(f"colours {rgb.shape} do not match points {xyz.shape}")
    keep = np.isfinite(xyz).all(axis=1)
    xyz, rgb = xyz[keep], rgb[keep]
    header = "\n".join([
        "ply", f"format {'binary_little_endian' if binary else 'ascii'} 1.0",
        "comment stereo_depth_ros: left optical frame (x right, y down, z forward), metres",
        f"element vertex {len(xyz)}",
        "property float x", "property float y", "property float z",
        "property uchar red", "property uchar green", "property uchar blue",
        "end_header"]) + "\n"
    with Path(path).open("wb") as handle:
        handle.write(header.encode("ascii"))
        if binary:
            vertex = np.empty(len(xyz), dtype=np.dtype([("x", "<f4"), ("y", "<f4"), ("z", "<f4"),
                                                       ("red", "u1"), ("green", "u1"),
                                                       ("blue", "u1")]))
            vertex["x"], vertex["y"], vertex["z"] = xyz[:, 0], xyz[:, 1], xyz[:, 2]
            vertex["red"], vertex["green"], vertex["blue"] = rgb[:, 0], rgb[:, 1], rgb[:, 2]
            handle.write(vertex.tobytes())
        else:
            for (x, y, z), (r, g, b) in zip(xyz.tolist(), rgb.tolist()):
                handle.write(f"{x:.5f} {y:.5f} {z:.5f} {r} {g} {b}\n".encode("ascii"))
    return int(len(xyz))


def _robust_range(values: np.ndarray, low: float = 1.0, high: float = 99.0) -> tuple[float, float]:
    finite = values[np.isfinite(values)]
    if finite.size == 0:
        return 0.0, 1.0
    vmin, vmax = np.percentile(finite, [low, high])
    if vmax <= vmin:
        vmax = vmin + 1e-3
    return float(vmin), float(vmax)


def colorize_disparity(disparity: np.ndarray) -> np.ndarray:
    """(H, W) px, NaN invalid -> BGR uint8 (TURBO over the 1st-99th percentile, invalid black)."""
    vmin, vmax = _robust_range(disparity)
    return colorize(disparity, vmin, vmax)


def colorize_depth(depth_m: np.ndarray) -> np.ndarray:
    """(H, W) metres, NaN invalid -> BGR uint8: MAGMA on -log depth, near bright, invalid black."""
    depth = np.asarray(depth_m, dtype=np.float32)
    with np.errstate(divide="ignore", invalid="ignore"):
        values = np.where(np.isfinite(depth) & (depth > 0), -np.log(depth), np.nan)
    vmin, vmax = _robust_range(values, 2.0, 98.0)
    return colorize(values, vmin, vmax, colormap=cv2.COLORMAP_MAGMA)


def _label(image: np.ndarray, text: str) -> np.ndarray:
    out = image.copy()
    scale = max(0.4, min(out.shape[1], 1200) / 900.0)
    (tw, th), base = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, scale, 1)
    cv2.rectangle(out, (0, 0), (tw + 8, th + base + 8), (0, 0, 0), -1)
    cv2.putText(out, text, (4, th + 4), cv2.FONT_HERSHEY_SIMPLEX, scale, (255, 255, 255), 1,
                cv2.LINE_AA)
    return out


def make_montage(left_rgb: np.ndarray | None, disparity_bgr: np.ndarray, depth_bgr: np.ndarray,
                 labels: tuple[str, str, str] = ("left", "disparity", "depth")) -> np.ndarray:
    """Side by side BGR image: left | colour disparity | colour depth (left grey if missing)."""
    height, width = disparity_bgr.shape[:2]
    if left_rgb is None:
        left_bgr = np.full((height, width, 3), 64, dtype=np.uint8)
    else:
        left_bgr = np.asarray(left_rgb)
        left_bgr = (cv2.cvtColor(left_bgr, cv2.COLOR_GRAY2BGR) if left_bgr.ndim == 2
                    else left_bgr[:, :, ::-1])
        if left_bgr.shape[:2] != (height, width):
            left_bgr = cv2.resize(left_bgr, (width, height), interpolation=cv2.INTER_AREA)
    depth_bgr = depth_bgr if depth_bgr.shape[:2] == (height, width) else cv2.resize(
        depth_bgr, (width, height), interpolation=cv2.INTER_NEAREST)
    panels = [_label(np.ascontiguousarray(p), text)
              for p, text in zip((left_bgr, disparity_bgr, depth_bgr), labels)]
    return np.hstack(panels)


def points_from_depth(depth_m: np.ndarray, k: np.ndarray) -> np.ndarray:
    """(H, W, 3) float32 points in the optical frame from depth and a 3x3 K (NaN where invalid)."""
    depth = np.asarray(depth_m, dtype=np.float32)
    height, width = depth.shape
    fx, fy, cx, cy = k[0, 0], k[1, 1], k[0, 2], k[1, 2]
    u = np.arange(width, dtype=np.float32)[None, :]
    v = np.arange(height, dtype=np.float32)[:, None]
    z = np.where(np.isfinite(depth) & (depth > 0), depth, np.nan).astype(np.float32)
    return np.stack([(u - cx) / fx * z, (v - cy) / fy * z, z], axis=-1).astype(np.float32)


@dataclass
class FrameData:
    """One frame's outputs as arrays (what the ROS side hands to `write_frame`)."""

    stamp_ns: int
    disparity: np.ndarray                  # (H, W) float32 px, NaN invalid
    depth_m: np.ndarray                    # (H, W) float32 m, NaN invalid
    points: np.ndarray | None = None       # (H, W, 3) float32 m, NaN invalid
    colors: np.ndarray | None = None       # (H, W, 3) uint8 RGB for the points
    left_rgb: np.ndarray | None = None     # (H, W, 3) uint8 RGB or (H, W) mono


def write_frame(out_dir: Path, index: int, frame: FrameData, ply: str = "binary") -> dict:
    """Write one frame's files into out_dir; return its summary entry (files and statistics)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    prefix = f"{index:06d}"
    files = {}
    disparity_bgr = colorize_disparity(frame.disparity)
    depth_bgr = colorize_depth(frame.depth_m)
    paths = {"disparity_png": out_dir / f"{prefix}_disparity.png",
             "depth_mm_png": out_dir / f"{prefix}_depth_mm.png",
             "depth_npy": out_dir / f"{prefix}_depth.npy",
             "montage_png": out_dir / f"{prefix}_montage.png"}
    cv2.imwrite(str(paths["disparity_png"]), disparity_bgr)
    cv2.imwrite(str(paths["depth_mm_png"]), depth_to_mm_png(frame.depth_m))
    np.save(paths["depth_npy"], np.asarray(frame.depth_m, dtype=np.float32))
    valid = np.isfinite(frame.depth_m) & (frame.depth_m > 0)
    depth_valid = frame.depth_m[valid]
    stats = {"valid_fraction": float(valid.mean()) if valid.size else 0.0}
    if depth_valid.size:
        p5, p50, p95 = np.percentile(depth_valid, [5, 50, 95])
        stats.update(depth_min_m=float(depth_valid.min()), depth_p5_m=float(p5),
                     depth_median_m=float(p50), depth_p95_m=float(p95),
                     depth_max_m=float(depth_valid.max()))
    disparity_valid = frame.disparity[np.isfinite(frame.disparity)]
    if disparity_valid.size:
        stats.update(disparity_min_px=float(disparity_valid.min()),
                     disparity_max_px=float(disparity_valid.max()))
    labels = ("left", "disparity (px)", "depth " + (
        f"{stats['depth_p5_m']:.1f}-{stats['depth_p95_m']:.1f} m" if depth_valid.size else ""))
    cv2.imwrite(str(paths["montage_png"]),
                make_montage(frame.left_rgb, disparity_bgr, depth_bgr, labels))
    if ply != "none" and frame.points is not None:
        paths["ply"] = out_dir / f"{prefix}_points.ply"
        stats["ply_vertices"] = write_ply(paths["ply"], frame.points, frame.colors,
                                          binary=(ply == "binary"))
    files = {key: path.name for key, path in paths.items()}
    return {"index": index, "stamp_ns": int(frame.stamp_ns), "files": files, **stats}


# ------------------------------------------------------------------------------ ROS side


def disparity_from_message(msg) -> np.ndarray:
    """DisparityImage -> (H, W) float32 px (as published: adjusted by -cx offset), NaN invalid."""
    from stereo_depth_ros.ros.image_conversion import image_to_numpy

    values = np.array(image_to_numpy(msg.image), dtype=np.float32)
    values[~np.isfinite(values) | (values < msg.min_disparity)] = np.nan
    return values


def depth_from_disparity_message(msg, disparity: np.ndarray) -> np.ndarray:
    """Z = f * T / d as stereo_msgs/DisparityImage defines it (NaN for d <= 0)."""
    with np.errstate(divide="ignore", invalid="ignore"):
        depth = np.float32(msg.f * msg.t) / disparity
    depth[~np.isfinite(depth) | (disparity <= 0)] = np.nan
    return depth.astype(np.float32)


def depth_from_image_message(msg) -> np.ndarray:
    """A REP 118 depth image -> (H, W) float32 metres, NaN invalid (32FC1 metres, or 16UC1
    millimetres with 0 invalid)."""
    from stereo_depth_ros.ros.image_conversion import image_to_numpy

    values = np.array(image_to_numpy(msg), dtype=np.float32)
    if msg.encoding in ("16UC1", "mono16"):
        values = np.where(values > 0, values / np.float32(1000.0), np.float32(np.nan))
    return values.astype(np.float32)


def frame_from_messages(stamp_ns: int, parts: dict) -> FrameData:
    """Arrays of one frame from the messages received for it (keys: the topic constants)."""
    from stereo_depth_ros.ros.image_conversion import image_to_numpy, to_matcher_input
    from stereo_depth_ros.ros.messages import pointcloud2_to_numpy, unpack_rgb

    disparity_msg = parts[DISPARITY]
    disparity = disparity_from_message(disparity_msg)
    if DEPTH in parts:
        depth = depth_from_image_message(parts[DEPTH])
    else:
        depth = depth_from_disparity_message(disparity_msg, disparity)
    left = None
    if LEFT in parts:
        msg = parts[LEFT]
        left = np.ascontiguousarray(to_matcher_input(np.array(image_to_numpy(msg)),
                                                     msg.encoding))
    points = colors = None
    if POINTS in parts:
        cloud = pointcloud2_to_numpy(parts[POINTS])
        points = np.stack([cloud["x"], cloud["y"], cloud["z"]], axis=-1).astype(np.float32)
        if "rgb" in cloud.dtype.names:
            colors = unpack_rgb(cloud["rgb"])
    elif DEPTH_INFO in parts:
        k = np.asarray(parts[DEPTH_INFO].k, dtype=np.float64).reshape(3, 3)
        points = points_from_depth(depth, k)
    if points is not None and colors is None and left is not None \
            and left.shape[:2] == points.shape[:2]:
        colors = left if left.ndim == 3 else np.repeat(left[:, :, None], 3, axis=2)
    return FrameData(stamp_ns, disparity, depth, points, colors, left)


class Dumper:
    """rclpy node that assembles output frames by stamp and writes them with write_frame."""

    def __init__(self, out_dir: Path, *, namespace: str = "", max_frames: int | None = None,
                 grace_s: float = 1.0, ply: str = "binary", context=None,
                 node_name: str = "stereo_depth_dump") -> None:
        import rclpy
        from diagnostic_msgs.msg import DiagnosticArray
        from rclpy.qos import QoSProfile, ReliabilityPolicy
        from sensor_msgs.msg import CameraInfo, Image, PointCloud2
        from stereo_msgs.msg import DisparityImage

        self.out_dir = Path(out_dir)
        self.max_frames = max_frames
        self.grace_s = grace_s
        self.ply = ply
        self.node = rclpy.create_node(node_name, namespace=namespace or "", context=context,
                                      start_parameter_services=False)
        qos = QoSProfile(depth=5, reliability=ReliabilityPolicy.RELIABLE)
        types = {DISPARITY: DisparityImage, DEPTH: Image, DEPTH_INFO: CameraInfo,
                 POINTS: PointCloud2, LEFT: Image}
        self.counts = {topic: 0 for topic in types}
        self.resolved = {}
        for topic, msg_type in types.items():
            sub = self.node.create_subscription(
                msg_type, topic, lambda msg, topic=topic: self._on_message(topic, msg), qos)
            self.resolved[topic] = sub.topic_name
        self.node.create_subscription(DiagnosticArray, "/diagnostics", self._on_diagnostics, 10)
        self.pending: dict[int, dict] = {}
        self.first_seen: dict[int, float] = {}
        self.written: set[int] = set()
        self.frames: list[dict] = []
        self.diagnostics: dict[str, dict[str, str]] = {}
        self.last_frame_time = time.monotonic()
        self.outputs_found = False
        self.node.create_timer(0.1, self._flush_due)

    @property
    def done(self) -> bool:
        return self.max_frames is not None and len(self.frames) >= self.max_frames

    def _on_message(self, topic: str, msg) -> None:
        self.counts[topic] += 1
        stamp = stamp_to_ns(msg.header.stamp)
        if stamp in self.written or self.done:
            return
        self.pending.setdefault(stamp, {})[topic] = msg
        self.first_seen.setdefault(stamp, time.monotonic())
        if DISPARITY in self.pending[stamp] and self._complete(self.pending[stamp]):
            self._write(stamp)

    def _on_diagnostics(self, msg) -> None:
        for status in msg.status:
            self.diagnostics[status.name] = {kv.key: kv.value for kv in status.values}
            self.diagnostics[status.name]["_message"] = status.message

    def _complete(self, parts: dict) -> bool:
        """All topics that currently have a publisher have arrived for this stamp."""
        for topic in OPTIONAL_TOPICS:
            if topic not in parts and self.node.count_publishers(self.resolved[topic]) > 0:
                return False
        return True

    def _flush_due(self) -> None:
        if not self.outputs_found and self.node.count_publishers(self.resolved[DISPARITY]):
            self.outputs_found = True
            LOG.info("publisher found on %s", self.resolved[DISPARITY])
        now = time.monotonic()
        for stamp in sorted(self.pending):
            age = now - self.first_seen[stamp]
            if DISPARITY in self.pending[stamp] and age >= self.grace_s:
                self._write(stamp)
            elif age >= max(10.0, 10 * self.grace_s):     # parts without a disparity: give up
                self.pending.pop(stamp, None)
                self.first_seen.pop(stamp, None)

    def _write(self, stamp: int) -> None:
        parts = self.pending.pop(stamp)
        self.first_seen.pop(stamp, None)
        if self.done:
            return
        self.written.add(stamp)
        try:
            frame = frame_from_messages(stamp, parts)
            entry = write_frame(self.out_dir, len(self.frames), frame, self.ply)
        except (ValueError, OSError) as exc:
            LOG.error("frame %d.%09d not written: %s", *ns_to_sec_nanosec(stamp), exc)
            return
        entry["received_wall"] = time.time()
        entry["topics"] = sorted(parts)
        self.frames.append(entry)
        self.last_frame_time = time.monotonic()
        LOG.info("frame %d (stamp %d.%09d): %s, depth median %s m", entry["index"],
                 stamp // 10**9, stamp % 10**9, ", ".join(sorted(parts)),
                 f"{entry['depth_median_m']:.2f}" if "depth_median_m" in entry else "n/a")

    def node_published(self) -> int | None:
        """Largest pairs_published the node's /diagnostics reported so far (None: none seen)."""
        values = [int(d["pairs_published"]) for d in self.diagnostics.values()
                  if d.get("pairs_published", "").isdigit()]
        return max(values) if values else None

    def summary(self) -> dict:
        return {"out_dir": str(self.out_dir), "frames": self.frames, "messages": self.counts,
                "topics": self.resolved, "diagnostics": self.diagnostics}

    def destroy(self) -> None:
        self.node.destroy_node()


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
