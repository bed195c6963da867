"""End to end: stereo_depth_node as a subprocess, real rclpy/Fast DDS, values checked.

One SGBM node per input synchroniser (in-package; the real message_filters, exact and
approximate) serves the synthetic tests of this module (rectified pair with a cx offset, a
distorted pair with rectifying rotations, live input_scale, latest-wins under a flood). PSMNet
with the real KITTI 2015 weights on a crop of a real KITTI pair: test_node_psmnet.py.
"""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("rclpy")

from helpers.process import assert_clean_exit  # noqa: E402
from helpers.ros import FRAME, OUTPUTS, SYNC_VARIANTS, Harness, NodeProcess, wait_for  # noqa: E402
from helpers.ros_messages import (as_array, camera_info_msg, status_drops, stamp_ns,  # noqa: E402
                                  stereo_infos, time_ns)

from stereo_depth_ros.core.synthetic import make_scene, make_unrectified_pair  # noqa: E402
from stereo_depth_ros.ros.messages import pointcloud2_to_numpy, unpack_rgb  # noqa: E402

pytestmark = [pytest.mark.ros, pytest.mark.slow]

# fx * B = 200 px * 0.1 m = 20 px m; disparities as matched include cx_offset = 2 px. Even values
# keep the half-size disparities whole pixels (SGBM's sub-pixel fit is biased near half pixels).
CX_OFFSET = 2.0
BACKGROUND_D, FOREGROUND_D = 14.0, 22.0
BACKGROUND_Z, FOREGROUND_Z = 20.0 / 12.0, 1.0  # metres
FLOOD_BURST, FLOOD_MIN_PAIRS, FLOOD_MAX_PAIRS = 20, 80, 2000


@pytest.fixture(scope="module", params=SYNC_VARIANTS, ids=lambda variant: variant.id)
def sgbm(request):
    variant = request.param
    variant.requires(request)
    args = ["-p", "backend:=sgbm", "-p", "sgbm.num_disparities:=32", "-p", "sgbm.block_size:=5",
            "-p", "diagnostics_period_seconds:=0.25", "-p", "queue_size:=5", *variant.ros_args()]
    # Reliable inputs: a pair a test waits for is never lost in transport on a loaded machine
    # (best-effort delivery is covered by test_node_robot_inputs and test_node_faults).
    for topic in ("left/image_raw", "right/image_raw", "left/camera_info", "right/camera_info"):
        args += ["-p", f"qos_overrides./{topic}.subscription.reliability:=reliable"]
    with NodeProcess(args) as node:
        node.wait_for_output(r"ready: backend=sgbm")
        harness = Harness(node)
        harness.sync_variant = variant
        try:
            harness.wait_until_connected([n for n in OUTPUTS if n != "disparity/confidence"])
            yield harness
        finally:
            harness.close()
            code = node.stop()
            assert_clean_exit(node.output(), code)


@pytest.fixture(scope="module")
def scene():
    return make_scene(120, 160, background_disparity=BACKGROUND_D,
                      foreground_disparity=FOREGROUND_D, fx=200.0, baseline_m=0.1,
                      cx_offset=CX_OFFSET, texture_cell_px=2.0, seed=3)


def test_rectified_pair_depth_points_and_fields(sgbm, scene):
    when = sgbm.next_stamp()
    left_info, right_info = stereo_infos(scene.rig, when, FRAME)
    sgbm.send(scene.left, scene.right, "rgb8", left_info, right_info, when)
    names = [n for n in OUTPUTS if n != "disparity/confidence"]
    out = sgbm.outputs_for(when, names)

    for name, msg in out.items():  # every output: left optical frame, the pair's stamp
        assert msg.header.frame_id == FRAME, name
        assert msg.header.stamp == when, name

    disp = out["disparity"]
    assert disp.f == pytest.approx(200.0) and disp.t == pytest.approx(0.1)
    # SGBM searched [0, 32) px; published values are adjusted by -cx_offset.
    assert disp.min_disparity == pytest.approx(-CX_OFFSET)
    assert disp.max_disparity == pytest.approx(31.0 - CX_OFFSET)     # inclusive: 0 + 32 - 1
    assert disp.delta_d == pytest.approx(1.0 / 16.0)
    assert disp.image.encoding == "32FC1" and (disp.image.width, disp.image.height) == (160, 120)
    d = as_array(disp.image)
    valid = d >= disp.min_disparity
    roi = disp.valid_window
    # stereo_image_proc's window of potentially valid pixels: x from range + min + border - 1
    # (32 + 0 + 2 - 1; block 5), the border off the other sides, narrowed to the valid pixels.
    assert (roi.x_offset, roi.y_offset) == (33, 2) and roi.width > 80 and roi.height > 100
    assert roi.x_offset + roi.width <= 160 - 2 and roi.y_offset + roi.height <= 120 - 2
    assert not valid[:, :30].any()
    fg = (slice(50, 70), slice(70, 100))
    bg = (slice(95, 115), slice(60, 150))
    assert np.median(d[bg][valid[bg]]) == pytest.approx(BACKGROUND_D - CX_OFFSET, abs=0.1)
    assert np.median(d[fg][valid[fg]]) == pytest.approx(FOREGROUND_D - CX_OFFSET, abs=0.1)

    depth = as_array(out["depth/image_rect"])
    assert out["depth/image_rect"].encoding == "32FC1"
    assert np.all(np.isnan(depth[~valid]))  # REP 118: NaN, never 0
    both = valid & np.isfinite(depth)
    np.testing.assert_allclose(depth[both], disp.f * disp.t / d[both], rtol=1e-5)
    assert np.nanmedian(depth[bg]) == pytest.approx(BACKGROUND_Z, rel=0.01)
    assert np.nanmedian(depth[fg]) == pytest.approx(FOREGROUND_Z, rel=0.01)

    info = out["depth/camera_info"]
    assert (info.width, info.height) == (160, 120)
    k = np.asarray(info.k).reshape(3, 3)
    assert k[0, 0] == pytest.approx(200.0) and k[0, 2] == pytest.approx(scene.rig.cx_left)

    cloud_msg = out["points2"]
    assert (cloud_msg.height, cloud_msg.width) == (120, 160) and not cloud_msg.is_dense
    assert [f.name for f in cloud_msg.fields] == ["x", "y", "z", "rgb"]
    cloud = pointcloud2_to_numpy(cloud_msg)
    np.testing.assert_array_equal(np.isnan(cloud["z"]), np.isnan(depth))
    np.testing.assert_allclose(cloud["z"][both], depth[both])
    # Points on the known background plane, through the pinhole model of the left camera.
    v, u = np.mgrid[95:115, 60:150]
    z = cloud["z"][bg]
    ok = np.isfinite(z)
    assert np.median(np.abs(z[ok] - BACKGROUND_Z)) < 0.02
    np.testing.assert_allclose(cloud["x"][bg][ok], (u[ok] - scene.rig.cx_left) * z[ok] / 200.0,
                               rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(cloud["y"][bg][ok], (v[ok] - scene.rig.cy) * z[ok] / 200.0,
                               rtol=1e-4, atol=1e-5)
    # Colour in the cloud: the left image's RGB at every valid pixel.
    np.testing.assert_array_equal(unpack_rgb(cloud["rgb"])[both], scene.left[both])

    rect = out["matcher/left/image_rect"]
    assert rect.encoding == "rgb8"
    np.testing.assert_array_equal(as_array(rect), scene.left)  # already rectified: untouched
    colour = out["disparity/image_color"]
    assert colour.encoding == "bgr8" and (colour.width, colour.height) == (160, 120)
    assert as_array(colour)[valid].any()
    assert not sgbm.out["disparity/confidence"].snapshot()  # SGBM has no confidence


def test_distorted_pair_is_rectified_before_matching(sgbm, scene):
    pair = make_unrectified_pair(scene, distortion=(-0.12, 0.03, 0.001, -0.0015, 0.0),
                                 rotation_deg=1.5)
    when = sgbm.next_stamp()
    lc, rc = pair.left_calibration, pair.right_calibration
    left_info = camera_info_msg(lc.K, lc.D, lc.R, lc.P, 160, 120, when, FRAME)
    right_info = camera_info_msg(rc.K, rc.D, rc.R, rc.P, 160, 120, when, "right")
    # bgr8 on the wire this time.
    sgbm.send(pair.left[:, :, ::-1], pair.right[:, :, ::-1], "bgr8", left_info, right_info, when)
    out = sgbm.outputs_for(when, ["disparity", "depth/image_rect", "matcher/left/image_rect",
                                  "points2"])
    depth = as_array(out["depth/image_rect"])
    truth = scene.depth
    inner = (slice(15, 105), slice(40, 145))
    ratio = depth[inner] / truth[inner]
    ok = np.isfinite(ratio)
    assert ok.mean() > 0.6
    assert np.median(np.abs(ratio[ok] - 1.0)) < 0.02
    assert np.mean(np.abs(ratio[ok] - 1.0) < 0.05) > 0.8
    # Without rectification the rows would not match: the rectified left image is the scene's.
    rect = as_array(out["matcher/left/image_rect"]).astype(np.float32)
    error = np.abs(rect[inner] - scene.left[inner].astype(np.float32))
    assert np.median(error) < 20.0
    assert out["disparity"].f == pytest.approx(200.0)
    sgbm.node.wait_for_output("rectification maps built")


def test_input_scale_publishes_scaled_geometry(sgbm, scene):
    from rcl_interfaces.msg import Parameter as ParameterMsg
    from rcl_interfaces.msg import ParameterType, ParameterValue
    from rcl_interfaces.srv import SetParameters

    client = sgbm.ctx.node.create_client(SetParameters, "/stereo_depth_node/set_parameters")
    try:
        assert client.wait_for_service(timeout_sec=20.0)

        def set_param(name, value):
            request = SetParameters.Request(parameters=[ParameterMsg(
                name=name, value=ParameterValue(type=ParameterType.PARAMETER_DOUBLE,
                                                double_value=value))])
            future = client.call_async(request)
            wait_for(future.done, 20.0, what=f"set {name}")
            return future.result().results[0]

        rejected = set_param("input_scale", 2.0)
        assert not rejected.successful and rejected.reason
        assert set_param("input_scale", 0.5).successful
        when = sgbm.next_stamp()
        left_info, right_info = stereo_infos(scene.rig, when, FRAME)
        sgbm.send(scene.left, scene.right, "rgb8", left_info, right_info, when)
        out = sgbm.outputs_for(when, ["disparity", "depth/image_rect", "depth/camera_info",
                                      "points2", "matcher/left/image_rect"])
        assert set_param("input_scale", 1.0).successful
    finally:
        sgbm.ctx.node.destroy_client(client)
    disp = out["disparity"]
    assert (disp.image.width, disp.image.height) == (80, 60)
    assert disp.f == pytest.approx(100.0) and disp.t == pytest.approx(0.1)
    d = as_array(disp.image)
    # Matched on the half-size pair: (14 - 2) * 0.5 = 6 px after the (halved) cx offset.
    assert np.median(d[48:58, 30:75]) == pytest.approx(6.0, abs=0.15)
    info = out["depth/camera_info"]
    assert (info.width, info.height) == (80, 60)
    assert np.asarray(info.k)[0] == pytest.approx(100.0)
    assert np.asarray(info.k)[2] == pytest.approx(scene.rig.cx_left * 0.5)
    depth = as_array(out["depth/image_rect"])
    assert depth.shape == (60, 80)
    assert np.nanmedian(depth[48:58, 30:75]) == pytest.approx(BACKGROUND_Z, rel=0.03)
    assert (out["points2"].height, out["points2"].width) == (60, 80)
    assert as_array(out["matcher/left/image_rect"]).shape == (60, 80, 3)


def test_latest_pair_wins_when_input_outpaces_the_matcher(sgbm):
    big = make_scene(240, 320, background_disparity=BACKGROUND_D, foreground_disparity=None,
                     fx=200.0, baseline_m=0.1, cx_offset=CX_OFFSET, texture_cell_px=2.0, seed=5)
    before = sgbm.latest_status()

    def delta(status, key):
        return int(status.get(key, 0)) - int(before.get(key, 0))

    # As fast as Python publishes (far faster than match + 7 outputs), in bursts, until the node
    # has counted a pair dropped as busy: how many bursts that takes depends on the machine's
    # load, not on a clock. The inputs are reliable, so every pair's messages reach the node.
    # The pairs' stamps lie more than twice the approximate policy's tolerance apart, so it can
    # only join a pair's own four messages: 1 ms apart, a flood let it join one pair's left image
    # with the previous pair's right one, and then the newest pair never came out whole (seen
    # once in CI with message_filters' ApproximateTimeSynchronizer).
    step_s = 3 * sgbm.sync_variant.tolerance_s
    sent = []
    while len(sent) < FLOOD_MAX_PAIRS and not (
            len(sent) >= FLOOD_MIN_PAIRS and delta(sgbm.latest_status(), "dropped.busy") > 0):
        for _ in range(FLOOD_BURST):
            when = sgbm.next_stamp(min_step_s=step_s)
            left_info, right_info = stereo_infos(big.rig, when, FRAME)
            sgbm.send(big.left, big.right, "rgb8", left_info, right_info, when)
            sent.append(when)
    # The newest pair is processed, not a backlog behind it.
    newest_ns = time_ns(sent[-1])
    sgbm.out["disparity"].wait_for(lambda m: stamp_ns(m) == newest_ns, 60.0,
                                   what="an output for the last pair sent")
    stamps = [stamp_ns(m) for m in sgbm.out["disparity"].snapshot()
              if stamp_ns(m) >= time_ns(sent[0])]

    def settled(status):  # counted after every output seen above was published
        return (status.get("pending_pairs") == "0"
                and delta(status, "pairs_published") >= len(stamps)
                and int(status["pairs_processed"]) + int(status.get("dropped.busy", 0))
                == int(status["pairs_in"]))
    status = sgbm.wait_status(settled, what="accounting to settle after the last output")
    pairs_in, processed = delta(status, "pairs_in"), delta(status, "pairs_processed")
    busy = delta(status, "dropped.busy")
    assert busy > 0, status          # older pending pairs were dropped and counted
    assert processed < pairs_in <= len(sent)
    assert int(status["pending_pairs_max"]) <= 1  # never more than one pair waiting
    # Outputs come in stamp order and end with the newest pair: nothing queued behind.
    assert stamps == sorted(stamps) and stamps[-1] == newest_ns
    stages = ("convert", "rectify", "infer", "postprocess", "publish", "total")
    # The total covers every stage of the same frames.
    assert float(status["latency_ms.total.mean"]) >= max(
        float(status[f"latency_ms.{stage}.mean"]) for stage in stages[:-1])
    latencies = ", ".join(f"{s}={status[f'latency_ms.{s}.p50']}" for s in stages)
    print(f"\nflood: sent {len(sent)}, synchronized {pairs_in}, processed {processed}, "
          f"dropped busy {busy}; latency p50 ms: {latencies}; input age p50/max ms "
          f"{status['input_age_ms.p50']}/{status['input_age_ms.max']}; "
          f"drops {status_drops(status)}")


def test_diagnostics_report_rates_and_counts(sgbm):
    status = sgbm.wait_status(lambda s: int(s.get("pairs_published", 0)) >= 3)
    for key in ("rate_in_hz", "rate_out_hz", "dropped_total", "pending_pairs",
                "messages_in./left/image_raw", "messages_in./right/camera_info",
                "latency_ms.infer.mean", "input_age_ms.p95", "backend", "sync"):
        assert key in status, key
    assert status["backend"] == "sgbm"
    assert status["sync"] == sgbm.sync_variant.synchronizer
    assert f"sync={sgbm.sync_variant.synchronizer} " \
        f"{'approximate' if sgbm.sync_variant.approximate else 'exact'}" in sgbm.node.output()


# ------------------------------------------------------------- post-processing, in process
class _FakeBackend:
    """Constant disparity 10 px with a confidence ramp 0..1 along x (a stand-in matcher)."""

    name = "fake"
    min_disparity, max_disparity, delta_d = 0.0, 64.0, 1.0 / 256.0

    def check_input_size(self, width, height):
        pass

    def compute(self, left, right):
        from stereo_depth_ros.backends.base import DisparityResult
        height, width = left.shape[:2]
        disparity = np.full((height, width), 10.0, np.float32)
        disparity[:, :4] = np.nan
        confidence = np.tile(np.linspace(0.0, 1.0, width, dtype=np.float32), (height, 1))
        return DisparityResult(disparity, confidence, {})


class _FakePublisher:
    def __init__(self, topic_name):
        self.topic_name, self.messages = topic_name, []

    def get_subscription_count(self):
        return 1

    def publish(self, msg):
        self.messages.append(msg)


def test_confidence_threshold_depth_limits_and_colour_switch_in_process(scene):
    """The worker's post-processing with a fake matcher (no subprocess, no DDS)."""
    import rclpy
    from rclpy.context import Context
    from rclpy.parameter import Parameter
    from stereo_depth_ros.ros.messages import pointcloud2_to_numpy
    from stereo_depth_ros.ros.stereo_depth_node import StereoDepthNode
    from helpers.ros_messages import image_msg, stamp

    context = Context()
    rclpy.init(context=context)
    node = None
    try:
        node = StereoDepthNode(context=context, parameter_overrides=[
            Parameter("backend", value="sgbm"), Parameter("confidence_threshold", value=0.5),
            Parameter("max_depth_m", value=1.9), Parameter("use_color", value=False)])
        node._backend = node._pipeline.backend = _FakeBackend()
        names = ("disparity", "depth", "depth_info", "points", "left_rect", "confidence",
                 "color")
        fakes = {name: _FakePublisher(name) for name in names}
        for name, fake in fakes.items():
            setattr(node, f"_pub_{name}", fake)
        when = stamp(7, 7)
        left_info, right_info = stereo_infos(scene.rig, when, FRAME)
        node._process(image_msg(scene.left, "rgb8", when, FRAME),
                      image_msg(scene.right, "rgb8", when, FRAME), left_info, right_info)
        assert all(len(f.messages) == 1 for f in fakes.values()), {
            n: len(f.messages) for n, f in fakes.items()}
        disp = fakes["disparity"].messages[0]
        d = as_array(disp.image)
        confidence = as_array(fakes["confidence"].messages[0])
        np.testing.assert_allclose(confidence[0], np.linspace(0, 1, 160), atol=1e-6)
        kept = confidence >= 0.5
        assert np.all(d[~kept] < disp.min_disparity)         # masked by confidence_threshold
        assert np.allclose(d[kept], 10.0 - CX_OFFSET)
        assert disp.valid_window.x_offset == int(np.argmax(kept[0]))
        depth = as_array(fakes["depth"].messages[0])
        # 20 / 8 = 2.5 m is beyond max_depth_m = 1.9: depth and points NaN, disparity kept.
        assert np.all(np.isnan(depth))
        cloud_msg = fakes["points"].messages[0]
        assert [f.name for f in cloud_msg.fields] == ["x", "y", "z"]    # use_color false
        assert np.all(np.isnan(pointcloud2_to_numpy(cloud_msg)["z"]))
        assert fakes["color"].messages[0].encoding == "bgr8"
        status = node.diagnostics_snapshot()
        assert status["pairs_processed"] == 1 and status["pairs_published"] == 1
    finally:
        if node is not None:
            node.destroy_node()
        rclpy.try_shutdown(context=context)
