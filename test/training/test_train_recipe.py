"""stereo_depth_train's recipe presets (the official main.py / finetune.py values, printed at
start, each overridable) and its progress line (throughput, ETA)."""

from __future__ import annotations

import io
import json
from types import SimpleNamespace

import pytest
from helpers.training import build_tiny_stereo

from stereo_depth_ros.tools import train
from stereo_depth_ros.training import runner
from stereo_depth_ros.training.progress import ProgressReporter, format_duration
from stereo_depth_ros.training.recipe import PRESETS, learning_rate, resolve_recipe


def test_presets_hold_the_official_recipes():
    sceneflow, kitti = PRESETS["sceneflow"], PRESETS["kitti2015"]
    for recipe in (sceneflow, kitti):
        assert recipe.crop == (256, 512) and recipe.max_disparity == 192
        assert recipe.adam_betas == (0.9, 0.999) and recipe.lr == 0.001
        assert recipe.batch_size == 12
    assert sceneflow.epochs == 10 and sceneflow.val_count == 0
    assert [learning_rate(e, sceneflow.lr, sceneflow.lr_drop_epoch, sceneflow.lr_drop_factor)
            for e in (1, 10)] == [0.001, 0.001]
    assert kitti.epochs == 300 and kitti.val_count == 40
    schedule = [learning_rate(e, kitti.lr, kitti.lr_drop_epoch, kitti.lr_drop_factor)
                for e in (1, 200, 201, 300)]
    assert schedule == pytest.approx([0.001, 0.001, 0.0001, 0.0001])
    recipe, overridden = resolve_recipe("kitti2015", {"epochs": 5, "lr": None})
    assert (recipe.epochs, recipe.lr, recipe.val_count, overridden) == (5, 0.001, 40, ("epochs",))
    with pytest.raises(ValueError, match="unknown preset 'kitti'"):
        resolve_recipe("kitti", {})


def test_the_preset_is_printed_at_start_and_overridden_values_win(tmp_path, capsys):
    """--preset kitti2015 with a shortened schedule: the start line names every value (the
    overridden ones marked), the lr drops after --lr-drop-epoch, and the JSON log records the
    recipe. TinyStereo (helpers.training) keeps it to a second."""
    args = train.build_parser().parse_args([
        "--preset", "kitti2015", "--dataset", "synthetic", "--count", "3", "--val-count", "1",
        "--epochs", "2", "--lr-drop-epoch", "1", "--batch-size", "2", "--max-disparity", "16",
        "--val-every", "0", "--device", "cpu", "--quiet", "--no-tensorboard",
        "--out", str(tmp_path)])
    result = runner.run(args, build_model=build_tiny_stereo)
    assert [e["lr"] for e in result["epochs"]] == pytest.approx([0.001, 0.0001])
    err = capsys.readouterr().err
    assert ("recipe kitti2015: epochs 2*, batch 2*, crop 256x512, max_disparity 16*, lr 0.001 "
            "until epoch 1, then x0.1*, Adam betas (0.9, 0.999), val-count 1* "
            "(* = overridden)") in err
    assert "the kitti2015 preset is the recipe for kitti2015, training on synthetic" in err
    start = json.loads((tmp_path / "train_log.jsonl").read_text().splitlines()[0])
    assert start["recipe"] == "kitti2015" and start["values"]["lr_drop_factor"] == 0.1
    assert sorted(start["overridden"]) == ["batch_size", "epochs", "lr_drop_epoch",
                                           "max_disparity", "val_count"]


def test_bad_recipe_values_are_refused_naming_the_option(tmp_path, capsys):
    for options, message in ((["--lr", "-1"], "--lr must be > 0, got -1.0"),
                             (["--adam-betas", "0.9", "1.5"], "--adam-betas must be in [0, 1)"),
                             (["--epochs", "0"], "--epochs and --batch-size must be >= 1")):
        assert train.main(["--dataset", "synthetic", *options, "--out", str(tmp_path)]) == 1
        assert message in capsys.readouterr().err
    with pytest.raises(SystemExit) as usage:
        train.main(["--preset", "kitti", "--out", str(tmp_path)])
    assert usage.value.code == 2 and "invalid choice: 'kitti'" in capsys.readouterr().err


def test_progress_reports_throughput_and_eta():
    clock = iter([0.0, 1.0, 20.0])
    stream = io.StringIO()
    progress = ProgressReporter(stream, total_steps=6, interval_s=5.0, clock=lambda: next(clock))
    progress.start_epoch(1, 0.001)
    for iteration, seconds in ((1, 10.0), (2, 10.0), (3, 40.0)):
        progress.step(iteration, 3, SimpleNamespace(loss=1.5, pairs=2, seconds=seconds))
    lines = stream.getvalue().splitlines()
    # Step 2 comes 1 s after step 1's line: not reported. Step 3 ends the epoch: reported.
    assert lines == [
        "epoch 1 iter 1/3 loss 1.5000 lr 0.001 | 0.20 pairs/s | eta epoch 0:00:20, run 0:00:50",
        "epoch 1 iter 3/3 loss 1.5000 lr 0.001 | 0.10 pairs/s | eta epoch 0:00:00, run 0:01:00"]
    assert format_duration(90061) == "1d 1:01:01" and format_duration(float("nan")) == "?"
