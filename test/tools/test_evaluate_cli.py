"""stereo_depth_eval: precomputed KITTI predictions reproduce independently computed metrics; SGBM
on synthetic scenes gives a sensible error; bad input gives a clear message and exit status 1."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from helpers.process import assert_clean_exit
from stereo_depth_ros.core.disparity_io import write_kitti_png
from stereo_depth_ros.core.geometry import resize_disparity
from stereo_depth_ros.tools.evaluate import main

H, W = 24, 40


def _kitti_with_predictions(root: Path, pred_dir: Path, holes: bool = False):
    """A 3-frame KITTI 2015 tree and predictions; returns {stem: (occ, noc, pred)} as decoded."""
    rng = np.random.default_rng(7)
    truth = {}
    for frame in (0, 4, 9):
        stem = f"{frame:06d}_10"
        for side in ("image_2", "image_3"):
            (root / side).mkdir(parents=True, exist_ok=True)
            assert cv2.imwrite(str(root / side / f"{stem}.png"),
                               rng.integers(0, 255, (H, W, 3), dtype=np.uint8))
        occ = np.round(rng.uniform(5, 80, (H, W)) * 256) / 256
        occ[rng.random((H, W)) < 0.3] = np.nan          # sparse, like KITTI's lidar ground truth
        noc = occ.copy()
        noc[:, :6] = np.nan
        pred = occ.copy()
        pred[np.isnan(pred)] = 30.0
        pred = pred + rng.choice([0.0, 0.5, 2.0, 4.0, 12.0], size=(H, W), p=[.4, .2, .2, .1, .1])
        pred = np.round(pred * 256) / 256                # what the uint16 PNG can hold
        if holes:
            pred[3:5, 10:14] = np.nan
        for name, array in (("disp_occ_0", occ), ("disp_noc_0", noc)):
            (root / name).mkdir(parents=True, exist_ok=True)
            write_kitti_png(root / name / f"{stem}.png", array)
        pred_dir.mkdir(parents=True, exist_ok=True)
        write_kitti_png(pred_dir / f"{stem}.png", pred)
        truth[stem] = (occ, noc, pred)
    return truth


def _reference(pairs):
    """EPE, bad-3 and D1 over valid gt, pooled over all pixels of all images (plain numpy)."""
    err = np.concatenate([np.abs(p - g)[np.isfinite(g)] for p, g in pairs])
    gt = np.concatenate([g[np.isfinite(g)] for _, g in pairs])
    return {"epe": err.mean(), "bad_1": 100 * np.mean(err > 1), "bad_3": 100 * np.mean(err > 3),
            "d1_all": 100 * np.mean((err > 3) & (err > 0.05 * gt))}


def test_predictions_reproduce_independent_metrics(tmp_path, capsys):
    root, pred_dir, out = tmp_path / "kitti" / "training", tmp_path / "pred", tmp_path / "out"
    truth = _kitti_with_predictions(root, pred_dir)
    status = main(["--dataset", "kitti2015", "--root", str(root.parent), "--predictions",
                   str(pred_dir), "--out", str(out), "--metrics", "epe,bad_1,bad_3,d1_all,density",
                   "--quiet"])
    assert status == 0
    printed = capsys.readouterr().out
    assert "d1_all" in printed and "noc" in printed

    summary = json.loads((out / "summary.json").read_text())
    assert summary["pairs"] == 3 and "mean_time_s" not in summary
    for mask, index in (("all", 0), ("noc", 1)):
        expected = _reference([(t[2], t[index]) for t in truth.values()])
        pooled = summary["metrics"][mask]["pooled"]
        for name, value in expected.items():
            assert pooled[name] == pytest.approx(value, abs=1e-9), (mask, name)
        assert pooled["density"] == pytest.approx(100.0)

    with (out / "per_image.csv").open() as handle:
        rows = {row["name"]: row for row in csv.DictReader(handle)}
    assert set(rows) == set(truth)
    for stem, (occ, noc, pred) in truth.items():
        expected = _reference([(pred, occ)])
        assert float(rows[stem]["d1_all"]) == pytest.approx(expected["d1_all"], rel=1e-5)
        assert float(rows[stem]["epe_noc"]) == pytest.approx(_reference([(pred, noc)])["epe"],
                                                             rel=1e-5)
    mean_d1 = np.mean([_reference([(t[2], t[0])])["d1_all"] for t in truth.values()])
    assert summary["metrics"]["all"]["mean"]["d1_all"] == pytest.approx(mean_d1)


def test_predictions_with_holes_exclude_and_density(tmp_path):
    root, pred_dir, out = tmp_path / "training", tmp_path / "pred", tmp_path / "out"
    truth = _kitti_with_predictions(root, pred_dir, holes=True)
    assert main(["--dataset", "kitti2015", "--root", str(root), "--predictions", str(pred_dir),
                 "--out", str(out), "--holes", "exclude", "--quiet"]) == 0
    pooled = json.loads((out / "summary.json").read_text())["metrics"]["all"]["pooled"]
    pairs = [(t[2], t[0]) for t in truth.values()]
    valid = sum(int(np.isfinite(g).sum()) for _, g in pairs)
    predicted = sum(int((np.isfinite(g) & np.isfinite(p)).sum()) for p, g in pairs)
    assert pooled["density"] == pytest.approx(100.0 * predicted / valid)
    # exclude: only predicted pixels are scored
    scored = [(np.where(np.isfinite(p), p, np.nan), np.where(np.isfinite(p), g, np.nan))
              for p, g in pairs]
    assert pooled["epe"] == pytest.approx(_reference(scored)["epe"])


def test_missing_prediction_is_named_and_exits_1(tmp_path, capsys):
    root, pred_dir = tmp_path / "training", tmp_path / "pred"
    _kitti_with_predictions(root, pred_dir)
    (pred_dir / "000004_10.png").unlink()
    assert main(["--dataset", "kitti2015", "--root", str(root), "--predictions",
                 str(pred_dir)]) == 1
    err = capsys.readouterr().err
    assert "000004_10.png" in err and "1 of 3 predictions missing" in err
    assert_clean_exit(err)


def test_sgbm_on_synthetic_scenes_is_sensible(tmp_path, capsys):
    out = tmp_path / "out"
    assert main(["--dataset", "synthetic", "--count", "3", "--seed", "1", "--backend", "sgbm",
                 "--max-disparity", "64", "--out", str(out), "--save-disparities"]) == 0
    captured = capsys.readouterr()
    assert "mean time per pair" in captured.out
    assert "[3/3]" in captured.err                                # progress on stderr
    summary = json.loads((out / "summary.json").read_text())
    pooled = summary["metrics"]["all"]["pooled"]
    assert pooled["bad_3"] < 10.0 and pooled["epe"] < 1.5
    assert pooled["density"] > 60.0
    assert summary["mean_time_s"] > 0 and summary["backend"] == "sgbm"
    assert len(list((out / "disparity").glob("synthetic_0001_*.png"))) == 3
    # The saved disparities score the same through --predictions.
    out2 = tmp_path / "out2"
    assert main(["--dataset", "synthetic", "--count", "3", "--seed", "1", "--predictions",
                 str(out / "disparity"), "--out", str(out2), "--quiet"]) == 0
    again = json.loads((out2 / "summary.json").read_text())["metrics"]["all"]["pooled"]
    assert again["epe"] == pytest.approx(pooled["epe"], abs=2e-3)     # 1/256 px quantisation


def test_sgbm_input_scale_half(tmp_path):
    out = tmp_path / "out"
    assert main(["--dataset", "synthetic", "--count", "2", "--backend", "sgbm",
                 "--max-disparity", "32", "--input-scale", "0.5", "--out", str(out),
                 "--quiet"]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["input_scale"] == 0.5
    assert summary["metrics"]["all"]["pooled"]["epe"] < 2.0
    assert "resize" in summary["mean_stage_times_s"]


def test_resize_disparity_scales_values_and_keeps_holes():
    small = np.full((10, 16), 7.0, np.float32)
    small[:, :4] = np.nan
    big = resize_disparity(small, 32, 20, interpolation="linear")
    assert big.shape == (20, 32)
    finite = big[np.isfinite(big)]
    np.testing.assert_allclose(finite, 14.0, rtol=1e-6)      # x2 in width -> values x2
    assert np.isnan(big[:, :6]).all() and np.isfinite(big[:, 10:]).all()


@pytest.mark.parametrize("argv, message", [
    (["--dataset", "kitti2015", "--backend", "sgbm"], "--root is required"),
    (["--dataset", "synthetic", "--backend", "psmnet", "--weights", "/no/such.tar"],
     "--weights /no/such.tar: no such file"),
    (["--dataset", "synthetic", "--backend", "sgbm", "--metrics", "D1"], "unknown metric"),
    (["--dataset", "eth3d", "--root", "/no/such/dir", "--backend", "sgbm"], "not found"),
])
def test_errors_are_clear_and_exit_1(argv, message, capsys):
    assert main(argv + ["--quiet"]) == 1
    err = capsys.readouterr().err
    assert message in err and err.startswith("stereo_depth_eval: error:")
    assert_clean_exit(err)


def test_module_entry_point_runs_without_traceback(tmp_path):
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parents[2]))
    proc = subprocess.run([sys.executable, "-m", "stereo_depth_ros.tools.evaluate", "--dataset",
                           "middlebury", "--root", str(tmp_path), "--backend", "sgbm"],
                          capture_output=True, text=True, env=env, timeout=120)
    assert_clean_exit(proc.stderr, proc.returncode, expected=1)
    assert "no scene folders" in proc.stderr
    proc = subprocess.run([sys.executable, "-m", "stereo_depth_ros.tools.evaluate",
                           "--dataset", "synthetic"], capture_output=True, text=True, env=env,
                          timeout=120)
    assert proc.returncode == 2 and "--backend" in proc.stderr


def test_live_mode_bad_input_is_named_before_ros_starts(tmp_path, capsys):
    """`stereo_depth_eval --live` hands over to the live evaluator; a transform source that cannot
    be read is an error naming the file, before any ROS is started."""
    from helpers.kitti import make_raw_drive
    from stereo_depth_ros.bags.bag_writer import convert

    assert main(["--live", "--kitti-calib", str(tmp_path)]) == 1
    err = capsys.readouterr().err
    assert err.startswith("stereo_depth_eval --live: error: --kitti-calib:")
    assert f"{tmp_path / 'calib_velo_to_cam.txt'}: calibration file not found" in err
    cameras_only = convert(make_raw_drive(tmp_path / "kitti", n_frames=1), tmp_path / "bag",
                           storage="sqlite3")["bag"]
    assert main(["--live", "--tf-bag", cameras_only]) == 1
    assert "topics not in the bag: /tf_static" in capsys.readouterr().err
    assert main(["--live", "--preset", "kitti2bag"]) == 1
    assert "apply to --tf-bag only" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_info:
        main(["--live", "--tolerance", "0"])
    assert exit_info.value.code == 2
    assert "expected a positive number, got '0'" in capsys.readouterr().err


def test_summaries_are_strict_json():
    """NaN/inf (an empty band, a dataset without valid pixels) become null and numpy scalars
    plain numbers, so json.loads in any language reads the eval and live-eval summaries."""
    from stereo_depth_ros.core.json_values import json_safe

    value = {"mae": np.float32("nan"), "n": np.int64(3),
             "bands": [{"rmse": float("inf")}, (np.float64(2.5), -float("inf"))]}
    text = json.dumps(json_safe(value), allow_nan=False)
    assert json.loads(text) == {"mae": None, "n": 3, "bands": [{"rmse": None}, [2.5, None]]}


def test_ctrl_c_keeps_the_pairs_already_scored(tmp_path, capsys, monkeypatch):
    """Ctrl-C during the 3rd of 4 pairs: the first two are printed and written (marked
    interrupted, the same numbers as a 2-pair run) and the exit status is 130."""
    import stereo_depth_ros.tools.evaluate as evaluate

    common = ["--dataset", "synthetic", "--count", "4", "--seed", "1", "--backend", "sgbm",
              "--max-disparity", "64", "--size", "64x96", "--warmup", "0"]
    assert main([*common, "--limit", "2", "--out", str(tmp_path / "two")]) == 0
    capsys.readouterr()
    real_match = evaluate.match_at_scale
    calls = []

    def interrupted_on_the_third(*args, **kwargs):
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return real_match(*args, **kwargs)

    monkeypatch.setattr(evaluate, "match_at_scale", interrupted_on_the_third)
    out = tmp_path / "partial"
    assert main([*common, "--out", str(out)]) == 130
    captured = capsys.readouterr()
    assert "synthetic: interrupted after 2 of 4 pairs" in captured.out
    assert captured.err.strip().splitlines()[-1] == (
        "stereo_depth_eval: interrupted (the pairs scored before it are reported above)")
    assert_clean_exit(captured.err)
    summary = json.loads((out / "summary.json").read_text())
    two = json.loads((tmp_path / "two" / "summary.json").read_text())
    assert summary["interrupted"] is True and summary["pairs_requested"] == 4
    assert summary["pairs"] == 2 and summary["metrics"] == two["metrics"]
    with (out / "per_image.csv").open() as handle:
        assert [row["name"] for row in csv.DictReader(handle)] == \
            [f"synthetic_0001_{i:06d}" for i in range(2)]


def test_ctrl_c_before_any_pair_is_just_interrupted(tmp_path, capsys, monkeypatch):
    import stereo_depth_ros.tools.evaluate as evaluate

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(evaluate, "match_at_scale", interrupted)
    assert main(["--dataset", "synthetic", "--count", "2", "--backend", "sgbm", "--size",
                 "64x96", "--warmup", "0", "--out", str(tmp_path)]) == 130
    assert not (tmp_path / "summary.json").exists()
    assert capsys.readouterr().err.startswith("stereo_depth_eval: interrupted")
