"""Bad input: every case gives a specific, throttled log line and a diagnostics counter, the node
keeps running, and the next good pair is processed normally. Start-up failures exit non-zero with
the reason.
"""

from __future__ import annotations

import math
import re

import numpy as np
import pytest

pytest.importorskip("rclpy")

from helpers.process import assert_clean_exit  # noqa: E402
from helpers.ros import FRAME, SYNC_VARIANTS, Harness, NodeProcess  # noqa: E402
from helpers.ros_messages import image_msg, stamp, stereo_infos, time_ns  # noqa: E402

from stereo_depth_ros.core.camera import StereoRig  # noqa: E402
from stereo_depth_ros.core.synthetic import make_scene  # noqa: E402
from stereo_depth_ros.drop_reasons import DROP_REASONS  # noqa: E402

pytestmark = [pytest.mark.ros, pytest.mark.slow]

NAMES = ["disparity", "depth/image_rect"]


@pytest.fixture(scope="module")
def scene():
    return make_scene(96, 128, background_disparity=10.0, foreground_disparity=None,
                      fx=200.0, baseline_m=0.1, texture_cell_px=2.0, seed=11)


@pytest.fixture(scope="module", params=SYNC_VARIANTS, ids=lambda variant: variant.id)
def node(request):
    variant = request.param
    variant.requires(request)
    args = ["-p", "backend:=sgbm", "-p", "sgbm.num_disparities:=32",
            "-p", "diagnostics_period_seconds:=0.25", "-p", "queue_size:=3",
            *variant.ros_args()]
    with NodeProcess(args) as process:
        process.wait_for_output(r"ready: backend=sgbm")
        # Stamps at least 0.5 s apart: the synchroniser's frame period estimate then separates a
        # 50 ms stamp skew from a lost frame.
        harness = Harness(process, {n: "stereo_msgs/DisparityImage" if n == "disparity" else
                                    "sensor_msgs/Image" for n in NAMES}, min_step_s=0.5)
        harness.sync_variant = variant
        try:
            harness.wait_until_connected(NAMES)
            yield harness
        finally:
            harness.close()
            code = process.stop()
            assert_clean_exit(process.output(), code)


def send_good(h, scene):
    when = h.next_stamp()
    left_info, right_info = stereo_infos(scene.rig, when, FRAME)
    h.send(scene.left, scene.right, "rgb8", left_info, right_info, when)
    out = h.outputs_for(when, NAMES)
    d = np.frombuffer(out["disparity"].image.data, np.float32).reshape(96, 128)
    assert np.median(d[20:80, 50:120]) == pytest.approx(10.0, abs=0.2)
    return when


def counter(h, key):
    return int(h.latest_status().get(f"dropped.{key}", 0))


def expect_drop(h, scene, reason, pattern, send_bad):
    """send_bad(h) -> None; then a log line /pattern/, counter +1, next good pair processed."""
    start_line = len(h.node.lines())
    before = counter(h, reason)
    send_bad(h)
    h.node.wait_for_output(pattern, start_line=start_line)
    h.wait_status(lambda s: int(s.get(f"dropped.{reason}", 0)) >= before + 1,
                  what=f"dropped.{reason} to count the pair")
    send_good(h, scene)


def bad_pair(h, scene, left=None, right=None, left_info=None, right_info=None,
             encoding="rgb8"):
    when = h.next_stamp()
    good_left, good_right = stereo_infos(scene.rig, when, FRAME)
    h.send_msgs(image_msg(scene.left if left is None else left, encoding, when, FRAME),
                image_msg(scene.right if right is None else right, encoding, when, "r"),
                left_info(good_left) if left_info else good_left,
                right_info(good_right) if right_info else good_right)


def test_good_pair_first(node, scene):
    send_good(node, scene)


def test_left_right_size_mismatch(node, scene):
    expect_drop(node, scene, "size_mismatch",
                r"left/right image sizes differ: /left/image_raw is 128x96, /right/image_raw "
                r"is 120x96",
                lambda h: bad_pair(h, scene, right=np.ascontiguousarray(scene.right[:, :120])))


def test_image_and_camera_info_size_mismatch(node, scene):
    small = StereoRig(200.0, 200.0, 60.0, 60.0, 40.0, 0.1, 120, 80)

    def send(h):
        when = h.next_stamp()
        h.send(scene.left, scene.right, "rgb8", *stereo_infos(small, when, FRAME), when)
    expect_drop(node, scene, "camera_info_size_mismatch",
                r"image/camera_info size mismatch: /left/image_raw is 128x96 but "
                r"/left/camera_info says 120x80", send)


def test_unsupported_encoding(node, scene):
    def send(h):
        when = h.next_stamp()
        left = image_msg(scene.left[:, :, 0], "mono8", when, FRAME)
        left.encoding = "nv21"                    # a camera format no ROS encoding names
        right = image_msg(scene.right[:, :, 0], "mono8", when, FRAME)
        h.send_msgs(left, right, *stereo_infos(scene.rig, when, FRAME))
    expect_drop(node, scene, "unsupported_encoding",
                r"/left/image_raw: unsupported encoding 'nv21' \(supported: mono8", send)


def test_data_shorter_than_step_times_height(node, scene):
    def send(h):
        when = h.next_stamp()
        right = image_msg(scene.right, "rgb8", when, FRAME)
        right.data = right.data[:1000]
        h.send_msgs(image_msg(scene.left, "rgb8", when, FRAME), right,
                    *stereo_infos(scene.rig, when, FRAME))
    expect_drop(node, scene, "bad_image_data",
                r"/right/image_raw: data has 1000 bytes, shorter than step\*height=384\*96=36864",
                send)


def _zero_k(info):
    info.k = np.zeros(9)
    return info


def _zero_p(info):
    info.p = np.zeros(12)
    return info
    return info


def test_uncalibrated_camera_info(node, scene):
    expect_drop(node, scene, "uncalibrated_camera_info",
                r"/left/camera_info P is all zero: the camera is not calibrated",
                lambda h: bad_pair(h, scene, left_info=_zero_p))


def test_zero_k_with_distortion_cannot_be_undistorted(node, scene):
    def zero_k_with_d(info):
        info.k = np.zeros(9)
        info.d = [0.1, 0.0, 0.0, 0.0, 0.0]
        return info
    expect_drop(node, scene, "uncalibrated_camera_info",
                r"/right/camera_info K is all zero but D=\[0.1, 0.0, 0.0, 0.0, 0.0\] is not",
                lambda h: bad_pair(h, scene, right_info=zero_k_with_d))


def test_zero_k_with_valid_p_is_used_through_p(node, scene):
    """stereo_image_proc's fixtures carry only P (K all zero): depth as from the full info."""
    when = node.next_stamp()
    left_info, right_info = stereo_infos(scene.rig, when, FRAME)
    _zero_k(left_info)
    _zero_k(right_info)
    node.send(scene.left, scene.right, "rgb8", left_info, right_info, when)
    out = node.outputs_for(when, NAMES)
    d = np.frombuffer(out["disparity"].image.data, np.float32).reshape(96, 128)
    depth = np.frombuffer(out["depth/image_rect"].data, np.float32).reshape(96, 128)
    assert np.median(d[20:80, 50:120]) == pytest.approx(10.0, abs=0.2)
    assert np.median(depth[20:80, 50:120]) == pytest.approx(200.0 * 0.1 / 10.0, rel=0.02)


def _right_tx(value):
    def change(info):
        p = np.asarray(info.p, np.float64).copy()
        p[3] = value
        info.p = p
        return info
    return change


def expect_disparity_only(h, scene, problem, pattern, right_info):
    """The pair's disparity is published, its depth is not: counted, one WARN naming fields."""
    start_line = len(h.node.lines())
    key = f"depth_unavailable.{problem}"
    before = int(h.latest_status().get(key, 0))
    when = h.next_stamp()
    left_info, good_right = stereo_infos(scene.rig, when, FRAME)
    h.send(scene.left, scene.right, "rgb8", left_info, right_info(good_right), when)
    out = h.outputs_for(when, ["disparity"])
    d = np.frombuffer(out["disparity"].image.data, np.float32).reshape(96, 128)
    assert np.median(d[20:80, 50:120]) == pytest.approx(10.0, abs=0.2)
    h.node.wait_for_output(pattern, start_line=start_line)
    h.wait_status(lambda s: int(s.get(key, 0)) >= before + 1, what=f"{key} counted")
    send_good(h, scene)          # depth again with the good calibration ...
    assert not h.received_for(when, "depth/image_rect")   # ... and none for the pair before


def test_zero_baseline_publishes_disparity_only(node, scene):
    expect_disparity_only(
        node, scene, "zero_baseline",
        r"no metric depth from this calibration \(/left/camera_info P\[0,3\]=0.0 and "
        r"/right/camera_info P\[0,3\]=0.0 give baseline 0 m", _right_tx(0.0))


def test_wrong_sign_baseline_publishes_disparity_only(node, scene):
    expect_disparity_only(node, scene, "negative_baseline",
                          r"give baseline -0.1 m: .*are left and right swapped\?",
                          _right_tx(20.0))


def test_non_finite_baseline_publishes_disparity_only(node, scene):
    expect_disparity_only(node, scene, "non_finite_baseline",
                          r"/right/camera_info P\[0,3\]=nan give baseline nan m: P\[0,3\] must "
                          r"be finite", _right_tx(math.nan))


def test_nan_in_calibration(node, scene):
    def nan_d(info):
        info.d = [0.0, 0.0, math.nan, 0.0, 0.0]
        return info
    expect_drop(node, scene, "nan_in_calibration", r"nan in /right/camera_info D\[2\]",
                lambda h: bad_pair(h, scene, right_info=nan_d))


def test_stamps_too_far_apart(node, scene):
    def send(h):
        when = h.next_stamp()
        skewed_ns = time_ns(when) + 50_000_000
        skewed = stamp(skewed_ns // 1_000_000_000, skewed_ns % 1_000_000_000)
        left_info, right_info = stereo_infos(scene.rig, when, FRAME)
        right_info.header.stamp = skewed
        h.send_msgs(image_msg(scene.left, "rgb8", when, FRAME),
                    image_msg(scene.right, "rgb8", skewed, FRAME), left_info, right_info)
        # The skewed frame is given up when the next complete set arrives.
        send_good(h, scene)
    expect_drop(node, scene, "stamp_skew",
                r"stamps too far apart: /left/image_raw stamp \d+\.\d+, nearest "
                r"/right/image_raw stamp \d+\.\d+ \(\+0\.050000 s; "
                + re.escape(node.sync_variant.policy_text()) + r"\)",
                send)


def test_image_too_narrow_for_the_search_range(node, scene):
    narrow = StereoRig(200.0, 200.0, 15.0, 15.0, 47.5, 0.1, 30, 96)

    def send(h):
        when = h.next_stamp()
        h.send(np.ascontiguousarray(scene.left[:, :30]), np.ascontiguousarray(scene.right[:, :30]),
               "rgb8", *stereo_infos(narrow, when, FRAME), when)
    expect_drop(node, scene, "image_too_small",
                r"the matcher input is 30 px wide, but SGBM searches up to 32 px", send)


def test_repeated_problem_is_logged_once_but_counted_every_time(node, scene):
    start_line = len(node.node.lines())
    before = counter(node, "uncalibrated_camera_info")
    for count in range(1, 4):  # one at a time: a pair sent while the worker is busy is
        bad_pair(node, scene, right_info=_zero_p)  # replaced by the next (dropped.busy)
        node.wait_status(lambda s: int(s.get("dropped.uncalibrated_camera_info", 0))
                         >= before + count, what=f"drop {count} counted")
    send_good(node, scene)
    lines = [line for line in node.node.lines()[start_line:]
             if "/right/camera_info P is all zero" in line]
    assert len(lines) == 1, lines
    assert "more since the last report" not in lines[0]


def test_node_still_healthy_after_all_of_it(node, scene):
    send_good(node, scene)   # processed: its outputs arrived
    status = node.wait_status(lambda s: int(s["pairs_published"]) >= 10)
    assert node.node.process.poll() is None
    drops = {key[len("dropped."):]: int(value) for key, value in status.items()
             if key.startswith("dropped.")}
    assert set(drops) <= set(DROP_REASONS), drops   # every counter is a documented reason
    assert int(status["dropped_total"]) == sum(drops.values()) >= 10


@pytest.mark.parametrize("variant", SYNC_VARIANTS, ids=lambda variant: variant.id)
def test_camera_info_never_arriving(scene, variant, request):
    """Images alone: throttled 'waiting for camera_info on <topic>', diagnostics say so too."""
    variant.requires(request)
    args = ["-r", "__ns:=/noinfo", "-p", "backend:=sgbm", "-p", "queue_size:=2",
            "-p", "diagnostics_period_seconds:=0.25", "-p", "sgbm.num_disparities:=32",
            *variant.ros_args()]
    with NodeProcess(args) as process:
        process.wait_for_output(r"ready: backend=sgbm")
        h = Harness(process, {"disparity": "stereo_msgs/DisparityImage"}, namespace="/noinfo",
                    min_step_s=0.1)
        try:
            h.wait_until_connected(["disparity"])
            key = "messages_in./noinfo/left/image_raw"
            for count in range(1, 7):  # > 2 * queue_size frames leave the books and are counted
                when = h.next_stamp()
                _, right_info = stereo_infos(scene.rig, when, FRAME)
                h.send_msgs(image_msg(scene.left, "rgb8", when, FRAME),
                            image_msg(scene.right, "rgb8", when, FRAME), None, right_info)
                # one frame at a time: a burst would overflow the best-effort reader (depth 2)
                h.wait_status(lambda s: int(s.get(key, 0)) >= count, what=f"frame {count} in")
            status = h.wait_status(lambda s: int(s.get("dropped.missing_camera_info", 0)) >= 1)
            status = h.wait_status(lambda s: s["_level"] == 1, what="WARN")   # within 5 s
            assert status["_message"].startswith(
                "images arrive but no camera_info on /noinfo/left/camera_info (none since the "
                "node subscribed")
            process.wait_for_output(r"images arrive but no camera_info on "
                                    r"/noinfo/left/camera_info")
            assert int(status["messages_in./noinfo/left/camera_info"]) == 0
            # Once the info comes, pairs flow.
            when = h.next_stamp()
            h.send(scene.left, scene.right, "rgb8", *stereo_infos(scene.rig, when, FRAME), when)
            h.outputs_for(when, ["disparity"])
        finally:
            h.close()
            assert process.stop() == 0, process.output()


# ------------------------------------------------------------------ start-up failures
def run_to_exit(args, timeout=120.0):
    process = NodeProcess(args).start()
    try:
        code = process.wait_exit(timeout)
    finally:
        process.stop()
    return code, process.output()


def test_missing_weights_fail_at_start_with_path_and_hint():
    code, output = run_to_exit(["-p", "backend:=psmnet", "-p", "weights_path:=/nope/psm.tar"])
    assert_clean_exit(output, code, expected=1)
    assert "cannot start: weights_path '/nope/psm.tar' does not exist" in output
    assert "make assets" in output


def test_empty_weights_path_explains_what_to_do(tmp_path):
    params = tmp_path / "params.yaml"
    params.write_text('/**:\n  ros__parameters:\n    backend: psmnet\n    weights_path: ""\n')
    code, output = run_to_exit(["--params-file", str(params)])
    assert code == 1, output
    assert "weights_path is empty but backend is psmnet" in output


def test_corrupt_weights_fail_at_start_with_path_and_reason(tmp_path):
    bad = tmp_path / "corrupt.tar"
    bad.write_bytes(b"this is not a checkpoint" * 100)
    code, output = run_to_exit(["-p", "backend:=psmnet", "-p", f"weights_path:={bad}",
                                "-p", "device:=cpu"])
    assert_clean_exit(output, code, expected=1)
    assert f"cannot create the psmnet backend from '{bad}'" in output


def test_cuda_requested_but_absent(kitti_weights):
    import torch
    if torch.cuda.is_available():
        pytest.skip("CUDA is available here")
    code, output = run_to_exit(["-p", "backend:=psmnet", "-p", f"weights_path:={kitti_weights}",
                                "-p", "device:=cuda"])
    assert code == 1, output
    assert "device='cuda' was requested but CUDA is not available" in output


def test_bad_parameter_value_at_start():
    code, output = run_to_exit(["-p", "backend:=tensorrt"])
    assert code == 1, output
    assert "backend='tensorrt' is not allowed: expected one of psmnet, sgbm" in output


def test_node_started_with_sigint_ignored_stops_cleanly_on_ctrl_c():
    """Started from a background shell (SIGINT ignored, inherited): Python raises no
    KeyboardInterrupt, rclpy's own handler shuts the context down under the spin; the node
    still stops with status 0 and no traceback."""
    import shlex
    import sys

    command = shlex.join([sys.executable, "-m", "stereo_depth_ros.ros.stereo_depth_node",
                          "--ros-args", "-p", "backend:=sgbm", "-r", "__ns:=/ignored_int"])
    process = NodeProcess(argv=["bash", "-c", f"trap '' INT; exec {command}"]).start()
    try:
        process.wait_for_output(r"ready: backend=sgbm", timeout=60)
    finally:
        code = process.stop()
    assert_clean_exit(process.output(), code)
