"""models.fused (folding, chunked regression, the CUDA engine) checked on the CPU.

The CUDA engine is an ordinary module pipeline that also runs on the CPU (eager, no graphs): its
BatchNorm folding, channels-last layout, volume building and regression are checked here against
the reference model; test_cuda.py checks the same on a GPU, with graphs and reduced precision.
"""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from stereo_depth_ros.models.fused import cuda, folding


def _randomize_batchnorms(module: nn.Module, seed: int = 0) -> None:
    generator = torch.Generator().manual_seed(seed)
    for m in module.modules():
        if isinstance(m, (nn.BatchNorm2d, nn.BatchNorm3d)):
            n = m.num_features
            m.running_mean.copy_(torch.rand(n, generator=generator) - 0.5)
            m.running_var.copy_(torch.rand(n, generator=generator) + 0.5)
            m.weight.data.copy_(torch.rand(n, generator=generator) + 0.5)
            m.bias.data.copy_(torch.rand(n, generator=generator) - 0.5)


@pytest.mark.parametrize("conv", [nn.Conv2d(5, 7, 3, padding=1, bias=False),
                                  nn.Conv3d(5, 7, 3, padding=1, stride=2, bias=False),
                                  nn.ConvTranspose3d(5, 7, 3, padding=1, output_padding=1,
                                                     stride=2, bias=False)])
def test_fold_batchnorm_replaces_the_pair_by_one_equal_convolution(conv):
    bn = nn.BatchNorm2d(7) if isinstance(conv, nn.Conv2d) else nn.BatchNorm3d(7)
    block = nn.Sequential(nn.Sequential(conv, bn), nn.ReLU()).eval()
    _randomize_batchnorms(block)
    x = torch.randn(2, 5, *([9] * (conv.weight.dim() - 2)))
    expected = block(x)
    folded = copy.deepcopy(block)
    assert folding.fold_batchnorm_(folded) == 1
    assert isinstance(folded[0][1], nn.Identity) and folded[0][0].bias is not None
    torch.testing.assert_close(folded(x), expected, rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="eval-mode"):
        folding.fold_batchnorm_(block.train())


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
