"""Shared helpers of the models.fused tests (random BatchNorm statistics, capability marks)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from stereo_depth_ros.models.fused import cpu_features

CL2 = torch.channels_last
CL3 = torch.channels_last_3d
CPU = cpu_features.detect()
needs_int8 = pytest.mark.skipif(not CPU.int8_vnni, reason=f"int8 needs VNNI; this CPU has "
                                f"{CPU.describe()}")
needs_onednn_bf16 = pytest.mark.skipif(not CPU.onednn_bf16, reason=f"oneDNN bf16 needs AVX-512 "
                                       f"or AVX-NE-CONVERT; this CPU has {CPU.describe()}")


def random_bn(channels: int, generator: torch.Generator) -> dict[str, torch.Tensor]:
    return {"weight": 0.5 + torch.rand(channels, generator=generator),
            "bias": 0.1 * torch.randn(channels, generator=generator),
            "running_mean": 0.2 * torch.randn(channels, generator=generator),
            "running_var": 0.5 + torch.rand(channels, generator=generator)}


def load_bn(bn: nn.Module, params: dict[str, torch.Tensor]) -> nn.Module:
    bn.load_state_dict({**params, "num_batches_tracked": torch.tensor(1)})
    return bn.eval()


def relative_error(got: torch.Tensor, expected: torch.Tensor) -> float:
    """||got - expected|| / ||expected|| in float64."""
    got, expected = got.double(), expected.double()
    return float((got - expected).norm() / expected.norm())
