"""PSMNet backend: device and precision choice, official preprocessing, padding, inference.

The model and its weights live in `stereo_depth_ros.models`; this class only prepares the images
the way the official test scripts do, runs the network under `torch.inference_mode` and returns
numpy results at the input resolution.
"""

from __future__ import annotations

import logging
import re
import threading
import time
from contextlib import nullcontext
from pathlib import Path

import numpy as np
import torch

from stereo_depth_ros.backends.base import DisparityResult, to_rgb, validate_pair
from stereo_depth_ros.core.padding import InputPadder
from stereo_depth_ros.models import (OFFICIAL_PREPROCESSING, PsmnetPreprocessing, build_psmnet,
                                     load_checkpoint)
from stereo_depth_ros.models.psmnet import SIZE_MULTIPLE, VARIANTS

LOG = logging.getLogger(__name__)

PRECISIONS = ("fp32", "bf16", "fp16")
ENGINES = ("auto", "reference", "exact", "fast")
_DEVICE_RE = re.compile(r"^(auto|cpu|cuda(:\d+)?)$")


def resolve_device(device: str) -> torch.device:
    """Map "auto" | "cpu" | "cuda" | "cuda:N" to a torch.device; ValueError if CUDA is absent."""
    if not isinstance(device, str) or not _DEVICE_RE.match(device):
        raise ValueError(f"device must be 'auto', 'cpu', 'cuda' or 'cuda:N', got {device!r}")
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda"):
        if not torch.cuda.is_available():
            raise ValueError(f"device={device!r} was requested but CUDA is not available "
                             f"(torch {torch.__version__}, built with CUDA "
                             f"{torch.version.cuda or 'none'}); use device='cpu' or 'auto'")
        index = int(device.split(":")[1]) if ":" in device else 0
        if index >= torch.cuda.device_count():
            raise ValueError(f"device={device!r} does not exist: "
                             f"{torch.cuda.device_count()} CUDA device(s) visible")
    return torch.device(device)


def _autocast_dtype(precision: str, device: torch.device) -> torch.dtype | None:
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    if precision == "fp32":
        return None
    if precision == "fp16" and device.type != "cuda":
        raise ValueError("precision='fp16' needs CUDA (float16 autocast on CPU is slow and "
                         "inexact); use precision='bf16' for the fast CPU mode")
    return torch.bfloat16 if precision == "bf16" else torch.float16


class PsmnetBackend:
    """PSMNet stereo matcher behind `compute(left, right) -> DisparityResult`.

    weights_path: PSMNet checkpoint (see `models.load_checkpoint` for the accepted formats). None
        (or "") builds randomly initialised weights, for tests only; a warning is logged.
    model: "stackhourglass" (the released weights) or "basic".
    max_disparity: disparity levels searched, px at the input resolution; a positive multiple of
        16 (the released weights were trained with 192).
    device: "auto" (CUDA when available, else CPU), "cpu", "cuda" or "cuda:N".
    precision: "fp32" (exact), "bf16" (autocast; the fast CPU mode, also allowed on CUDA) or
        "fp16" (autocast, CUDA only). The soft-argmin and confidence always run in float32.
    align_corners: upsampling mode; True is what the released weights need.
    engine: "auto" ("exact" on a CPU with precision fp32, else "reference"), "reference" (the
        model as built, under `precision`), or `models.fast.FastPSMNet`:
        "exact" (float32, same output within float rounding, ~2x faster on CPU) or "fast" (int8
        where the output tolerates it, ~4x faster on CPU, ~0.05 px mean change). "exact" and
        "fast" need precision "fp32" (they choose their own arithmetic).

    Output: disparity (H, W) float32 in px, [0, max_disparity - 1], NaN only where the network
    produced a non-finite value; confidence (H, W) float32 in [0, 1] = the softmax probability
    mass within +-2 px of the regressed disparity (1 = one sharp match, low = flat or ambiguous
    matching cost); timings_s with "preprocess", "infer" and "postprocess".
    """

    name = "psmnet"
    min_disparity = 0.0

    def __init__(self, weights_path: str | Path | None = None, model: str = "stackhourglass",
                 max_disparity: int = 192, device: str = "auto", precision: str = "fp32",
                 align_corners: bool = True,
                 preprocessing: PsmnetPreprocessing = OFFICIAL_PREPROCESSING,
                 engine: str = "reference") -> None:
        if model not in VARIANTS:
            raise ValueError(f"model must be one of {', '.join(VARIANTS)}, got {model!r}")
        if (isinstance(max_disparity, bool) or not isinstance(max_disparity, (int, np.integer))
                or max_disparity <= 0 or max_disparity % SIZE_MULTIPLE):
            raise ValueError(f"max_disparity must be a positive multiple of {SIZE_MULTIPLE} "
                             f"(PSMNet's 3-D stage halves it twice at 1/4 resolution), got "
                             f"{max_disparity!r}")
        if engine not in ENGINES:
            raise ValueError(f"engine must be one of {', '.join(ENGINES)}, got {engine!r}")
        if engine in ("exact", "fast") and precision != "fp32":
            raise ValueError(f"engine={engine!r} chooses its own arithmetic: use "
                             f"precision='fp32' with it (got {precision!r})")
        self.device = resolve_device(device)
        if engine == "auto":
            engine = "exact" if self.device.type == "cpu" and precision == "fp32" else "reference"
        self.precision = precision
        self.engine = engine
        self._autocast_dtype = _autocast_dtype(precision, self.device)
        self.preprocessing = preprocessing
        self.max_disparity = float(max_disparity)

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
        self._fast = None
        if engine != "reference":
            from stereo_depth_ros.models.fast import FastPSMNet
            self._fast = FastPSMNet.from_model(self.model, mode=engine)

        shape = (1, 3, 1, 1)
        self._mean = torch.tensor(preprocessing.mean, device=self.device).view(shape)
        self._std = torch.tensor(preprocessing.std, device=self.device).view(shape)
        self._lock = threading.Lock()

    def _autocast(self):
        if self._autocast_dtype is None:
            return nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=self._autocast_dtype)

    def preprocess(self, left: np.ndarray, right: np.ndarray
                   ) -> tuple[torch.Tensor, torch.Tensor, InputPadder]:
        """Validate and normalize a pair the official way; pad top/right.

        left, right: (H, W, 3) uint8 RGB or (H, W) uint8 mono (replicated), equal size.
        Returns (left, right) as (1, 3, H', W') float32 on the backend's device, normalized
        ((x / 255 - mean) / std) and zero-padded on the top and right to multiples of 16 that are
        at least 256, and the InputPadder that crops the result back to (H, W).
        """
        left, right = validate_pair(left, right)
        pre = self.preprocessing
        pair = np.stack([to_rgb(left), to_rgb(right)])                  # (2, H, W, 3) uint8
        if pre.channel_order == "BGR":
            pair = pair[..., ::-1]
        images = torch.from_numpy(np.ascontiguousarray(pair)).to(self.device)
        images = images.permute(0, 3, 1, 2).float().div(pre.scale)
        images = images.sub(self._mean).div(self._std)
        padder = InputPadder(images.shape, multiple=pre.pad_multiple, min_size=pre.min_size,
                             value=pre.pad_value)
        images = padder.pad(images)
        return images[0:1], images[1:2], padder

    def compute(self, left: np.ndarray, right: np.ndarray) -> DisparityResult:
        """Disparity (and confidence) of a rectified pair; see the class docstring."""
        with self._lock:
            start = time.perf_counter()
            left_t, right_t, padder = self.preprocess(left, right)
            self._synchronize()
            preprocessed = time.perf_counter()
            runner = self.model if self._fast is None else self._fast
            with torch.inference_mode(), self._autocast():
                disparity, confidence = runner.forward_with_confidence(left_t, right_t)
            self._synchronize()
            inferred = time.perf_counter()
            disparity = padder.unpad(disparity[0, 0]).float().cpu().numpy()
            confidence = padder.unpad(confidence[0, 0]).float().cpu().numpy()
            disparity = np.where(np.isfinite(disparity), disparity, np.nan).astype(np.float32)
            confidence = np.ascontiguousarray(confidence, dtype=np.float32)
            done = time.perf_counter()
        return DisparityResult(
            disparity=disparity, confidence=confidence,
            timings_s={"preprocess": preprocessed - start, "infer": inferred - preprocessed,
                       "postprocess": done - inferred})

    def _synchronize(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
