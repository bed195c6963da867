"""PSMNet through the real node (subprocess, rclpy, Fast DDS) with the released KITTI 2015 weights
on crops of the sample KITTI pair: the outputs' values (cross-checked against SGBM), the options
that reach the model (engine, max_disparity, confidence_threshold masking every output) and the
combinations that stop the node with a clear error."""

from __future__ import annotations

import json
import time

import cv2
import numpy as np
import pytest

pytest.importorskip("rclpy")

from helpers.parameter_effects import send_pair, set_ok, start_node, valid_disparity  # noqa: E402
from helpers.process import assert_clean_exit  # noqa: E402
from helpers.ros import FRAME, OUTPUTS, Harness, NodeProcess, stop_node  # noqa: E402
from helpers.ros_messages import as_array, stereo_infos  # noqa: E402
from helpers.samples import kitti_crop  # noqa: E402

from stereo_depth_ros.core.camera import StereoRig  # noqa: E402
from stereo_depth_ros.ros.messages import pointcloud2_to_numpy  # noqa: E402

pytestmark = [pytest.mark.ros, pytest.mark.slow]


def test_psmnet_on_a_real_kitti_crop(assets_dir, kitti_weights):
    samples = assets_dir / "samples" / "kitti2015"
    calib = json.loads((samples / "stereo_calibration.json").read_text())
    left = cv2.imread(str(samples / "kitti_000046_left.png"))    # BGR
    right = cv2.imread(str(samples / "kitti_000046_right.png"))
    top, x0, height, width = left.shape[0] - 256, 400, 256, 320
    left = np.ascontiguousarray(left[top:top + height, x0:x0 + width])
    right = np.ascontiguousarray(right[top:top + height, x0:x0 + width])
    rig = StereoRig(fx=calib["fx"], fy=calib["fy"], cx_left=calib["cx0"] - x0,
                    cx_right=calib["cx1"] - x0, cy=calib["cy"] - top,
                    baseline_m=calib["baseline_meters"], width=width, height=height)
    # Its own namespace: other nodes of the suite may be running on the root topics.
    args = ["-r", "__ns:=/psm", "-p", "backend:=psmnet", "-p", f"weights_path:={kitti_weights}",
            "-p", "device:=cpu", "-p", "diagnostics_period_seconds:=0.5", "-p",
            "input_scale:=1.0",
            # everything published (no default mask): this test is about the network's output
            "-p", "confidence_threshold:=0.0", "-p", "max_relative_uncertainty:=0.0",
            "-p", "max_disparity_uncertainty:=0.0"]
    names = ["disparity", "disparity/confidence", "depth/image_rect"]
    with NodeProcess(args) as node:
        node.wait_for_output(r"ready: backend=psmnet", timeout=120.0)
        harness = Harness(node, {n: OUTPUTS[n] for n in names}, namespace="/psm")
        try:
            harness.wait_until_connected(names)
            when = harness.next_stamp()
            left_info, right_info = stereo_infos(rig, when, FRAME)
            started = time.monotonic()
            harness.send(left, right, "bgr8", left_info, right_info, when)
            out = harness.outputs_for(when, names, timeout=180.0)
            elapsed = time.monotonic() - started
            status = harness.wait_status(lambda s: int(s.get("pairs_published", 0)) >= 1)
        finally:
            harness.close()
            code = node.stop()
    assert code == 0, node.output()
    disp = out["disparity"]
    assert (disp.min_disparity, disp.max_disparity) == (0.0, 191.0)
    assert disp.delta_d == pytest.approx(1.0 / 256.0)
    assert disp.f == pytest.approx(calib["fx"]) and disp.t == pytest.approx(0.54)
    d = as_array(disp.image)
    valid = d >= disp.min_disparity
    assert valid.mean() > 0.95
    assert 5.0 < np.median(d[valid]) < 100.0  # a road scene: cars and road 5-60 m away
    confidence = as_array(out["disparity/confidence"])
    assert confidence.shape == d.shape
    assert np.all((confidence >= 0) & (confidence <= 1)) and confidence.mean() > 0.3
    # Cross-check against OpenCV SGBM on the same crop: most SGBM-valid pixels agree to 3 px.
    from stereo_depth_ros.backends.sgbm import SgbmBackend
    reference = SgbmBackend(num_disparities=128).compute(left[:, :, ::-1], right[:, :, ::-1])
    ref = reference.disparity
    both = np.isfinite(ref) & valid
    assert both.mean() > 0.3
    assert np.mean(np.abs(ref[both] - d[both]) < 3.0) > 0.7
    depth = as_array(out["depth/image_rect"])
    np.testing.assert_allclose(depth[valid & (d > 0)], disp.f * disp.t / d[valid & (d > 0)],
                               rtol=1e-5)
    print(f"\npsmnet 256x320 on CPU: pair in -> outputs {elapsed:.2f} s; infer p50 "
          f"{status['latency_ms.infer.p50']} ms")


PSM_MAX_DISPARITY = 64
CONFIDENCE_THRESHOLD = 0.85


def test_psmnet_options_reach_the_model_confidence_masks_all_outputs(assets_dir, kitti_weights):
    """engine auto on the CPU runs the exact fused engine, max_disparity sets the searched range,
    and confidence_threshold invalidates the same pixels in disparity, depth and points2."""
    names = ["disparity", "disparity/confidence", "depth/image_rect", "points2"]
    left, right, rig = kitti_crop(assets_dir)
    node = start_node(["-r", "__ns:=/psm", "-p", "backend:=psmnet", "-p", f"weights_path:="
                       f"{kitti_weights}", "-p", "device:=cpu", "-p", "engine:=auto",
                       "-p", f"max_disparity:={PSM_MAX_DISPARITY}", "-p", "use_color:=false",
                       "-p", f"confidence_threshold:={CONFIDENCE_THRESHOLD}",
                       "-p", "max_relative_uncertainty:=0.0",      # only the threshold masks here
                       "-p", "max_disparity_uncertainty:=0.0",
                       "-p", "diagnostics_period_seconds:=0.5"],
                      ready=r"ready: backend=psmnet", timeout=120)
    h = None
    try:
        node.wait_for_output(rf"ready: backend=psmnet \(range \[0, {PSM_MAX_DISPARITY}\) px; "
                             r"psmnet engine=exact on cpu: fused CPU engine, mode exact")
        h = Harness(node, {n: OUTPUTS[n] for n in names}, namespace="/psm")
        h.wait_until_connected(names)
        masked = send_pair(h, left, right, rig, names)
        set_ok(h, {"confidence_threshold": 0.0})
        unmasked = send_pair(h, left, right, rig, names)
    finally:
        stop_node(node, h)
    for out in (masked, unmasked):
        assert out["disparity"].max_disparity == PSM_MAX_DISPARITY - 1      # inclusive
    confidence = as_array(masked["disparity/confidence"])
    np.testing.assert_array_equal(confidence, as_array(unmasked["disparity/confidence"]))
    low = confidence < CONFIDENCE_THRESHOLD
    assert 0.05 < low.mean() < 0.6                    # the threshold splits this crop
    results = {}
    for key, out in (("masked", masked), ("unmasked", unmasked)):
        d = valid_disparity(out["disparity"])
        depth = as_array(out["depth/image_rect"])
        cloud = pointcloud2_to_numpy(out["points2"])
        assert np.nanmax(d) < PSM_MAX_DISPARITY
        results[key] = (d, depth, cloud)
        # One invalid set in all three outputs.
        np.testing.assert_array_equal(np.isnan(depth), np.isnan(d))
        for axis in ("x", "y", "z"):
            np.testing.assert_array_equal(np.isnan(cloud[axis]), np.isnan(d))
    d, depth, cloud = results["masked"]
    d0, depth0, cloud0 = results["unmasked"]
    assert np.isfinite(d0).all()
    np.testing.assert_array_equal(np.isnan(d), low)   # exactly the low-confidence pixels
    np.testing.assert_array_equal(d[~low], d0[~low])  # the rest untouched
    np.testing.assert_array_equal(depth[~low], depth0[~low])
    np.testing.assert_array_equal(cloud["z"][~low], cloud0["z"][~low])


def test_psmnet_engine_is_reported_and_bad_combinations_stop_the_node(kitti_weights):
    runs = {
        "reference": ["-p", "engine:=reference", "-p", "max_disparity:=48"],
        "bf16_reference": ["-p", "engine:=reference", "-p", "precision:=bf16"],
        "basic_model": ["-p", "model:=basic"],
    }
    base = ["-p", "backend:=psmnet", "-p", f"weights_path:={kitti_weights}", "-p", "device:=cpu"]
    nodes = {name: NodeProcess(base + ["-r", f"__ns:=/{name}"] + args).start()
             for name, args in runs.items()}
    try:
        codes = {name: nodes[name].wait_exit(120) for name in ("bf16_reference", "basic_model")}
        nodes["reference"].wait_for_output(
            r"ready: backend=psmnet \(range \[0, 48\) px; psmnet engine=reference on cpu: "
            r"reference eager model, fp32; frame on the host\)", timeout=120)
    finally:
        reference_code = nodes["reference"].stop()
        for node in nodes.values():
            node.stop()
    assert reference_code == 0, nodes["reference"].output()
    output = {name: node.output() for name, node in nodes.items()}
    assert codes == {"bf16_reference": 1, "basic_model": 1}, output
    assert (f"cannot start: cannot create the psmnet backend from '{kitti_weights}': ValueError: "
            "precision='bf16' with engine='reference' on the CPU") in output["bf16_reference"]
    assert (f"cannot start: cannot create the psmnet backend from '{kitti_weights}': "
            "CheckpointError: ") in output["basic_model"]
    assert ("does not match PSMNetBasic (the file looks like a 'stackhourglass' PSMNet, the "
            "model is 'basic')") in output["basic_model"]
    for name in ("bf16_reference", "basic_model"):
        assert_clean_exit(output[name])
        assert "ready:" not in output[name], output[name]
