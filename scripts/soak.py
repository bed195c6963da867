#!/usr/bin/env python3
"""Soak the node: every bad-input kind (sustained and in bursts), the recoverable faults and
normal frames, mixed for a long time, with the node's memory, open files and threads per minute.

    python3 scripts/soak.py [--minutes 30] [--size 640x480] [--rate 10] [--backend sgbm]

Starts two nodes (raw and compressed image transport) in their own ROS domain on localhost and
feeds them from this process. Every minute it prints, per node: RSS (MB), open file descriptors,
threads, pairs in / published / dropped, and the /diagnostics level. At the end it prints the
growth from the end of the first minute to the end, and exits 1 when RSS grew more than
--max-rss-growth-mb or the descriptors or threads did not stay flat, 0 otherwise. Not run in CI
(it takes as long as asked); the closing notes quote its result.
"""

from __future__ import annotations

import argparse
import itertools
import math
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))

PHASE_S = 15.0


def proc_stats(pid: int) -> tuple[float, int, int]:
    """(RSS MB, open fds, threads) of a process."""
    rss = threads = 0
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                rss = int(line.split()[1]) / 1024.0
            elif line.startswith("Threads:"):
                threads = int(line.split()[1])
    return rss, len(os.listdir(f"/proc/{pid}/fd")), threads


class Feeder:
    """The publishing side: a camera pair for one node, with every way of getting it wrong."""

    def __init__(self, node, namespace: str, compressed: bool, width: int, height: int) -> None:
        from rclpy.qos import QoSProfile, ReliabilityPolicy
        from sensor_msgs.msg import CameraInfo, CompressedImage, Image
        from stereo_depth_ros.core.camera import StereoRig
        self.ns, self.compressed = namespace, compressed
        qos = QoSProfile(depth=5, reliability=ReliabilityPolicy.RELIABLE)
        image_type, suffix = (CompressedImage, "image_raw/compressed") if compressed else \
            (Image, "image_raw")
        self.pubs = [node.create_publisher(image_type, f"{namespace}/left/{suffix}", qos),
                     node.create_publisher(image_type, f"{namespace}/right/{suffix}", qos),
                     node.create_publisher(CameraInfo, f"{namespace}/left/camera_info", qos),
                     node.create_publisher(CameraInfo, f"{namespace}/right/camera_info", qos)]
        rng = np.random.default_rng(1)
        self.sizes = [(width, height), (width // 2, height // 2)]
        self.images = {}
        for w, h in self.sizes:
            left = rng.integers(0, 255, (h, w), dtype=np.uint8)
            self.images[(w, h)] = (left, np.roll(left, -8, axis=1))
        self.rigs = {(w, h): StereoRig(w * 0.8, w * 0.8, w / 2, w / 2, h / 2, 0.1, w, h)
                     for w, h in self.sizes}
        self.size = self.sizes[0]
        self.now_ns = time.time_ns()

    def stamp(self):
        from builtin_interfaces.msg import Time
        self.now_ns = max(self.now_ns + 50_000_000, time.time_ns())
        return Time(sec=self.now_ns // 10**9, nanosec=self.now_ns % 10**9)

    def _image(self, array, when):
        from sensor_msgs.msg import CompressedImage
        from stereo_depth_ros.ros.image_conversion import numpy_to_image
        if not self.compressed:
            msg = numpy_to_image(array, "mono8")
        else:
            msg = CompressedImage(format="mono8; png compressed mono8",
                                  data=cv2.imencode(".png", array)[1].tobytes())
        msg.header.stamp, msg.header.frame_id = when, "soak_left_optical_frame"
        return msg

    def frame(self, fault: str = "good", when=None):
        """The four messages of one frame with `fault` (None entries are not sent)."""
        from std_msgs.msg import Header
        from stereo_depth_ros.ros.messages import rectified_camera_info
        when = when or self.stamp()
        left, right = self.images[self.size]
        rig = self.rigs[self.size]
        header = Header(stamp=when, frame_id="soak_left_optical_frame")
        msgs = [self._image(left, when), self._image(right, when),
                rectified_camera_info(rig, header), rectified_camera_info(rig, header, right=True)]
        edit = FAULTS[fault]
        return edit(self, msgs, when) if edit else msgs

    def send(self, msgs) -> None:
        for pub, msg in zip(self.pubs, msgs):
            if msg is not None:
                pub.publish(msg)


def _set(index, field, value):
    def edit(feeder, msgs, when):
        setattr(msgs[index], field, value)
        return msgs
    return edit


def _drop(*indices):
    def edit(feeder, msgs, when):
        return [None if i in indices else m for i, m in enumerate(msgs)]
    return edit


def _raw_only(edit):
    def wrapped(feeder, msgs, when):
        return msgs if feeder.compressed else edit(feeder, msgs, when)
    return wrapped


def _corrupt(feeder, msgs, when):
    if feeder.compressed:
        msgs[0].data = b"\xff\xd8\xff\xe0" + bytes(2000)
    else:
        msgs[0].data = bytes(msgs[0].data)[:1000]
    return msgs


def _skew(feeder, msgs, when):
    ns = when.sec * 10**9 + when.nanosec + 20_000_000
    msgs[3].header.stamp.sec, msgs[3].header.stamp.nanosec = ns // 10**9, ns % 10**9
    return msgs


def _narrow(feeder, msgs, when):
    from std_msgs.msg import Header
    from stereo_depth_ros.core.camera import StereoRig
    from stereo_depth_ros.ros.messages import rectified_camera_info
    rig = StereoRig(32.0, 32.0, 16.0, 16.0, 24.0, 0.1, 40, 48)
    header = Header(stamp=when, frame_id="soak_left_optical_frame")
    left = np.ascontiguousarray(feeder.images[feeder.sizes[0]][0][:48, :40])
    return [feeder._image(left, when), feeder._image(left, when),
            rectified_camera_info(rig, header), rectified_camera_info(rig, header, right=True)]


def _small_info(feeder, msgs, when):
    msgs[2].width = msgs[3].width = 17
    return msgs


FAULTS = {
    "good": None,
    "nan_in_calibration": _set(3, "d", [0.0, 0.0, math.nan, 0.0, 0.0]),
    "uncalibrated": _set(3, "p", np.zeros(12)),
    "zero_k_p_only": _set(2, "k", np.zeros(9)),                 # accepted through P
    "zero_baseline": _set(3, "p", np.array([1.0] * 3 + [0.0] + [0.0, 1.0, 1.0, 0.0] +
                                           [0.0, 0.0, 1.0, 0.0])),
    "info_size_mismatch": _small_info,
    "bad_data": _corrupt,
    "unsupported_encoding": _raw_only(_set(0, "encoding", "nv21")),
    "size_too_small": _narrow,
    "stamp_skew": _skew,
    "right_image_lost": _drop(1),
    "left_image_lost": _drop(0),
    "infos_only": _drop(0, 1),
    "images_only": _drop(2, 3),
    "right_side_dead": _drop(1, 3),
}


class Soak:
    def __init__(self, args) -> None:
        import rclpy
        from diagnostic_msgs.msg import DiagnosticArray
        from rclpy.context import Context
        from stereo_msgs.msg import DisparityImage
        self.args = args
        width, height = (int(v) for v in args.size.split("x"))
        self.nodes = {}
        for name, compressed in (("/soak_raw", False), ("/soak_compressed", True)):
            argv = [sys.executable, "-m", "stereo_depth_ros.ros.stereo_depth_node", "--ros-args",
                    "-r", f"__ns:={name}", "-p", f"backend:={args.backend}",
                    "-p", "synchronizer:=in_package", "-p", "queue_size:=5",
                    "-p", f"image_transport:={'compressed' if compressed else 'raw'}"]
            if args.backend == "sgbm":
                argv += ["-p", "sgbm.num_disparities:=32"]
            self.nodes[name] = subprocess.Popen(argv, cwd=REPO_ROOT, stdout=subprocess.DEVNULL,
                                                stderr=subprocess.DEVNULL,
                                                start_new_session=True)
        self.context = Context()
        rclpy.init(context=self.context)
        self.node = rclpy.create_node("soak_feeder", context=self.context)
        self.feeders = [Feeder(self.node, name, name.endswith("compressed"), width, height)
                        for name in self.nodes]
        self.status = {}
        self.node.create_subscription(DiagnosticArray, "/diagnostics", self._on_status, 10)
        self.outputs = [self.node.create_subscription(DisparityImage, f"{name}/disparity",
                                                      lambda msg: None, 5)
                        for name in self.nodes]
        self.rows: dict[str, list] = {name: [] for name in self.nodes}
        from rcl_interfaces.srv import SetParameters
        from rclpy.executors import SingleThreadedExecutor
        self.executor = SingleThreadedExecutor(context=self.context)
        self.executor.add_node(self.node)
        self.param_clients = [self.node.create_client(
            SetParameters, f"{name}/stereo_depth_node/set_parameters") for name in self.nodes]
        self.uniqueness = itertools.cycle([15, 10])

    def _on_status(self, msg) -> None:
        for status in msg.status:
            values = {kv.key: kv.value for kv in status.values}
            self.status[status.hardware_id] = (status.level[0], status.message, values)

    def spin(self, seconds: float) -> None:
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            self.executor.spin_once(timeout_sec=max(0.0, min(0.01, end - time.monotonic())))

    def phase(self, kind: str) -> None:
        """One PHASE_S phase: a fault sustained, in bursts, a stop, a jump, a size change..."""
        period = 1.0 / self.args.rate
        end = time.monotonic() + PHASE_S
        burst = itertools.cycle(["good", kind]) if kind.startswith("burst:") else None
        fault = kind.split(":")[-1]
        if fault == "camera_stop":
            self.spin(PHASE_S)
            return
        if fault == "time_jump":
            for feeder in self.feeders:
                feeder.now_ns -= 20 * 10**9
        if fault == "resize":
            for feeder in self.feeders:
                feeder.size = feeder.sizes[1] if feeder.size == feeder.sizes[0] else \
                    feeder.sizes[0]
        while time.monotonic() < end:
            for feeder in self.feeders:
                name = next(burst).split(":")[-1] if burst else fault
                name = name if name in FAULTS else "good"
                feeder.send(feeder.frame(name))
            self.spin(period)
        if fault == "time_jump":
            for feeder in self.feeders:
                feeder.now_ns = time.time_ns()

    def report(self, minute: int) -> None:
        for name, process in self.nodes.items():
            rss, fds, threads = proc_stats(process.pid)
            level, message, values = self.status.get(f"{name}/stereo_depth_node",
                                                     (None, "", {}))
            row = (minute, rss, fds, threads, values.get("pairs_in", "?"),
                   values.get("pairs_published", "?"), values.get("dropped_total", "?"), level)
            self.rows[name].append(row)
            print(f"{minute:4d} min {name:18s} rss {rss:8.1f} MB  fds {fds:4d}  threads "
                  f"{threads:3d}  pairs in {row[4]:>6s} published {row[5]:>6s} dropped "
                  f"{row[6]:>6s}  level {level}", flush=True)

    def run(self) -> int:
        kinds = ["good"] + [k for k in FAULTS if k != "good"] + \
            [f"burst:{k}" for k in FAULTS if k != "good"] + \
            ["camera_stop", "time_jump", "resize", "good", "resize"]
        random.Random(0).shuffle(kinds)
        self.spin(5.0)                                   # discovery
        start = time.monotonic()
        next_report, minute = start + 60.0, 0
        for kind in itertools.cycle(kinds):
            if time.monotonic() - start >= self.args.minutes * 60.0:
                break
            self.phase(kind)
            self._set_live_parameter()
            while time.monotonic() >= next_report:
                minute += 1
                self.report(minute)
                next_report += 60.0
        return self.summary()

    def _set_live_parameter(self) -> None:
        """`ros2 param set` of a live parameter between phases (frames keep flowing)."""
        from rcl_interfaces.srv import SetParameters
        from rclpy.parameter import Parameter
        value = next(self.uniqueness)
        request = SetParameters.Request(parameters=[
            Parameter("sgbm.uniqueness_ratio", value=value).to_parameter_msg()])
        for client in self.param_clients:
            if client.service_is_ready():
                future = client.call_async(request)
                deadline = time.monotonic() + 5.0
                while not future.done() and time.monotonic() < deadline:
                    self.executor.spin_once(timeout_sec=0.05)

    def summary(self) -> int:
        ok = True
        for name, rows in self.rows.items():
            if len(rows) < 2:
                print(f"{name}: fewer than 2 minutes measured")
                continue
            first, last = rows[0], rows[-1]
            growth = last[1] - first[1]
            fds = {r[2] for r in rows[1:]}
            threads = {r[3] for r in rows[1:]}
            print(f"{name}: RSS {first[1]:.1f} -> {last[1]:.1f} MB ({growth:+.1f} MB from minute "
                  f"{first[0]} to {last[0]}), fds {min(fds)}..{max(fds)}, threads "
                  f"{min(threads)}..{max(threads)}")
            ok &= growth < self.args.max_rss_growth_mb and max(fds) - min(fds) <= 2 \
                and max(threads) - min(threads) <= 2
        return 0 if ok else 1

    def close(self) -> None:
        import rclpy
        for process in self.nodes.values():
            if process.poll() is None:
                process.send_signal(signal.SIGINT)
        for name, process in self.nodes.items():
            try:
                code = process.wait(15)
            except subprocess.TimeoutExpired:
                process.kill()
                code = "killed"
            print(f"{name}: exit {code}")
        self.node.destroy_node()
        rclpy.try_shutdown(context=self.context)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=30.0)
    parser.add_argument("--size", default="640x480", help="WIDTHxHEIGHT of the camera")
    parser.add_argument("--rate", type=float, default=10.0, help="frames per second")
    parser.add_argument("--backend", default="sgbm", choices=("sgbm",),
                        help="sgbm (PSMNet's per-frame cost hides nothing the drop paths do)")
    parser.add_argument("--max-rss-growth-mb", type=float, default=30.0)
    args = parser.parse_args(argv)
    os.environ.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
    os.environ.setdefault("ROS_DOMAIN_ID", str(150 + os.getpid() % 50))
    soak = Soak(args)
    try:
        return soak.run()
    except KeyboardInterrupt:
        return soak.summary()
    finally:
        soak.close()


if __name__ == "__main__":
    sys.exit(main())
