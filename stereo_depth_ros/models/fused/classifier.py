"""PSMNet's classifier heads (conv_bn_3d 32->32 + ReLU + Conv3d 32->1) without their hidden
volumes: the 32->1 convolution as one matrix product and 27 shifted additions, done slab by slab.
"""

from __future__ import annotations

import torch

from stereo_depth_ros.models.fused.int8 import Int8Conv, QuantizedActivation
from stereo_depth_ros.models.fused.onednn import FoldedConv


class SingleOutputConv3d:
    """Conv3d(C -> 1, k=3, padding=1, no bias) as a matrix product and 27 shifted additions.

    PyTorch sends a one-output-channel 3-D convolution to a slow kernel; here the input (read as
    a (N, C) matrix in channels-last layout) is multiplied by the (C, 27) tap matrix, and the 27
    tap planes are added at their offsets.

    weight: (1, C, 3, 3, 3).
    """

    def __init__(self, weight: torch.Tensor) -> None:
        self.taps = weight[0].reshape(weight.shape[1], 27).t().contiguous()   # (27, C)

    def accumulate(self, x: torch.Tensor, first: int, out: torch.Tensor, d0: int,
                   d1: int) -> None:
        """Add the output levels [d0, d1) into `out` (D, H, W), reading input levels
        [first, first + x.shape[0]) from `x` (L, H, W, C) contiguous; levels outside the
        volume are zero (padding), so the slab must hold every level in [d0 - 1, d1 + 1) that
        lies inside the volume.
        """
        levels, height, width, channels = x.shape
        planes = torch.mm(self.taps, x.view(-1, channels).t())
        planes = planes.view(3, 3, 3, levels, height, width)
        for a in range(3):
            # output level d reads input level d + a - 1
            o0, o1 = max(d0, first - a + 1), min(d1, first + levels - a + 1)
            if o0 >= o1:
                continue
            i0 = o0 + a - 1 - first
            for b in range(3):
                y0, y1 = max(0, 1 - b), min(height, height + 1 - b)
                for e in range(3):
                    x0, x1 = max(0, 1 - e), min(width, width + 1 - e)
                    out[o0:o1, y0:y1, x0:x1] += planes[a, b, e, i0:i0 + o1 - o0,
                                                       y0 + b - 1:y1 + b - 1,
                                                       x0 + e - 1:x1 + e - 1]

    def __call__(self, x: torch.Tensor, out: torch.Tensor | None = None) -> torch.Tensor:
        """x: (B, C, D, H, W) -> (B, 1, D, H, W) float32; added into `out` when given."""
        batch, _, depth, height, width = x.shape
        if out is None:
            out = x.new_zeros((batch, 1, depth, height, width))
        for b in range(batch):
            xb = x[b].permute(1, 2, 3, 0).contiguous()               # (D, H, W, C)
            self.accumulate(xb, 0, out[b, 0], 0, depth)
        return out


class ClassifierHead:
    """A classifier `conv_bn_3d(C->C) + ReLU + Conv3d(C->1)`, computed in slabs of levels.

    The C-channel hidden volume never exists in full: it is computed `slab` levels at a time
    (from the input levels one beyond the slab), and each hidden slab adds its contribution to
    the output levels it reaches. Every hidden level is computed once; the slabs are small and
    reused, so they stay in cache.
    """

    def __init__(self, conv: FoldedConv | Int8Conv, out_conv: SingleOutputConv3d,
                 slab: int = 4) -> None:
        self.conv = conv
        self.out_conv = out_conv
        self.slab = slab

    def quantize(self, x: torch.Tensor) -> torch.Tensor | QuantizedActivation:
        """The head's input as its convolution reads it (quantized for int8)."""
        return self.conv.quantize(x) if isinstance(self.conv, Int8Conv) else x

    def __call__(self, x: torch.Tensor | QuantizedActivation,
                 out: torch.Tensor | None = None) -> torch.Tensor:
        """x: (B, C, D, H, W) -> cost (B, 1, D, H, W) float32, added into `out` when given."""
        data = x.data if isinstance(x, QuantizedActivation) else x
        batch, _, depth, height, width = data.shape
        if out is None:
            out = torch.zeros((batch, 1, depth, height, width), dtype=torch.float32,
                              device=data.device)
        for b in range(batch):
            for h0 in range(0, depth, self.slab):
                h1 = min(depth, h0 + self.slab)                       # hidden levels [h0, h1)
                i0, i1 = max(0, h0 - 1), min(depth, h1 + 1)           # input levels needed
                # Interior slabs: no padding along D (the halo levels are real input levels).
                # At the ends of the volume: the usual zero padding, then drop the extra level.
                pad_d = 1 if (h0 == 0 or h1 == depth) else 0
                hidden = self.conv(_slab(x, b, i0, i1), relu=True, padding=(pad_d, 1, 1))
                first = i0 + 1 - pad_d                                 # level of output 0
                hidden = hidden[0, :, h0 - first:h1 - first].permute(1, 2, 3, 0).contiguous()
                self.out_conv.accumulate(hidden, h0, out[b, 0], max(0, h0 - 1),
                                         min(depth, h1 + 1))
        return out


def _slab(x: torch.Tensor | QuantizedActivation, b: int, d0: int, d1: int
          ) -> torch.Tensor | QuantizedActivation:
    """Levels [d0, d1) of batch element b (a view; contiguous in channels-last layout)."""
    if isinstance(x, QuantizedActivation):
        piece = QuantizedActivation.__new__(QuantizedActivation)
        piece.scale, piece.zero_point = x.scale, x.zero_point
        piece.data = x.data[b:b + 1, :, d0:d1]
        return piece
    return x[b:b + 1, :, d0:d1]
