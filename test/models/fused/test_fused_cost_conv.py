"""models.fused.cost_conv: dres0's first convolution without the volume equals the convolution
over the official concatenation volume (exact, every level, border and level class)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from helpers.fused import needs_onednn_bf16, relative_error
from stereo_depth_ros.models.cost_volume import build_concat_volume
from stereo_depth_ros.models.fused.cost_conv import ImplicitCostConv


def explicit_cost_conv(left, right, weight, bias, levels):
    """The definition: build the official volume, conv3d, ReLU."""
    return F.relu(F.conv3d(build_concat_volume(left, right, levels), weight, bias, padding=1))


@pytest.mark.parametrize("levels, width", [(8, 20), (3, 9), (2, 5), (1, 4), (6, 4)])
def test_implicit_cost_conv_equals_conv_over_concat_volume(levels, width):
    """Including levels >= width (all columns zeroed) and the first/last level."""
    g = torch.Generator().manual_seed(levels * 100 + width)
    channels, height = 5, 6
    left = torch.randn(2, channels, height, width, generator=g)
    right = torch.randn(2, channels, height, width, generator=g)
    weight = torch.randn(7, 2 * channels, 3, 3, 3, generator=g)
    bias = torch.randn(7, generator=g)
    expected = explicit_cost_conv(left, right, weight, bias, levels)
    got = ImplicitCostConv(weight, bias, levels)(left, right)
    assert got.shape == expected.shape
    assert torch.allclose(got, expected, atol=1e-4, rtol=1e-5)


@needs_onednn_bf16
def test_implicit_cost_conv_in_bf16_within_bf16_rounding():
    g = torch.Generator().manual_seed(9)
    left, right = torch.randn(2, 1, 8, 6, 24, generator=g)
    weight, bias = 0.2 * torch.randn(8, 16, 3, 3, 3, generator=g), torch.randn(8, generator=g)
    expected = explicit_cost_conv(left, right, weight, bias, 6)
    conv = ImplicitCostConv(weight, bias, 6).to("cpu", torch.bfloat16)
    got = conv(left.bfloat16(), right.bfloat16())
    assert got.dtype == torch.bfloat16 and relative_error(got.float(), expected) < 2e-2
