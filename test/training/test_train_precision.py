"""The training step itself, on a tiny stereo network (PSMNet's own cost volume and float32
soft-argmin, a few small convolutions) so it runs in a second: the fp32 step is the plain
official step operation for operation, micro-batches weight the loss by masked pixels, bf16
autocast trains (convolutions in bfloat16, disparities and loss in float32), fp16 without CUDA
is refused. PSMNet itself needs 256x256 inputs, where one bf16 step takes minutes on a CPU
without native bfloat16 (measured: 364 s for `basic` at batch 2 on an AVX2 EPYC)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from torch import nn

from helpers.process import assert_clean_exit
from stereo_depth_ros.data import make_dataset
from stereo_depth_ros.models.cost_volume import build_concat_volume
from stereo_depth_ros.models.regression import regress_disparity
from stereo_depth_ros.tools import train
from stereo_depth_ros.training import runner
from stereo_depth_ros.training.data import normalize_image
from stereo_depth_ros.training.loop import train_one_epoch
from stereo_depth_ros.training.loss import loss_mask, psmnet_loss
from stereo_depth_ros.training.precision import Precision

MAX_DISPARITY = 16
CPU = torch.device("cpu")


class TinyStereo(nn.Module):
    """Shared 2-D features -> PSMNet concatenation volume (full resolution) -> one 3-D conv ->
    the models' float32 regression. No BatchNorm, so micro-batching changes nothing."""

    def __init__(self):
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(),
                                      nn.Conv2d(4, 4, 3, padding=1))
        self.aggregate = nn.Conv3d(8, 1, 3, padding=1)

    def forward(self, left, right):
        volume = build_concat_volume(self.features(left), self.features(right), MAX_DISPARITY)
        cost = self.aggregate(volume)
        return regress_disparity(cost, MAX_DISPARITY, tuple(left.shape[-2:]),
                                 align_corners=True)[0]


def _batches(count: int, batch_size: int, *, seed: int = 0, nan_rows: int = 0):
    """Tiny synthetic scenes (24x48 px) as (left, right, gt) batches; `nan_rows` rows of the
    first pair's ground truth are made invalid so micro-batches differ in masked pixels."""
    dataset = make_dataset("synthetic", count=count, seed=seed, height=24, width=48,
                           max_disparity=float(MAX_DISPARITY))
    samples = [dataset[i] for i in range(count)]
    left = torch.stack([normalize_image(s.left) for s in samples])
    right = torch.stack([normalize_image(s.right) for s in samples])
    gt = torch.stack([torch.from_numpy(s.disparity.astype(np.float32)) for s in samples])
    gt[0, :nan_rows] = float("nan")
    return [(left[i:i + batch_size], right[i:i + batch_size], gt[i:i + batch_size])
            for i in range(0, count - batch_size + 1, batch_size)]


def _model(seed: int = 0) -> TinyStereo:
    torch.manual_seed(seed)
    return TinyStereo()


def test_fp32_epoch_is_the_plain_official_step_bit_for_bit():
    """One process, no micro-batches: the same losses and weights as zero_grad / forward /
    psmnet_loss / backward / step written out by hand."""
    batches = _batches(4, 2) * 2
    ours, plain = _model(), _model()
    optimizer = torch.optim.Adam(ours.parameters(), lr=1e-2)
    stats = train_one_epoch(ours, batches, optimizer, device=CPU, max_disparity=MAX_DISPARITY,
                            mask_mode="both", precision=Precision("fp32", CPU))
    plain_optimizer = torch.optim.Adam(plain.parameters(), lr=1e-2)
    losses = []
    for left, right, gt in batches:
        plain_optimizer.zero_grad()
        loss = psmnet_loss(plain(left, right), gt, loss_mask(gt, "both", MAX_DISPARITY))
        loss.backward()
        plain_optimizer.step()
        losses.append(float(loss.detach()))
    assert stats.losses == losses
    for mine, theirs in zip(ours.parameters(), plain.parameters()):
        assert torch.equal(mine, theirs)


def test_micro_batches_weight_the_loss_by_masked_pixels():
    """The first pair has 16 of its 24 rows without ground truth, so the two micro-batches of
    a step hold different numbers of masked pixels: accumulating them must still give the
    gradient of the mean over every masked pixel of the batch, i.e. one batch's step (this
    network has no BatchNorm)."""
    batches = _batches(4, 4, nan_rows=16) * 2
    results = []
    for accumulate in (1, 2):
        model = _model()
        optimizer = torch.optim.SGD(model.parameters(), lr=0.05)
        stats = train_one_epoch(model, batches, optimizer, device=CPU,
                                max_disparity=MAX_DISPARITY, mask_mode="both",
                                accumulate=accumulate)
        results.append((stats.losses, [p.detach().clone() for p in model.parameters()]))
    (losses_1, weights_1), (losses_2, weights_2) = results
    np.testing.assert_allclose(losses_2, losses_1, rtol=1e-6)
    for one, two in zip(weights_1, weights_2):
        torch.testing.assert_close(two, one, rtol=1e-5, atol=1e-7)
    # The unweighted mean of the two micro-batch means is a different loss: the check can fail.
    left, right, gt = batches[0]
    mask = loss_mask(gt, "both", MAX_DISPARITY)
    with torch.no_grad():
        model = _model()
        halves = [psmnet_loss(model(left[j::2], right[j::2]), gt[j::2], mask[j::2])
                  for j in range(2)]
    assert abs(float(sum(halves)) / 2 - losses_1[0]) > 1e-3


def test_bf16_autocast_trains_tiny_scenes_with_float32_disparities_and_loss():
    batches = _batches(2, 2, seed=1) * 12
    model = _model(1)
    seen = {}

    def record(name):
        def hook(module, inputs, output):
            seen.setdefault(name, output.dtype)
        return hook

    model.features[0].register_forward_hook(record("conv2d"))
    model.aggregate.register_forward_hook(record("conv3d"))
    model.register_forward_hook(record("disparity"))
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    stats = train_one_epoch(model, batches, optimizer, device=CPU, max_disparity=MAX_DISPARITY,
                            mask_mode="both", precision=Precision("bf16", CPU))
    assert seen == {"conv2d": torch.bfloat16, "conv3d": torch.bfloat16,
                    "disparity": torch.float32}
    assert all(p.dtype == torch.float32 for p in model.parameters())   # master weights
    first, last = np.mean(stats.losses[:3]), np.mean(stats.losses[-3:])
    print(f"bf16 loss: first 3 steps {first:.3f}, last 3 steps {last:.3f}")
    assert np.isfinite(stats.losses).all() and last < 0.7 * first


def test_fp16_without_cuda_is_refused(tmp_path, capsys):
    with pytest.raises(ValueError, match="fp16 needs a CUDA device"):
        Precision("fp16", CPU)
    assert train.main(["--dataset", "synthetic", "--count", "2", "--crop", "256x256",
                       "--precision", "fp16", "--device", "cpu", "--out", str(tmp_path)]) == 1
    err = capsys.readouterr().err
    assert "fp16 needs a CUDA device" in err and "bf16 or fp32" in err
    assert_clean_exit(err)
    assert not any(tmp_path.iterdir())


def test_the_tool_trains_and_validates_under_bf16_autocast(tmp_path):
    """stereo_depth_train --precision bf16 (on helpers.training.TinyStereo): the convolutions of
    the training steps and of validation run in bfloat16, the disparities stay float32, the
    master weights float32."""
    from helpers.training import build_tiny_stereo

    seen = []

    def build(variant, *, max_disparity):
        model = build_tiny_stereo(variant, max_disparity=max_disparity)
        model.features[0].register_forward_hook(
            lambda module, inputs, output: seen.append((module.training, output.dtype)))
        model.register_forward_hook(
            lambda module, inputs, output: seen.append(("disparity", output.dtype)))
        return model

    args = train.build_parser().parse_args([
        "--dataset", "synthetic", "--count", "3", "--val-count", "1", "--crop", "256x512",
        "--batch-size", "2", "--max-disparity", "16", "--epochs", "1", "--device", "cpu",
        "--precision", "bf16", "--quiet", "--no-tensorboard", "--out", str(tmp_path)])
    result = runner.run(args, build_model=build)
    assert (True, torch.bfloat16) in seen and (False, torch.bfloat16) in seen   # train, val
    assert {dtype for name, dtype in seen if name == "disparity"} == {torch.float32}
    assert np.isfinite(result["epochs"][0]["train_loss"]) and "val" in result["epochs"][0]
    assert all(p.dtype == torch.float32 for p in result["model"].parameters())
    start = json.loads((tmp_path / "train_log.jsonl").read_text().splitlines()[0])
    assert start["precision"] == "bf16"
