"""Convolutions with BatchNorm folded in, called on oneDNN directly (CPU), channels-last.

F.conv3d/F.conv2d pick PyTorch's slow reference kernels for small batch-1 inputs (the 1/16-
resolution hourglass layers) and F.conv_transpose3d for PSMNet's transposed convolutions; calling
oneDNN (`torch.mkldnn_convolution`, its transposed-convolution op) on channels-last tensors is
3-6x faster there. Other devices and dtypes fall back to F.conv*d.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
import torch.nn.functional as F

from stereo_depth_ros.models.fused import cpu_features
from stereo_depth_ros.models.fused.folding import batchnorm_state, fold_bn

CHANNELS_LAST_2D = torch.channels_last
CHANNELS_LAST_3D = torch.channels_last_3d
MKLDNN = torch.backends.mkldnn.is_available() and hasattr(torch, "mkldnn_convolution")
MKLDNN_TRANSPOSED = MKLDNN and hasattr(torch.ops.mkldnn, "_convolution_transpose_pointwise")
ONEDNN_DTYPES = (torch.float32, torch.bfloat16)
"""Activation types these wrappers hand to oneDNN (bfloat16 only where torch's oneDNN runs it:
`cpu_features.CpuFeatures.onednn_bf16`)."""


def _on_onednn(x: torch.Tensor, weight: torch.Tensor) -> bool:
    if x.device.type != "cpu" or x.dtype != weight.dtype or x.dtype not in ONEDNN_DTYPES:
        return False
    return x.dtype == torch.float32 or cpu_features.detect().onednn_bf16


def _expand(value, dims: int) -> list[int]:
    return [value] * dims if isinstance(value, int) else list(value)


def onednn_conv(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, stride=1,
                padding=0, dilation=1) -> torch.Tensor:
    """Convolution (2-D or 3-D by the weight's rank) that goes straight to oneDNN on CPU.

    F.conv3d/F.conv2d pick PyTorch's slow reference kernel for small batch-1 inputs (fewer than
    ~20k elements in the first four dimensions: the 1/16-resolution hourglass layers) and for
    some kernel shapes; oneDNN is 3-6x faster there. x and weight share one dtype (float32, or
    bfloat16 where oneDNN runs it); the output has it too. Other devices: F.conv*d.
    """
    dims = weight.dim() - 2
    if MKLDNN and _on_onednn(x, weight):
        return torch.mkldnn_convolution(x, weight, bias, _expand(padding, dims),
                                        _expand(stride, dims), _expand(dilation, dims), 1)
    conv = F.conv3d if dims == 3 else F.conv2d
    return conv(x, weight, bias, stride, padding, dilation)


class FoldedConv:
    """A convolution with its BatchNorm folded in, in channels-last layout.

    Call: conv(x, relu=False, residual=None) = act(conv(x) + bias + residual), the residual added
    and the ReLU applied in place on the fresh output.
    """

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor | None, *, stride: int = 1,
                 padding: int = 0, dilation: int = 1, dtype: torch.dtype = torch.float32
                 ) -> None:
        self.dim = weight.dim() - 2
        fmt = CHANNELS_LAST_3D if self.dim == 3 else CHANNELS_LAST_2D
        self.weight = weight.to(dtype).contiguous(memory_format=fmt)
        self.bias = None if bias is None else bias.to(dtype)
        self.stride, self.padding, self.dilation = stride, padding, dilation

    @property
    def dtype(self) -> torch.dtype:
        """The activations' dtype (input and output)."""
        return self.weight.dtype

    def __call__(self, x: torch.Tensor, *, relu: bool = False,
                 residual: torch.Tensor | None = None, padding=None) -> torch.Tensor:
        padding = self.padding if padding is None else padding
        out = onednn_conv(x, self.weight, self.bias, self.stride, padding, self.dilation)
        if residual is not None:
            out.add_(residual)
        if relu:
            out.relu_()
        return out

    @classmethod
    def from_state_dict(cls, sd: Mapping[str, torch.Tensor], conv_key: str,
                        bn_prefix: str | None, **kwargs) -> FoldedConv:
        """Conv from `conv_key` (a weight) folded with the BatchNorm at `bn_prefix` (or None)."""
        weight = sd[conv_key].float()
        bias = None
        if bn_prefix is not None:
            weight, bias = fold_bn(weight, batchnorm_state(sd, bn_prefix))
        return cls(weight, bias, **kwargs)


class FoldedConvTranspose3d:
    """ConvTranspose3d(k=3, stride=2, padding=1, output_padding=1), BN folded, on oneDNN.

    On CPU this calls oneDNN's transposed convolution directly on channels-last input
    (F.conv_transpose3d falls back to PyTorch's slow reference kernel for these shapes).

    weight: (C_in, C_out, 3, 3, 3) as stored by nn.ConvTranspose3d.
    """

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor | None,
                 dtype: torch.dtype = torch.float32) -> None:
        self.weight = weight.to(dtype).contiguous(memory_format=CHANNELS_LAST_3D)
        self.bias = None if bias is None else bias.to(dtype)

    def __call__(self, x: torch.Tensor, *, relu: bool = False,
                 residual: torch.Tensor | None = None) -> torch.Tensor:
        x = x.contiguous(memory_format=CHANNELS_LAST_3D)
        if MKLDNN_TRANSPOSED and _on_onednn(x, self.weight):
            out = torch.ops.mkldnn._convolution_transpose_pointwise(
                x, self.weight, self.bias, [1, 1, 1], [1, 1, 1], [2, 2, 2], [1, 1, 1], 1,
                "relu" if relu and residual is None else "none", [], "")
            if residual is not None:
                out.add_(residual)
                if relu:
                    out.relu_()
            return out
        out = F.conv_transpose3d(x, self.weight, self.bias, stride=2, padding=1,
                                 output_padding=1)
        if residual is not None:
            out.add_(residual)
        if relu:
            out.relu_()
        return out
