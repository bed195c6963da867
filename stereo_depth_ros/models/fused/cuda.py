"""The CUDA engine: the reference PSMNet with BatchNorm folded, channels-last, reduced precision
and the whole forward captured as one CUDA graph per input size.

What it changes against the reference model (and why):

* BatchNorm folded into the convolution before it (`folding.fold_batchnorm_`): one kernel per
  conv_bn pair instead of two.
* Channels-last activations and weights (NHWC / NDHWC), the layout cuDNN's tensor-core kernels
  read without a transpose; the concatenation volume is built directly in that layout.
* "fast": the 2-D and 3-D convolutions in float16 (or bfloat16) on the tensor cores; the
  upsampling, softmax, soft-argmin and confidence always in float32 (a reduced-precision
  soft-argmin would round disparities near 190 px to whole pixels).
  "exact": float32 with TF32 switched off for the forward (cuDNN and cuBLAS), so the result
  matches the CPU reference within float rounding.
* The (max_disparity, H, W) probability volume is never materialised (`ChunkedRegression`).
* cuDNN autotuning (benchmark mode) for the fixed input size, then the forward is captured as a
  CUDA graph and replayed: ~300 kernel launches become one, and nothing in the forward waits on
  the host (no `.item()`, no `.cpu()`). A new input size captures a new graph (the old one is
  released).

It runs on the CPU too (eager, no graphs), which is how its construction is tested without a GPU.

Usage:
    engine = CudaPSMNet(model, mode="fast")              # model: loaded reference, on CUDA
    disparity, confidence = engine.forward_with_confidence(left, right)
"""

from __future__ import annotations

import copy
from contextlib import contextmanager
from collections.abc import Callable, Iterator

import torch
from torch import nn

from stereo_depth_ros.backends.engine import PsmnetEngine
from stereo_depth_ros.core.stage_clock import StageClock
from stereo_depth_ros.models.cost_volume import build_concat_volume
from stereo_depth_ros.models.fused.folding import fold_batchnorm_
from stereo_depth_ros.models.fused.cost_conv import ImplicitCostConv
from stereo_depth_ros.models.fused.regression import ChunkedRegression

MODES = ("exact", "fast")
FAST_DTYPES = {"fp16": torch.float16, "bf16": torch.bfloat16}
"""Arithmetic of fast mode's convolutions, by the name the backend's `precision` uses."""
GRAPH_WARMUP_RUNS = 2
"""Eager runs before a capture: cuDNN autotuning and the allocator settle in them."""


@contextmanager
def float32_arithmetic(*, allow_tf32: bool, benchmark: bool) -> Iterator[None]:
    """Set cuDNN/cuBLAS float32 precision and cuDNN autotuning for a block, restored after.

    allow_tf32=False makes float32 convolutions and matrix products IEEE float32 (the "exact"
    mode); benchmark=True lets cuDNN time its algorithms once per input shape.
    """
    cudnn = torch.backends.cudnn
    matmul = torch.backends.cuda.matmul
    saved_benchmark = cudnn.benchmark
    new_api = hasattr(matmul, "fp32_precision") and hasattr(getattr(cudnn, "conv", None),
                                                            "fp32_precision")
    if new_api:                      # torch >= 2.9: the per-backend precision settings
        saved = (cudnn.conv.fp32_precision, matmul.fp32_precision)
        if not allow_tf32:
            cudnn.conv.fp32_precision = "ieee"
            matmul.fp32_precision = "ieee"
    else:
        saved = (cudnn.allow_tf32, matmul.allow_tf32)
        if not allow_tf32:
            cudnn.allow_tf32 = False
            matmul.allow_tf32 = False
    cudnn.benchmark = benchmark
    try:
        yield
    finally:
        cudnn.benchmark = saved_benchmark
        if new_api:
            cudnn.conv.fp32_precision, matmul.fp32_precision = saved
        else:
            cudnn.allow_tf32, matmul.allow_tf32 = saved


def to_channels_last_(module: nn.Module) -> None:
    """Store every 4-D/5-D parameter of `module` in channels-last order, in place."""
    for parameter in module.parameters():
        if parameter.dim() == 4:
            parameter.data = parameter.data.contiguous(memory_format=torch.channels_last)
        elif parameter.dim() == 5:
            parameter.data = parameter.data.contiguous(memory_format=torch.channels_last_3d)


class ConvReLU(nn.Module):
    """relu(conv(x) + bias) as one cuDNN call on CUDA (`torch.cudnn_convolution_relu`: bias and
    ReLU applied in the convolution's epilogue, no separate pass over the activation); plain
    convolution then ReLU elsewhere."""

    def __init__(self, conv: nn.Conv2d | nn.Conv3d) -> None:
        super().__init__()
        self.conv = conv

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        conv = self.conv
        if x.is_cuda and conv.padding_mode == "zeros":
            return torch.cudnn_convolution_relu(x, conv.weight, conv.bias, conv.stride,
                                                conv.padding, conv.dilation, conv.groups)
        return torch.relu_(conv(x))


def fuse_conv_relu_(module: nn.Module) -> int:
    """In every nn.Sequential, replace [convolution with bias (or conv_bn with BN folded), ReLU]
    by [ConvReLU, Identity], in place. Returns how many pairs were fused."""
    fused = 0
    for sequential in [m for m in module.modules() if isinstance(m, nn.Sequential)]:
        for index in range(len(sequential) - 1):
            first, second = sequential[index], sequential[index + 1]
            if (isinstance(first, nn.Sequential) and len(first) == 2
                    and isinstance(first[1], nn.Identity)):
                first = first[0]                             # a conv_bn whose BN was folded
            if (isinstance(first, (nn.Conv2d, nn.Conv3d)) and first.bias is not None
                    and isinstance(second, nn.ReLU)):
                sequential[index] = ConvReLU(first)
                sequential[index + 1] = nn.Identity()
                fused += 1
    return fused


class CapturedForward:
    """A function of two tensors captured as a CUDA graph, replayed on new inputs of one shape.

    function(left, right) -> tuple of tensors. The inputs are copied into static tensors that the
    graph reads; the returned tensors are the graph's own outputs, overwritten by the next
    replay (copy them before calling again).
    """

    def __init__(self, function: Callable, left: torch.Tensor, right: torch.Tensor,
                 warmup: int = GRAPH_WARMUP_RUNS) -> None:
        self.shape = tuple(left.shape)
        self.left = left.clone()
        self.right = right.clone()
        device = left.device
        side = torch.cuda.Stream(device=device)
        side.wait_stream(torch.cuda.current_stream(device))
        with torch.cuda.stream(side):
            for _ in range(warmup):
                function(self.left, self.right)
        torch.cuda.current_stream(device).wait_stream(side)
        self.graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(self.graph):
            self.outputs = function(self.left, self.right)

    def __call__(self, left: torch.Tensor, right: torch.Tensor) -> tuple:
        self.left.copy_(left, non_blocking=True)
        self.right.copy_(right, non_blocking=True)
        self.graph.replay()
        return self.outputs


def _cloned(outputs: tuple) -> tuple:
    """Copies of a captured graph's outputs (None stays None): the next replay overwrites them."""
    return tuple(None if t is None else t.clone() for t in outputs)


class CudaPSMNet(PsmnetEngine):
    """Inference-only PSMNet for CUDA; computes the reference model's output (see the module
    docstring for what changes).

    model: a loaded reference model (`models.build_psmnet` + `load_checkpoint`); it is copied,
        not changed.
    mode: "exact" (float32, TF32 off) or "fast" (convolutions in `fast_dtype`).
    fast_dtype: torch.float16 (default) or torch.bfloat16.
    cuda_graphs: capture and replay the forward per input size (CUDA only; ignored on CPU).
    device: where to run; default the model's device.
    chunk_pixels: pixels per chunk of the regression.
    implicit_cost: compute dres0's first convolution from the feature maps without building
        the concatenation volume (`cost_conv.ImplicitCostConv`: ~10x fewer operations in that
        layer, but ~400 small kernels); False (default) builds the volume in channels-last
        layout, which measured faster on an H200 (11.6 vs 11.8 ms at 384x1248, CUDA graph).
    channels_last: channels-last layouts (False: PyTorch's default NCHW / NCDHW; measured
        15.5 vs 11.8 ms on an H200).
    fuse_relu: convolution + bias + ReLU as one cuDNN call where a ReLU follows a convolution.
    compile: run the forward through `torch.compile(mode="reduce-overhead")` instead of the
        engine's own graph capture (use with fuse_relu=False: Inductor fuses the pointwise ops
        itself).

    Inputs and outputs as the reference: left, right (B, 3, H, W) float32 normalized RGB, H and W
    multiples of 16 and >= 256; disparity (B, 1, H, W) float32 px in [0, max_disparity - 1] and
    confidence (B, 1, H, W) float32 in [0, 1].
    """

    def __init__(self, model: nn.Module, *, mode: str = "fast",
                 fast_dtype: torch.dtype = torch.float16, cuda_graphs: bool = True,
                 device: torch.device | str | None = None, chunk_pixels: int = 32768,
                 implicit_cost: bool = False, channels_last: bool = True,
                 fuse_relu: bool = True, compile: bool = False) -> None:
        if mode not in MODES:
            raise ValueError(f"mode must be one of {', '.join(MODES)}, got {mode!r}")
        if fast_dtype not in FAST_DTYPES.values():
            raise ValueError(f"fast_dtype must be torch.float16 or torch.bfloat16, got "
                             f"{fast_dtype}")
        self.mode = mode
        self.device = torch.device(device) if device is not None else next(
            model.parameters()).device
        self.dtype = torch.float32 if mode == "exact" else fast_dtype
        network = copy.deepcopy(model).eval()
        fold_batchnorm_(network)
        self.levels = int(model.max_disparity) // 4
        self.cost_conv = None
        if implicit_cost:
            first = network.dres0[0][0]                    # conv_bn_3d(64 -> 32), BN folded
            self.cost_conv = ImplicitCostConv(first.weight.detach().float().cpu(),
                                              first.bias.detach().float().cpu(), self.levels)
            self.cost_conv.to(self.device, self.dtype)
        if fuse_relu:
            fuse_conv_relu_(network)
        network.to(device=self.device, dtype=self.dtype)
        self.channels_last = bool(channels_last)
        if self.channels_last:
            to_channels_last_(network)
        for parameter in network.parameters():
            parameter.requires_grad_(False)
        self.network = network
        self.max_disparity = int(model.max_disparity)
        self.regression = ChunkedRegression(self.max_disparity, bool(model.align_corners),
                                            chunk_pixels=chunk_pixels)
        self.cuda_graphs = bool(cuda_graphs) and self.device.type == "cuda" and not compile
        # torch.compile(mode="reduce-overhead"): Inductor kernels replayed as CUDA graphs; the
        # alternative to our own capture (the benchmark's fast-compile configuration).
        self._compiled = (torch.compile(self._forward, mode="reduce-overhead", dynamic=False)
                          if compile else None)
        self._captured: CapturedForward | None = None
        self._captured_key: tuple | None = None

    @property
    def arithmetic(self) -> str:
        """What the convolutions compute in, for logs and reports."""
        if self.mode == "exact":
            return "fp32 (TF32 off)"
        name = "fp16" if self.dtype == torch.float16 else "bf16"
        return f"{name} convolutions, fp32 soft-argmin"

    def describe(self) -> str:
        """One line for the start-up log and the bench report."""
        graphs = ("torch.compile reduce-overhead" if self._compiled is not None else
                  "CUDA graph per input size" if self.cuda_graphs else "eager")
        return (f"{self.device.type} engine, mode {self.mode}: {self.arithmetic}, folded "
                f"BatchNorm, channels-last, {graphs}")

    # -- forward ----------------------------------------------------------------------------

    def _forward(self, left: torch.Tensor, right: torch.Tensor, with_confidence: bool,
                 with_uncertainty: bool = False) -> tuple:
        """The eager forward: (B, 3, H, W) float32 -> disparity, confidence (float32)[, sigma_d
        px with `with_uncertainty`]."""
        batch = left.shape[0]
        size = (left.shape[2], left.shape[3])
        layout_2d, layout_3d = ((torch.channels_last, torch.channels_last_3d)
                                if self.channels_last else
                                (torch.contiguous_format, torch.contiguous_format))
        images = torch.cat([left, right]).to(self.dtype).contiguous(memory_format=layout_2d)
        features = self.network.feature_extraction(images)
        left_features, right_features = features[:batch], features[batch:]
        del images
        if self.cost_conv is not None:
            # relu(dres0's first conv over the volume), computed without the volume
            cost0 = self.network.dres0[2:](self.cost_conv(left_features, right_features))
            del features, left_features, right_features
            cost = self.network.aggregate_from(cost0)[-1]
        else:
            volume = build_concat_volume(left_features, right_features, self.levels,
                                         dtype=None, memory_format=layout_3d)
            del features, left_features, right_features
            cost = self.network.aggregate(volume)[-1]
            del volume
        return self.regression(cost, size, with_confidence=with_confidence,
                               with_uncertainty=with_uncertainty)

    def forward_with_confidence(self, left: torch.Tensor, right: torch.Tensor, *,
                                timings: dict[str, float] | None = None,
                                with_confidence: bool = True, with_uncertainty: bool = False
                                ) -> tuple:
        """Disparity and confidence (or None), each (B, 1, H, W) float32 on the engine's device,
        and sigma_d (B, 1, H, W) float32 px with `with_uncertainty` (same regression pass).

        timings: when a dict is given, the forward's seconds are added under "network" (this
        synchronizes the device once, after the forward).
        """
        self.network._check_input(left, right)
        clock = StageClock(timings, self.device)
        left = left.to(self.device, torch.float32, non_blocking=True)
        right = right.to(self.device, torch.float32, non_blocking=True)
        exact = self.mode == "exact"
        with torch.inference_mode(), float32_arithmetic(allow_tf32=not exact,
                                                        benchmark=self.device.type == "cuda"):
            if self._compiled is not None:
                self.regression.prepare(self.levels, self.device)   # constants made outside
                torch.compiler.cudagraph_mark_step_begin()
                result = _cloned(self._compiled(left, right, with_confidence, with_uncertainty))
            elif not self.cuda_graphs:
                result = self._forward(left, right, with_confidence, with_uncertainty)
            else:
                result = _cloned(self._replay(left, right, with_confidence, with_uncertainty))
        clock.mark("network")
        return result

    def _replay(self, left: torch.Tensor, right: torch.Tensor, with_confidence: bool,
                with_uncertainty: bool = False) -> tuple:
        key = (tuple(left.shape), with_confidence, with_uncertainty)
        if self._captured_key != key:
            self._captured = None                       # release the old graph's memory first
            self.regression.prepare(self.levels, self.device)
            self._captured = CapturedForward(
                lambda a, b: self._forward(a, b, with_confidence, with_uncertainty), left, right)
            self._captured_key = key
        return self._captured(left, right)

    def __call__(self, left: torch.Tensor, right: torch.Tensor) -> torch.Tensor:
        """Disparity (B, 1, H, W) float32 px."""
        return self.forward_with_confidence(left, right, with_confidence=False)[0]
