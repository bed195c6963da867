"""Training arithmetic: fp32 (default), bf16 autocast, or fp16 autocast with a GradScaler.

Under autocast the convolutions run in the reduced type; the cost volume is allocated in
float32, the soft-argmin regression runs in float32 (models.regression) and the loss is computed
from those float32 disparities, so only the convolutions lose precision.
"""

from __future__ import annotations

import contextlib

import torch

PRECISIONS = ("fp32", "bf16", "fp16")
_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


class Precision:
    """The autocast context and (fp16) loss scaler for `name` on `device`.

    Raises ValueError for fp16 without CUDA: float16 autocast needs the GradScaler, which is a
    CUDA tool, and CPUs have no fast float16 convolutions (use bf16 or fp32 there).
    """

    def __init__(self, name: str, device: torch.device):
        if name not in PRECISIONS:
            raise ValueError(f"unknown precision {name!r}: expected one of "
                             f"{', '.join(PRECISIONS)}")
        if name == "fp16" and device.type != "cuda":
            raise ValueError(f"--precision fp16 needs a CUDA device (training on {device}): "
                             "float16 training relies on CUDA's GradScaler; use --precision "
                             "bf16 or fp32 on the CPU")
        self.name = name
        self.device = device

    @property
    def dtype(self) -> torch.dtype:
        """The autocast dtype (float32 for fp32, where autocast is off)."""
        return _DTYPES.get(self.name, torch.float32)

    def autocast(self):
        """Context for forward passes: torch.autocast in bf16/fp16, nothing for fp32."""
        if self.name == "fp32":
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=self.dtype)

    def make_scaler(self):
        """A torch.amp.GradScaler for fp16, None otherwise."""
        if self.name != "fp16":
            return None
        return torch.amp.GradScaler(self.device.type)

    def note(self) -> str | None:
        """A warning worth printing at start (bf16 without native support), else None."""
        if self.name != "bf16":
            return None
        if self.device.type == "cuda" and not torch.cuda.is_bf16_supported():
            return "this GPU has no native bfloat16: bf16 training will be slow, use fp16"
        if self.device.type == "cpu" and not _cpu_has_bf16():
            return ("this CPU has no native bfloat16 (no AVX-512/AMX bf16): bf16 convolutions "
                    "are emulated and far slower than fp32; use bf16 for checks only")
        return None


def _cpu_has_bf16() -> bool:
    """Whether oneDNN reports bfloat16 support on this CPU (False when it cannot tell)."""
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False
