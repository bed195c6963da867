"""core.stage_clock.StageClock (the one stage timer of the engines, the backends and the
pipeline) and the PSMNet engines' declared interface (backends.engine.PsmnetEngine)."""

from __future__ import annotations

import time

import pytest

from stereo_depth_ros.core.stage_clock import StageClock


def test_marks_add_the_seconds_since_the_previous_mark():
    timings = {"features": 1.0}
    clock = StageClock(timings)
    time.sleep(0.01)
    clock.mark("features")
    clock.mark("regression")
    assert timings["features"] >= 1.01                      # added to what was there
    assert 0 <= timings["regression"] < timings["features"] - 1.0
    assert clock.finish() is timings and "total" not in timings


def test_none_is_off_and_total_is_the_whole_span():
    clock = StageClock(None)
    clock.mark("features")
    assert clock.finish() is None
    clock = StageClock({}, total=True)
    clock.mark("a")
    time.sleep(0.005)
    clock.mark("b")
    timings = clock.finish()
    assert set(timings) == {"a", "b", "total"}
    assert timings["total"] >= timings["a"] + timings["b"] >= 0.005


def test_a_cpu_device_needs_no_synchronisation():
    torch = pytest.importorskip("torch")
    timings: dict[str, float] = {}
    clock = StageClock(timings, torch.device("cpu"), synchronize=False)
    clock.mark("upload")
    assert list(timings) == ["upload"]                       # host time, at once


def test_every_engine_declares_the_engine_interface():
    from stereo_depth_ros.backends.engine import PsmnetEngine
    from stereo_depth_ros.backends.psmnet import PsmnetBackend, ReferenceRunner
    from stereo_depth_ros.models.fused import FastPSMNet
    from stereo_depth_ros.models.fused.cuda import CudaPSMNet

    for engine in (ReferenceRunner, FastPSMNet, CudaPSMNet):
        assert issubclass(engine, PsmnetEngine), engine
    backend = PsmnetBackend(None, max_disparity=16, device="cpu", engine="fast",
                            arithmetic="fp32")
    assert isinstance(backend.runner, FastPSMNet) and isinstance(backend.runner, PsmnetEngine)
    assert backend.runner.plan.cnn3d == "fp32" and backend.runner.mode == "fast"
    backend.synchronize()                                    # public; nothing to wait for here
    from stereo_depth_ros.models.fused import cpu_features
    if cpu_features.detect().int8_vnni:                      # the override reaches the engine
        assert PsmnetBackend(None, max_disparity=16, device="cpu", engine="fast",
                             arithmetic="int8").runner.plan.cnn3d == "int8"
    else:
        with pytest.raises(ValueError, match="int8 arithmetic needs a CPU with VNNI"):
            PsmnetBackend(None, max_disparity=16, device="cpu", engine="fast", arithmetic="int8")
    with pytest.raises(ValueError, match="arithmetic='int8' chooses the CPU fast engine"):
        PsmnetBackend(None, max_disparity=16, device="cpu", engine="exact", arithmetic="int8")
    with pytest.raises(ValueError, match="compile=True is for the CUDA fast engine"):
        PsmnetBackend(None, max_disparity=16, device="cpu", engine="fast", compile=True)
