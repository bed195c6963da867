"""models.fused.folding: BatchNorm folded into the convolution before it."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from helpers.fused import load_bn, random_bn
from stereo_depth_ros.models.fused import folding
from stereo_depth_ros.models.fused.onednn import FoldedConv, FoldedConvTranspose3d


@pytest.mark.parametrize("dims, transposed", [(2, False), (3, False), (3, True)])
def test_fold_bn_equals_conv_then_bn(dims, transposed):
    g = torch.Generator().manual_seed(0)
    if transposed:
        conv = nn.ConvTranspose3d(8, 6, 3, stride=2, padding=1, output_padding=1, bias=False)
    else:
        conv = (nn.Conv2d if dims == 2 else nn.Conv3d)(8, 6, 3, padding=1, bias=False)
    bn = load_bn((nn.BatchNorm2d if dims == 2 else nn.BatchNorm3d)(6), random_bn(6, g))
    x = torch.randn(1, 8, *([5] * (dims - 2)), 9, 11, generator=g)
    with torch.inference_mode():
        expected = bn(conv(x))
        weight, bias = folding.fold_bn(conv.weight, bn.state_dict(), transposed=transposed)
        if transposed:
            got = FoldedConvTranspose3d(weight, bias)(x)
        else:
            got = FoldedConv(weight, bias, padding=1)(x)
    assert torch.allclose(got, expected, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("conv", [nn.Conv2d(5, 7, 3, padding=1, bias=False),
                                  nn.Conv3d(5, 7, 3, padding=1, stride=2, bias=False),
                                  nn.ConvTranspose3d(5, 7, 3, padding=1, output_padding=1,
                                                     stride=2, bias=False)])
def test_fold_batchnorm_in_place_replaces_the_pair_by_one_equal_convolution(conv):
    g = torch.Generator().manual_seed(1)
    bn = nn.BatchNorm2d(7) if isinstance(conv, nn.Conv2d) else nn.BatchNorm3d(7)
    block = nn.Sequential(nn.Sequential(conv, load_bn(bn, random_bn(7, g))), nn.ReLU()).eval()
    x = torch.randn(2, 5, *([9] * (conv.weight.dim() - 2)), generator=g)
    expected = block(x)
    folded = copy.deepcopy(block)
    assert folding.fold_batchnorm_(folded) == 1
    assert isinstance(folded[0][1], nn.Identity) and folded[0][0].bias is not None
    torch.testing.assert_close(folded(x), expected, rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="eval-mode"):
        folding.fold_batchnorm_(block.train())


def test_strip_module_prefix():
    state = {"module.a.weight": 1, "b.bias": 2}
    assert folding.strip_module_prefix(state) == {"a.weight": 1, "b.bias": 2}
