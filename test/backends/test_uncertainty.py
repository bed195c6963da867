"""Per-pixel uncertainty: sigma_d is the standard deviation of the regression's softmax in every
engine, sigma_Z its first-order propagation, and the mask that uses them, counted."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from helpers.pipeline import FixedOutputBackend
from stereo_depth_ros.core.camera import StereoRig
from stereo_depth_ros.core.uncertainty import (calibration_stats, depth_std, mask_tradeoff,
                                               relative_uncertainty, trusted)
from stereo_depth_ros.models.fused.regression import ChunkedRegression
from stereo_depth_ros.models.regression import disparity_std, regress_disparity
from stereo_depth_ros.pipeline import PipelineOptions, StereoPipeline


# ------------------------------------------------------------------ sigma_d from the softmax
def _distribution(levels: int, mass: dict[int, float]) -> torch.Tensor:
    p = torch.zeros(1, levels, 1, 1)
    for level, value in mass.items():
        p[0, level, 0, 0] = value
    return p


@pytest.mark.parametrize("mass, mean, variance", [
    ({1: 0.25, 2: 0.5, 3: 0.25}, 2.0, 0.5),                  # 0.25 * 1 + 0.25 * 1
    ({150: 0.5, 151: 0.5}, 150.5, 0.25),                     # far levels: E[d^2] ~ 22650
    ({10: 0.8, 40: 0.2}, 16.0, 0.8 * 36 + 0.2 * 576),        # bimodal: 144
    ({77: 1.0}, 77.0, 0.0),                                  # one level: sharp
])
def test_sigma_is_the_standard_deviation_of_a_known_distribution(mass, mean, variance):
    p = _distribution(192, mass)
    levels = torch.arange(192, dtype=torch.float32).view(1, -1, 1, 1)
    disparity = (p * levels).sum(1, keepdim=True)
    assert float(disparity) == pytest.approx(mean, abs=1e-4)
    assert float(disparity_std(p, disparity)) == pytest.approx(variance ** 0.5, abs=1e-3)


def _softmax_reference(cost: torch.Tensor, max_disparity: int, size, align_corners: bool):
    """Mean and std of the full-resolution softmax, in float64 numpy, from the upsampled logits."""
    full = F.interpolate(cost.float(), (max_disparity, *size), mode="trilinear",
                         align_corners=align_corners)[0, 0].double().numpy()   # (D, H, W)
    p = np.exp(full - full.max(axis=0))
    p /= p.sum(axis=0)
    d = np.arange(max_disparity, dtype=np.float64)[:, None, None]
    mean = (p * d).sum(axis=0)
    return mean, np.sqrt((p * (d - mean) ** 2).sum(axis=0))


@pytest.mark.parametrize("align_corners", [True, False])
def test_reference_and_chunked_regressions_give_the_softmax_std(align_corners):
    generator = torch.Generator().manual_seed(3)
    cost = 4.0 * torch.randn(1, 1, 12, 8, 10, generator=generator)
    size = (32, 40)
    mean, std = _softmax_reference(cost, 48, size, align_corners)
    assert 1.0 < std.mean() < 15.0                       # a mixture of sharp and flat pixels
    d, c, s = regress_disparity(cost, 48, size, align_corners=align_corners,
                                with_confidence=True, with_uncertainty=True)
    np.testing.assert_allclose(d[0, 0].numpy(), mean, atol=1e-3)
    np.testing.assert_allclose(s[0, 0].numpy(), std, atol=1e-3)
    chunked = ChunkedRegression(48, align_corners, chunk_pixels=333)   # chunks split rows
    d2, c2, s2 = chunked(cost, size, with_confidence=True, with_uncertainty=True)
    np.testing.assert_allclose(s2[0, 0].numpy(), std, atol=1e-3)
    np.testing.assert_allclose(d2[0, 0].numpy(), mean, atol=1e-3)
    np.testing.assert_allclose(c2.numpy(), c.numpy(), atol=1e-5)
    # asking for sigma changes nothing else
    d3, c3 = chunked(cost, size, with_confidence=True)
    torch.testing.assert_close(d3, d2, rtol=0, atol=0)


@pytest.mark.slow
def test_every_engine_returns_the_reference_models_sigma(kitti_weights, real_golden):
    """Reference model, fused CPU engine (exact) and the CUDA engine's code on the CPU, with the
    released weights on a real 256x256 crop."""
    from stereo_depth_ros.backends.psmnet import PsmnetBackend
    from stereo_depth_ros.models.fused import FastPSMNet
    from stereo_depth_ros.models.fused.cuda import CudaPSMNet

    backend = PsmnetBackend(kitti_weights, device="cpu", max_disparity=48, engine="reference")
    model = backend.model
    left, right, _ = backend.preprocess(real_golden["left"][:, 128:384],
                                        real_golden["right"][:, 128:384])
    with torch.inference_mode():
        cost = model.aggregate(model.build_cost_volume(*model.extract_features(left, right)))[-1]
        d_ref, _, s_ref = model.regress(cost, (256, 256), with_confidence=True,
                                        with_uncertainty=True)
    assert 0.3 < float(s_ref.median()) < 5.0 and float(s_ref.max()) > 5.0
    fused = FastPSMNet.from_model(model, mode="exact")
    d_f, c_f, s_f = fused.forward_with_confidence(left, right, with_uncertainty=True)
    torch.testing.assert_close(s_f, s_ref, rtol=0, atol=2e-3)
    torch.testing.assert_close(d_f, d_ref, rtol=0, atol=2e-3)
    engine = CudaPSMNet(model, mode="exact", device="cpu", cuda_graphs=False)
    d_c, c_c, s_c = engine.forward_with_confidence(left, right, with_uncertainty=True)
    torch.testing.assert_close(s_c, s_ref, rtol=0, atol=2e-3)
    assert len(engine.forward_with_confidence(left, right)) == 2     # unchanged without


# ------------------------------------------------------------------ sigma_Z propagation
def test_depth_std_is_the_first_order_propagation_by_finite_differences():
    fx, baseline, offset = 700.0, 0.12, 3.0
    disparity = np.array([[5.0, 20.0, 90.0]], dtype=np.float64)
    sigma = np.array([[0.3, 1.0, 2.5]])
    z = fx * baseline / (disparity - offset)
    h = 1e-4
    dz_dd = (fx * baseline / (disparity + h - offset)
             - fx * baseline / (disparity - h - offset)) / (2 * h)
    expected = np.abs(dz_dd) * sigma
    got = depth_std(z.astype(np.float32), sigma.astype(np.float32), fx, baseline)
    np.testing.assert_allclose(got, expected, rtol=1e-4)
    # the relative form needs no metric calibration: sigma_Z / Z = sigma_d / (d - offset)
    np.testing.assert_allclose(relative_uncertainty(disparity, sigma, offset), got / z,
                               rtol=1e-4)


def test_depth_std_is_nan_where_depth_or_sigma_is_invalid():
    depth = np.array([[1.0, np.nan, 2.0]], np.float32)
    sigma = np.array([[0.5, 0.5, np.nan]], np.float32)
    got = depth_std(depth, sigma, 100.0, 0.1)
    assert got[0, 0] == pytest.approx(0.05)
    assert np.isnan(got[0, 1:]).all()
    with pytest.raises(ValueError, match="fx > 0"):
        depth_std(depth, sigma, 0.0, 0.1)


# ------------------------------------------------------------------ the mask, by count
def test_mask_keeps_exactly_the_pixels_within_both_limits():
    disparity = np.full((4, 5), 20.0, np.float32)
    confidence = np.tile(np.array([0.1, 0.3, 0.5, 0.7, 0.9], np.float32), (4, 1))
    sigma = np.repeat(np.array([0.2, 0.6, 1.0, 3.0], np.float32)[:, None], 5, axis=1)
    # relative: 0.01, 0.03, 0.05, 0.15
    assert trusted(disparity, confidence, sigma) is None                # both off: everything
    assert trusted(disparity, confidence, sigma, confidence_threshold=0.4).sum() == 12
    assert trusted(disparity, confidence, sigma, max_relative_uncertainty=0.05).sum() == 15
    both = trusted(disparity, confidence, sigma, confidence_threshold=0.4,
                   max_relative_uncertainty=0.05)
    assert both.sum() == 9
    assert trusted(disparity, None, None, confidence_threshold=0.4,
                   max_relative_uncertainty=0.05) is None     # SGBM: nothing to mask with
    # the offset is subtracted before dividing: d - 10 = 10 doubles every ratio
    assert trusted(disparity, None, sigma, max_relative_uncertainty=0.05,
                   cx_offset=10.0).sum() == 5


def test_disparity_uncertainty_limit_keeps_sigma_within_it_at_every_scale():
    disparity = np.tile(np.array([4.0, 20.0, 80.0], np.float32), (4, 1))
    sigma = np.repeat(np.array([0.5, 1.4, 1.5, 3.0], np.float32)[:, None], 3, axis=1)
    # whatever the disparity: rows with sigma <= 1.4 px, at the limit included
    assert trusted(disparity, None, sigma, max_disparity_uncertainty=1.4).sum() == 6
    # with the relative limit too: sigma / d <= 0.1 leaves d = 20 (sigma <= 2) and d = 80
    both = trusted(disparity, None, sigma, max_disparity_uncertainty=1.4,
                   max_relative_uncertainty=0.1)
    np.testing.assert_array_equal(both, [[False, True, True], [False, True, True],
                                         [False, False, False], [False, False, False]])
    # the matcher's sigma in its own px at every scale: the same pixels at input_scale 0.5
    assert trusted(disparity, None, sigma, max_disparity_uncertainty=1.4,
                   input_scale=0.5).sum() == 6
    assert trusted(disparity, None, sigma, max_disparity_uncertainty=1.5,
                   input_scale=0.25).sum() == 9
    assert trusted(disparity, None, None, max_disparity_uncertainty=1.4) is None   # SGBM
    assert trusted(disparity, None, sigma, max_disparity_uncertainty=0.0) is None  # off


def test_the_limit_is_at_full_resolution_by_count_at_three_scales():
    """input_scale * sigma_d / d <= limit: sigma_d (matcher px) stays ~1 px as the scale drops
    while the disparity shrinks, so the limit compares it with the full-resolution disparity."""
    disparity = np.full((4, 5), 20.0, np.float32)
    sigma = np.repeat(np.array([0.2, 0.6, 1.0, 3.0], np.float32)[:, None], 5, axis=1)
    # sigma / d: 0.01, 0.03, 0.05, 0.15; times the scale, against 0.04
    kept = {scale: int(trusted(disparity, None, sigma, max_relative_uncertainty=0.04,
                               input_scale=scale).sum()) for scale in (1.0, 0.5, 0.25)}
    assert kept == {1.0: 10, 0.5: 15, 0.25: 20}
    # the offset still comes off the disparity first: d - 10 = 10 doubles every ratio
    assert trusted(disparity, None, sigma, max_relative_uncertainty=0.04, cx_offset=10.0,
                   input_scale=0.5).sum() == 10


def test_pipeline_masks_every_output_and_carries_sigma_through_input_scale():
    height, width = 8, 12
    disparity = np.full((height, width), 10.0, np.float32)
    sigma = np.full((height, width), 0.2, np.float32)
    sigma[:, :3] = 1.2                 # relative 0.12 on 3 columns: 0.06 at full resolution
    sigma[:, 3] = 0.8                  # relative 0.08, 0.04 at full resolution: kept
    confidence = np.full((height, width), 0.9, np.float32)
    confidence[:2] = 0.1                                      # 2 low-confidence rows
    backend = FixedOutputBackend(disparity, confidence, sigma)
    rig = StereoRig(fx=400.0, fy=400.0, cx_left=11.5, cx_right=11.5, cy=7.5, baseline_m=0.2,
                    width=2 * width, height=2 * height)
    left = np.zeros((2 * height, 2 * width, 3), np.uint8)
    unmasked = StereoPipeline(backend, PipelineOptions(input_scale=0.5))
    everything = unmasked.process(left, left, rig)
    assert np.isfinite(everything.depth_m).all()
    masked = StereoPipeline(backend, PipelineOptions(
        input_scale=0.5, confidence_threshold=0.5, max_relative_uncertainty=0.05)).process(
        left, left, rig)
    dropped = np.isnan(masked.disparity)
    assert dropped.sum() == 2 * width + (height - 2) * 3
    for output in (masked.depth_m, masked.uncertainty_px, masked.depth_std_m,
                   masked.points[..., 2]):
        np.testing.assert_array_equal(np.isnan(output), dropped)
    # the scaled rig: f = 200 px at input_scale 0.5, Z = 200 * 0.2 / 10 = 4 m
    assert masked.rig.fx == pytest.approx(200.0)
    np.testing.assert_allclose(masked.depth_m[~dropped], 4.0, rtol=1e-6)
    # sigma_Z = Z^2 sigma_d / (f B), with the matcher's sigma_d (0.8 px on column 3)
    np.testing.assert_allclose(masked.depth_std_m[~dropped],
                               4.0 ** 2 * sigma[~dropped] / (200.0 * 0.2), rtol=1e-5)


# ------------------------------------------------------------------ calibration statistics
def test_calibration_stats_by_hand():
    gt = np.zeros((1, 6), np.float32)
    disparity = np.array([[0.1, -0.2, 0.5, 3.0, -4.0, np.nan]], np.float32)
    sigma = np.array([[0.1, 0.2, 0.3, 1.0, 1.5, 1.0]], np.float32)
    stats = calibration_stats(disparity, sigma, gt)
    assert stats["pixels"] == 5
    assert stats["coverage"] == pytest.approx(3 / 5)            # 0.1, 0.2, 0.5 <= 2 sigma
    # sorted by sigma: lower half (2 px) errors 0.1, 0.2; upper half (2 px) 3.0, 4.0
    assert stats["half_ratio"] == pytest.approx(0.15 / 3.5)
    assert stats["bad_2"] == pytest.approx(40.0)
    counts = mask_tradeoff(disparity, None, sigma, gt, confidence_threshold=0.0,
                           max_relative_uncertainty=0.0)
    assert counts == {"known": 5, "kept": 5, "bad_2_kept": 2}
    # another test's withheld pixels, with no limit on: counted as known, not as kept
    withheld = np.array([[False, False, False, True, False, False]])
    counts = mask_tradeoff(disparity, None, sigma, gt, confidence_threshold=0.0,
                           max_relative_uncertainty=0.0, withheld=withheld)
    assert counts == {"known": 5, "kept": 4, "bad_2_kept": 1}
    counts = mask_tradeoff(disparity, None, sigma, gt, confidence_threshold=0.0,
                           max_relative_uncertainty=0.0, max_disparity_uncertainty=1.0)
    assert counts == {"known": 5, "kept": 4, "bad_2_kept": 1}          # sigma 1.5 goes


@pytest.mark.slow
def test_device_stages_give_the_host_stages_sigma_and_mask(kitti_weights, real_golden):
    """stages='device' (the CUDA path, here on the CPU's torch device) = stages='host'."""
    from stereo_depth_ros.backends.psmnet import PsmnetBackend

    backend = PsmnetBackend(kitti_weights, max_disparity=48, device="cpu", engine="exact")
    left = np.ascontiguousarray(real_golden["left"][:128, 128:384])
    right = np.ascontiguousarray(real_golden["right"][:128, 128:384])
    rig = StereoRig(fx=500.0, fy=500.0, cx_left=128.0, cx_right=128.0, cy=64.0, baseline_m=0.5,
                    width=256, height=128)
    raw = backend.compute(left, right)
    limit = float(np.median(raw.uncertainty / raw.disparity))    # masks about half the pixels
    options = PipelineOptions(max_relative_uncertainty=limit, max_disparity_uncertainty=1.4,
                              fattening_filter=True, occlusion_filter=True)
    host = StereoPipeline(backend, options, stages="host").process(left, right, rig)
    device = StereoPipeline(backend, options, stages="device").process(left, right, rig)
    dropped = np.isnan(host.disparity)
    assert 0.2 < dropped.mean() < 0.8
    for name in ("disparity", "uncertainty_px", "depth_m", "depth_std_m"):
        np.testing.assert_allclose(getattr(device, name), getattr(host, name), rtol=1e-5,
                                   atol=1e-6, err_msg=name)


@pytest.mark.parametrize("scale", [1.0, 0.5, 0.25])
def test_device_mask_is_the_host_mask_at_every_scale(scale):
    """pipeline.device.trusted keeps exactly core.uncertainty.trusted's pixels, the limit at
    full resolution included."""
    from stereo_depth_ros.pipeline import device as ops

    rng = np.random.default_rng(11)
    disparity = rng.uniform(-2.0, 40.0, (32, 48)).astype(np.float32)
    sigma = rng.uniform(0.1, 4.0, (32, 48)).astype(np.float32)
    confidence = rng.uniform(0.0, 1.0, (32, 48)).astype(np.float32)
    options = PipelineOptions(input_scale=scale, confidence_threshold=0.2,
                              max_relative_uncertainty=0.06, max_disparity_uncertainty=1.5)
    keep = trusted(disparity, confidence, sigma, confidence_threshold=0.2,
                   max_relative_uncertainty=0.06, max_disparity_uncertainty=1.5, cx_offset=1.5,
                   input_scale=scale)
    assert 0.05 < keep.mean() < 0.95
    kept, _ = ops.trusted(torch.from_numpy(disparity), torch.from_numpy(confidence),
                          torch.from_numpy(sigma), options, 1.5)
    np.testing.assert_array_equal(np.isfinite(kept.numpy()), keep)
