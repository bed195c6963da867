"""PSMNet backend: official preprocessing, real KITTI 2015 weights on a real pair, bad input."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch

from helpers.fused import CPU, needs_onednn_bf16
from stereo_depth_ros.backends import make_backend
from stereo_depth_ros.backends.psmnet import PsmnetBackend
from stereo_depth_ros.models import CheckpointError

MEAN = np.array([0.485, 0.456, 0.406], dtype=np.float32)
STD = np.array([0.229, 0.224, 0.225], dtype=np.float32)

# A 240x500 crop of the KITTI 2015 pair 000046 (road at the bottom, far scene at the top). It is
# not a multiple of 16, so the pad side matters: 16 rows are padded on top, 12 columns right.
CROP_Y0, CROP_X0, CROP_H, CROP_W = 135, 400, 240, 500


def _read_rgb(path):
    image = cv2.imread(str(path), cv2.IMREAD_COLOR)
    assert image is not None, path
    return np.ascontiguousarray(image[..., ::-1])


@pytest.fixture(scope="module")
def kitti_pair(assets_dir):
    folder = assets_dir / "samples" / "kitti2015"
    return (_read_rgb(folder / "kitti_000046_left.png"),
            _read_rgb(folder / "kitti_000046_right.png"))


@pytest.fixture(scope="module")
def kitti_backend(kitti_weights):
    return PsmnetBackend(kitti_weights, device="cpu", precision="fp32")


@pytest.fixture(scope="module")
def kitti_crop_result(kitti_backend, kitti_pair):
    """fp32 result on the crop, computed once for the tests below."""
    left, right = (_crop(image) for image in kitti_pair)
    return kitti_backend.compute(left, right)


@pytest.fixture(scope="module")
def random_backend():
    torch.manual_seed(0)
    return PsmnetBackend(None, max_disparity=48, device="cpu")


def _crop(image):
    return np.ascontiguousarray(image[CROP_Y0:CROP_Y0 + CROP_H, CROP_X0:CROP_X0 + CROP_W])


def _photometric_error(disparity, full_left, full_right):
    """Mean |left - right warped by disparity| (grey levels) over the crop.

    The warp samples the full right image, so pixels whose match lies left of the crop count too.
    """
    grey_left = cv2.cvtColor(full_left, cv2.COLOR_RGB2GRAY).astype(np.float32)
    grey_right = cv2.cvtColor(full_right, cv2.COLOR_RGB2GRAY).astype(np.float32)
    ys, xs = np.mgrid[0:CROP_H, 0:CROP_W].astype(np.float32)
    map_x = (CROP_X0 + xs - disparity).astype(np.float32)
    map_y = (CROP_Y0 + ys).astype(np.float32)
    warped = cv2.remap(grey_right, map_x, map_y, cv2.INTER_LINEAR)
    return float(np.abs(warped - _crop(grey_left)).mean())


def _official_input(image, padder):
    """The official test transform, written out in numpy: RGB / 255, ImageNet mean/std, pad."""
    normalized = (image.astype(np.float32) / 255.0 - MEAN) / STD
    return padder.pad(np.ascontiguousarray(normalized.transpose(2, 0, 1))[None])


def test_preprocess_is_the_official_transform(random_backend):
    rng = np.random.default_rng(7)
    left = rng.integers(0, 256, (100, 130, 3), dtype=np.uint8)
    left[0, 0] = (255, 0, 0)                                   # pure red, top-left pixel
    right = rng.integers(0, 256, (100, 130, 3), dtype=np.uint8)
    left_t, right_t, padder = random_backend.preprocess(left, right)
    assert left_t.shape == right_t.shape == (1, 3, 256, 256) and left_t.dtype == torch.float32
    assert (padder.top, padder.right) == (156, 126)
    np.testing.assert_allclose(left_t.numpy(), _official_input(left, padder), atol=1e-6)
    np.testing.assert_allclose(right_t.numpy(), _official_input(right, padder), atol=1e-6)
    # Hand values: RGB order (red in channel 0), /255, ImageNet mean/std, top/right zero pad.
    red = left_t[0, :, padder.top, 0].numpy()
    np.testing.assert_allclose(red, [(1 - 0.485) / 0.229, (0 - 0.456) / 0.224,
                                     (0 - 0.406) / 0.225], atol=1e-6)
    assert torch.all(left_t[..., :padder.top, :] == 0)
    assert torch.all(left_t[..., :, 130:] == 0)


@pytest.mark.slow
def test_real_kitti_pair(kitti_backend, kitti_pair, kitti_crop_result):
    full_left, full_right = kitti_pair
    left, right = _crop(full_left), _crop(full_right)
    result = kitti_crop_result
    disparity = result.disparity
    assert disparity.shape == (CROP_H, CROP_W) and disparity.dtype == np.float32
    assert np.all(np.isfinite(disparity))
    assert disparity.min() >= 0 and disparity.max() <= 192
    assert set(result.timings_s) == {"preprocess", "infer", "postprocess"}
    assert result.confidence.shape == disparity.shape and result.confidence.dtype == np.float32
    assert 0 <= result.confidence.min() and result.confidence.max() <= 1
    assert result.confidence.mean() > 0.5            # the released weights are mostly sure here

    # Near/far structure: the road in the bottom rows is much closer than the horizon rows.
    bottom, top = np.median(disparity[-40:]), np.median(disparity[:40])
    assert bottom > 40 and top < 15 and bottom > 3 * top, (bottom, top)

    # Photometric consistency: warping the right image by the disparity must reproduce the left
    # image far better than a constant disparity does, and better than what a broken pipeline
    # gives. Measured: 8.9 grey levels; constant median disparity 20.2; wrong pad side 15.2;
    # no normalization at all (0..255 input) 20.1.
    ours = _photometric_error(disparity, full_left, full_right)
    constant = _photometric_error(np.full_like(disparity, np.median(disparity)),
                                  full_left, full_right)
    assert ours < 0.6 * constant, (ours, constant)

    model = kitti_backend.model
    left_t, right_t, padder = kitti_backend.preprocess(left, right)
    assert (padder.top, padder.right) == (16, 12)
    # Wrong pad side: the same normalized images padded bottom/left, cropped the official way.
    content = (slice(None), slice(None), slice(padder.top, None), slice(0, CROP_W))
    wrong_pad = [torch.nn.functional.pad(t[content], (padder.right, 0, 0, padder.top))
                 for t in (left_t, right_t)]
    # No normalization: raw 0..255 RGB, padded correctly.
    raw = [padder.pad(torch.from_numpy(im).permute(2, 0, 1)[None].float())
           for im in (left, right)]
    for name, (bad_left, bad_right) in [("wrong pad side", wrong_pad), ("unnormalized", raw)]:
        with torch.inference_mode():
            bad = padder.unpad(model(bad_left, bad_right)[0, 0]).numpy()
        broken = _photometric_error(bad, full_left, full_right)
        assert ours < 0.8 * broken, (name, ours, broken)
        assert np.abs(bad - disparity).mean() > 2.0, name


@needs_onednn_bf16
def test_precision_bf16_runs_the_fused_engine_in_bf16(kitti_weights, kitti_pair,
                                                      kitti_crop_result):
    """precision bf16 on the CPU is the fused engine in bfloat16, within fast mode's bounds."""
    left, right = (_crop(image) for image in kitti_pair)
    backend = PsmnetBackend(kitti_weights, device="cpu", precision="bf16", engine="auto")
    assert backend.engine == "fast" and backend.runner.plan.cnn3d == "bf16"
    fast = backend.compute(left, right)
    assert fast.disparity.dtype == np.float32 and np.all(np.isfinite(fast.disparity))
    difference = np.abs(fast.disparity - kitti_crop_result.disparity)
    assert difference.mean() <= 0.1 and 100 * np.mean(difference > 3) <= 0.5


@pytest.mark.parametrize("shape", [(100, 130, 3), (37, 301), (17, 257, 3)])
@pytest.mark.slow
def test_small_and_odd_sizes(random_backend, shape):
    rng = np.random.default_rng(sum(shape))
    left = rng.integers(0, 256, shape, dtype=np.uint8)
    right = np.roll(left, -3, axis=1)
    result = random_backend.compute(left, right)
    assert result.disparity.shape == shape[:2] and result.disparity.dtype == np.float32
    assert result.confidence.shape == shape[:2]
    assert np.all(np.isfinite(result.disparity))
    assert result.disparity.min() >= 0 and result.disparity.max() <= 48
    assert np.all((result.confidence >= 0) & (result.confidence <= 1))


def test_make_backend_and_attributes(caplog):
    with caplog.at_level("WARNING", logger="stereo_depth_ros.backends.psmnet"):
        backend = make_backend("psmnet", weights_path=None, model="basic", max_disparity=32,
                               device="cpu")
    assert "random weights" in caplog.text
    assert backend.name == "psmnet" and backend.device == torch.device("cpu")
    assert (backend.min_disparity, backend.max_disparity) == (0.0, 32.0)
    assert backend.model.variant == "basic" and not backend.model.training


def test_auto_device_follows_cuda_availability():
    backend = PsmnetBackend(None, max_disparity=16, device="auto")
    assert backend.device.type == ("cuda" if torch.cuda.is_available() else "cpu")


@pytest.mark.parametrize("left,right,message", [
    (np.zeros((40, 50, 3), np.uint8), np.zeros((40, 51, 3), np.uint8), "differ in size"),
    (np.zeros((40, 50, 3), np.float32), np.zeros((40, 50, 3), np.float32), "must be uint8"),
    (np.zeros((40, 50, 4), np.uint8), np.zeros((40, 50, 4), np.uint8), "3 channels"),
    (np.zeros((0, 50, 3), np.uint8), np.zeros((0, 50, 3), np.uint8), "empty"),
    (np.zeros((40, 50, 3), np.uint8), np.zeros((40, 50), np.uint8), "differ in size"),
])
def test_bad_input_pairs(random_backend, left, right, message):
    with pytest.raises(ValueError, match=message):
        random_backend.compute(left, right)


@pytest.mark.parametrize("options,message", [
    ({"max_disparity": 100}, "positive multiple of 16.*got 100"),
    ({"max_disparity": 0}, "positive multiple of 16"),
    ({"max_disparity": -16}, "positive multiple of 16"),
    ({"max_disparity": 192.0}, "positive multiple of 16"),
    ({"precision": "int8"}, "precision must be one of"),
    ({"precision": "fp16", "device": "cpu"}, "fp16.*needs CUDA.*engine='fast'"),
    ({"device": "tpu"}, "device must be"),
    ({"model": "resnet"}, "model must be one of"),
])
def test_bad_options(options, message):
    with pytest.raises(ValueError, match=message):
        PsmnetBackend(None, **options)


@pytest.mark.skipif(torch.cuda.is_available(), reason="CUDA present")
def test_cuda_requested_without_cuda():
    with pytest.raises(ValueError, match="CUDA is not available"):
        PsmnetBackend(None, max_disparity=16, device="cuda")


def test_missing_weights_file(tmp_path):
    with pytest.raises(CheckpointError, match="not found.*nothing.tar"):
        PsmnetBackend(tmp_path / "nothing.tar", device="cpu")


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_matches_cpu(kitti_weights, kitti_pair):
    left, right = (_crop(image) for image in kitti_pair)
    cpu = PsmnetBackend(kitti_weights, device="cpu").compute(left, right).disparity
    cuda = PsmnetBackend(kitti_weights, device="cuda").compute(left, right)
    assert np.abs(cuda.disparity - cpu).max() < 0.05
    fp16 = PsmnetBackend(kitti_weights, device="cuda", precision="fp16").compute(left, right)
    assert np.median(np.abs(fp16.disparity - cpu)) < 0.5


def test_engine_auto_on_the_cpu_is_exact_or_the_bf16_fused_engine():
    auto = PsmnetBackend(max_disparity=48, device="cpu", engine="auto")
    assert auto.engine == ("fast" if CPU.bf16_native or CPU.int8_vnni else "exact")
    if CPU.onednn_bf16:
        bf16 = PsmnetBackend(max_disparity=48, device="cpu", precision="bf16", engine="auto")
        assert bf16.engine == "fast" and bf16.runner.plan.cnn3d == "bf16"
    else:
        with pytest.raises(ValueError, match="bf16 arithmetic needs"):
            PsmnetBackend(max_disparity=48, device="cpu", precision="bf16", engine="auto")
