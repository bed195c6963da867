"""Building blocks of the PSMNet stages: conv+BN pairs, the residual block, upsampling, init.

Every `nn.Sequential` index below is part of a state_dict key of the official checkpoints
(`...conv1.0.0.weight` = block conv1 -> Sequential[0] = conv_bn -> Sequential[0] = Conv2d), so the
order of the layers inside each Sequential must not change.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


def conv_bn(in_channels: int, out_channels: int, kernel_size: int, stride: int, padding: int,
            dilation: int) -> nn.Sequential:
    """Return Sequential(Conv2d without bias, BatchNorm2d), as the official `convbn`.

    With dilation > 1 the padding is the dilation (the official rule), so a 3x3 dilated conv keeps
    the spatial size.
    """
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, kernel_size=kernel_size, stride=stride,
                  padding=dilation if dilation > 1 else padding, dilation=dilation, bias=False),
        nn.BatchNorm2d(out_channels),
    )


def conv_bn_3d(in_channels: int, out_channels: int, kernel_size: int, stride: int,
               padding: int) -> nn.Sequential:
    """Return Sequential(Conv3d without bias, BatchNorm3d), as the official `convbn_3d`."""
    return nn.Sequential(
        nn.Conv3d(in_channels, out_channels, kernel_size=kernel_size, stride=stride,
                  padding=padding, bias=False),
        nn.BatchNorm3d(out_channels),
    )


class BasicBlock(nn.Module):
    """ResNet basic block: conv_bn+ReLU, conv_bn, add the (optionally downsampled) input.

    There is no ReLU after the residual addition (the official block has none).
    """

    expansion = 1

    def __init__(self, in_channels: int, channels: int, stride: int,
                 downsample: nn.Module | None, padding: int, dilation: int) -> None:
        super().__init__()
        # checkpoint key: do not rename (conv1, conv2, downsample)
        self.conv1 = nn.Sequential(
            conv_bn(in_channels, channels, 3, stride, padding, dilation),
            nn.ReLU(inplace=True),
        )
        self.conv2 = conv_bn(channels, channels, 3, 1, padding, dilation)
        self.downsample = downsample
        self.stride = stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: (B, C_in, H, W) float -> (B, C, H/stride, W/stride)."""
        out = self.conv2(self.conv1(x))
        if self.downsample is not None:
            x = self.downsample(x)
        return out + x


def upsample(x: torch.Tensor, size: tuple[int, ...], align_corners: bool) -> torch.Tensor:
    """Bilinear (4-D input) or trilinear (5-D input) resize to `size`.

    `align_corners=False` equals the official `F.upsample` on torch >= 0.4 exactly; True is what
    the released weights were trained with (official README note).
    """
    mode = "bilinear" if x.dim() == 4 else "trilinear"
    return F.interpolate(x, size=size, mode=mode, align_corners=align_corners)


def init_official_(module: nn.Module) -> None:
    """Initialise like the official code: conv weights ~ N(0, sqrt(2 / (k_prod * out_channels))),
    BatchNorm weight 1 and bias 0. ConvTranspose3d keeps PyTorch's default init (as upstream)."""
    for m in module.modules():
        if isinstance(m, (nn.Conv2d, nn.Conv3d)):
            n = math.prod(m.kernel_size) * m.out_channels
            nn.init.normal_(m.weight, 0.0, math.sqrt(2.0 / n))
        elif isinstance(m, (nn.BatchNorm2d, nn.BatchNorm3d)):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
