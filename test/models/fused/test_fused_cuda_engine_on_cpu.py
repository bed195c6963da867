"""models.fused.cuda (the CUDA engine) checked on the CPU.

The CUDA engine is an ordinary module pipeline that also runs on the CPU (eager, no graphs): its
BatchNorm folding, channels-last layout, volume building and regression are checked here against
the reference model; test_cuda.py checks the same on a GPU, with graphs and reduced precision.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

from stereo_depth_ros.models.fused import cuda


def test_fuse_conv_relu_keeps_the_function():
    block = nn.Sequential(nn.Sequential(nn.Conv3d(4, 6, 3, padding=1), nn.Identity()),
                          nn.ReLU(inplace=True), nn.Conv3d(6, 6, 1, bias=False),
                          nn.ReLU()).eval()
    x = torch.randn(1, 4, 6, 7, 8)
    expected = block(x)
    assert cuda.fuse_conv_relu_(block) == 1               # the bias-free conv stays as it is
    assert isinstance(block[0], cuda.ConvReLU) and isinstance(block[1], nn.Identity)
    torch.testing.assert_close(block(x), expected)


def test_float32_arithmetic_sets_and_restores_the_precision_flags():
    matmul = torch.backends.cuda.matmul
    read = (lambda: matmul.fp32_precision) if hasattr(matmul, "fp32_precision") else (
        lambda: matmul.allow_tf32)
    before, benchmark = read(), torch.backends.cudnn.benchmark
    with cuda.float32_arithmetic(allow_tf32=False, benchmark=True):
        assert torch.backends.cudnn.benchmark is True
        assert read() in ("ieee", False)
    assert read() == before and torch.backends.cudnn.benchmark == benchmark


@pytest.mark.slow
def test_cuda_engine_on_cpu_computes_the_reference_with_real_weights(kitti_weights,
                                                                     real_golden):
    """Folded, channels-last, float32: the reference model's output (real weights, 256x256)."""
    from stereo_depth_ros.backends.psmnet import PsmnetBackend
    backend = PsmnetBackend(kitti_weights, device="cpu", engine="reference")
    left, right = (image[:, 128:384] for image in (real_golden["left"], real_golden["right"]))
    left_t, right_t, _ = backend.preprocess(left, right)
    with torch.inference_mode():
        reference, reference_confidence = backend.model.forward_with_confidence(left_t, right_t)
    engine = cuda.CudaPSMNet(backend.model, mode="exact", device="cpu")
    assert not engine.cuda_graphs and "eager" in engine.describe()
    assert not any(isinstance(m, nn.BatchNorm2d) for m in engine.network.modules())
    first = engine.network.dres0[0]
    assert isinstance(first, cuda.ConvReLU) and isinstance(engine.network.dres0[1], nn.Identity)
    assert first.conv.weight.is_contiguous(memory_format=torch.channels_last_3d)
    disparity, confidence = engine.forward_with_confidence(left_t, right_t)
    assert (disparity - reference).abs().max().item() < 1e-3
    # The window confidence jumps where a level enters the +-2 px window: bound its mean.
    assert (confidence - reference_confidence).abs().mean().item() < 1e-4
    # The reference model itself is untouched (the engine works on a copy).
    assert any(isinstance(m, nn.BatchNorm2d) for m in backend.model.modules())


def test_cuda_engine_options_are_checked():
    from stereo_depth_ros.models import build_psmnet
    model = build_psmnet("basic", max_disparity=32).eval()
    with pytest.raises(ValueError, match="mode must be one of"):
        cuda.CudaPSMNet(model, mode="turbo")
    with pytest.raises(ValueError, match="fast_dtype"):
        cuda.CudaPSMNet(model, fast_dtype=torch.float64)
    assert cuda.CudaPSMNet(model, mode="fast", fast_dtype=torch.bfloat16).arithmetic == \
        "bf16 convolutions, fp32 soft-argmin"
