"""dres0's first convolution computed from the two feature maps, without the concatenation
cost volume (see `ImplicitCostConv`)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from stereo_depth_ros.models.fused.onednn import (CHANNELS_LAST_2D, CHANNELS_LAST_3D,
                                                  onednn_conv)


class ImplicitCostConv:
    """First conv of `dres0` (3x3x3, 2C -> C_out, BN folded, ReLU) over the concatenation volume,
    computed from the feature maps without building the volume.

    The official volume at level i holds left[x] in channels [0, C) and right[x - i] in channels
    [C, 2C) for x >= i, zero for x < i and outside. The convolution is linear and its kernel sees
    levels d-1, d, d+1, so with v = x - d the output at (d, y, x) is

        TL_k[t](y, x) + TR_k(y, v)           t = min(v, 2); zero where v < -2

    where k is the level class (the first and the last level miss one kernel depth tap a, the
    others see all three), TL_k[t] is a 2-D 3x3 convolution of the left features with the taps
    (a, e) for which a - e <= t (the taps whose input column is not zeroed), and TR_k is a 2-D
    3x5 convolution of the right features along v with the taps of equal e - a summed, plus the
    bias (its variant `E` drops the e = 2 taps, which read past the right border at x = W-1;
    where v < -2 only the bias is left). Both tables come from two small 2-D convolutions per
    frame; each level is then a few contiguous slice copies and additions.

    weight: (C_out, 2C, 3, 3, 3), bias: (C_out,) (BN folded); levels: D.
    """

    BANDS = (-2, -1, 0, 1, 2)                  # t: left-table variants; 2 = every tap

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor, levels: int) -> None:
        self.levels = levels
        self.out_channels = weight.shape[0]
        channels = weight.shape[1] // 2
        w_left, w_right = weight[:, :channels].double(), weight[:, channels:].double()
        self.classes = self._level_classes(levels)
        class_sets = sorted(set(self.classes), key=lambda taps: (-len(taps), *taps))
        self.class_index = [class_sets.index(taps) for taps in self.classes]
        left_kernels, right_kernels = [], []
        for taps in class_sets:
            for t in self.BANDS:
                k = torch.zeros_like(w_left[:, :, 0])                  # (O, C, 3, 3) over (b, e)
                for a in taps:
                    for e in range(3):
                        if a - e <= t:
                            k[:, :, :, e] += w_left[:, :, a, :, e]
                left_kernels.append(k)
            for drop_e2 in (False, True):
                k = torch.zeros(*w_right.shape[:2], 3, 5, dtype=torch.float64)
                for a in taps:
                    for e in range(3):
                        if not (drop_e2 and e == 2):
                            k[:, :, :, e - a + 2] += w_right[:, :, a, :, e]
                right_kernels.append(k)
        self.num_classes = len(class_sets)
        layout = CHANNELS_LAST_2D
        self.left_weight = torch.cat(left_kernels).float().contiguous(memory_format=layout)
        self.right_weight = torch.cat(right_kernels).float().contiguous(memory_format=layout)
        self.bias = bias.float()
        self.right_bias = self.bias.repeat(2 * self.num_classes)

    def to(self, device: torch.device | str, dtype: torch.dtype) -> ImplicitCostConv:
        """Move the kernels to `device` and `dtype` (e.g. CUDA float16), in place."""
        for name in ("left_weight", "right_weight"):
            setattr(self, name, getattr(self, name).to(device, dtype).contiguous(
                memory_format=CHANNELS_LAST_2D))
        self.bias = self.bias.to(device, dtype)
        self.right_bias = self.right_bias.to(device, dtype)
        return self

    @staticmethod
    def _level_classes(levels: int) -> list[tuple[int, ...]]:
        """For each level d, the kernel depth taps a whose level d + a - 1 is inside [0, D)."""
        return [tuple(a for a in range(3) if 0 <= d + a - 1 < levels) for d in range(levels)]

    def tables(self, left: torch.Tensor, right: torch.Tensor
               ) -> tuple[torch.Tensor, torch.Tensor]:
        """Tables for one batch element (views of the channels-last convolution outputs).

        left, right: (1, C, H, W) features.
        Returns left (H, W, K, 5, C_out): TL_k[t] for t in BANDS, and right
        (H, W + 2, K, 2, C_out): TR_k and its E variant, column i <-> v = i - 2, bias included.
        """
        left = left.contiguous(memory_format=CHANNELS_LAST_2D)
        right = F.pad(right, (4, 2)).contiguous(memory_format=CHANNELS_LAST_2D)
        table_left = onednn_conv(left, self.left_weight, None, 1, 1, 1)
        table_right = onednn_conv(right, self.right_weight, self.right_bias, 1, (1, 0), 1)
        height, oc, k = left.shape[2], self.out_channels, self.num_classes
        # channels-last memory is (H, W, groups, C_out)
        table_left = table_left.permute(0, 2, 3, 1).reshape(height, -1, k, len(self.BANDS), oc)
        table_right = table_right.permute(0, 2, 3, 1).reshape(height, -1, k, 2, oc)
        return table_left, table_right

    def _fill_level(self, plane: torch.Tensor, d: int, table_left: torch.Tensor,
                    table_right: torch.Tensor) -> None:
        """plane (H, W, C_out) <- relu(output at level d)."""
        width = plane.shape[1]
        k = self.class_index[d]
        bulk = table_left[:, :, k, len(self.BANDS) - 1]                # TL_k[2], (H, W, C)
        right_g, right_e = table_right[:, :, k, 0], table_right[:, :, k, 1]
        first = min(width, max(0, d - 2))            # columns x < d - 2 (v < -2): bias only
        if first > 0:
            plane[:, :first] = self.bias
        split = min(width - 1, max(first, d + 2))    # from x = d + 2 on, the left bulk is added
        if first < split:
            plane[:, first:split] = right_g[:, first - d + 2:split - d + 2]
        if split < width - 1:
            torch.add(right_g[:, split - d + 2:width - 1 - d + 2], bulk[:, split:width - 1],
                      out=plane[:, split:width - 1])
        if first <= width - 1:                       # last column: the E variant
            plane[:, width - 1] = right_e[:, width + 1 - d]
            if width - 1 >= d + 2:
                plane[:, width - 1] += bulk[:, width - 1]
        for band, t in enumerate(self.BANDS[:-1]):   # columns x = d + t, t in -2..1
            x = d + t
            if 0 <= x < width:
                plane[:, x] += table_left[:, x, k, band]
        plane.relu_()

    def __call__(self, left: torch.Tensor, right: torch.Tensor) -> torch.Tensor:
        """left, right: (B, C, H, W) float32 features -> (B, C_out, D, H, W), ReLU applied."""
        batch, _, height, width = left.shape
        out = torch.empty((batch, self.out_channels, self.levels, height, width),
                          dtype=left.dtype, device=left.device, memory_format=CHANNELS_LAST_3D)
        for b in range(batch):
            table_left, table_right = self.tables(left[b:b + 1], right[b:b + 1])
            planes = out[b].permute(1, 2, 3, 0)                         # (D, H, W, C) view
            for d in range(self.levels):
                self._fill_level(planes[d], d, table_left, table_right)
        return out
