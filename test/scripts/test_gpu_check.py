"""scripts/gpu_check.py's arithmetic (the GPU steps themselves run only where CUDA is)."""

from __future__ import annotations

import pytest

from helpers.scripts import load_script


@pytest.fixture()
def gpu_check():
    return load_script("gpu_check")


def test_sigma_cost_is_fast_sigma_over_fast_per_size(gpu_check):
    summary = {"384x1248": {"fast": {"network_ms": 20.0, "frame_ms": 40.0},
                            "fast-sigma": {"network_ms": 20.5, "frame_ms": 41.2}},
               "256x512": {"fast": {"network_ms": 8.0, "frame_ms": None}}}   # no fast-sigma
    cost = gpu_check._sigma_cost(summary)
    assert list(cost) == ["384x1248"]
    assert cost["384x1248"]["network_ms"] == pytest.approx(2.5)
    assert cost["384x1248"]["frame_ms"] == pytest.approx(3.0)
    assert "fast-sigma" in gpu_check.BENCH_CONFIGS
