"""models.fused.cpu.FastPSMNet: the whole fused CPU engine against the reference, the arithmetic
it picks per CPU, and the accuracy bounds of fast mode (mean |change| <= 0.1 px and <= 0.5 % of
pixels moved by more than 3 px against exact) for every arithmetic this CPU can run."""

from __future__ import annotations

import os
import subprocess
import sys

import cv2
import numpy as np
import pytest
import torch

from helpers.fused import CPU, needs_int8, needs_onednn_bf16
from stereo_depth_ros.models import build_psmnet, load_checkpoint
from stereo_depth_ros.models.fused import ArithmeticPlan, FastPSMNet
from stereo_depth_ros.models.fused.cpu import INT8_FEATURE_LAYERS
from stereo_depth_ros.models.fused.cpu_features import CpuFeatures

ARITHMETIC_MARKS = {"fp32": (), "int8": (needs_int8,), "bf16": (needs_onednn_bf16,)}


# ----------------------------------------------------------------------------------------------
# The random-weight goldens (../shared, when present)
# ----------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def golden(golden_dir):
    inputs = torch.load(golden_dir / "golden_input.pt")
    return golden_dir, inputs["left"], inputs["right"]


@pytest.mark.parametrize("align_corners, name", [
    (True, "golden_output_align_corners_true.pt"),
    (False, "golden_output.pt"),
])
@pytest.mark.slow
def test_exact_mode_matches_the_random_weight_golden(golden, align_corners, name):
    golden_dir, left, right = golden
    model = build_psmnet("stackhourglass", align_corners=align_corners)
    load_checkpoint(model, golden_dir / "golden_stackhourglass_ckpt.tar")
    exact = FastPSMNet.from_model(model.eval(), mode="exact")
    disparity, confidence = exact.forward_with_confidence(left, right)
    expected = torch.load(golden_dir / name)
    error = (disparity - expected).abs()
    assert disparity.shape == expected.shape == (1, 1, 256, 512)
    # See test_psmnet_model.py for the random-weight tolerance (5e-2 max, 1e-3 mean).
    assert error.max().item() <= 5e-2 and error.mean().item() <= 1e-3
    with torch.inference_mode():
        _, reference_confidence = model.forward_with_confidence(left, right)
    assert (confidence - reference_confidence).abs().mean().item() < 1e-3


@pytest.mark.slow
def test_folded_fp32_features_are_close_to_the_random_weight_golden(golden):
    """The folded channels-last feature CNN in float32 (the int8 plan's non-int8 layers): only
    the rounding changes."""
    golden_dir, left, right = golden
    model = build_psmnet("stackhourglass")
    load_checkpoint(model, golden_dir / "golden_stackhourglass_ckpt.tar")
    fp32 = FastPSMNet(model.eval().state_dict(), mode="fast", arithmetic="fp32")
    fp32.plan = ArithmeticPlan("fp32", "fp32")
    fp32._build_features(model.state_dict())
    expected = torch.load(golden_dir / "golden_output_align_corners_true.pt")
    error = (fp32(left, right) - expected).abs()
    assert error.max().item() < 0.1 and error.mean().item() < 2e-3


# ----------------------------------------------------------------------------------------------
# Variants, options, arithmetic choice
# ----------------------------------------------------------------------------------------------

@pytest.mark.slow
def test_basic_variant_matches_reference():
    torch.manual_seed(1)
    model = build_psmnet("basic", max_disparity=64).eval()
    left, right = torch.randn(2, 1, 3, 256, 256)
    with torch.inference_mode():
        expected = model(left, right)
    exact = FastPSMNet.from_model(model, mode="exact")
    assert exact.variant == "basic"
    assert (exact(left, right) - expected).abs().max().item() < 1e-2


def test_bad_input_and_options():
    model = build_psmnet("stackhourglass", max_disparity=32).eval()
    exact = FastPSMNet.from_model(model)
    with pytest.raises(ValueError, match="multiple of 16"):
        exact(torch.zeros(1, 3, 256, 250), torch.zeros(1, 3, 256, 250))
    with pytest.raises(ValueError, match="equal shape"):
        exact(torch.zeros(1, 3, 256, 256), torch.zeros(1, 3, 256, 272))
    with pytest.raises(ValueError, match="mode"):
        FastPSMNet.from_model(model, mode="turbo")
    with pytest.raises(ValueError, match="float32"):
        FastPSMNet.from_model(model, mode="exact", arithmetic="int8")
    with pytest.raises(ValueError, match="arithmetic must be one of"):
        FastPSMNet.from_model(model, mode="fast", arithmetic="fp8")


@pytest.mark.parametrize("flags, bf16, int8, expected", [
    ({"avx512f", "avx512_vnni", "avx512_bf16"}, True, True, "bf16"),    # Zen 4/5, Cooper Lake
    ({"avx512f", "avx512_vnni", "amx_bf16"}, True, True, "bf16"),       # Sapphire Rapids
    ({"avx512f", "avx512_vnni"}, True, True, "int8"),                   # Cascade/Ice Lake
    ({"avx2", "avx_vnni"}, False, True, "int8"),                        # Alder Lake
    ({"avx512f"}, True, True, "fp32"),                                  # Skylake-X
    ({"avx2"}, False, True, "fp32"),                                    # Zen 2/3
])
def test_fast_mode_picks_its_arithmetic_from_the_cpu(flags, bf16, int8, expected):
    cpu = CpuFeatures(frozenset(flags), onednn_bf16=bf16, onednn_int8=int8)
    plan = ArithmeticPlan.for_mode("fast", cpu=cpu)
    assert plan.cnn3d == expected
    assert plan.int8_feature_layers == (INT8_FEATURE_LAYERS if expected == "int8" else ())
    assert plan.features == {"bf16": "bf16", "int8": "fp32", "fp32": "reference"}[expected]
    assert ArithmeticPlan.for_mode("exact", cpu=cpu) == ArithmeticPlan("reference", "fp32")


def test_arithmetic_the_cpu_cannot_run_is_refused_with_the_reason():
    avx2 = CpuFeatures(frozenset({"avx2"}), onednn_bf16=False, onednn_int8=True)
    with pytest.raises(ValueError, match="bf16 arithmetic needs .*AVX2"):
        ArithmeticPlan.for_mode("fast", "bf16", cpu=avx2)
    with pytest.raises(ValueError, match="int8 arithmetic needs a CPU with VNNI"):
        ArithmeticPlan.for_mode("fast", "int8", cpu=avx2)


@pytest.mark.slow
def test_without_native_bf16_the_engine_falls_back_and_keeps_its_bounds(repo_root,
                                                                        kitti_weights):
    """The capability switched off for a process (STEREO_DEPTH_CPU_FEATURES): fast mode picks
    int8 (VNNI) or fp32 and stays within fast mode's bounds of exact on a real crop."""
    code = f"""
import cv2, numpy as np, torch
from stereo_depth_ros.backends.psmnet import PsmnetBackend
from stereo_depth_ros.models.fused import FastPSMNet
backend = PsmnetBackend({str(kitti_weights)!r}, device="cpu")
image = cv2.imread({str(kitti_weights.parent.parent / "samples" / "kitti2015")!r}
                   + "/kitti_000046_{{}}.png".format("left"))
other = cv2.imread({str(kitti_weights.parent.parent / "samples" / "kitti2015")!r}
                   + "/kitti_000046_{{}}.png".format("right"))
left, right = (np.ascontiguousarray(i[119:375, 500:756, ::-1]) for i in (image, other))
left_t, right_t, _ = backend.preprocess(left, right)
fast = FastPSMNet.from_model(backend.model, mode="fast")
exact = FastPSMNet.from_model(backend.model, mode="exact")
change = (fast(left_t, right_t) - exact(left_t, right_t)).abs()
print(fast.plan.cnn3d, "native bf16" in fast.describe(), change.mean().item(),
      100 * (change > 3).float().mean().item())
"""
    env = {**os.environ, "STEREO_DEPTH_CPU_FEATURES": "-avx512_bf16,-amx_bf16"}
    result = subprocess.run([sys.executable, "-c", code], cwd=repo_root, env=env,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    arithmetic, native, mean, moved = result.stdout.split()
    assert arithmetic == ("int8" if CPU.int8_vnni else "fp32") and native == "False"
    assert float(mean) <= 0.1 and float(moved) <= 0.5


# ----------------------------------------------------------------------------------------------
# Fast mode on a real pair: the accuracy bounds, for each arithmetic this CPU runs
# ----------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def kitti_crop(kitti_weights):
    """A 256x640 crop of the real KITTI 2015 pair 000046 (road, cars, far background) and the
    exact engine's output on it."""
    from stereo_depth_ros.backends.psmnet import PsmnetBackend
    backend = PsmnetBackend(kitti_weights, device="cpu")
    folder = kitti_weights.parent.parent / "samples" / "kitti2015"
    images = [cv2.imread(str(folder / f"kitti_000046_{side}.png"), cv2.IMREAD_COLOR)
              for side in ("left", "right")]
    left, right = (np.ascontiguousarray(image[119:375, 300:940, ::-1]) for image in images)
    left_t, right_t, _ = backend.preprocess(left, right)
    exact = FastPSMNet.from_model(backend.model, mode="exact")
    return backend.model, left_t, right_t, exact.forward_with_confidence(left_t, right_t)


@pytest.mark.parametrize("arithmetic", [
    pytest.param(name, marks=marks) for name, marks in ARITHMETIC_MARKS.items()])
@pytest.mark.slow
def test_fast_mode_accuracy_on_the_real_kitti_crop(kitti_crop, arithmetic):
    model, left_t, right_t, (exact_disparity, exact_confidence) = kitti_crop
    fast = FastPSMNet.from_model(model, mode="fast", arithmetic=arithmetic)
    assert fast.plan.cnn3d == arithmetic
    disparity, confidence = fast.forward_with_confidence(left_t, right_t)
    change = (disparity - exact_disparity).abs()
    assert change.mean().item() <= 0.1
    assert (change > 3).float().mean().item() * 100 <= 0.5
    assert (confidence - exact_confidence).abs().mean().item() < 0.02
    assert 0 <= disparity.min().item() and disparity.max().item() <= 191


# ----------------------------------------------------------------------------------------------
# Backend integration: PsmnetBackend(engine=..., precision=...)
# ----------------------------------------------------------------------------------------------

@pytest.mark.slow
def test_backend_engines_agree_with_reference():
    from stereo_depth_ros.backends.psmnet import PsmnetBackend
    rng = np.random.default_rng(0)
    left = rng.integers(0, 256, (100, 130, 3), dtype=np.uint8)     # padded to 256x256
    right = np.roll(left, -4, axis=1)
    results = {}
    for engine in ("reference", "exact", "fast"):
        torch.manual_seed(0)
        backend = PsmnetBackend(None, max_disparity=48, device="cpu", engine=engine)
        results[engine] = backend.compute(left, right)
        assert results[engine].disparity.shape == (100, 130)
        assert results[engine].confidence.shape == (100, 130)
    reference, exact, fast = (results[name] for name in ("reference", "exact", "fast"))
    assert np.abs(exact.disparity - reference.disparity).max() < 1e-3
    assert np.abs(exact.confidence - reference.confidence).mean() < 1e-4
    # Random weights: fast mode only has to stay the same function within its rounding.
    assert np.abs(fast.disparity - reference.disparity).mean() < 0.1


def test_backend_engine_and_precision_options():
    from stereo_depth_ros.backends.psmnet import PsmnetBackend, resolve_engine
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    from stereo_depth_ros.backends.engine_choice import choose_cpu_engine
    from stereo_depth_ros.models.fused.cpu_features import detect
    # auto on the CPU: exact unless this CPU runs a close-enough faster arithmetic natively
    # (test_engine_choice.py simulates those CPUs)
    assert resolve_engine("auto", "fp32", cpu) == choose_cpu_engine(detect()).engine
    assert resolve_engine("auto", "bf16", cpu) == "fast"
    assert resolve_engine("auto", "fp32", cuda) == "fast"
    assert resolve_engine("reference", "bf16", cuda) == "reference"
    with pytest.raises(ValueError, match="engine must be one of"):
        PsmnetBackend(None, max_disparity=48, device="cpu", engine="turbo")
    with pytest.raises(ValueError, match="slower than float32: use engine='fast'"):
        PsmnetBackend(None, max_disparity=48, device="cpu", precision="bf16",
                      engine="reference")
    with pytest.raises(ValueError, match="engine='exact' is float32"):
        PsmnetBackend(None, max_disparity=48, device="cpu", precision="bf16", engine="exact")
    if not CPU.onednn_bf16:
        with pytest.raises(ValueError, match="bf16 arithmetic needs"):
            PsmnetBackend(None, max_disparity=48, device="cpu", precision="bf16",
                          engine="fast")
    backend = PsmnetBackend(None, max_disparity=48, device="cpu", engine="fast")
    assert f"3-D {backend.runner.plan.cnn3d}" in backend.describe()
    assert CPU.describe() in backend.describe()
