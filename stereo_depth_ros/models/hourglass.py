"""The 3-D encoder-decoder ("hourglass") used three times by stacked-hourglass PSMNet."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from stereo_depth_ros.models.layers import conv_bn_3d


def _deconv_bn_3d(in_channels: int, out_channels: int) -> nn.Sequential:
    """Stride-2 ConvTranspose3d (k3, p1, output_padding 1, no bias) + BatchNorm3d: 2x D, H, W."""
    return nn.Sequential(
        nn.ConvTranspose3d(in_channels, out_channels, kernel_size=3, padding=1,
                           output_padding=1, stride=2, bias=False),
        nn.BatchNorm3d(out_channels),
    )


class Hourglass(nn.Module):
    """Encoder-decoder over a (B, C, D, H, W) cost volume; D, H, W must be multiples of 4.

    forward(x, presqu, postsqu) returns (out, pre, post):
      out: (B, C, D, H, W), the decoded volume (no ReLU at the end);
      pre: (B, 2C, D/2, H/2, W/2) after the first down step (+ postsqu of the previous hourglass);
      post: (B, 2C, D/2, H/2, W/2) after the first up step (+ presqu, or + pre if presqu is None).
    """

    def __init__(self, channels: int) -> None:
        super().__init__()
        # checkpoint key: do not rename (conv1 .. conv6)
        self.conv1 = nn.Sequential(conv_bn_3d(channels, channels * 2, 3, 2, 1),
                                   nn.ReLU(inplace=True))
        self.conv2 = conv_bn_3d(channels * 2, channels * 2, 3, 1, 1)
        self.conv3 = nn.Sequential(conv_bn_3d(channels * 2, channels * 2, 3, 2, 1),
                                   nn.ReLU(inplace=True))
        self.conv4 = nn.Sequential(conv_bn_3d(channels * 2, channels * 2, 3, 1, 1),
                                   nn.ReLU(inplace=True))
        self.conv5 = _deconv_bn_3d(channels * 2, channels * 2)
        self.conv6 = _deconv_bn_3d(channels * 2, channels)

    def forward(self, x: torch.Tensor, presqu: torch.Tensor | None,
                postsqu: torch.Tensor | None
                ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """See the class docstring."""
        pre = self.conv2(self.conv1(x))
        pre = F.relu(pre + postsqu if postsqu is not None else pre)
        out = self.conv4(self.conv3(pre))
        post = F.relu(self.conv5(out) + (presqu if presqu is not None else pre))
        out = self.conv6(post)
        return out, pre, post
