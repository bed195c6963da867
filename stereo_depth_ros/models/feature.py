"""PSMNet feature extractor: ResNet-like trunk plus spatial pyramid pooling (SPP)."""

from __future__ import annotations

import torch
from torch import nn

from stereo_depth_ros.models.layers import BasicBlock, conv_bn, upsample

FEATURE_CHANNELS = 32
"""Channels of the extracted features (the cost volume has twice as many)."""

MIN_INPUT_SIZE = 256
"""Smallest height/width (px) the SPP accepts: the 1/4 map must be >= 64 px for AvgPool2d(64).

(253 would be the exact limit, but the 3-D stage also needs multiples of 16, so 256.)
"""


class FeatureExtraction(nn.Module):
    """Shared (siamese) feature CNN, applied to the left and the right image separately.

    Input (B, 3, H, W) float32, ImageNet-normalized RGB; H and W >= 253.
    Output (B, 32, ceil(ceil(H/2)/2), ceil(ceil(W/2)/2)) float: features at 1/4 resolution.
    """

    def __init__(self, *, align_corners: bool = True) -> None:
        super().__init__()
        self.align_corners = align_corners
        self._in_channels = 32
        # checkpoint key: do not rename (firstconv, layer1-4, branch1-4, lastconv)
        self.firstconv = nn.Sequential(
            conv_bn(3, 32, 3, 2, 1, 1), nn.ReLU(inplace=True),
            conv_bn(32, 32, 3, 1, 1, 1), nn.ReLU(inplace=True),
            conv_bn(32, 32, 3, 1, 1, 1), nn.ReLU(inplace=True),
        )
        self.layer1 = self._make_layer(32, 3, stride=1, padding=1, dilation=1)
        self.layer2 = self._make_layer(64, 16, stride=2, padding=1, dilation=1)
        self.layer3 = self._make_layer(128, 3, stride=1, padding=1, dilation=1)
        self.layer4 = self._make_layer(128, 3, stride=1, padding=1, dilation=2)
        self.branch1 = self._spp_branch(64)
        self.branch2 = self._spp_branch(32)
        self.branch3 = self._spp_branch(16)
        self.branch4 = self._spp_branch(8)
        self.lastconv = nn.Sequential(
            conv_bn(320, 128, 3, 1, 1, 1), nn.ReLU(inplace=True),
            nn.Conv2d(128, FEATURE_CHANNELS, kernel_size=1, padding=0, stride=1, bias=False),
        )

    def _make_layer(self, channels: int, blocks: int, *, stride: int, padding: int,
                    dilation: int) -> nn.Sequential:
        downsample = None
        if stride != 1 or self._in_channels != channels:
            downsample = nn.Sequential(
                nn.Conv2d(self._in_channels, channels, kernel_size=1, stride=stride, bias=False),
                nn.BatchNorm2d(channels),
            )
        layers = [BasicBlock(self._in_channels, channels, stride, downsample, padding, dilation)]
        self._in_channels = channels
        layers += [BasicBlock(channels, channels, 1, None, padding, dilation)
                   for _ in range(1, blocks)]
        return nn.Sequential(*layers)

    @staticmethod
    def _spp_branch(pool: int) -> nn.Sequential:
        # Index 1 (the conv_bn) is part of the checkpoint key `branchK.1.0.weight`.
        return nn.Sequential(
            nn.AvgPool2d((pool, pool), stride=(pool, pool)),
            conv_bn(128, 32, 1, 1, 0, 1),
            nn.ReLU(inplace=True),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: (B, 3, H, W) normalized RGB -> (B, 32, H/4, W/4) features."""
        out = self.firstconv(x)
        out = self.layer1(out)
        output_raw = self.layer2(out)
        out = self.layer3(output_raw)
        output_skip = self.layer4(out)
        size = tuple(output_skip.shape[-2:])
        pooled = [upsample(branch(output_skip), size, self.align_corners)
                  for branch in (self.branch4, self.branch3, self.branch2, self.branch1)]
        # Concatenation order is part of the trained weights: raw, skip, branch4 .. branch1.
        return self.lastconv(torch.cat([output_raw, output_skip, *pooled], dim=1))
