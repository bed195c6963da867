"""PSMNet backend: device, engine and precision choice, official preprocessing, padding, inference.

The model and its weights live in `stereo_depth_ros.models`; this class prepares the images the
way the official test scripts do, runs one of the engines under `torch.inference_mode` and
returns the disparity at the input resolution: as numpy arrays (`compute`) or, for a pipeline that
keeps the frame on the GPU, as tensors on the backend's device (`upload` + `compute_tensors`).

Engines (`engine`):
- reference: the model as built (`models.psmnet`), eager, under `precision` autocast: what the
  official code computes.
- exact / fast on the CPU: `models.fused.FastPSMNet` (fused; fast mode in bf16, int8 or fp32 by
  what the CPU runs fastest).
- exact / fast on CUDA: `models.fused.cuda.CudaPSMNet` (folded BatchNorm, channels-last, CUDA
  graphs; float32 with TF32 off, or fp16/bf16 convolutions).
- auto: on the CPU the fastest engine the CPU runs natively whose measured accuracy is within
  0.05 px mean and 0.5 % beyond 3 px of exact (`backends.engine_choice`: fast in bf16 with native
  bf16, fast in int8 with VNNI, else exact); fast on CUDA.
"""

from __future__ import annotations

import logging
import threading
import time
from contextlib import nullcontext
from pathlib import Path

import numpy as np
import torch

from stereo_depth_ros.backends.base import PSMNET_DELTA_D_PX, DisparityResult, validate_pair
from stereo_depth_ros.backends.engine_choice import EngineChoice, choose_cpu_engine
from stereo_depth_ros.backends.engine import PsmnetEngine
from stereo_depth_ros.config import DEVICE_PATTERN, ENGINES, PRECISIONS
from stereo_depth_ros.core.padding import InputPadder
from stereo_depth_ros.core.stage_clock import StageClock
from stereo_depth_ros.models import (OFFICIAL_PREPROCESSING, PsmnetPreprocessing, build_psmnet,
                                     load_checkpoint)
from stereo_depth_ros.models.psmnet import SIZE_MULTIPLE, VARIANTS

LOG = logging.getLogger(__name__)

DELTA_D_PX = PSMNET_DELTA_D_PX
"""Disparity step reported in DisparityImage.delta_d (see backends.base.PSMNET_DELTA_D_PX)."""


def cuda_unavailable_reason() -> str:
    """Why CUDA cannot be used, for error messages."""
    return (f"CUDA is not available (torch {torch.__version__}, built with CUDA "
            f"{torch.version.cuda or 'none'}, torch.cuda.is_available() is False)")


def resolve_device(device: str) -> torch.device:
    """Map "auto" | "cpu" | "cuda" | "cuda:N" to a torch.device; ValueError if CUDA is absent."""
    if not isinstance(device, str) or not DEVICE_PATTERN.match(device):
        raise ValueError(f"device must be 'auto', 'cpu', 'cuda' or 'cuda:N', got {device!r}")
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda"):
        if not torch.cuda.is_available():
            raise ValueError(f"device={device!r} was requested but {cuda_unavailable_reason()}; "
                             "use device='cpu' or 'auto'")
        index = int(device.split(":")[1]) if ":" in device else 0
        if index >= torch.cuda.device_count():
            raise ValueError(f"device={device!r} does not exist: "
                             f"{torch.cuda.device_count()} CUDA device(s) visible")
    return torch.device(device)


def resolve_engine(engine: str, precision: str, device: torch.device) -> str:
    """The engine that runs for (engine, precision) on `device`; ValueError for combinations
    that make no sense there, with what to use instead.

    auto: on the CPU with precision fp32 `engine_choice.choose_cpu_engine` (fast where the CPU
    runs an arithmetic natively that is measured close enough to exact, else exact); fast with
    precision bf16; fast on CUDA.
    precision on the CPU: fp32, or bf16 = the fused engine in bfloat16 (`engine` fast or auto);
    the eager reference under bf16 autocast is slower than exact on CPUs and is refused.
    """
    if engine not in ENGINES:
        raise ValueError(f"engine must be one of {', '.join(ENGINES)}, got {engine!r}")
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    on_cuda = device.type == "cuda"
    if precision == "fp16" and not on_cuda:
        raise ValueError("precision='fp16' needs CUDA (float16 on CPUs is slow and inexact); "
                         "use engine='fast' for the fast CPU mode")
    if engine == "auto":
        engine = "fast" if on_cuda or precision == "bf16" else _cpu_choice().engine
    if engine == "exact" and precision != "fp32":
        raise ValueError(f"engine='exact' is float32: use precision='fp32' with it "
                         f"(got {precision!r})")
    if engine == "reference" and precision == "bf16" and not on_cuda:
        raise ValueError("precision='bf16' with engine='reference' on the CPU (bfloat16 autocast "
                         "of the eager model) is slower than float32: use engine='fast', which "
                         "runs bfloat16 through the fused engine where the CPU has it")
    return engine


def _cpu_choice() -> EngineChoice:
    from stereo_depth_ros.models.fused import cpu_features
    return choose_cpu_engine(cpu_features.detect())


def _autocast_dtype(precision: str) -> torch.dtype | None:
    return {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}[precision]


class ReferenceRunner(PsmnetEngine):
    """The reference model behind the engines' interface, with per-stage timings.

    forward_with_confidence(left, right, timings=None, with_confidence=True) runs the model's
    stages (features, cost volume, 3-D CNN, regression) under the given autocast dtype.
    """

    def __init__(self, model: torch.nn.Module, autocast_dtype: torch.dtype | None) -> None:
        self.model = model
        self.autocast_dtype = autocast_dtype

    def describe(self) -> str:
        arithmetic = "fp32" if self.autocast_dtype is None else \
            f"{str(self.autocast_dtype).replace('torch.', '')} autocast"
        return f"reference eager model, {arithmetic}"

    def _autocast(self, device: torch.device):
        if self.autocast_dtype is None:
            return nullcontext()
        return torch.autocast(device_type=device.type, dtype=self.autocast_dtype)

    def forward_with_confidence(self, left: torch.Tensor, right: torch.Tensor, *,
                                timings: dict[str, float] | None = None,
                                with_confidence: bool = True, with_uncertainty: bool = False
                                ) -> tuple:
        model = self.model
        model._check_input(left, right)
        size = (left.shape[2], left.shape[3])
        marks = StageClock(timings, left.device)
        with torch.inference_mode(), self._autocast(left.device):
            features = model.extract_features(left, right)
            marks.mark("features")
            volume = model.build_cost_volume(*features)
            del features
            marks.mark("cost_volume")
            cost = model.aggregate(volume)[-1]
            del volume
            marks.mark("cnn3d")
            result = model.regress(cost, size, with_confidence=with_confidence,
                                   with_uncertainty=with_uncertainty)
            marks.mark("regression")
        return result


class PsmnetBackend:
    """PSMNet stereo matcher behind `compute(left, right) -> DisparityResult`.

    weights_path: PSMNet checkpoint (see `models.load_checkpoint` for the accepted formats). None
        (or "") builds randomly initialised weights, for tests only; a warning is logged.
    model: "stackhourglass" (the released weights) or "basic".
    max_disparity: disparity levels searched, px at the input resolution; a positive multiple of
        16 (the released weights were trained with 192).
    device: "auto" (CUDA when available, else CPU), "cpu", "cuda" or "cuda:N".
    precision: arithmetic of the `reference` engine: "fp32", "bf16" (autocast) or "fp16"
        (autocast, CUDA only). On CUDA it also picks fast mode's convolution type ("bf16" ->
        bfloat16, else float16). The soft-argmin and confidence always run in float32.
    align_corners: upsampling mode; True is what the released weights need.
    engine: see the module docstring. "exact" needs precision "fp32"; on the CPU "fast" does too
        (it chooses its own arithmetic).
    cuda_graphs: the CUDA engines capture their forward as a CUDA graph per input size.
    arithmetic: the CPU fast engine's arithmetic, "fp32", "bf16" or "int8" (`FastPSMNet`);
        None = chosen by the CPU (or by precision "bf16"). The benchmark's fast-fp32/-int8.
    compile: the CUDA fast engine runs through `torch.compile(mode="reduce-overhead")` instead
        of its own graph capture (compiles for a minute or more). The benchmark's fast-compile.

    min_disparity: start of the published window (stereo_image_proc's min_disparity): smaller
        disparities become NaN; 0 = all.

    Output: disparity (H, W) float32 in px, [min_disparity, max_disparity - 1], NaN where the
    network produced a non-finite value or a disparity below min_disparity; confidence (H, W)
    float32 in [0, 1] = the softmax probability mass within +-2 px of the regressed disparity
    (1 = one sharp match, low = flat or ambiguous matching cost); uncertainty (H, W) float32
    sigma_d px = the standard deviation of the same softmax whose mean is the disparity
    (computed in the regression pass); timings_s with "preprocess", "infer" and "postprocess".
    """

    name = "psmnet"
    min_disparity = 0.0
    delta_d = DELTA_D_PX
    provides_uncertainty = True
    """sigma_d comes with every `compute` (and `compute_tensors(with_uncertainty=True)`)."""

    def __init__(self, weights_path: str | Path | None = None, model: str = "stackhourglass",
                 max_disparity: int = 192, device: str = "auto", precision: str = "fp32",
                 align_corners: bool = True,
                 preprocessing: PsmnetPreprocessing = OFFICIAL_PREPROCESSING,
                 engine: str = "reference", cuda_graphs: bool = True,
                 min_disparity: float = 0.0, arithmetic: str | None = None,
                 compile: bool = False) -> None:
        if model not in VARIANTS:
            raise ValueError(f"model must be one of {', '.join(VARIANTS)}, got {model!r}")
        if (isinstance(max_disparity, bool) or not isinstance(max_disparity, (int, np.integer))
                or max_disparity <= 0 or max_disparity % SIZE_MULTIPLE):
            raise ValueError(f"max_disparity must be a positive multiple of {SIZE_MULTIPLE} "
                             f"(PSMNet's 3-D stage halves it twice at 1/4 resolution), got "
                             f"{max_disparity!r}")
        self.device = resolve_device(device)
        self.engine_choice: EngineChoice | None = None
        if engine == "auto" and self.device.type == "cpu" and precision == "fp32":
            self.engine_choice = _cpu_choice()
            LOG.info(self.engine_choice.reason)
        engine = resolve_engine(engine, precision, self.device)
        self.precision = precision
        self.engine = engine
        autocast_dtype = _autocast_dtype(precision)
        self.preprocessing = preprocessing
        self.max_disparity = float(max_disparity)
        self._set_min_disparity(min_disparity)

        self.model = build_psmnet(model, max_disparity=int(max_disparity),
                                  align_corners=align_corners)
        if weights_path is None or str(weights_path).strip() == "":
            LOG.warning("PSMNet backend built with random weights (no weights_path): "
                        "its disparities are meaningless")
            self.weights_path = None
        else:
            self.weights_path = Path(weights_path)
            load_checkpoint(self.model, self.weights_path)
        self.model.to(self.device).eval()
        self.runner: PsmnetEngine | None = self._make_runner(
            engine, autocast_dtype, cuda_graphs, arithmetic=arithmetic, compile=compile)

        shape = (1, 3, 1, 1)
        self._mean = torch.tensor(preprocessing.mean, device=self.device).view(shape)
        self._std = torch.tensor(preprocessing.std, device=self.device).view(shape)
        self._staging: torch.Tensor | None = None
        self._lock = threading.Lock()

    def _make_runner(self, engine: str, autocast_dtype: torch.dtype | None, cuda_graphs: bool,
                     *, arithmetic: str | None, compile: bool) -> PsmnetEngine:
        on_cuda = self.device.type == "cuda"
        if arithmetic is not None and (on_cuda or engine != "fast"):
            raise ValueError(f"arithmetic={arithmetic!r} chooses the CPU fast engine's "
                             f"arithmetic: it needs engine='fast' on the CPU (got engine="
                             f"{engine!r} on {self.device})")
        if compile and not (on_cuda and engine == "fast"):
            raise ValueError(f"compile=True is for the CUDA fast engine: it needs engine='fast' "
                             f"on CUDA (got engine={engine!r} on {self.device})")
        if engine == "reference":
            return ReferenceRunner(self.model, autocast_dtype)
        if on_cuda:
            from stereo_depth_ros.models.fused.cuda import CudaPSMNet
            fast_dtype = torch.bfloat16 if self.precision == "bf16" else torch.float16
            return CudaPSMNet(self.model, mode=engine, fast_dtype=fast_dtype,
                              cuda_graphs=cuda_graphs, fuse_relu=not compile, compile=compile)
        from stereo_depth_ros.models.fused import FastPSMNet
        if arithmetic is None:
            arithmetic = "bf16" if self.precision == "bf16" else None
            if self.engine_choice is not None and engine == "fast":
                arithmetic = self.engine_choice.arithmetic
        return FastPSMNet.from_model(self.model, mode=engine, arithmetic=arithmetic)

    def describe(self) -> str:
        """One line for start-up logs and reports: engine, device and arithmetic."""
        text = f"psmnet engine={self.engine} on {self.device}: {self.runner.describe()}"
        if self.engine_choice is not None:
            text += f" [{self.engine_choice.reason}]"
        return text

    # -- the interface every backend has ------------------------------------------------------

    def check_input_size(self, width: int, height: int) -> None:
        """Any size works: the input is padded to PSMNet's multiples (see `preprocess`)."""

    def _set_min_disparity(self, value: object) -> None:
        value = float(value)
        if not 0.0 <= value < self.max_disparity:
            raise ValueError(f"PSMNet min_disparity must be in [0, max_disparity="
                             f"{self.max_disparity:g}), got {value:g}")
        self.min_disparity = value

    def update(self, **changes: object) -> None:
        """PSMNet options need a model reload: only min_disparity (the start of the published
        window: smaller disparities become invalid) changes while running."""
        if "min_disparity" in changes:
            self._set_min_disparity(changes.pop("min_disparity"))
        if changes:
            raise ValueError(f"PSMNet options cannot change while running "
                             f"({', '.join(sorted(changes))}): restart with the new values")

    # -- preprocessing ------------------------------------------------------------------------

    def preprocess(self, left: np.ndarray, right: np.ndarray
                   ) -> tuple[torch.Tensor, torch.Tensor, InputPadder]:
        """Validate and normalize a pair the official way; pad top/right.

        left, right: (H, W, 3) uint8 RGB or (H, W) uint8 mono (replicated), equal size.
        Returns (left, right) as (1, 3, H', W') float32 on the backend's device, normalized
        ((x / 255 - mean) / std) and zero-padded on the top and right to multiples of 16 that are
        at least 256, and the InputPadder that crops the result back to (H, W).
        """
        return self.normalize(*self.upload(left, right))

    def upload(self, left: np.ndarray, right: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        """Validate a pair and copy it to the device as uint8 tensors, (H, W, 3) or (H, W).

        On CUDA the copy goes through a reused pinned host buffer without blocking the host.
        """
        left, right = validate_pair(left, right)
        pair = np.stack([left, right])
        if self.device.type != "cuda":
            images = torch.from_numpy(pair)
        else:
            if self._staging is None or tuple(self._staging.shape) != pair.shape:
                torch.cuda.synchronize(self.device)     # the old buffer may still be read
                self._staging = torch.empty(pair.shape, dtype=torch.uint8, pin_memory=True)
            else:
                torch.cuda.current_stream(self.device).synchronize()
            np.copyto(self._staging.numpy(), pair)
            images = self._staging.to(self.device, non_blocking=True)
        return images[0], images[1]

    def normalize(self, left: torch.Tensor, right: torch.Tensor
                  ) -> tuple[torch.Tensor, torch.Tensor, InputPadder]:
        """uint8 (H, W, 3) RGB or (H, W) mono tensors -> normalized, padded (1, 3, H', W')
        float32 tensors and their InputPadder (see `preprocess`)."""
        pre = self.preprocessing
        images = torch.stack([left, right])
        if images.dim() == 3:
            images = images.unsqueeze(-1).expand(-1, -1, -1, 3)
        images = images.to(self.device).permute(0, 3, 1, 2).float()
        if pre.channel_order == "BGR":
            images = images.flip(1)
        images = images.div(pre.scale).sub(self._mean).div(self._std)
        padder = InputPadder(images.shape, multiple=pre.pad_multiple, min_size=pre.min_size,
                             value=pre.pad_value)
        images = padder.pad(images)
        return images[0:1], images[1:2], padder

    # -- inference ----------------------------------------------------------------------------

    def compute_tensors(self, left: torch.Tensor, right: torch.Tensor, *,
                        timings: dict[str, float] | None = None, with_confidence: bool = True,
                        with_uncertainty: bool = False) -> tuple:
        """Disparity and confidence of a rectified uint8 pair already on the device, and with
        `with_uncertainty` sigma_d (H, W) float32 px (NaN where the disparity is not finite).

        left, right: (H, W, 3) RGB or (H, W) mono uint8 tensors (`upload`).
        Returns (H, W) float32 tensors on the device (disparity px, NaN where not finite;
        confidence in [0, 1] or None). Nothing waits for the device unless `timings` is given
        (then stages are timed: "preprocess" and the engine's own stages).
        """
        with self._lock:
            start = time.perf_counter()
            left_t, right_t, padder = self.normalize(left, right)
            if timings is not None:
                self.synchronize()
                timings["preprocess"] = timings.get("preprocess", 0.0) + \
                    time.perf_counter() - start
            with torch.inference_mode():
                outputs = self.runner.forward_with_confidence(
                    left_t, right_t, timings=timings, with_confidence=with_confidence,
                    with_uncertainty=with_uncertainty)
            disparity, confidence = outputs[0], outputs[1]
            disparity = padder.unpad(disparity[0, 0]).float()
            finite = torch.isfinite(disparity)
            if self.min_disparity > 0:       # the published window starts at min_disparity
                finite &= disparity >= self.min_disparity
            nan = torch.full_like(disparity, float("nan"))
            disparity = torch.where(finite, disparity, nan)
            if confidence is not None:
                confidence = padder.unpad(confidence[0, 0]).float()
            if with_uncertainty:
                sigma = padder.unpad(outputs[2][0, 0]).float()
                return disparity, confidence, torch.where(finite, sigma, nan)
        return disparity, confidence

    def compute(self, left: np.ndarray, right: np.ndarray) -> DisparityResult:
        """Disparity (and confidence) of a rectified pair; see the class docstring."""
        start = time.perf_counter()
        left_u8, right_u8 = self.upload(left, right)
        stages: dict[str, float] = {}
        disparity, confidence, sigma = self.compute_tensors(left_u8, right_u8, timings=stages,
                                                            with_uncertainty=True)
        inferred = time.perf_counter()
        disparity, confidence, sigma = (np.ascontiguousarray(t.cpu().numpy(), dtype=np.float32)
                                        for t in (disparity, confidence, sigma))
        done = time.perf_counter()
        preprocess = stages.pop("preprocess", 0.0)
        return DisparityResult(
            disparity=disparity, confidence=confidence, uncertainty=sigma,
            timings_s={"preprocess": preprocess,
                       "infer": inferred - start - preprocess,
                       "postprocess": done - inferred})

    def release(self) -> None:
        """Drop the model and the engine (GPU memory goes back to the device's free pool)."""
        self.runner = None
        self.model = None
        self._staging = None
        if self.device.type == "cuda":
            torch.cuda.empty_cache()

    def synchronize(self) -> None:
        """Wait for the work queued on the backend's device (nothing to wait for on the CPU):
        for timing `preprocess` or the engine (`runner`) from outside."""
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
