"""pipeline.StereoPipeline's device stages (torch) give what the host stages give; run on the
CPU here, on a GPU in test_cuda.py."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch

from helpers.pipeline import BASELINE, FX, HEIGHT, WIDTH, make_calibration, textured_pair
from stereo_depth_ros.backends import make_backend
from stereo_depth_ros.core.rectify import Rectifier
from stereo_depth_ros.core.synthetic import make_scene
from stereo_depth_ros.pipeline import PipelineOptions, StereoPipeline
from stereo_depth_ros.pipeline import device as ops


@pytest.fixture(scope="module")
def psmnet():
    torch.manual_seed(0)
    return make_backend("psmnet", weights_path=None, max_disparity=32, device="cpu",
                        engine="exact")


# ---------------------------------------------------------------------------- device stages

def test_device_remap_is_cv2_remap():
    calibration = make_calibration()
    rectifier = Rectifier(calibration.left, calibration.right, WIDTH, HEIGHT)
    rng = np.random.default_rng(0)
    for shape in ((HEIGHT, WIDTH, 3), (HEIGHT, WIDTH)):
        image = rng.integers(0, 256, shape, np.uint8)
        for index in (0, 1):
            remap = ops.DeviceRemap(*rectifier.fixed_point_maps(index), (HEIGHT, WIDTH),
                                    torch.device("cpu"))
            got = remap(torch.from_numpy(image)).numpy()
            want = rectifier.rectify_left(image) if index == 0 else rectifier.rectify_right(image)
            assert got.shape == want.shape and got.dtype == np.uint8
            assert np.abs(got.astype(int) - want).max() <= 1
            assert (got != want).mean() < 0.01
            assert (got[want == 0] == 0).all()                   # border pixels stay black


@pytest.mark.parametrize("scale", [0.5, 0.37, 0.8])
def test_device_area_resize_is_cv2_inter_area(scale):
    rng = np.random.default_rng(2)
    image = rng.integers(0, 256, (HEIGHT, WIDTH, 3), np.uint8)
    size = (round(WIDTH * scale), round(HEIGHT * scale))
    want = cv2.resize(image, size, interpolation=cv2.INTER_AREA)
    resize = ops.DeviceAreaResize((HEIGHT, WIDTH), (size[1], size[0]), torch.device("cpu"))
    got = resize(torch.from_numpy(image)).numpy()
    assert got.shape == want.shape and np.abs(got.astype(int) - want).max() <= 1
    mono = resize(torch.from_numpy(image[..., 0].copy())).numpy()
    assert np.abs(mono.astype(int) - want[..., 0]).max() <= 1


def test_device_depth_and_points_are_core_geometry():
    from stereo_depth_ros.core.geometry import (clip_depth, depth_to_points,
                                                disparity_to_depth)
    rig = make_calibration().rig
    rng = np.random.default_rng(3)
    disparity = rng.uniform(-2, 40, (HEIGHT, WIDTH)).astype(np.float32)
    disparity[0, :5] = np.nan
    depth = disparity_to_depth(disparity, rig.fx, rig.baseline_m, rig.cx_offset)
    got = ops.depth_from_disparity(torch.from_numpy(disparity), rig).numpy()
    np.testing.assert_allclose(got, depth, rtol=1e-6, equal_nan=True)
    clipped = clip_depth(depth, 1.0, 5.0)
    got_clipped = ops.clip_depth(torch.from_numpy(depth), 1.0, 5.0).numpy()
    np.testing.assert_array_equal(got_clipped, clipped)
    points = ops.PointProjector(rig, torch.device("cpu"))(torch.from_numpy(clipped)).numpy()
    np.testing.assert_allclose(points, depth_to_points(clipped, rig.fx, rig.fy, rig.cx_left,
                                                       rig.cy), rtol=1e-6, equal_nan=True)


@pytest.mark.parametrize("options", [
    PipelineOptions(),
    PipelineOptions(input_scale=0.6, confidence_threshold=0.3, min_depth_m=1.0,
                    max_depth_m=20.0)], ids=["plain", "scaled-thresholded-clipped"])
@pytest.mark.slow
def test_device_stages_give_what_the_host_stages_give(psmnet, options):
    left, right = textured_pair()
    calibration = make_calibration()
    host = StereoPipeline(psmnet, options, stages="host").process(left, right, calibration)
    device = StereoPipeline(psmnet, options, stages="device").process(left, right, calibration)
    assert np.abs(host.left.astype(int) - device.left).max() <= 1
    assert host.rig == device.rig
    for name in ("disparity", "confidence", "depth_m", "points"):
        got, want = getattr(device, name), getattr(host, name)
        assert got.shape == want.shape, name
        np.testing.assert_array_equal(np.isfinite(got), np.isfinite(want), err_msg=name)
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5, equal_nan=True,
                                   err_msg=name)
    assert set(device.timings_s) >= {"upload", "rectify", "match", "download", "total"}


def test_stages_option():
    sgbm = make_backend("sgbm", num_disparities=16)
    assert StereoPipeline(sgbm).stages == "host"
    with pytest.raises(ValueError, match="runs on the host"):
        StereoPipeline(sgbm, stages="device")
    with pytest.raises(ValueError, match="stages="):
        StereoPipeline(sgbm, stages="gpu")


@pytest.mark.slow
def test_confidence_threshold_masks_every_output(kitti_weights):
    psmnet = make_backend("psmnet", weights_path=kitti_weights, device="cpu", engine="exact")
    scene = make_scene(HEIGHT, WIDTH, fx=FX, baseline_m=BASELINE, texture_cell_px=2.0)
    plain = StereoPipeline(psmnet).process(scene.left, scene.right, scene.rig)
    threshold = float(np.median(plain.confidence))
    masked = StereoPipeline(psmnet, PipelineOptions(confidence_threshold=threshold)).process(
        scene.left, scene.right, scene.rig)
    low = plain.confidence < threshold
    assert 0.2 < low.mean() < 0.8
    assert np.isnan(masked.disparity[low]).all() and np.isnan(masked.depth_m[low]).all()
    assert np.isnan(masked.points[low]).all()
    keep = ~low & np.isfinite(plain.depth_m)
    np.testing.assert_array_equal(masked.depth_m[keep], plain.depth_m[keep])
