"""Fast PSMNet inference path (models/fast.py): golden parity, accuracy bounds, and one parity
test per optimization against the reference computation. Correctness only, no timing."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from stereo_depth_ros.models import build_psmnet, load_checkpoint
from stereo_depth_ros.models import fast
from stereo_depth_ros.models.cost_volume import build_concat_volume
from stereo_depth_ros.models.regression import regress_disparity

CL3 = torch.channels_last_3d
needs_int8 = pytest.mark.skipif(not fast.int8_available(), reason="no oneDNN int8 convolutions")


def _random_bn(channels: int, generator: torch.Generator) -> dict[str, torch.Tensor]:
    return {"weight": 0.5 + torch.rand(channels, generator=generator),
            "bias": 0.1 * torch.randn(channels, generator=generator),
            "running_mean": 0.2 * torch.randn(channels, generator=generator),
            "running_var": 0.5 + torch.rand(channels, generator=generator)}


def _load_bn(bn: nn.Module, params: dict[str, torch.Tensor]) -> nn.Module:
    bn.load_state_dict({**params, "num_batches_tracked": torch.tensor(1)})
    return bn.eval()


# ----------------------------------------------------------------------------------------------
# Golden vectors and the whole network
# ----------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def golden(golden_dir):
    inputs = torch.load(golden_dir / "golden_input.pt")
    return golden_dir, inputs["left"], inputs["right"]


@pytest.mark.parametrize("align_corners, name", [
    (True, "golden_output_align_corners_true.pt"),
    (False, "golden_output.pt"),
])
def test_exact_mode_matches_golden(golden, align_corners, name):
    golden_dir, left, right = golden
    model = build_psmnet("stackhourglass", align_corners=align_corners)
    load_checkpoint(model, golden_dir / "golden_stackhourglass_ckpt.tar")
    exact = fast.FastPSMNet.from_model(model.eval(), mode="exact")
    disparity, confidence = exact.forward_with_confidence(left, right)
    expected = torch.load(golden_dir / name)
    error = (disparity - expected).abs()
    assert disparity.shape == expected.shape == (1, 1, 256, 512)
    assert error.max().item() <= 1e-2 and error.mean().item() <= 1e-3
    with torch.inference_mode():
        _, reference_confidence = model.forward_with_confidence(left, right)
    # The window edges (|d - disparity| = 2 px) can flip for a few pixels; the mass agrees.
    assert (confidence - reference_confidence).abs().mean().item() < 1e-3


def test_basic_variant_matches_reference():
    torch.manual_seed(1)
    model = build_psmnet("basic", max_disparity=64).eval()
    left, right = torch.randn(2, 1, 3, 256, 256)
    with torch.inference_mode():
        expected = model(left, right)
    exact = fast.FastPSMNet.from_model(model, mode="exact")
    assert exact.variant == "basic"
    assert (exact(left, right) - expected).abs().max().item() < 1e-2


def test_fast_mode_without_int8_is_close_to_reference(golden):
    """Fast mode in float32 (folded, channels-last features): only the rounding changes."""
    golden_dir, left, right = golden
    model = build_psmnet("stackhourglass")
    load_checkpoint(model, golden_dir / "golden_stackhourglass_ckpt.tar")
    model.eval()
    fp32 = fast.FastPSMNet.from_model(model, mode="fast", int8=False)
    expected = torch.load(golden_dir / "golden_output_align_corners_true.pt")
    error = (fp32(left, right) - expected).abs()
    # The golden network amplifies feature rounding (see FastPSMNet docs): ~1e-2 px, not 1e-4.
    assert error.max().item() < 0.1 and error.mean().item() < 2e-3


def test_bad_input_and_options():
    model = build_psmnet("stackhourglass", max_disparity=32).eval()
    exact = fast.FastPSMNet.from_model(model)
    with pytest.raises(ValueError, match="multiple of 16"):
        exact(torch.zeros(1, 3, 256, 250), torch.zeros(1, 3, 256, 250))
    with pytest.raises(ValueError, match="equal shape"):
        exact(torch.zeros(1, 3, 256, 256), torch.zeros(1, 3, 256, 272))
    with pytest.raises(ValueError, match="mode"):
        fast.FastPSMNet.from_model(model, mode="turbo")
    with pytest.raises(ValueError, match="int8"):
        fast.FastPSMNet.from_model(model, mode="exact", int8=True)


# ----------------------------------------------------------------------------------------------
# Fast mode on a real pair: the accuracy bounds of the issue
# ----------------------------------------------------------------------------------------------

@needs_int8
def test_fast_mode_accuracy_on_real_kitti_crop(kitti_weights):
    """mean |fast - exact| <= 0.1 px and <= 0.5 % of pixels moved by more than 3 px."""
    from stereo_depth_ros.backends.psmnet import PsmnetBackend
    backend = PsmnetBackend(kitti_weights, device="cpu")
    folder = kitti_weights.parent.parent / "samples" / "kitti2015"
    images = [cv2.imread(str(folder / f"kitti_000046_{side}.png"), cv2.IMREAD_COLOR)
              for side in ("left", "right")]
    # 256x640 crop: road, cars and far background.
    left, right = (np.ascontiguousarray(image[119:375, 300:940, ::-1]) for image in images)
    left_t, right_t, _ = backend.preprocess(left, right)
    exact = fast.FastPSMNet.from_model(backend.model, mode="exact")
    quick = fast.FastPSMNet.from_model(backend.model, mode="fast")
    assert quick.int8
    with torch.inference_mode():
        reference = backend.model(left_t, right_t)
    exact_disparity, exact_confidence = exact.forward_with_confidence(left_t, right_t)
    fast_disparity, fast_confidence = quick.forward_with_confidence(left_t, right_t)
    assert (exact_disparity - reference).abs().max().item() < 1e-2
    change = (fast_disparity - exact_disparity).abs()
    assert change.mean().item() <= 0.1
    assert (change > 3).float().mean().item() * 100 <= 0.5
    assert (fast_confidence - exact_confidence).abs().mean().item() < 0.02
    assert 0 <= fast_disparity.min().item() and fast_disparity.max().item() <= 191


# ----------------------------------------------------------------------------------------------
# One parity test per optimization
# ----------------------------------------------------------------------------------------------

@pytest.mark.parametrize("dims, transposed", [(2, False), (3, False), (3, True)])
def test_folded_conv_equals_conv_then_bn(dims, transposed):
    g = torch.Generator().manual_seed(0)
    if transposed:
        conv = nn.ConvTranspose3d(8, 6, 3, stride=2, padding=1, output_padding=1, bias=False)
    else:
        conv = (nn.Conv2d if dims == 2 else nn.Conv3d)(8, 6, 3, padding=1, bias=False)
    bn = _load_bn((nn.BatchNorm2d if dims == 2 else nn.BatchNorm3d)(6), _random_bn(6, g))
    x = torch.randn(1, 8, *([5] * (dims - 2)), 9, 11, generator=g)
    with torch.inference_mode():
        expected = bn(conv(x))
        weight, bias = fast.fold_bn(conv.weight, bn.state_dict(), transposed=transposed)
        if transposed:
            got = fast.ConvTranspose3d(weight, bias)(x)
        else:
            got = fast.Conv(weight, bias, padding=1)(x)
    assert torch.allclose(got, expected, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("shape", [(1, 64, 12, 24, 78), (1, 64, 2, 3, 5)])
def test_oneDNN_transposed_conv_equals_reference(shape):
    g = torch.Generator().manual_seed(1)
    weight = 0.1 * torch.randn(64, 32, 3, 3, 3, generator=g)
    bias, x, residual = torch.randn(32, generator=g), torch.randn(shape, generator=g), None
    with torch.inference_mode():
        expected = F.conv_transpose3d(x, weight, bias, stride=2, padding=1, output_padding=1)
        residual = torch.randn(expected.shape, generator=g)
        got = fast.ConvTranspose3d(weight, bias)(x, residual=residual.clone(), relu=True)
    assert torch.allclose(got, (expected + residual).relu(), atol=1e-4, rtol=1e-5)


def test_small_3d_conv_goes_to_onednn_and_matches():
    """`_conv` bypasses F.conv3d's heuristic for small inputs; the result is the same conv."""
    g = torch.Generator().manual_seed(2)
    x = torch.randn(1, 16, 6, 8, 10, generator=g).contiguous(memory_format=CL3)
    weight, bias = torch.randn(16, 16, 3, 3, 3, generator=g), torch.randn(16, generator=g)
    expected = F.conv3d(x, weight, bias, padding=1)
    got = fast._conv(x, weight.contiguous(memory_format=CL3), bias, 1, 1, 1)
    assert torch.allclose(got, expected, atol=1e-4, rtol=1e-5)


@pytest.mark.parametrize("levels, width", [(8, 20), (3, 9), (2, 5), (1, 4), (6, 4)])
def test_implicit_cost_conv_equals_conv_over_concat_volume(levels, width):
    """Including levels >= width (all columns zeroed) and the first/last level."""
    g = torch.Generator().manual_seed(levels * 100 + width)
    channels, height = 5, 6
    left = torch.randn(2, channels, height, width, generator=g)
    right = torch.randn(2, channels, height, width, generator=g)
    weight = torch.randn(7, 2 * channels, 3, 3, 3, generator=g)
    bias = torch.randn(7, generator=g)
    expected = F.relu(F.conv3d(build_concat_volume(left, right, levels), weight, bias,
                               padding=1))
    got = fast.ImplicitCostConv(weight, bias, levels)(left, right)
    assert got.shape == expected.shape
    assert torch.allclose(got, expected, atol=1e-4, rtol=1e-5)
    assert torch.allclose(fast.explicit_cost_conv(left, right, weight, bias, levels), expected)


def test_single_output_conv_equals_conv3d():
    g = torch.Generator().manual_seed(3)
    x = torch.randn(2, 8, 7, 5, 6, generator=g).contiguous(memory_format=CL3)
    weight = torch.randn(1, 8, 3, 3, 3, generator=g)
    expected = F.conv3d(x, weight, padding=1)
    got = fast.SingleOutputConv3d(weight)(x)
    assert torch.allclose(got, expected, atol=1e-4, rtol=1e-5)


@pytest.mark.parametrize("levels, slab", [(9, 4), (8, 4), (4, 4), (3, 1), (10, 3)])
def test_slabbed_classifier_head_equals_full_head(levels, slab):
    g = torch.Generator().manual_seed(levels + slab)
    x = torch.randn(1, 8, levels, 5, 7, generator=g).contiguous(memory_format=CL3)
    weight, bias = torch.randn(8, 8, 3, 3, 3, generator=g), torch.randn(8, generator=g)
    out_weight = torch.randn(1, 8, 3, 3, 3, generator=g)
    expected = F.conv3d(F.relu(F.conv3d(x, weight, bias, padding=1)), out_weight, padding=1)
    head = fast.ClassifierHead(fast.Conv(weight, bias, padding=1),
                               fast.SingleOutputConv3d(out_weight), slab=slab)
    got = head(x, out=torch.ones_like(expected))                 # accumulates into `out`
    assert torch.allclose(got, expected + 1, atol=1e-4, rtol=1e-5)


@pytest.mark.parametrize("align_corners", [True, False])
def test_interpolation_matrix_is_pytorch_linear_interpolation(align_corners):
    x = torch.randn(3, 12)
    mat = fast.interpolation_matrix(12, 48, align_corners)
    expected = F.interpolate(x[None], size=48, mode="linear", align_corners=align_corners)[0]
    assert torch.allclose(x @ mat.t(), expected, atol=1e-6)


@pytest.mark.parametrize("align_corners", [True, False])
def test_chunked_regression_equals_full_volume_regression(align_corners):
    g = torch.Generator().manual_seed(4)
    cost = 8 * torch.randn(1, 1, 12, 10, 14, generator=g)
    expected, expected_conf = regress_disparity(cost, 48, (40, 56), align_corners=align_corners,
                                                with_confidence=True)
    regression = fast.ChunkedRegression(48, align_corners, chunk_pixels=333)   # ragged chunks
    got, conf = regression(cost, (40, 56), with_confidence=True)
    assert (got - expected).abs().max().item() < 1e-3
    assert (conf - expected_conf).abs().mean().item() < 1e-4


@needs_int8
@pytest.mark.parametrize("dims, nonnegative", [(2, False), (2, True), (3, False), (3, True)])
def test_int8_conv_close_to_float_conv(dims, nonnegative):
    """int8 = the float conv of the quantized input and weights (up to float rounding)."""
    g = torch.Generator().manual_seed(5)
    shape = (1, 16, 6, 10, 12) if dims == 3 else (2, 16, 10, 12)
    fmt = CL3 if dims == 3 else torch.channels_last
    x = torch.randn(shape, generator=g)
    x = (x.relu() if nonnegative else x).contiguous(memory_format=fmt)
    conv = fast.Conv(0.1 * torch.randn(16, 16, *([3] * dims), generator=g),
                     torch.randn(16, generator=g), padding=2, dilation=2)
    q8 = fast.Int8Conv.from_conv(conv, nonnegative_input=nonnegative)
    residual = torch.randn(conv(x).shape, generator=g).contiguous(memory_format=fmt)
    expected = conv(x, relu=True, residual=residual.clone())
    got = q8(x, relu=True, residual=residual.clone())
    # Same arithmetic on the quantized operands:
    xq = q8.quantize(x).dequantize()
    w_int8, w_scale = fast.quantize_weight(conv.weight)
    wq = w_int8.float() * w_scale.view(-1, *([1] * (dims + 1)))
    simulated_conv = fast.Conv(wq, conv.bias, padding=2, dilation=2)
    simulated = simulated_conv(xq, relu=True, residual=residual.clone())
    assert torch.allclose(got, simulated, atol=1e-3, rtol=1e-4)
    assert (got - expected).abs().max() < 0.05 * expected.abs().max()


@needs_int8
def test_quantized_activation_round_trip():
    x = torch.randn(1, 4, 3, 5, 6).contiguous(memory_format=CL3)
    q = fast.QuantizedActivation(x)
    assert q.data.dtype == torch.uint8
    assert (q.dequantize() - x).abs().max() <= q.scale / 2 + 1e-6
    relu = fast.QuantizedActivation(x.relu(), nonnegative=True)
    assert relu.zero_point == 0
    assert (relu.dequantize() - x.relu()).abs().max() <= relu.scale / 2 + 1e-6
    zeros = fast.QuantizedActivation(torch.zeros(1, 4, 3, 5, 6), nonnegative=True)
    assert zeros.scale == 1.0 and int(zeros.data.max()) == 0


# ----------------------------------------------------------------------------------------------
# Backend integration: PsmnetBackend(engine=...)
# ----------------------------------------------------------------------------------------------

def test_backend_engines_agree_with_reference():
    from stereo_depth_ros.backends.psmnet import PsmnetBackend
    rng = np.random.default_rng(0)
    left = rng.integers(0, 256, (100, 130, 3), dtype=np.uint8)     # padded to 256x256
    right = np.roll(left, -4, axis=1)
    results = {}
    for engine in ("reference", "exact", "fast"):
        torch.manual_seed(0)
        backend = PsmnetBackend(None, max_disparity=48, device="cpu", engine=engine)
        results[engine] = backend.compute(left, right)
        assert results[engine].disparity.shape == (100, 130)
        assert results[engine].confidence.shape == (100, 130)
    reference = results["reference"]
    exact = results["exact"]
    assert np.abs(exact.disparity - reference.disparity).max() < 1e-3
    assert np.abs(exact.confidence - reference.confidence).mean() < 1e-4
    assert np.isfinite(results["fast"].disparity).all()


def test_backend_engine_options_are_checked():
    from stereo_depth_ros.backends.psmnet import PsmnetBackend
    with pytest.raises(ValueError, match="engine must be one of"):
        PsmnetBackend(None, max_disparity=48, device="cpu", engine="turbo")
    with pytest.raises(ValueError, match="precision='fp32'"):
        PsmnetBackend(None, max_disparity=48, device="cpu", precision="bf16", engine="fast")
