"""The fused CPU engine: the reference PSMNet's function with folded BatchNorm, oneDNN
channels-last kernels, no cost volume, no classifier hidden volumes and a chunked regression, in
the arithmetic the CPU runs fastest.

Each piece lives in its own module with its parity test: `folding` (BatchNorm into
convolutions), `onednn` (the convolution wrappers), `int8`, `cost_conv` (dres0's first
convolution from the feature maps), `classifier` (the heads in slabs), `regression` (chunked
soft-argmin). This module wires them into the network.

Modes and arithmetic (`ArithmeticPlan`):
- "exact": float32, and the reference feature CNN itself (NCHW, BatchNorm unfolded: it amplifies
  float rounding too much for golden parity otherwise).
- "fast": per CPU (`cpu_features`):
  "bf16" where the CPU has native bf16 (AVX512_BF16 / AMX): every convolution in bfloat16 with
  float32 accumulation (the folded channels-last feature CNN too), activations kept in
  bfloat16, the regression in float32;
  "int8" where it has VNNI but no native bf16: the 3-D convolutions and the 64/128-channel
  feature layers that tolerate it (`INT8_FEATURE_LAYERS`) in int8, the rest float32 (folded);
  "fp32" elsewhere: the same as exact. `arithmetic=` chooses one explicitly.

Usage:
    model = build_psmnet("stackhourglass"); load_checkpoint(model, path)
    fast = FastPSMNet.from_model(model, mode="fast")
    disparity, confidence = fast.forward_with_confidence(left, right)
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import NamedTuple

import torch
import torch.nn.functional as F

from stereo_depth_ros.backends.engine import PsmnetEngine
from stereo_depth_ros.core.stage_clock import StageClock
from stereo_depth_ros.models.fused import cpu_features
from stereo_depth_ros.models.fused.classifier import ClassifierHead, SingleOutputConv3d
from stereo_depth_ros.models.fused.cost_conv import ImplicitCostConv
from stereo_depth_ros.models.fused.folding import (batchnorm_state, fold_bn,
                                                   strip_module_prefix)
from stereo_depth_ros.models.fused.int8 import Int8Conv
from stereo_depth_ros.models.fused.onednn import (CHANNELS_LAST_2D, FoldedConv,
                                                  FoldedConvTranspose3d)
from stereo_depth_ros.models.fused.regression import ChunkedRegression

MODES = ("exact", "fast")
ARITHMETIC = ("fp32", "bf16", "int8")
INT8_FEATURE_LAYERS = ("layer2:8", "layer3", "layer4")
"""Feature blocks run in int8 by the int8 plan: "layer:first_block" (or the whole layer).
Measured against exact mode on the sample pairs (worst pair): int8 3-D only 0.034 px mean
|change|, 0.11 % of pixels > 3 px; + layer3/layer4 0.034 / 0.11 %; + layer2 blocks 8-15
0.040 / 0.13 %; all of layer2 0.065 / 0.37 %; lastconv 0.058 / 0.28 %; layer1 and firstconv
~0.10 / 0.54 %."""
_FEATURE_LAYERS = (("layer1", 3, 1, 1), ("layer2", 16, 2, 1), ("layer3", 3, 1, 1),
                   ("layer4", 3, 1, 2))            # name, blocks, first stride, dilation
_SPP_BRANCHES = ((4, 8), (3, 16), (2, 32), (1, 64))  # branch number, pooling size


@dataclass(frozen=True)
class ArithmeticPlan:
    """The arithmetic of each part of the engine.

    features: "reference" (the reference module, float32), "fp32" or "bf16" (folded,
    channels-last), with `int8_feature_layers` in int8 when "fp32". cnn3d: "fp32", "bf16" or
    "int8" (the cost convolution, the 3-D convolutions and the classifier heads).
    """

    features: str
    cnn3d: str
    int8_feature_layers: tuple[str, ...] = ()

    @classmethod
    def for_mode(cls, mode: str, arithmetic: str | None = None,
                 cpu: cpu_features.CpuFeatures | None = None) -> ArithmeticPlan:
        """The plan of `mode` on this CPU (or the one `arithmetic` names, for fast mode)."""
        if mode not in MODES:
            raise ValueError(f"mode must be one of {', '.join(MODES)}, got {mode!r}")
        if mode == "exact":
            if arithmetic not in (None, "fp32"):
                raise ValueError(f"mode 'exact' is float32, got arithmetic={arithmetic!r}")
            return cls("reference", "fp32")
        cpu = cpu or cpu_features.detect()
        if arithmetic is None:
            arithmetic = "bf16" if cpu.bf16_native else "int8" if cpu.int8_vnni else "fp32"
        if arithmetic not in ARITHMETIC:
            raise ValueError(f"arithmetic must be one of {', '.join(ARITHMETIC)}, got "
                             f"{arithmetic!r}")
        if arithmetic == "bf16" and not cpu.onednn_bf16:
            raise ValueError(f"bf16 arithmetic needs a CPU whose oneDNN runs bfloat16 "
                             f"(AVX-512 or AVX-NE-CONVERT; native with AVX512_BF16/AMX); this "
                             f"one has {cpu.describe()}: use engine 'fast' with its own choice")
        if arithmetic == "int8" and not cpu.int8_vnni:
            raise ValueError(f"int8 arithmetic needs a CPU with VNNI (AVX512-VNNI or AVX-VNNI) "
                             f"and torch's oneDNN int8 ops; this one has {cpu.describe()}")
        if arithmetic == "int8":
            return cls("fp32", "int8", INT8_FEATURE_LAYERS)
        if arithmetic == "fp32":
            # In float32 the reference feature module (NCHW) is as fast as the folded
            # channels-last one or faster (1.16 vs 1.58 s at 256x512 on an AVX2 Zen 3), and exact.
            return cls("reference", "fp32")
        return cls("bf16", "bf16")

    def describe(self) -> str:
        features = self.features if not self.int8_feature_layers else \
            f"{self.features} + int8 ({', '.join(self.int8_feature_layers)})"
        return f"features {features}, 3-D {self.cnn3d}, regression fp32"

    def int8_feature_block(self, layer: str, block: int) -> bool:
        """Whether block `block` of feature layer `layer` runs in int8."""
        for entry in self.int8_feature_layers:
            name, _, first = entry.partition(":")
            if name == layer and block >= int(first or 0):
                return True
        return False


class ResidualBlock(NamedTuple):
    """A feature CNN BasicBlock: conv2(relu(conv1(x))) + downsample(x) (or x)."""

    conv1: FoldedConv | Int8Conv
    conv2: FoldedConv | Int8Conv
    downsample: FoldedConv | Int8Conv | None

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        source = self.conv1.quantize(x) if isinstance(self.conv1, Int8Conv) else x
        shortcut = self.downsample(source) if self.downsample is not None else x
        return self.conv2(self.conv1(source, relu=True), residual=shortcut)


class Hourglass(NamedTuple):
    """One 3-D hourglass (see models.hourglass.Hourglass): conv1-4 and the two transposed
    convolutions conv5/conv6, BatchNorm folded."""

    conv1: FoldedConv | Int8Conv
    conv2: FoldedConv | Int8Conv
    conv3: FoldedConv | Int8Conv
    conv4: FoldedConv | Int8Conv
    conv5: FoldedConvTranspose3d
    conv6: FoldedConvTranspose3d

    def __call__(self, x: torch.Tensor, presqu: torch.Tensor | None,
                 postsqu: torch.Tensor | None
                 ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(out, pre, post), as the reference's forward(x, presqu, postsqu)."""
        out = self.conv1(x, relu=True)
        pre = self.conv2(out, residual=postsqu, relu=True)
        out = self.conv4(self.conv3(pre, relu=True), relu=True)
        post = self.conv5(out, residual=presqu if presqu is not None else pre, relu=True)
        return self.conv6(post), pre, post


_DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "int8": torch.float32,
           "reference": torch.float32}


class FastPSMNet(PsmnetEngine):
    """Inference-only PSMNet computing the reference model's output faster on a CPU.

    Build with `FastPSMNet.from_model(model, mode=...)` or `FastPSMNet(state_dict, variant=...)`.
    The weights are copied and folded; the reference model is not used afterwards.

    mode: "exact" (float32; matches the reference to float rounding) or "fast".
    arithmetic: fast mode's arithmetic, "bf16", "int8" or "fp32"; None chooses by the CPU (see
        the module docstring). `plan` says what was chosen.
    Inputs and outputs as the reference: left, right (B, 3, H, W) float32 normalized RGB, H and W
    multiples of 16 and >= 256; disparity (B, 1, H, W) float32 px in [0, max_disparity - 1].
    """

    def __init__(self, state_dict: Mapping[str, torch.Tensor], *, variant: str = "stackhourglass",
                 max_disparity: int = 192, align_corners: bool = True, mode: str = "exact",
                 device: torch.device | str | None = None, arithmetic: str | None = None
                 ) -> None:
        if variant not in ("stackhourglass", "basic"):
            raise ValueError(f"unknown PSMNet variant {variant!r}")
        if max_disparity <= 0 or max_disparity % 16:
            raise ValueError(f"max_disparity must be a positive multiple of 16, got "
                             f"{max_disparity}")
        self.plan = ArithmeticPlan.for_mode(mode, arithmetic)
        sd = strip_module_prefix(state_dict)
        if device is not None:
            sd = {k: v.to(device) for k, v in sd.items()}
        if any(v.device.type != "cpu" for v in sd.values()):
            raise ValueError("FastPSMNet runs on the CPU (models.fused.cuda.CudaPSMNet on CUDA)")
        self.variant = variant
        self.mode = mode
        self.max_disparity = int(max_disparity)
        self.levels = self.max_disparity // 4
        self.align_corners = bool(align_corners)
        self.feature_dtype = _DTYPES[self.plan.features]
        self.cnn3d_dtype = _DTYPES[self.plan.cnn3d]
        if self.plan.features == "reference":
            self._build_reference_features(sd)
        else:
            self._build_features(sd)
        self._build_3d(sd)
        self.regression = ChunkedRegression(self.max_disparity, self.align_corners)

    @classmethod
    def from_model(cls, model: torch.nn.Module, *, mode: str = "exact",
                   arithmetic: str | None = None) -> FastPSMNet:
        """Fast copy of a loaded reference model (`models.build_psmnet` + `load_checkpoint`)."""
        variant = getattr(model, "variant", None) or (
            "stackhourglass" if hasattr(model, "dres2") else "basic")
        device = next(model.parameters()).device
        return cls(model.state_dict(), variant=variant, max_disparity=model.max_disparity,
                   align_corners=model.align_corners, mode=mode, device=device,
                   arithmetic=arithmetic)

    @property
    def int8(self) -> bool:
        """Whether any convolution runs in int8."""
        return self.plan.cnn3d == "int8" or bool(self.plan.int8_feature_layers)

    def describe(self) -> str:
        """One line for start-up logs and reports."""
        return (f"fused CPU engine, mode {self.mode}: {self.plan.describe()} "
                f"(CPU: {cpu_features.detect().describe()})")

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
        self.feature_module = module.eval()

    @staticmethod
    def _folded(sd: Mapping[str, torch.Tensor], name: str, dtype: torch.dtype, *,
                int8: bool = False, nonnegative_input: bool = False,
                **conv: int) -> FoldedConv | Int8Conv:
        """The conv_bn pair `name` (`name.0` conv, `name.1` BatchNorm), folded; int8 on request.
        """
        folded = FoldedConv.from_state_dict(sd, f"{name}.0.weight", f"{name}.1", dtype=dtype,
                                            **conv)
        return Int8Conv.from_conv(folded, nonnegative_input=nonnegative_input) if int8 \
            else folded

    def _build_features(self, sd: Mapping[str, torch.Tensor]) -> None:
        """Fast mode: BN folded, channels-last, ReLU and residuals in place."""
        self.feature_module = None
        dtype, plan = self.feature_dtype, self.plan

        def folded(name: str, **kw) -> FoldedConv | Int8Conv:
            return self._folded(sd, f"feature_extraction.{name}", dtype, **kw)

        self.firstconv = [folded("firstconv.0", stride=2, padding=1),
                          folded("firstconv.2", padding=1), folded("firstconv.4", padding=1)]
        self.layers = []
        for name, blocks, stride, dilation in _FEATURE_LAYERS:
            layer = []
            for i in range(blocks):
                int8 = plan.int8_feature_block(name, i)
                s = stride if i == 0 else 1
                down = None
                if f"feature_extraction.{name}.{i}.downsample.0.weight" in sd:
                    down = folded(f"{name}.{i}.downsample", stride=s, int8=int8)
                layer.append(ResidualBlock(
                    folded(f"{name}.{i}.conv1.0", stride=s, padding=dilation, dilation=dilation,
                           int8=int8),
                    folded(f"{name}.{i}.conv2", padding=dilation, dilation=dilation, int8=int8,
                           nonnegative_input=True),
                    down))
            self.layers.append(layer)
        self.branches = [(pool, folded(f"branch{n}.1")) for n, pool in _SPP_BRANCHES]
        self.lastconv = folded("lastconv.0", padding=1,
                               int8="lastconv" in plan.int8_feature_layers)
        self.lastconv_1x1 = FoldedConv.from_state_dict(sd, "feature_extraction.lastconv.2.weight",
                                                       None, dtype=dtype)

    def _build_3d(self, sd: Mapping[str, torch.Tensor]) -> None:
        dtype, int8 = self.cnn3d_dtype, self.plan.cnn3d == "int8"

        def folded(name: str, *, nonnegative_input: bool = False, **kw) -> FoldedConv | Int8Conv:
            return self._folded(sd, name, dtype, int8=int8, nonnegative_input=nonnegative_input,
                                **kw)

        def transposed(name: str) -> FoldedConvTranspose3d:
            weight, bias = fold_bn(sd[f"{name}.0.weight"].float(),
                                   batchnorm_state(sd, f"{name}.1"), transposed=True)
            return FoldedConvTranspose3d(weight, bias, dtype)

        weight, bias = fold_bn(sd["dres0.0.0.weight"].float(), batchnorm_state(sd, "dres0.0.1"))
        self.cost_conv = ImplicitCostConv(weight, bias, self.levels).to("cpu", dtype)
        self.dres0_2 = folded("dres0.2", padding=1, nonnegative_input=True)
        if self.variant == "stackhourglass":
            blocks, heads = (1,), ("classif1", "classif2", "classif3")
            self.hourglasses = [
                Hourglass(folded(f"dres{i}.conv1.0", stride=2, padding=1),
                          folded(f"dres{i}.conv2", padding=1, nonnegative_input=True),
                          folded(f"dres{i}.conv3.0", stride=2, padding=1,
                                 nonnegative_input=True),
                          folded(f"dres{i}.conv4.0", padding=1, nonnegative_input=True),
                          transposed(f"dres{i}.conv5"), transposed(f"dres{i}.conv6"))
                for i in (2, 3, 4)]
        else:
            blocks, heads = (1, 2, 3, 4), ("classify",)
            self.hourglasses = []
        # The first block reads relu(dres0); later ones read a residual sum (signed).
        self.residuals = [(folded(f"dres{i}.0", padding=1, nonnegative_input=i == 1),
                           folded(f"dres{i}.2", padding=1, nonnegative_input=True))
                          for i in blocks]
        self.heads = [ClassifierHead(folded(f"{h}.0", padding=1), SingleOutputConv3d(
            sd[f"{h}.2.weight"].float().to(dtype))) for h in heads]

    # -- stages ---------------------------------------------------------------------------------

    def extract_features(self, left: torch.Tensor, right: torch.Tensor
                         ) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, 3, H, W) normalized images -> two (B, 32, H/4, W/4) feature maps (in the
        features' dtype). Left and right go through the network as one batch."""
        batch = left.shape[0]
        if self.feature_module is not None:
            features = self.feature_module(torch.cat([left, right]))
            return features[:batch], features[batch:]
        x = torch.cat([left, right]).to(self.feature_dtype).contiguous(
            memory_format=CHANNELS_LAST_2D)
        for conv in self.firstconv:
            x = conv(x, relu=True)
        raw = None
        for i, layer in enumerate(self.layers):
            for block in layer:
                x = block(x)
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
        return self.cost_conv(left_features.to(self.cnn3d_dtype),
                              right_features.to(self.cnn3d_dtype))

    def aggregate(self, cost: torch.Tensor) -> torch.Tensor:
        """dres0's first output -> the final low-resolution cost (B, 1, D/4, H/4, W/4) float32.

        For stackhourglass this is cost1 + cost2 + cost3 of the reference (its accumulation).
        """
        cost0 = self.dres0_2(cost, relu=True)
        del cost
        for conv_a, conv_b in self.residuals:
            cost0 = conv_b(conv_a(cost0, relu=True), residual=cost0)
        if not self.hourglasses:
            return self.heads[0](self.heads[0].quantize(cost0))
        final, pre1, post, x = None, None, None, cost0
        for i, (hourglass, head) in enumerate(zip(self.hourglasses, self.heads)):
            out, pre, post = hourglass(x, pre1, post)
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

    def regress(self, cost: torch.Tensor, size: tuple[int, int], *,
                with_confidence: bool = False, with_uncertainty: bool = False) -> tuple:
        """(B, 1, D/4, h, w) cost -> disparity (B, 1, H, W) px and confidence (or None), and
        sigma_d (B, 1, H, W) px with `with_uncertainty`."""
        return self.regression(cost, size, with_confidence=with_confidence,
                               with_uncertainty=with_uncertainty)

    # -- forward --------------------------------------------------------------------------------

    @staticmethod
    def _check_input(left: torch.Tensor, right: torch.Tensor) -> None:
        if left.shape != right.shape or left.dim() != 4 or left.shape[1] != 3:
            raise ValueError(f"expected left and right of equal shape (B, 3, H, W), got "
                             f"{tuple(left.shape)} and {tuple(right.shape)}")
        height, width = left.shape[-2:]
        if height % 16 or width % 16 or min(height, width) < 256:
            raise ValueError(f"input size {height}x{width} must be a multiple of 16 and at "
                             "least 256x256: pad it first (core.padding.InputPadder)")

    def forward_with_confidence(self, left: torch.Tensor, right: torch.Tensor, *,
                                timings: dict[str, float] | None = None,
                                with_confidence: bool = True, with_uncertainty: bool = False
                                ) -> tuple:
        """Disparity and confidence, each (B, 1, H, W) float32 (see `ChunkedRegression`), and
        sigma_d (B, 1, H, W) float32 px with `with_uncertainty`.

        timings: when a dict is given, seconds per stage are added to it under "features",
        "cost_volume", "cnn3d" and "regression".
        """
        self._check_input(left, right)
        size = (left.shape[2], left.shape[3])
        timer = StageClock(timings)
        with torch.inference_mode():
            left_f, right_f = self.extract_features(left.float(), right.float())
            timer.mark("features")
            cost = self.cost_volume(left_f, right_f)
            del left_f, right_f
            timer.mark("cost_volume")
            cost = self.aggregate(cost)
            timer.mark("cnn3d")
            result = self.regress(cost, size, with_confidence=with_confidence,
                                  with_uncertainty=with_uncertainty)
            timer.mark("regression")
        return result

    def __call__(self, left: torch.Tensor, right: torch.Tensor) -> torch.Tensor:
        """Disparity (B, 1, H, W) float32 px."""
        return self.forward_with_confidence(left, right, with_confidence=False)[0]
