"""The interface of the PSMNet engines `backends.psmnet.PsmnetBackend` runs (its `runner`).

The reference (`backends.psmnet.ReferenceRunner`), the fused CPU engine
(`models.fused.FastPSMNet`) and the CUDA engine (`models.fused.cuda.CudaPSMNet`) declare it; the
backend, the benchmark and the tests use nothing else of them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol, runtime_checkable

if TYPE_CHECKING:                         # no torch import for the interface itself
    import torch


@runtime_checkable
class PsmnetEngine(Protocol):
    """A PSMNet forward pass: normalized, padded images in, disparity (and more) out."""

    def forward_with_confidence(self, left: torch.Tensor, right: torch.Tensor, *,
                                timings: dict[str, float] | None = None,
                                with_confidence: bool = True, with_uncertainty: bool = False
                                ) -> tuple:
        """(disparity, confidence or None[, sigma_d with `with_uncertainty`]).

        left, right: (B, 3, H, W) float32 normalized RGB on the engine's device, H and W
            multiples of 16 and >= 256 (`core.padding.InputPadder`).
        Returns (B, 1, H, W) float32 tensors: disparity px in [0, max_disparity - 1],
        confidence in [0, 1] (None unless `with_confidence`), sigma_d px >= 0.
        timings: when a dict is given, seconds per stage are added to it (the engine's own
            stage names, e.g. "features", "cost_volume", "cnn3d", "regression" or "network").
        """
        ...

    def describe(self) -> str:
        """One line for the start-up log and the benchmark report: engine, arithmetic."""
        ...
