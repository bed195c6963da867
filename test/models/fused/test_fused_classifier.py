"""models.fused.classifier: the 32->1 convolution as a matrix product, and the slabbed heads."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from helpers.fused import CL3, needs_onednn_bf16, relative_error
from stereo_depth_ros.models.fused.classifier import ClassifierHead, SingleOutputConv3d
from stereo_depth_ros.models.fused.onednn import FoldedConv


def test_single_output_conv_equals_conv3d():
    g = torch.Generator().manual_seed(3)
    x = torch.randn(2, 8, 7, 5, 6, generator=g).contiguous(memory_format=CL3)
    weight = torch.randn(1, 8, 3, 3, 3, generator=g)
    expected = F.conv3d(x, weight, padding=1)
    got = SingleOutputConv3d(weight)(x)
    assert torch.allclose(got, expected, atol=1e-4, rtol=1e-5)


@pytest.mark.parametrize("levels, slab", [(9, 4), (8, 4), (4, 4), (3, 1), (10, 3)])
def test_slabbed_classifier_head_equals_full_head(levels, slab):
    g = torch.Generator().manual_seed(levels + slab)
    x = torch.randn(1, 8, levels, 5, 7, generator=g).contiguous(memory_format=CL3)
    weight, bias = torch.randn(8, 8, 3, 3, 3, generator=g), torch.randn(8, generator=g)
    out_weight = torch.randn(1, 8, 3, 3, 3, generator=g)
    expected = F.conv3d(F.relu(F.conv3d(x, weight, bias, padding=1)), out_weight, padding=1)
    head = ClassifierHead(FoldedConv(weight, bias, padding=1), SingleOutputConv3d(out_weight),
                          slab=slab)
    got = head(x, out=torch.ones_like(expected))                 # accumulates into `out`
    assert torch.allclose(got, expected + 1, atol=1e-4, rtol=1e-5)


@needs_onednn_bf16
def test_bf16_head_accumulates_in_float32():
    g = torch.Generator().manual_seed(7)
    x = torch.randn(1, 8, 6, 5, 7, generator=g)
    weight, bias = 0.3 * torch.randn(8, 8, 3, 3, 3, generator=g), torch.randn(8, generator=g)
    out_weight = torch.randn(1, 8, 3, 3, 3, generator=g)
    expected = F.conv3d(F.relu(F.conv3d(x, weight, bias, padding=1)), out_weight, padding=1)
    head = ClassifierHead(FoldedConv(weight, bias, padding=1, dtype=torch.bfloat16),
                          SingleOutputConv3d(out_weight.bfloat16()))
    got = head(x.bfloat16().contiguous(memory_format=CL3))
    assert got.dtype == torch.float32 and relative_error(got, expected) < 2e-2
