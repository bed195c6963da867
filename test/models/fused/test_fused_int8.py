"""models.fused.int8: int8 convolutions equal the float convolution of their quantized operands,
and are used only where the CPU has VNNI."""

from __future__ import annotations

import pytest
import torch

from helpers.fused import CL3, needs_int8
from stereo_depth_ros.models.fused import cpu_features, int8
from stereo_depth_ros.models.fused.onednn import FoldedConv


@needs_int8
@pytest.mark.parametrize("dims, nonnegative", [(2, False), (2, True), (3, False), (3, True)])
def test_int8_conv_equals_the_float_conv_of_quantized_operands(dims, nonnegative):
    g = torch.Generator().manual_seed(5)
    shape = (1, 16, 6, 10, 12) if dims == 3 else (2, 16, 10, 12)
    fmt = CL3 if dims == 3 else torch.channels_last
    x = torch.randn(shape, generator=g)
    x = (x.relu() if nonnegative else x).contiguous(memory_format=fmt)
    conv = FoldedConv(0.1 * torch.randn(16, 16, *([3] * dims), generator=g),
                      torch.randn(16, generator=g), padding=2, dilation=2)
    q8 = int8.Int8Conv.from_conv(conv, nonnegative_input=nonnegative)
    residual = torch.randn(conv(x).shape, generator=g).contiguous(memory_format=fmt)
    expected = conv(x, relu=True, residual=residual.clone())
    got = q8(x, relu=True, residual=residual.clone())
    xq = q8.quantize(x).dequantize()
    w_int8, w_scale = int8.quantize_weight(conv.weight)
    wq = w_int8.float() * w_scale.view(-1, *([1] * (dims + 1)))
    simulated = FoldedConv(wq, conv.bias, padding=2, dilation=2)(xq, relu=True,
                                                                 residual=residual.clone())
    assert torch.allclose(got, simulated, atol=1e-3, rtol=1e-4)
    assert (got - expected).abs().max() < 0.05 * expected.abs().max()


@needs_int8
def test_quantized_activation_round_trip():
    x = torch.randn(1, 4, 3, 5, 6).contiguous(memory_format=CL3)
    q = int8.QuantizedActivation(x)
    assert q.data.dtype == torch.uint8
    assert (q.dequantize() - x).abs().max() <= q.scale / 2 + 1e-6
    relu = int8.QuantizedActivation(x.relu(), nonnegative=True)
    assert relu.zero_point == 0
    assert (relu.dequantize() - x.relu()).abs().max() <= relu.scale / 2 + 1e-6
    zeros = int8.QuantizedActivation(torch.zeros(1, 4, 3, 5, 6), nonnegative=True)
    assert zeros.scale == 1.0 and int(zeros.data.max()) == 0


def test_quantize_weight_is_symmetric_per_output_channel():
    weight = torch.tensor([[[-2.0, 1.0]], [[0.5, -0.25]]])
    q, scale = int8.quantize_weight(weight)
    assert q.dtype == torch.int8 and q.abs().max() == 127
    torch.testing.assert_close(scale, torch.tensor([2.0, 0.5]) / 127)
    assert ((q.float() * scale.view(-1, 1, 1)) - weight).abs().max() <= scale.max() / 2


def test_int8_is_refused_without_vnni():
    """On a CPU without VNNI oneDNN's u8s8 path saturates: int8 is not available there."""
    no_vnni = cpu_features.apply_override(cpu_features.detect(), "-avx512_vnni,-avx_vnni")
    assert not no_vnni.int8_vnni
    with_vnni = cpu_features.apply_override(
        cpu_features.CpuFeatures(frozenset({"avx2"}), False, True), "+avx_vnni")
    assert with_vnni.int8_vnni
