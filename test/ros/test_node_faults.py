"""Faults a robot meets, through the real node: /diagnostics says what is wrong within seconds
(WARN with the cause) and OK again once output flows; every fault recovers without a restart.

Streams run at a camera's rate (the sleeps pace the publisher); every wait is on a condition
with a deadline.
"""

from __future__ import annotations

import signal
import time

import cv2
import numpy as np
import pytest

pytest.importorskip("rclpy")

from helpers.process import assert_clean_exit  # noqa: E402
from helpers.ros import FRAME, Harness, NodeProcess, wait_for  # noqa: E402
from helpers.ros_messages import camera_info_msg, image_msg, stamp, stereo_infos  # noqa: E402
from helpers.ros_nodes import set_parameters  # noqa: E402

from stereo_depth_ros.core.camera import StereoRig  # noqa: E402
from stereo_depth_ros.core.synthetic import make_scene, make_unrectified_pair  # noqa: E402,E501

pytestmark = [pytest.mark.ros, pytest.mark.slow]

OK, WARN = 0, 1
RATE_HZ = 10.0
DETECTION_S = 10.0        # the rules judge over 5 s; ticks and discovery on a loaded machine
NAMES = ["disparity", "depth/image_rect"]


@pytest.fixture(scope="module")
def scene():
    return make_scene(96, 128, background_disparity=10.0, foreground_disparity=None,
                      fx=200.0, baseline_m=0.1, texture_cell_px=2.0, seed=5)


def start(namespace: str, *extra: str, outputs=None,
          reliable_inputs: bool = True) -> tuple[NodeProcess, Harness]:
    """The node in `namespace`; its inputs reliable (a pair the test waits for is never lost in
    transport on a loaded machine) unless the test is about QoS."""
    args = ["-r", f"__ns:={namespace}", "-p", "backend:=sgbm", "-p", "sgbm.num_disparities:=32",
            "-p", "diagnostics_period_seconds:=0.25", "-p", "synchronizer:=in_package", *extra]
    if reliable_inputs:
        for topic in ("left/image_raw", "right/image_raw", "left/camera_info",
                      "right/camera_info"):
            args += ["-p", f"qos_overrides.{namespace}/{topic}.subscription.reliability:="
                     "reliable"]
    process = NodeProcess(args).start()
    process.wait_for_output(r"ready: backend=sgbm")
    types = {n: "stereo_msgs/DisparityImage" if n == "disparity" else "sensor_msgs/Image"
             for n in (NAMES if outputs is None else outputs)}
    harness = Harness(process, types, namespace=namespace, min_step_s=1.0 / RATE_HZ)
    harness.wait_until_connected(list(types))
    return process, harness


def stop(process: NodeProcess, harness: Harness) -> None:
    harness.close()
    code = process.stop()
    assert_clean_exit(process.output(), code)


@pytest.fixture(scope="module")
def node():
    process, harness = start("/faults")
    try:
        yield harness
    finally:
        stop(process, harness)


def good(h, scene, when=None):
    when = when or h.next_stamp()
    left_info, right_info = stereo_infos(scene.rig, when, FRAME)
    return (image_msg(scene.left, "rgb8", when, FRAME),
            image_msg(scene.right, "rgb8", when, FRAME), left_info, right_info)


def stream_until(h, make, predicate, timeout=DETECTION_S, what="diagnostics"):
    """Publish make() -> 4 messages (None skips a topic) at RATE_HZ until predicate(status)."""
    deadline = time.monotonic() + timeout
    while True:
        h.send_msgs(*make())
        status = h.latest_status()
        if status and predicate(status):
            return status
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}; last "
                                 f"status: {status.get('_level')} {status.get('_message')!r}")
        time.sleep(1.0 / RATE_HZ)


def recover(h, scene):
    """Good pairs until /diagnostics says OK again and one of them came out."""
    first = []

    def pair():
        msgs = good(h, scene)
        first.append(msgs[0].header.stamp)
        return msgs
    stream_until(h, pair, lambda s: (s["_level"], s["_message"]) == (OK, "ok"), what="OK again")
    since = first[0].sec * 1_000_000_000 + first[0].nanosec
    out = h.out["disparity"].wait_for(
        lambda m: m.header.stamp.sec * 1_000_000_000 + m.header.stamp.nanosec >= since, 30.0,
        what="an output of the recovered stream")
    d = np.frombuffer(out.image.data, np.float32).reshape(96, 128)
    assert np.median(d[20:80, 50:120]) == pytest.approx(10.0, abs=0.2)


def warned(text):
    return lambda s: s["_level"] == WARN and s["_message"].startswith(text)


def test_flowing_output_is_ok(node, scene):
    recover(node, scene)
    assert node.latest_status()["_message"] == "ok"


def test_one_side_dying_is_named_and_recovers(node, scene):
    recover(node, scene)

    def left_only():
        left, _, left_info, _ = good(node, scene)
        return left, None, left_info, None
    status = stream_until(node, left_only, warned(
        "only one side arrives: nothing on the right camera (/faults/right/image_raw, "
        "/faults/right/camera_info)"), what="the right camera named")
    assert int(status.get("dropped.unmatched", 0)) > 0        # its pairs counted, not lost
    recover(node, scene)


def test_every_pair_dropped_names_the_top_reason_and_recovers(node, scene):
    recover(node, scene)

    def uncalibrated():
        msgs = good(node, scene)
        msgs[3].p = np.zeros(12)
        return msgs
    status = stream_until(node, uncalibrated, warned(
        "every pair of the last 5 s was dropped"), what="all dropped")
    assert "top reason uncalibrated_camera_info" in status["_message"]
    recover(node, scene)


def test_camera_stopping_for_10_s_warns_then_recovers(node, scene):
    recover(node, scene)
    stopped = time.monotonic()
    status = node.wait_status(warned("no input on any of /faults/left/image_raw"),
                              timeout=DETECTION_S, what="WARN for a stopped camera")
    assert "are its topics remapped" in status["_message"]
    wait_for(lambda: time.monotonic() - stopped >= 10.0, 15.0, what="10 s of silence")
    recover(node, scene)


def test_resolution_and_calibration_change_mid_stream(node):
    """Raw (distorted) cameras at two sizes, alternating: new maps each time, the right depth."""
    def pair_at(width, height, disparity):
        pair = make_unrectified_pair(height=height, width=width,
                                     background_disparity=disparity,
                                     foreground_disparity=None, seed=width)
        return pair.left, pair.right, pair.left_calibration, pair.right_calibration
    start_line = len(node.node.lines())
    for width, height in ((128, 96), (160, 120), (128, 96)):
        left, right, lc, rc = pair_at(width, height, 8.0)
        when = node.next_stamp()
        infos = [camera_info_msg(c.K, c.D, c.R, c.P, width, height, when, FRAME)
                 for c in (lc, rc)]
        node.send_msgs(image_msg(left, "rgb8", when, FRAME), image_msg(right, "rgb8", when,
                                                                       FRAME), *infos)
        out = node.outputs_for(when, ["disparity"])["disparity"]
        assert (out.image.width, out.image.height) == (width, height)
        d = np.frombuffer(out.image.data, np.float32).reshape(height, width)
        centre = d[height // 4: 3 * height // 4, width // 3: 3 * width // 4]
        assert np.nanmedian(centre) == pytest.approx(8.0, abs=0.5), (width, height)
    built = [line for line in node.node.lines()[start_line:]
             if "rectification maps built for the new calibration" in line]
    assert len(built) == 3, built


def test_stamps_jumping_back_restart_the_synchroniser(node, scene):
    """A looping bag: 5 s back. One INFO line, the new timeline's pairs come out."""
    recover(node, scene)
    start_line = len(node.node.lines())
    jumps = int(node.latest_status().get("input_time_jumps", 0))
    now_ns = time.time_ns() - 5_000_000_000
    for step in range(3):
        ns = now_ns + step * 100_000_000
        when = stamp(ns // 1_000_000_000, ns % 1_000_000_000)
        node.send_msgs(*good(node, scene, when))
        node.outputs_for(when, ["disparity"])
        time.sleep(1.0 / RATE_HZ)
    lines = [line for line in node.node.lines()[start_line:] if "jumped back" in line]
    assert len(lines) == 1 and "[INFO]" in lines[0], lines
    node.wait_status(lambda s: int(s.get("input_time_jumps", 0)) == jumps + 1)
    node._last_ns = now_ns + 300_000_000           # the harness follows the new timeline


def test_live_parameter_set_while_frames_flow(node, scene):
    """Applied between frames: none lost as processing_error, and the new value takes effect."""
    recover(node, scene)
    before = int(node.latest_status().get("dropped.processing_error", 0))
    for value in (48, 32, 48, 32):
        for _ in range(3):
            node.send_msgs(*good(node, scene))
            time.sleep(1.0 / RATE_HZ)
        results = set_parameters(node.ctx.node, node.fqn, {"sgbm.num_disparities": value})
        assert results[0].successful, results[0].reason
        msgs = good(node, scene)
        node.send_msgs(*msgs)
        out = node.outputs_for(msgs[0].header.stamp, ["disparity"])["disparity"]
        assert out.max_disparity == pytest.approx(value - 1)    # inclusive, as stereo_image_proc
    assert int(node.latest_status().get("dropped.processing_error", 0)) == before


def test_compressed_camera_to_a_raw_node_is_named_within_seconds(scene):
    """The camera publishes only image_raw/compressed; the node subscribes to raw images."""
    from sensor_msgs.msg import CompressedImage
    process, h = start("/faults_transport", outputs=["disparity"])
    try:
        pubs = [h.ctx.publisher(CompressedImage, f"/faults_transport/{side}/image_raw/"
                                "compressed") for side in ("left", "right")]

        def compressed_camera():
            when = h.next_stamp()
            for pub, image in zip(pubs, (scene.left, scene.right)):
                msg = CompressedImage()
                msg.header.stamp, msg.header.frame_id = when, FRAME
                msg.format = "bgr8; jpeg compressed bgr8"
                msg.data = cv2.imencode(".jpg", image[..., ::-1])[1].tobytes()
                pub.publish(msg)
            return (None, None, *stereo_infos(scene.rig, when, FRAME))
        status = stream_until(h, compressed_camera, warned(
            "camera_info arrives but no images on /faults_transport/left/image_raw, "
            "/faults_transport/right/image_raw"), what="the missing images named")
        assert "needs image_transport:=compressed" in status["_message"]
        assert "QoS" in status["_message"] and "large-image Fast DDS profile" in \
            status["_message"]
        recover(h, scene)
    finally:
        stop(process, h)


def test_qos_incompatible_input_is_named_and_the_qos_in_effect_logged(scene):
    from rclpy.qos import QoSProfile, ReliabilityPolicy
    from sensor_msgs.msg import Image
    topic = "/faults_qos/left/image_raw"
    process, h = start("/faults_qos", "-p", f"qos_overrides.{topic}.subscription.reliability:="
                       "reliable", outputs=["disparity"], reliable_inputs=False)
    try:
        process.wait_for_output(r"QoS in effect \(after qos_overrides\): /faults_qos/left/"
                                r"image_raw reliable volatile keep_last 5; /faults_qos/right/"
                                r"image_raw best_effort volatile keep_last 5")
        best_effort = h.ctx.node.create_publisher(
            Image, topic, QoSProfile(depth=5, reliability=ReliabilityPolicy.BEST_EFFORT))

        def camera():
            msgs = list(good(h, scene))
            best_effort.publish(msgs[0])
            return (None, *msgs[1:])
        status = stream_until(h, camera, warned(f"{topic}: a publisher's QoS is incompatible"),
                              what="the QoS incompatibility named")
        assert int(status[f"qos_incompatible.{topic}"]) >= 1
        h.ctx.node.destroy_publisher(best_effort)
        recover(h, scene)
    finally:
        stop(process, h)


def _psmnet_args(kitti_weights):
    return ["-p", "backend:=psmnet", "-p", f"weights_path:={kitti_weights}", "-p",
            "device:=cpu", "-p", "engine:=reference", "-p", "diagnostics_period_seconds:=0.25"]


def test_sigterm_during_a_psmnet_frame_exits_cleanly_within_2_s(kitti_weights):
    """A robot's launch system stops nodes with SIGTERM; a CPU PSMNet frame takes seconds."""
    rig = StereoRig(700.0, 700.0, 620.0, 620.0, 187.0, 0.54, 1242, 375)
    rng = np.random.default_rng(0)
    left = rng.integers(0, 255, (375, 1242, 3), dtype=np.uint8)
    process = NodeProcess(["-r", "__ns:=/faults_term", *_psmnet_args(kitti_weights)]).start()
    h = None
    try:
        process.wait_for_output(r"ready: backend=psmnet", timeout=120)
        h = Harness(process, {"disparity": "stereo_msgs/DisparityImage"},
                    namespace="/faults_term")
        h.wait_until_connected(["disparity"])
        when = h.next_stamp()
        h.send(left, np.roll(left, -20, axis=1), "rgb8", *stereo_infos(rig, when, FRAME), when)
        h.wait_status(lambda s: "worker_in_flight_s" in s, timeout=30, what="a frame in flight")
        sent = time.monotonic()
        process.process.send_signal(signal.SIGTERM)
        code = process.process.wait(timeout=30)
        took = time.monotonic() - sent
        assert_clean_exit(process.output(), code)
        assert took < 2.0, f"exit took {took:.2f} s"
    finally:
        if h is not None:
            h.close()
        process.stop()
