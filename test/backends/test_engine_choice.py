"""engine auto on the CPU: the fastest engine the CPU runs natively whose recorded accuracy is
within 0.05 px mean and 0.5 % beyond 3 px of exact, on simulated CPUs (no such CPU needed)."""

from __future__ import annotations

import logging

import pytest
import torch

from stereo_depth_ros.backends import engine_choice
from stereo_depth_ros.backends.engine_choice import (MEASURED, MeasuredArithmetic,
                                                     choose_cpu_engine)
from stereo_depth_ros.models.fused import cpu_features
from stereo_depth_ros.models.fused.cpu_features import CpuFeatures, apply_override

AVX2 = CpuFeatures(frozenset({"avx2", "fma"}), onednn_bf16=False, onednn_int8=True)
AVX2_VNNI = CpuFeatures(frozenset({"avx2", "avx_vnni"}), onednn_bf16=False, onednn_int8=True)
AVX512_EMULATED_BF16 = CpuFeatures(frozenset({"avx2", "avx512f"}), onednn_bf16=True,
                                   onednn_int8=True)
SAPPHIRE_RAPIDS = CpuFeatures(frozenset({"avx2", "avx512f", "avx512_vnni", "avx512_bf16",
                                         "amx_bf16"}), onednn_bf16=True, onednn_int8=True)


@pytest.mark.parametrize("cpu, engine, arithmetic", [
    (AVX2, "exact", "fp32"),                      # nothing faster runs natively
    (AVX512_EMULATED_BF16, "exact", "fp32"),      # emulated bf16 does not count
    (AVX2_VNNI, "fast", "int8"),
    (SAPPHIRE_RAPIDS, "fast", "bf16"),            # bf16 3.01 s beats int8 3.79 s
])
def test_choice_for_simulated_cpus(cpu, engine, arithmetic):
    choice = choose_cpu_engine(cpu)
    assert (choice.engine, choice.arithmetic) == (engine, arithmetic)
    assert f"{engine} ({arithmetic})" in choice.reason and cpu.describe() in choice.reason


def test_the_recorded_measurements_are_within_the_limits_and_a_worse_one_is_refused():
    assert engine_choice.MAX_MEAN_PX == 0.05 and engine_choice.MAX_BEYOND_3PX_PCT == 0.5
    assert all(m.within_limits for m in MEASURED)
    too_coarse = MeasuredArithmetic("fast", "bf16", 1.0, 0.051, 0.1)      # faster, but 0.051 px
    too_many_outliers = MeasuredArithmetic("fast", "int8", 0.5, 0.01, 0.6)
    exact = next(m for m in MEASURED if m.engine == "exact")
    choice = choose_cpu_engine(SAPPHIRE_RAPIDS, (exact, too_coarse, too_many_outliers))
    assert choice.engine == "exact"
    assert "bf16 (too far from exact)" in choice.reason
    assert "int8 (too far from exact)" in choice.reason


def test_environment_override_simulates_a_cpu_without_bf16_or_vnni():
    stripped = apply_override(SAPPHIRE_RAPIDS, "-avx512_bf16,-amx_bf16")
    assert choose_cpu_engine(stripped).arithmetic == "int8"
    stripped = apply_override(stripped, "-avx512_vnni,-avx_vnni")
    assert choose_cpu_engine(stripped).engine == "exact"


def test_backend_auto_follows_the_choice_and_logs_why(monkeypatch, caplog):
    from stereo_depth_ros.backends.psmnet import PsmnetBackend, resolve_engine
    monkeypatch.setattr(cpu_features, "detect", lambda: SAPPHIRE_RAPIDS)
    assert resolve_engine("auto", "fp32", torch.device("cpu")) == "fast"
    assert resolve_engine("exact", "fp32", torch.device("cpu")) == "exact"   # parity kept
    monkeypatch.setattr(cpu_features, "detect", lambda: AVX2)
    assert resolve_engine("auto", "fp32", torch.device("cpu")) == "exact"
    with caplog.at_level(logging.INFO, logger="stereo_depth_ros.backends.psmnet"):
        backend = PsmnetBackend(None, max_disparity=48, device="cpu", engine="auto")
    assert backend.engine == "exact"
    assert "engine auto on this CPU (AVX2): exact (fp32)" in caplog.text
    assert "not used: bf16 (not native here), int8 (not native here)" in backend.describe()
    explicit = PsmnetBackend(None, max_disparity=48, device="cpu", engine="exact")
    assert explicit.engine_choice is None and "engine auto" not in explicit.describe()
