"""int8 convolutions through oneDNN (x86 VNNI): per-output-channel int8 weights, uint8
activations quantized per frame from their own range (no calibration data), float32 output."""

from __future__ import annotations

import math
import warnings

import torch

from stereo_depth_ros.models.fused.onednn import (CHANNELS_LAST_2D, CHANNELS_LAST_3D,
                                                  FoldedConv)


class QuantizedActivation:
    """A channels-last activation quantized to uint8 with one scale and zero point per tensor.

    The range is the tensor's own min/max (dynamic quantization, recomputed every frame), so no
    calibration data is needed and nothing is clipped. `nonnegative=True` (ReLU outputs) skips
    the min and uses zero point 0.

    x: (B, C, H, W) or (B, C, D, H, W) float32.
    """

    def __init__(self, x: torch.Tensor, *, nonnegative: bool = False) -> None:
        fmt = CHANNELS_LAST_3D if x.dim() == 5 else CHANNELS_LAST_2D
        x = x.contiguous(memory_format=fmt)
        flat = x.movedim(1, -1).reshape(-1)                          # a view in channels-last
        if nonnegative:
            low, high = 0.0, max(0.0, float(flat.max()))
        else:
            low, high = (float(v) for v in torch.aminmax(flat))
            low, high = min(low, 0.0), max(high, 0.0)
        scale = (high - low) / 255.0
        if not scale > 0.0 or not math.isfinite(scale):
            scale = 1.0
        self.scale = scale
        self.zero_point = int(min(255, max(0, round(-low / scale))))
        self.data = _quantize_uint8(x, scale, self.zero_point)

    def dequantize(self) -> torch.Tensor:
        """The float32 values the int8 convolution sees (for tests)."""
        return (self.data.float() - self.zero_point) * self.scale


def _quantize_uint8(x: torch.Tensor, scale: float, zero_point: int) -> torch.Tensor:
    """round(x / scale) + zero_point clamped to [0, 255] as a plain uint8 tensor (x's layout)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)        # quantized dtypes are "deprecated"
        q = torch.quantize_per_tensor(x, scale, zero_point, torch.quint8)
    # A uint8 view of the quint8 storage (int_repr() would copy).
    return torch.empty(0, dtype=torch.uint8, device=x.device).set_(
        q.untyped_storage(), q.storage_offset(), q.shape, q.stride())


def quantize_weight(weight: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Symmetric per-output-channel int8: (int8 weight, float32 scales) with w ~ q * scale."""
    amax = weight.detach().double().abs().flatten(1).amax(1).clamp_min(1e-12)
    scale = amax / 127.0
    shape = [-1] + [1] * (weight.dim() - 1)
    q = torch.round(weight.double() / scale.view(shape)).clamp(-127, 127).to(torch.int8)
    return q, scale.float()


class Int8Conv:
    """2-D or 3-D convolution in int8 through oneDNN (AVX-512 VNNI).

    Per-output-channel symmetric int8 weights; the input is quantized to uint8 per call
    (`QuantizedActivation`); the output is float32 with the bias (and, for 2-D, the ReLU and the
    residual addition fused into the kernel). Same call as `FoldedConv`; the input may also be an
    already quantized activation, to share one quantization between two convolutions.

    weight: (C_out, C_in, k...) float32 with BN folded; bias: (C_out,) or None.
    """

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor | None, *, stride: int = 1,
                 padding: int = 0, dilation: int = 1, nonnegative_input: bool = False) -> None:
        self.dim = weight.dim() - 2
        fmt = CHANNELS_LAST_3D if self.dim == 3 else CHANNELS_LAST_2D
        self.out_channels = weight.shape[0]
        w_int8, self.w_scales = quantize_weight(weight)
        self.w_zero_points = torch.zeros(self.out_channels, dtype=torch.long)
        self.stride = [stride] * self.dim
        self.padding = [padding] * self.dim
        self.dilation = [dilation] * self.dim
        self.packed = torch.ops.onednn.qconv_prepack(
            w_int8.contiguous(memory_format=fmt), self.w_scales, 1.0, 0, self.stride,
            self.padding, self.dilation, 1, None)
        self.bias = None if bias is None else bias.float()
        self.nonnegative_input = nonnegative_input

    @classmethod
    def from_conv(cls, conv: FoldedConv, *, nonnegative_input: bool = False) -> Int8Conv:
        return cls(conv.weight, conv.bias, stride=conv.stride, padding=conv.padding,
                   dilation=conv.dilation, nonnegative_input=nonnegative_input)

    def quantize(self, x: torch.Tensor) -> QuantizedActivation:
        return QuantizedActivation(x, nonnegative=self.nonnegative_input)

    def __call__(self, x: torch.Tensor | QuantizedActivation, *, relu: bool = False,
                 residual: torch.Tensor | None = None, padding=None) -> torch.Tensor:
        q = x if isinstance(x, QuantizedActivation) else self.quantize(x)
        padding = self.padding if padding is None else list(padding)
        args = (self.stride, padding, self.dilation, 1, 1.0, 0, torch.float32)
        if self.dim == 2 and residual is not None:
            return torch.ops.onednn.qconv2d_pointwise.binary(
                q.data, q.scale, q.zero_point, self.packed, self.w_scales, self.w_zero_points,
                residual, self.bias, *args, 1.0, 0, "sum", 1.0, "relu" if relu else "none",
                [], "")
        fused_relu = relu and self.dim == 2           # oneDNN's int8 conv3d takes no post-op
        out = torch.ops.onednn.qconv_pointwise(
            q.data, q.scale, q.zero_point, self.packed, self.w_scales, self.w_zero_points,
            self.bias, *args, "relu" if fused_relu else "none", [], "")
        if residual is not None:
            out.add_(residual)
        if relu and not fused_relu:
            out.relu_()
        return out
