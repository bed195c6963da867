"""Inference-only fast PSMNet, built from a loaded reference model (or its state_dict).

The reference model (`models.psmnet`) computes what the official code computes and stays the
definition; this module computes the same function faster on a CPU. What it does, and why:

* BatchNorm folded into the convolution before it (weights scaled per output channel, a bias
  added); ReLU and residual additions in place. (3-D part; the 2-D features in fast mode.)
* Channels-last activations (NHWC / NDHWC), the layout oneDNN's direct convolutions use without
  reorders, and oneDNN called directly (`torch.mkldnn_convolution`, oneDNN's transposed
  convolution): F.conv3d/F.conv_transpose3d pick PyTorch's slow reference kernels for the small
  1/16-resolution hourglass layers and for transposed convolutions.
* The concatenation cost volume is never built (`ImplicitCostConv`): dres0's first convolution
  over it is linear, and each level of the volume is the left features and the shifted right
  features with the columns x < level zeroed, so its output is two small 2-D convolutions of the
  feature maps gathered at shifted columns. Exact, including the zeroed columns, the first and
  last levels and the right border.
* The three 32->1 classifier convolutions are one matrix product and 27 shifted additions
  (`SingleOutputConv3d`), done with the 32->32 convolution before them in slabs of levels
  (`ClassifierHead`), so their hidden volumes never exist in full.
* Trilinear upsampling, softmax, soft-argmin and confidence in chunks of pixels
  (`ChunkedRegression`): the (max_disparity, H, W) volume never exists.
* Fast mode only: int8 (AVX-512 VNNI) convolutions with per-channel weights and per-frame
  dynamic activation ranges (`Int8Conv`) for the 3-D convolutions and the 64/128-channel feature
  layers whose rounding the output tolerates (`INT8_FEATURE_LAYERS`).

Modes: `"exact"` is float32 throughout and keeps the reference feature CNN unchanged (it
amplifies float rounding too much for golden parity otherwise); `"fast"` adds the folded
channels-last feature CNN and int8 (mean |disparity change| ~0.03 px on the sample pairs).

Usage:
    model = build_psmnet("stackhourglass"); load_checkpoint(model, path)
    fast = FastPSMNet.from_model(model, mode="fast")
    disparity = fast(left, right)                                  # (B, 1, H, W) px
    disparity, confidence = fast.forward_with_confidence(left, right)
"""

from __future__ import annotations

import math
import time
import warnings
from collections.abc import Callable, Mapping

import torch
import torch.nn.functional as F

from stereo_depth_ros.models.fused.folding import (batchnorm_state, fold_bn,
                                                   strip_module_prefix)
from stereo_depth_ros.models.fused.regression import ChunkedRegression, interpolation_matrix

MODES = ("exact", "fast")
INT8_FEATURE_LAYERS = ("layer2:8", "layer3", "layer4")
"""Feature blocks run in int8 in fast mode: "layer:first_block" (or the whole layer). Measured
against exact mode on the sample pairs (worst pair): int8 3-D only 0.034 px mean |change|, 0.11 %
of pixels > 3 px; + layer3/layer4 0.034 / 0.11 %; + layer2 blocks 8-15 0.040 / 0.13 %; all of
layer2 0.065 / 0.37 %; lastconv 0.058 / 0.28 %; layer1 and firstconv ~0.10 / 0.54 %."""
_CL2 = torch.channels_last
_CL3 = torch.channels_last_3d
_MKLDNN = torch.backends.mkldnn.is_available() and hasattr(torch, "mkldnn_convolution")
_MKLDNN_TRANSPOSED = _MKLDNN and hasattr(torch.ops.mkldnn, "_convolution_transpose_pointwise")


# ----------------------------------------------------------------------------------------------
# Convolutions with BatchNorm folded in
# ----------------------------------------------------------------------------------------------

def _conv(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, stride=1,
          padding=0, dilation=1) -> torch.Tensor:
    """Convolution (2-D or 3-D by the weight's rank) that goes straight to oneDNN on CPU.

    F.conv3d/F.conv2d pick PyTorch's slow reference kernel for small batch-1 inputs (fewer than
    ~20k elements in the first four dimensions: the 1/16-resolution hourglass layers) and for
    some kernel shapes; oneDNN is 3-6x faster there. Same arithmetic family as F.conv*d.
    """
    dims = weight.dim() - 2
    if x.device.type == "cpu" and x.dtype == torch.float32 and _MKLDNN:
        expand = (lambda v: [v] * dims if isinstance(v, int) else list(v))
        return torch.mkldnn_convolution(x, weight, bias, expand(padding), expand(stride),
                                        expand(dilation), 1)
    conv = F.conv3d if dims == 3 else F.conv2d
    return conv(x, weight, bias, stride, padding, dilation)


class Conv:
    """A convolution with its BatchNorm folded in, in channels-last layout.

    Call: conv(x, relu=False, residual=None) = act(conv(x) + bias + residual), the residual added
    and the ReLU applied in place on the fresh output.
    """

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor | None, *, stride: int = 1,
                 padding: int = 0, dilation: int = 1) -> None:
        self.dim = weight.dim() - 2
        fmt = _CL3 if self.dim == 3 else _CL2
        self.weight = weight.contiguous(memory_format=fmt)
        self.bias = bias
        self.stride, self.padding, self.dilation = stride, padding, dilation

    def __call__(self, x: torch.Tensor, *, relu: bool = False,
                 residual: torch.Tensor | None = None, padding=None) -> torch.Tensor:
        padding = self.padding if padding is None else padding
        out = _conv(x, self.weight, self.bias, self.stride, padding, self.dilation)
        if residual is not None:
            out.add_(residual)
        if relu:
            out.relu_()
        return out

    @classmethod
    def from_state_dict(cls, sd: Mapping[str, torch.Tensor], conv_key: str,
                        bn_prefix: str | None, **kwargs) -> Conv:
        """Conv from `conv_key` (a weight) folded with the BatchNorm at `bn_prefix` (or None)."""
        weight = sd[conv_key].float()
        bias = None
        if bn_prefix is not None:
            weight, bias = fold_bn(weight, batchnorm_state(sd, bn_prefix))
        return cls(weight, bias, **kwargs)


# ----------------------------------------------------------------------------------------------
# int8 3-D convolutions (fast mode)
# ----------------------------------------------------------------------------------------------

def int8_available() -> bool:
    """True when this torch has oneDNN's quantized convolution ops (x86 CPU builds)."""
    try:
        return (hasattr(torch.ops.onednn, "qconv_pointwise")
                and hasattr(torch.ops.onednn, "qconv_prepack")
                and torch.backends.mkldnn.is_available())
    except (AttributeError, RuntimeError):
        return False


class QuantizedActivation:
    """A channels-last activation quantized to uint8 with one scale and zero point per tensor.

    The range is the tensor's own min/max (dynamic quantization, recomputed every frame), so no
    calibration data is needed and nothing is clipped. `nonnegative=True` (ReLU outputs) skips
    the min and uses zero point 0.

    x: (B, C, H, W) or (B, C, D, H, W) float32.
    """

    def __init__(self, x: torch.Tensor, *, nonnegative: bool = False) -> None:
        fmt = _CL3 if x.dim() == 5 else _CL2
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
    residual addition fused into the kernel). Same call as `Conv`; the input may also be an
    already quantized activation, to share one quantization between two convolutions.

    weight: (C_out, C_in, k...) float32 with BN folded; bias: (C_out,) or None.
    """

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor | None, *, stride: int = 1,
                 padding: int = 0, dilation: int = 1, nonnegative_input: bool = False) -> None:
        self.dim = weight.dim() - 2
        fmt = _CL3 if self.dim == 3 else _CL2
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
    def from_conv(cls, conv: Conv, *, nonnegative_input: bool = False) -> Int8Conv:
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


# ----------------------------------------------------------------------------------------------
# 3-D building blocks with fast kernels
# ----------------------------------------------------------------------------------------------

class ConvTranspose3d:
    """ConvTranspose3d(k=3, stride=2, padding=1, output_padding=1), BN folded, on oneDNN.

    On CPU this calls oneDNN's transposed convolution directly on channels-last input
    (F.conv_transpose3d falls back to PyTorch's slow reference kernel for these shapes).

    weight: (C_in, C_out, 3, 3, 3) as stored by nn.ConvTranspose3d.
    """

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor | None) -> None:
        self.weight = weight.contiguous(memory_format=_CL3)
        self.bias = bias

    def __call__(self, x: torch.Tensor, *, relu: bool = False,
                 residual: torch.Tensor | None = None) -> torch.Tensor:
        x = x.contiguous(memory_format=_CL3)
        if x.device.type == "cpu" and x.dtype == torch.float32 and _MKLDNN_TRANSPOSED:
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

    def __init__(self, conv: Conv | Int8Conv, out_conv: SingleOutputConv3d,
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
        self.left_weight = torch.cat(left_kernels).float().contiguous(memory_format=_CL2)
        self.right_weight = torch.cat(right_kernels).float().contiguous(memory_format=_CL2)
        self.bias = bias.float()
        self.right_bias = self.bias.repeat(2 * self.num_classes)

    def to(self, device: torch.device | str, dtype: torch.dtype) -> ImplicitCostConv:
        """Move the kernels to `device` and `dtype` (e.g. CUDA float16), in place."""
        for name in ("left_weight", "right_weight"):
            setattr(self, name, getattr(self, name).to(device, dtype).contiguous(
                memory_format=_CL2))
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
        left = left.contiguous(memory_format=_CL2)
        right = F.pad(right, (4, 2)).contiguous(memory_format=_CL2)
        table_left = _conv(left, self.left_weight, None, 1, 1, 1)
        table_right = _conv(right, self.right_weight, self.right_bias, 1, (1, 0), 1)
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
                          dtype=left.dtype, device=left.device, memory_format=_CL3)
        for b in range(batch):
            table_left, table_right = self.tables(left[b:b + 1], right[b:b + 1])
            planes = out[b].permute(1, 2, 3, 0)                         # (D, H, W, C) view
            for d in range(self.levels):
                self._fill_level(planes[d], d, table_left, table_right)
        return out


def explicit_cost_conv(left: torch.Tensor, right: torch.Tensor, weight: torch.Tensor,
                       bias: torch.Tensor, levels: int) -> torch.Tensor:
    """Reference for `ImplicitCostConv`: build the official volume, conv3d, ReLU (for tests)."""
    from stereo_depth_ros.models.cost_volume import build_concat_volume
    volume = build_concat_volume(left, right, levels)
    return F.relu(F.conv3d(volume, weight, bias, padding=1))


# ----------------------------------------------------------------------------------------------
# Process-wide allocator setting (opt-in)
# ----------------------------------------------------------------------------------------------

_M_TRIM_THRESHOLD, _M_MMAP_MAX = -1, -4                           # glibc mallopt parameters


def reuse_freed_memory() -> bool:
    """Make glibc malloc keep freed memory for reuse instead of returning it to the OS.

    PyTorch's CPU allocator takes each large tensor straight from glibc, which maps tensors above
    32 MB with mmap and unmaps them when freed, so every frame page-faults (and zero-fills)
    every big activation again: about a third of the reference forward at 384x1248, a fifth of
    the fast one. With mmap disabled and trimming off, freed blocks stay in the heap and the next
    frame reuses them. Costs: the process keeps its peak memory mapped between frames, and the
    peak can grow by fragmentation (~+250 MB for fast mode at 384x1248). Process-wide and not
    undoable; call it once at start-up in a dedicated inference process (the bench's
    `--malloc reuse`). Returns False when this is not glibc.
    """
    import ctypes
    import ctypes.util
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    return bool(mallopt(_M_MMAP_MAX, 0)) and bool(mallopt(_M_TRIM_THRESHOLD, 2 ** 30))


# ----------------------------------------------------------------------------------------------
# The network
# ----------------------------------------------------------------------------------------------

class _Timer:
    """Accumulates wall time per stage into a dict when one is given."""

    def __init__(self, timings: dict[str, float] | None) -> None:
        self.timings = timings
        self.last = time.perf_counter()

    def mark(self, stage: str) -> None:
        if self.timings is None:
            return
        now = time.perf_counter()
        self.timings[stage] = self.timings.get(stage, 0.0) + now - self.last
        self.last = now


class FastPSMNet:
    """Inference-only PSMNet computing the reference model's output faster.

    Build with `FastPSMNet.from_model(model, mode=...)` or `FastPSMNet(state_dict, variant=...)`.
    The weights are copied and folded; the reference model is not used afterwards.

    mode: "exact" (float32; matches the reference to float rounding) or "fast".
    int8: fast mode's int8 convolutions; None (default) uses them where available (x86 CPU with
        oneDNN), False keeps fast mode in float32 (folded, channels-last features).
    Inputs and outputs as the reference: left, right (B, 3, H, W) float32 normalized RGB, H and W
    multiples of 16 and >= 256; disparity (B, 1, H, W) float32 px in [0, max_disparity - 1].
    """

    def __init__(self, state_dict: Mapping[str, torch.Tensor], *, variant: str = "stackhourglass",
                 max_disparity: int = 192, align_corners: bool = True, mode: str = "exact",
                 device: torch.device | str | None = None, int8: bool | None = None) -> None:
        if mode not in MODES:
            raise ValueError(f"mode must be one of {', '.join(MODES)}, got {mode!r}")
        if variant not in ("stackhourglass", "basic"):
            raise ValueError(f"unknown PSMNet variant {variant!r}")
        if max_disparity <= 0 or max_disparity % 16:
            raise ValueError(f"max_disparity must be a positive multiple of 16, got "
                             f"{max_disparity}")
        sd = strip_module_prefix(state_dict)
        if device is not None:
            sd = {k: v.to(device) for k, v in sd.items()}
        self.variant = variant
        self.mode = mode
        self.max_disparity = int(max_disparity)
        self.levels = self.max_disparity // 4
        self.align_corners = bool(align_corners)
        on_cpu = all(v.device.type == "cpu" for v in sd.values())
        if int8 and (mode != "fast" or not on_cpu or not int8_available()):
            raise ValueError("int8=True needs mode='fast' on a CPU whose torch has oneDNN's "
                             "quantized convolutions")
        self.int8 = (mode == "fast" and on_cpu and int8_available()) if int8 is None else int8
        self.int8_feature_layers = INT8_FEATURE_LAYERS
        if mode == "exact":
            self._build_reference_features(sd)
        else:
            self._build_features(sd)
        self._build_3d(sd)
        self.regression = ChunkedRegression(self.max_disparity, self.align_corners)

    @classmethod
    def from_model(cls, model: torch.nn.Module, *, mode: str = "exact",
                   int8: bool | None = None) -> FastPSMNet:
        """Fast copy of a loaded reference model (`models.build_psmnet` + `load_checkpoint`)."""
        variant = getattr(model, "variant", None) or (
            "stackhourglass" if hasattr(model, "dres2") else "basic")
        device = next(model.parameters()).device
        return cls(model.state_dict(), variant=variant, max_disparity=model.max_disparity,
                   align_corners=model.align_corners, mode=mode, device=device, int8=int8)

    # -- construction ---------------------------------------------------------------------------

    def _build_reference_features(self, sd: Mapping[str, torch.Tensor]) -> None:
        """Exact mode: the reference feature module itself (NCHW, BatchNorm unfolded).

        The feature CNN amplifies float rounding (a 1e-7 relative change in one layer's output
        moves the features by ~1e-5 and the golden disparity by ~1e-2 px), so only the reference
        kernels reproduce the golden vectors within 1e-2 px; folding BN or changing the layout
        (`_build_features`, fast mode) changes the rounding.
        """
        from stereo_depth_ros.models.feature import FeatureExtraction
        module = FeatureExtraction(align_corners=self.align_corners)
        prefix = "feature_extraction."
        result = module.load_state_dict({k[len(prefix):]: v for k, v in sd.items()
                                         if k.startswith(prefix)}, strict=False)
        missing = [k for k in result.missing_keys if not k.endswith("num_batches_tracked")]
        if missing or result.unexpected_keys:
            raise ValueError(f"feature_extraction weights do not match: missing {missing[:5]}, "
                             f"unexpected {result.unexpected_keys[:5]}")
        device = next(iter(sd.values())).device
        self.feature_module = module.to(device).eval()

    def _int8_block(self, layer: str, block: int) -> bool:
        """Whether block `block` of feature layer `layer` runs in int8 (fast mode)."""
        for entry in self.int8_feature_layers:
            name, _, first = entry.partition(":")
            if name == layer and block >= int(first or 0):
                return True
        return False

    def _build_features(self, sd: Mapping[str, torch.Tensor]) -> None:
        """Fast mode: BN folded, channels-last, ReLU and residuals in place."""
        self.feature_module = None
        p = "feature_extraction."

        def cbn(name: str, **kw) -> Conv:
            return Conv.from_state_dict(sd, f"{p}{name}.0.weight", f"{p}{name}.1", **kw)

        self.firstconv = [cbn("firstconv.0", stride=2, padding=1), cbn("firstconv.2", padding=1),
                          cbn("firstconv.4", padding=1)]
        self.layers = []
        specs = (("layer1", 3, 1, 1), ("layer2", 16, 2, 1), ("layer3", 3, 1, 1),
                 ("layer4", 3, 1, 2))
        for name, blocks, stride, dilation in specs:
            layer = []
            for i in range(blocks):
                s = stride if i == 0 else 1
                conv1 = cbn(f"{name}.{i}.conv1.0", stride=s, padding=dilation, dilation=dilation)
                conv2 = cbn(f"{name}.{i}.conv2", padding=dilation, dilation=dilation)
                down = None
                if f"{p}{name}.{i}.downsample.0.weight" in sd:
                    down = cbn(f"{name}.{i}.downsample", stride=s)
                if self.int8 and self._int8_block(name, i):
                    conv1 = Int8Conv.from_conv(conv1)
                    conv2 = Int8Conv.from_conv(conv2, nonnegative_input=True)
                    down = None if down is None else Int8Conv.from_conv(down)
                layer.append((conv1, conv2, down))
            self.layers.append(layer)
        self.branches = [(pool, cbn(f"branch{n}.1")) for n, pool in ((4, 8), (3, 16), (2, 32),
                                                                     (1, 64))]
        self.lastconv = cbn("lastconv.0", padding=1)
        if self.int8 and "lastconv" in self.int8_feature_layers:
            self.lastconv = Int8Conv.from_conv(self.lastconv)
        self.lastconv_1x1 = Conv.from_state_dict(sd, f"{p}lastconv.2.weight", None)

    def _build_3d(self, sd: Mapping[str, torch.Tensor]) -> None:
        int8 = self.int8

        def cbn(name: str, *, nonnegative_input: bool = False, **kw) -> Conv | Int8Conv:
            conv = Conv.from_state_dict(sd, f"{name}.0.weight", f"{name}.1", **kw)
            if int8:
                return Int8Conv.from_conv(conv, nonnegative_input=nonnegative_input)
            return conv

        weight, bias = fold_bn(sd["dres0.0.0.weight"].float(), batchnorm_state(sd, "dres0.0.1"))
        self.cost_conv = ImplicitCostConv(weight, bias, self.levels)
        self.dres0_2 = cbn("dres0.2", padding=1, nonnegative_input=True)
        if self.variant == "stackhourglass":
            blocks = (1,)
            self.hourglasses = [self._hourglass(cbn, sd, f"dres{i}") for i in (2, 3, 4)]
            heads = ("classif1", "classif2", "classif3")
        else:
            blocks = (1, 2, 3, 4)
            self.hourglasses = []
            heads = ("classify",)
        # The first block reads relu(dres0); later ones read a residual sum (signed).
        self.residuals = [(cbn(f"dres{i}.0", padding=1, nonnegative_input=i == 1),
                           cbn(f"dres{i}.2", padding=1, nonnegative_input=True))
                          for i in blocks]
        self.heads = [ClassifierHead(cbn(f"{h}.0", padding=1),
                                     SingleOutputConv3d(sd[f"{h}.2.weight"].float()))
                      for h in heads]

    @staticmethod
    def _hourglass(make: Callable, sd: Mapping[str, torch.Tensor], p: str) -> dict:
        def cbn(name: str, **kw) -> Conv | Int8Conv:
            return make(f"{p}.{name}", **kw)

        def deconv(name: str, cls: type) -> ConvTranspose3d:
            w, b = fold_bn(sd[f"{p}.{name}.0.weight"].float(),
                           batchnorm_state(sd, f"{p}.{name}.1"), transposed=True)
            return cls(w, b)

        return {"conv1": cbn("conv1.0", stride=2, padding=1),
                "conv2": cbn("conv2", padding=1, nonnegative_input=True),
                "conv3": cbn("conv3.0", stride=2, padding=1, nonnegative_input=True),
                "conv4": cbn("conv4.0", padding=1, nonnegative_input=True),
                "conv5": deconv("conv5", ConvTranspose3d),
                "conv6": deconv("conv6", ConvTranspose3d)}

    # -- stages ---------------------------------------------------------------------------------

    def extract_features(self, left: torch.Tensor, right: torch.Tensor
                         ) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, 3, H, W) normalized images -> two (B, 32, H/4, W/4) feature maps.

        Left and right go through the network as one batch.
        """
        batch = left.shape[0]
        if self.feature_module is not None:
            features = self.feature_module(torch.cat([left, right]))
            return features[:batch], features[batch:]
        x = torch.cat([left, right]).contiguous(memory_format=_CL2)
        for conv in self.firstconv:
            x = conv(x, relu=True)
        raw = None
        for i, layer in enumerate(self.layers):
            for conv1, conv2, down in layer:
                if isinstance(conv1, Int8Conv):
                    xq = conv1.quantize(x)                  # conv1 and downsample share it
                    shortcut = down(xq) if down is not None else x
                    x = conv2(conv1(xq, relu=True), residual=shortcut)
                    continue
                shortcut = down(x) if down is not None else x
                x = conv2(conv1(x, relu=True), residual=shortcut)
            if i == 1:
                raw = x
        skip = x
        size = tuple(skip.shape[-2:])
        pooled = []
        for pool, conv in self.branches:
            branch = conv(F.avg_pool2d(skip, pool, pool), relu=True)
            pooled.append(F.interpolate(branch, size=size, mode="bilinear",
                                        align_corners=self.align_corners))
        x = torch.cat([raw, skip, *pooled], dim=1)
        x = self.lastconv_1x1(self.lastconv(x, relu=True))
        return x[:batch], x[batch:]

    def cost_volume(self, left_features: torch.Tensor, right_features: torch.Tensor
                    ) -> torch.Tensor:
        """Features -> output of dres0's first conv+BN+ReLU, (B, 32, D/4, H/4, W/4)."""
        return self.cost_conv(left_features, right_features)

    def aggregate(self, cost: torch.Tensor) -> torch.Tensor:
        """dres0's first output -> the final low-resolution cost (B, 1, D/4, H/4, W/4).

        For stackhourglass this is cost1 + cost2 + cost3 of the reference (its accumulation).
        """
        cost0 = self.dres0_2(cost, relu=True)
        del cost
        for conv_a, conv_b in self.residuals:
            cost0 = conv_b(conv_a(cost0, relu=True), residual=cost0)
        final = None
        if not self.hourglasses:
            return self.heads[0](self.heads[0].quantize(cost0))
        out, pre1, post = None, None, None
        x = cost0
        for i, (hourglass, head) in enumerate(zip(self.hourglasses, self.heads)):
            presqu = pre1 if i > 0 else None
            out, pre, post = self._run_hourglass(hourglass, x, presqu, post if i > 0 else None)
            del x
            if i == 0:
                pre1 = pre
            del pre
            out.add_(cost0)
            # The head and the next hourglass read the same tensor: quantize it once (int8).
            x = head.quantize(out)
            del out
            final = head(x, out=final)
        return final

    @staticmethod
    def _run_hourglass(hg: dict, x: torch.Tensor, presqu: torch.Tensor | None,
                       postsqu: torch.Tensor | None
                       ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        out = hg["conv1"](x, relu=True)
        pre = hg["conv2"](out, residual=postsqu, relu=True)
        out = hg["conv4"](hg["conv3"](pre, relu=True), relu=True)
        post = hg["conv5"](out, residual=presqu if presqu is not None else pre, relu=True)
        out = hg["conv6"](post)
        return out, pre, post

    def regress(self, cost: torch.Tensor, size: tuple[int, int], *,
                with_confidence: bool = False
                ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(B, 1, D/4, h, w) cost -> disparity (B, 1, H, W) px and confidence (or None)."""
        return self.regression(cost, size, with_confidence=with_confidence)

    # -- forward --------------------------------------------------------------------------------

    def _check_input(self, left: torch.Tensor, right: torch.Tensor) -> None:
        if left.shape != right.shape or left.dim() != 4 or left.shape[1] != 3:
            raise ValueError(f"expected left and right of equal shape (B, 3, H, W), got "
                             f"{tuple(left.shape)} and {tuple(right.shape)}")
        height, width = left.shape[-2:]
        if height % 16 or width % 16 or min(height, width) < 256:
            raise ValueError(f"input size {height}x{width} must be a multiple of 16 and at "
                             "least 256x256: pad it first (core.padding.InputPadder)")

    def forward_with_confidence(self, left: torch.Tensor, right: torch.Tensor, *,
                                timings: dict[str, float] | None = None,
                                with_confidence: bool = True
                                ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Disparity and confidence, each (B, 1, H, W) float32 (see `ChunkedRegression`).

        timings: when a dict is given, seconds per stage are added to it under "features",
        "cost_volume", "cnn3d" and "regression".
        """
        self._check_input(left, right)
        size = (left.shape[2], left.shape[3])
        timer = _Timer(timings)
        with torch.inference_mode():
            left_f, right_f = self.extract_features(left.float(), right.float())
            timer.mark("features")
            cost = self.cost_volume(left_f, right_f)
            del left_f, right_f
            timer.mark("cost_volume")
            cost = self.aggregate(cost)
            timer.mark("cnn3d")
            result = self.regress(cost, size, with_confidence=with_confidence)
            timer.mark("regression")
        return result

    def __call__(self, left: torch.Tensor, right: torch.Tensor) -> torch.Tensor:
        """Disparity (B, 1, H, W) float32 px."""
        return self.forward_with_confidence(left, right, with_confidence=False)[0]


def build_fast_psmnet(model: torch.nn.Module, *, mode: str = "exact") -> FastPSMNet:
    """Alias of `FastPSMNet.from_model`."""
    return FastPSMNet.from_model(model, mode=mode)


__all__ = ["INT8_FEATURE_LAYERS", "MODES", "ChunkedRegression", "ClassifierHead", "Conv",
           "ConvTranspose3d", "FastPSMNet", "ImplicitCostConv", "Int8Conv", "QuantizedActivation",
           "SingleOutputConv3d", "build_fast_psmnet", "explicit_cost_conv", "fold_bn",
           "int8_available", "interpolation_matrix", "quantize_weight", "reuse_freed_memory",
           "strip_module_prefix"]
