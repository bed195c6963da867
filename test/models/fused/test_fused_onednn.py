"""models.fused.onednn: the convolution wrappers give F.conv*d's results, in float32 and bf16."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from helpers.fused import CL3, needs_onednn_bf16, relative_error
from stereo_depth_ros.models.fused.onednn import FoldedConv, FoldedConvTranspose3d, onednn_conv


@pytest.mark.parametrize("shape", [(1, 64, 12, 24, 78), (1, 64, 2, 3, 5)])
def test_transposed_conv_equals_reference(shape):
    g = torch.Generator().manual_seed(1)
    weight = 0.1 * torch.randn(64, 32, 3, 3, 3, generator=g)
    bias, x = torch.randn(32, generator=g), torch.randn(shape, generator=g)
    with torch.inference_mode():
        expected = F.conv_transpose3d(x, weight, bias, stride=2, padding=1, output_padding=1)
        residual = torch.randn(expected.shape, generator=g)
        got = FoldedConvTranspose3d(weight, bias)(x, residual=residual.clone(), relu=True)
    assert torch.allclose(got, (expected + residual).relu(), atol=1e-4, rtol=1e-5)


def test_small_3d_conv_goes_to_onednn_and_matches():
    """onednn_conv bypasses F.conv3d's heuristic for small inputs; the result is the same conv."""
    g = torch.Generator().manual_seed(2)
    x = torch.randn(1, 16, 6, 8, 10, generator=g).contiguous(memory_format=CL3)
    weight, bias = torch.randn(16, 16, 3, 3, 3, generator=g), torch.randn(16, generator=g)
    expected = F.conv3d(x, weight, bias, padding=1)
    got = onednn_conv(x, weight.contiguous(memory_format=CL3), bias, 1, 1, 1)
    assert torch.allclose(got, expected, atol=1e-4, rtol=1e-5)


@needs_onednn_bf16
@pytest.mark.parametrize("dims", [2, 3])
def test_bf16_folded_conv_is_the_float_conv_within_bf16_rounding(dims):
    """bf16 operands, float32 accumulation, bf16 output: relative error ~1e-3..1e-2 (bf16 has
    an 8-bit significand), residual and ReLU applied in bf16."""
    g = torch.Generator().manual_seed(3)
    shape = (1, 32, 6, 12, 20) if dims == 3 else (2, 32, 24, 40)
    x = torch.randn(shape, generator=g)
    weight = 0.1 * torch.randn(32, 32, *([3] * dims), generator=g)
    bias = torch.randn(32, generator=g)
    fp32 = FoldedConv(weight, bias, padding=1)
    bf16 = FoldedConv(weight, bias, padding=1, dtype=torch.bfloat16)
    assert bf16.dtype == torch.bfloat16
    residual = torch.randn(fp32(x).shape, generator=g)
    expected = fp32(x, relu=True, residual=residual.clone())
    got = bf16(x.bfloat16(), relu=True, residual=residual.bfloat16())
    assert got.dtype == torch.bfloat16
    assert relative_error(got.float(), expected) < 1e-2


@needs_onednn_bf16
def test_bf16_transposed_conv_within_bf16_rounding():
    g = torch.Generator().manual_seed(4)
    weight, bias = 0.1 * torch.randn(64, 32, 3, 3, 3, generator=g), torch.randn(32, generator=g)
    x = torch.randn(1, 64, 4, 6, 10, generator=g)
    expected = FoldedConvTranspose3d(weight, bias)(x, relu=True)
    got = FoldedConvTranspose3d(weight, bias, torch.bfloat16)(x.bfloat16(), relu=True)
    assert got.dtype == torch.bfloat16 and relative_error(got.float(), expected) < 1e-2
