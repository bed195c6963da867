"""stereo_depth_train: schedule, masks and loss by hand; aligned crops; a short CPU run on
synthetic scenes lowers the loss, resumes, and writes official-layout checkpoints that load."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import torch

from helpers.process import assert_clean_exit
from stereo_depth_ros.data.samples import StereoDataset, StereoSample
from stereo_depth_ros.models import build_psmnet, load_checkpoint
from stereo_depth_ros.tools import evaluate, train
from stereo_depth_ros.training.data import (RandomCropDataset, check_batchnorm_trainable,
                                            normalize_image)
from stereo_depth_ros.training.errors import TrainingError
from stereo_depth_ros.training.loss import loss_mask, mask_mode_for, psmnet_loss
from stereo_depth_ros.training.recipe import learning_rate
from stereo_depth_ros.training.runner import run


def test_learning_rate_follows_the_official_finetune_schedule():
    assert learning_rate(1) == 1e-3
    assert learning_rate(200) == 1e-3                  # epoch <= 200: 0.001
    assert learning_rate(201) == pytest.approx(1e-4)   # then 0.0001
    assert learning_rate(5, 2e-3, drop_epoch=4, drop_factor=0.5) == pytest.approx(1e-3)
    assert learning_rate(10_000, drop_epoch=0) == 1e-3  # SceneFlow: constant


def test_loss_masks_per_dataset():
    gt = torch.tensor([[[np.nan, 0.0, 5.0, 191.9, 192.0, 300.0]]]).float()[0]
    assert mask_mode_for("kitti2015") == mask_mode_for("kitti2012") == "gt>0"
    assert mask_mode_for("sceneflow") == "gt<max"
    assert mask_mode_for("synthetic") == "both"
    kitti = loss_mask(gt, "gt>0", 192)
    sceneflow = loss_mask(gt, "gt<max", 192)
    both = loss_mask(gt, "both", 192)
    assert kitti.tolist() == [[False, False, True, True, True, True]]
    assert sceneflow.tolist() == [[False, True, True, True, False, False]]
    assert both.tolist() == [[False, False, True, True, False, False]]


def test_psmnet_loss_weights_and_smooth_l1_by_hand():
    gt = torch.tensor([[[1.0, 2.0, 3.0, 4.0]]])
    mask = torch.tensor([[[True, True, True, False]]])
    # errors on the masked px: out1 (0.5, 0.5, 0.5) -> SL1 0.125 each; out2 (2, 2, 2) -> 1.5;
    # out3 (0, 0, 0) -> 0. The unmasked px (error 100) must not count.
    out1 = (gt + 0.5 + torch.tensor([0, 0, 0, 100.0]))[:, None]
    out2 = (gt - 2.0 + torch.tensor([0, 0, 0, 100.0]))[:, None]
    out3 = (gt + torch.tensor([0, 0, 0, 100.0]))[:, None]
    loss = psmnet_loss((out1, out2, out3), gt, mask)
    assert float(loss) == pytest.approx(0.5 * 0.125 + 0.7 * 1.5 + 1.0 * 0.0)
    assert float(psmnet_loss(out2, gt, mask)) == pytest.approx(1.5)   # basic: one output


class _CoordinateDataset(StereoDataset):
    """Images and gt that encode their own coordinates, to check the crop window."""

    dataset_name = "coords"

    def __len__(self):
        return 1

    def names(self):
        return ["coords"]

    def _load(self, index):
        v, u = np.mgrid[0:300, 0:520]
        left = np.stack([v % 256, u % 256, u // 256], axis=2).astype(np.uint8)
        gt = (v * 1000 + u).astype(np.float32)
        return StereoSample(left=left, right=left.copy(), disparity=gt, name="coords")


def test_random_crops_share_one_window():
    torch.manual_seed(0)
    crops = RandomCropDataset(_CoordinateDataset(), (256, 512))
    for _ in range(3):
        left, right, gt = crops[0]
        assert left.shape == (3, 256, 512) and gt.shape == (256, 512)
        top, x0 = int(gt[0, 0]) // 1000, int(gt[0, 0]) % 1000
        window = _CoordinateDataset()[0].left[top:top + 256, x0:x0 + 512]
        expected = normalize_image(window)
        torch.testing.assert_close(left, expected)
        torch.testing.assert_close(right, expected)
    with pytest.raises(TrainingError, match="smaller than the crop"):
        RandomCropDataset(_CoordinateDataset(), (320, 512))[0]


def test_batchnorm_and_crop_checks():
    check_batchnorm_trainable((256, 512), 1)
    check_batchnorm_trainable((256, 256), 2)
    with pytest.raises(TrainingError, match="batch-size >= 2"):
        check_batchnorm_trainable((256, 256), 1)
    with pytest.raises(TrainingError, match="multiple of 16"):
        check_batchnorm_trainable((250, 512), 2)


def test_cli_errors_are_clear(tmp_path, capsys):
    assert train.main(["--dataset", "kitti2015", "--out", str(tmp_path)]) == 1
    assert "--root is required" in capsys.readouterr().err
    assert train.main(["--dataset", "synthetic", "--crop", "256x256", "--batch-size", "1",
                       "--out", str(tmp_path)]) == 1
    assert "batch-size >= 2" in capsys.readouterr().err
    with pytest.raises(SystemExit) as usage:                # a bad value: usage error, 2
        train.main(["--dataset", "synthetic", "--max-disparity", "40", "--out", str(tmp_path)])
    assert usage.value.code == 2 and "multiple of 16" in capsys.readouterr().err
    assert train.main(["--dataset", "synthetic", "--resume", str(tmp_path / "none.tar"),
                       "--out", str(tmp_path)]) == 1
    err = capsys.readouterr().err
    assert "--resume checkpoint not found" in err
    assert_clean_exit(err)
    # A weights-only checkpoint cannot be resumed (no optimizer state), only used with --init.
    model = build_psmnet("stackhourglass", max_disparity=32)
    weights = tmp_path / "weights.tar"
    torch.save({"state_dict": {"module." + k: v for k, v in model.state_dict().items()}}, weights)
    assert train.main(["--dataset", "synthetic", "--count", "2", "--crop", "256x256",
                       "--max-disparity", "32", "--resume", str(weights), "--out",
                       str(tmp_path)]) == 1
    assert "use --init" in capsys.readouterr().err


@pytest.mark.slow
def test_short_cpu_run_lowers_loss_resumes_and_checkpoint_loads(tmp_path, capsys):
    """Overfit two tiny synthetic scenes (max_disparity 32, 256x256 crops, batch 2): 2 epochs,
    then resume for a 3rd with validation on a held-out scene."""
    common = ["--dataset", "synthetic", "--count", "3", "--val-count", "1", "--size", "256x288",
              "--crop", "256x256", "--batch-size", "2", "--max-disparity", "32", "--device",
              "cpu", "--out", str(tmp_path), "--val-every", "3", "--save-every", "2",
              "--seed", "0"]
    first = run(train.build_parser().parse_args(common + ["--epochs", "2"]))
    assert [e["epoch"] for e in first["epochs"]] == [1, 2]
    assert (tmp_path / "checkpoint_2.tar").is_file() and (tmp_path / "last.tar").is_file()

    second = run(train.build_parser().parse_args(
        common + ["--epochs", "3", "--resume", str(tmp_path / "last.tar")]))
    assert [e["epoch"] for e in second["epochs"]] == [3]
    losses = [e["train_loss"] for e in first["epochs"] + second["epochs"]]
    print("training loss per epoch:", [round(v, 3) for v in losses])
    assert all(np.isfinite(losses))
    assert losses[-1] < 0.5 * losses[0]
    val = second["epochs"][0]["val"]
    assert set(val) >= {"epe", "bad_3", "d1_all"} and np.isfinite(val["epe"])
    assert "epoch 3/3" in capsys.readouterr().out

    checkpoint = torch.load(tmp_path / "checkpoint_3.tar", map_location="cpu", weights_only=True)
    assert checkpoint["epoch"] == 3 and checkpoint["train_loss"] == pytest.approx(losses[-1])
    assert all(k.startswith("module.") for k in checkpoint["state_dict"])
    # Adam's step counter carried over the resume: 3 steps in all, not 1.
    steps = {float(s["step"]) for s in checkpoint["optimizer"]["state"].values()}
    assert steps == {3.0}
    fresh = build_psmnet("stackhourglass", max_disparity=32)
    extra = load_checkpoint(fresh, tmp_path / "checkpoint_3.tar")       # strict
    assert extra["epoch"] == 3
    for key, value in fresh.state_dict().items():
        torch.testing.assert_close(value, checkpoint["state_dict"]["module." + key])
    # The official code wraps the model in DataParallel and loads state_dict strictly.
    wrapped = torch.nn.DataParallel(build_psmnet("stackhourglass", max_disparity=32))
    wrapped.load_state_dict(checkpoint["state_dict"], strict=True)
    # ... and the PSMNet backend runs it through stereo_depth_eval.
    out = tmp_path / "eval"
    assert evaluate.main(["--dataset", "synthetic", "--count", "1", "--size", "256x256",
                          "--scene-max-disparity", "32", "--backend", "psmnet", "--weights",
                          str(tmp_path / "checkpoint_3.tar"), "--max-disparity", "32",
                          "--device", "cpu", "--warmup", "0", "--out", str(out),
                          "--quiet"]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["metrics"]["all"]["pooled"]["density"] == 100.0
    assert np.isfinite(summary["metrics"]["all"]["pooled"]["epe"])


def test_without_tensorboard_the_run_goes_on_with_a_hint(tmp_path, monkeypatch, capsys):
    """tensorboard is optional: where it is missing (`import tensorboard` fails, as on the GPU
    machine) training runs, says how to get the summaries, and still writes its JSON log."""
    from helpers.training import build_tiny_stereo

    monkeypatch.setitem(sys.modules, "tensorboard", None)
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)
    args = train.build_parser().parse_args([
        "--dataset", "synthetic", "--count", "2", "--crop", "256x512", "--batch-size", "2",
        "--max-disparity", "16", "--epochs", "1", "--device", "cpu", "--quiet",
        "--out", str(tmp_path)])
    result = run(args, build_model=build_tiny_stereo)
    assert np.isfinite(result["epochs"][0]["train_loss"])
    err = capsys.readouterr().err
    assert "TensorBoard summaries are off: the tensorboard package is not installed" in err
    assert "pip install 'stereo_depth_ros[train]'" in err
    assert not (tmp_path / "tensorboard").exists()
    events = [json.loads(line)["event"]
              for line in (tmp_path / "train_log.jsonl").read_text().splitlines()]
    assert events == ["start", "step", "epoch"]


def test_the_training_tool_needs_neither_ros_nor_tensorboard(repo_root):
    """A fresh interpreter where rclpy and tensorboard cannot be imported (the GPU machine):
    the training tool and every training module import, and TensorBoard reports the hint."""
    code = """
import importlib.abc, sys
class _Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split('.')[0] in ('rclpy', 'tensorboard', 'sensor_msgs', 'stereo_msgs'):
            raise ImportError(name + ' is blocked')
sys.meta_path.insert(0, _Block())
import pkgutil, importlib
import stereo_depth_ros.tools.train, stereo_depth_ros.training as training
for module in pkgutil.iter_modules(training.__path__):
    importlib.import_module('stereo_depth_ros.training.' + module.name)
from stereo_depth_ros.training.summaries import open_tensorboard
board, hint = open_tensorboard(__import__('pathlib').Path('unused'))
assert board is None and 'pip install tensorboard' in hint, hint
print(sorted(name for name in sys.modules if name.split('.')[0] in ('rclpy', 'tensorboard')))
"""
    result = subprocess.run([sys.executable, "-c", code], cwd=repo_root, capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"
