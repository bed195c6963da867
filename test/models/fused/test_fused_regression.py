"""models.fused.regression: the chunked soft-argmin equals the reference over the full volume."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from stereo_depth_ros.models.fused.regression import ChunkedRegression, interpolation_matrix
from stereo_depth_ros.models.regression import regress_disparity


@pytest.mark.parametrize("align_corners", [True, False])
def test_interpolation_matrix_is_pytorch_linear_interpolation(align_corners):
    x = torch.randn(3, 12)
    mat = interpolation_matrix(12, 48, align_corners)
    expected = F.interpolate(x[None], size=48, mode="linear", align_corners=align_corners)[0]
    assert torch.allclose(x @ mat.t(), expected, atol=1e-6)


@pytest.mark.parametrize("align_corners", [True, False])
def test_chunked_regression_equals_full_volume_regression(align_corners):
    g = torch.Generator().manual_seed(4)
    cost = 8 * torch.randn(1, 1, 12, 10, 14, generator=g)
    expected, expected_conf = regress_disparity(cost, 48, (40, 56), align_corners=align_corners,
                                                with_confidence=True)
    regression = ChunkedRegression(48, align_corners, chunk_pixels=333)   # ragged chunks
    got, conf = regression(cost, (40, 56), with_confidence=True)
    assert (got - expected).abs().max().item() < 1e-3
    assert (conf - expected_conf).abs().mean().item() < 1e-4


def test_a_bf16_cost_is_regressed_in_float32():
    cost = 8 * torch.randn(1, 1, 12, 10, 14)
    disparity, _ = ChunkedRegression(48, True)(cost.bfloat16(), (40, 56))
    expected, _ = regress_disparity(cost.bfloat16().float(), 48, (40, 56), align_corners=True)
    assert disparity.dtype == torch.float32
    assert (disparity - expected).abs().max().item() < 1e-3
