"""Hand-computed checks of the disparity metrics (core.metrics)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from stereo_depth_ros.core import metrics as m

NAN = np.nan


def test_epe_and_rmse_hand_computed():
    err = np.array([[0.0, 1.0], [2.0, 3.0]])
    valid = np.ones((2, 2), bool)
    assert m.epe(err, valid) == pytest.approx(1.5)
    assert m.rmse(err, valid) == pytest.approx(math.sqrt((0 + 1 + 4 + 9) / 4))
    # Signed errors count by magnitude; masked px are ignored.
    assert m.epe(np.array([[-2.0, 100.0]]), np.array([[True, False]])) == pytest.approx(2.0)


def test_bad_n_is_strictly_greater_and_in_percent():
    err = np.array([[0.0, 1.0, 2.0, 3.5]])
    valid = np.ones_like(err, dtype=bool)
    assert m.bad_n(err, valid, 1) == pytest.approx(50.0)     # 2.0 and 3.5; 1.0 is not > 1
    assert m.bad_n(err, valid, 3) == pytest.approx(25.0)
    assert m.bad_n(err, valid, 0.5) == pytest.approx(75.0)
    assert m.bad_n(-err, valid, 2) == pytest.approx(25.0)    # |err|


def test_d1_all_needs_both_3px_and_5_percent():
    gt = np.array([[100.0, 20.0, 100.0, 60.0, 10.0]])
    err = np.array([[4.0, 4.0, 6.0, 3.0, 2.9]])
    valid = np.ones_like(gt, dtype=bool)
    # gt=100, err=4: 4 > 3 but 4 <= 5 (5 % of 100): not an outlier.
    assert m.d1_all(err[:, :1], gt[:, :1], valid[:, :1]) == 0.0
    # gt=20, err=4: 4 > 3 and 4 > 1: outlier.
    assert m.d1_all(err[:, 1:2], gt[:, 1:2], valid[:, 1:2]) == 100.0
    # gt=100 err=6 outlier; gt=60 err=3 not (3 is not > 3); gt=10 err=2.9 not.
    assert m.d1_all(err, gt, valid) == pytest.approx(100.0 * 2 / 5)


def test_empty_valid_mask_gives_nan_not_zero_or_crash():
    err = np.ones((3, 3))
    none = np.zeros((3, 3), bool)
    assert math.isnan(m.epe(err, none))
    assert math.isnan(m.rmse(err, none))
    assert math.isnan(m.bad_n(err, none, 3))
    assert math.isnan(m.d1_all(err, err, none))
    assert math.isnan(m.density(err, none))
    gt = np.full((3, 3), NAN, np.float32)          # no ground truth anywhere
    out = m.compute_metrics(np.ones((3, 3), np.float32), gt,
                            names=("epe", "bad_3", "d1_all", "density", "n_valid"))
    assert all(math.isnan(out[k]) for k in ("epe", "bad_3", "d1_all", "density"))
    assert out["n_valid"] == 0


def test_density_counts_finite_predictions_over_valid_gt():
    pred = np.array([[1.0, NAN, 3.0, np.inf]])
    valid = np.array([[True, True, True, False]])
    assert m.density(pred, valid) == pytest.approx(100.0 * 2 / 3)


def test_compute_metrics_full_prediction():
    gt = np.array([[10.0, 20.0, 100.0, NAN]], np.float32)
    pred = np.array([[10.5, 24.0, 104.0, 7.0]], np.float32)
    out = m.compute_metrics(pred, gt, names=("epe", "bad_1", "bad_3", "d1_all", "density",
                                             "n_valid"))
    assert out["n_valid"] == 3
    assert out["epe"] == pytest.approx((0.5 + 4 + 4) / 3)
    assert out["bad_1"] == pytest.approx(100 * 2 / 3)
    assert out["bad_3"] == pytest.approx(100 * 2 / 3)
    assert out["d1_all"] == pytest.approx(100 / 3)        # only gt=20 (4 > 1); gt=100 (4 <= 5) not
    assert out["density"] == 100.0
    # An explicit valid mask is intersected with finite gt.
    out = m.compute_metrics(pred, gt, np.array([[False, True, True, True]]), names="epe,n_valid")
    assert out == {"epe": pytest.approx(4.0), "n_valid": 2.0}


def test_fill_holes_background_like_the_kitti_devkit():
    pred = np.array([
        [NAN, NAN, NAN, NAN, NAN],     # empty top row -> copied from the first filled row
        [NAN, 7.0, NAN, NAN, 9.0],     # leading hole -> 7; inner run -> min(7, 9) = 7
        [NAN, NAN, NAN, NAN, NAN],     # empty inner row -> stays invalid -> -1 (devkit)
        [4.0, NAN, 6.0, NAN, NAN],     # inner hole -> 4; trailing -> 6
        [NAN, NAN, NAN, NAN, NAN],     # empty bottom row -> copied from the last filled row
    ], np.float32)
    filled = m.fill_holes_background(pred)
    np.testing.assert_array_equal(filled, np.array([
        [7, 7, 7, 7, 9],
        [7, 7, 7, 7, 9],
        [-1, -1, -1, -1, -1],
        [4, 4, 6, 6, 6],
        [4, 4, 6, 6, 6],
    ], np.float32))
    # All empty: nothing to fill from, everything stays the devkit's invalid -1.
    np.testing.assert_array_equal(m.fill_holes_background(np.full((2, 2), NAN)), -1.0)


def test_hole_policies_interpolate_vs_exclude():
    gt = np.array([[10.0, 10.0, 10.0, 10.0]], np.float32)
    pred = np.array([[10.0, NAN, NAN, 30.0]], np.float32)
    # interpolate: holes take min(10, 30) = 10 -> errors 0, 0, 0, 20
    out = m.compute_metrics(pred, gt, names=("epe", "bad_3", "density"))
    assert out == {"epe": pytest.approx(5.0), "bad_3": pytest.approx(25.0),
                   "density": pytest.approx(50.0)}
    # exclude: only the two finite px are scored -> errors 0, 20
    out = m.compute_metrics(pred, gt, names=("epe", "bad_3", "density"), holes="exclude")
    assert out == {"epe": pytest.approx(10.0), "bad_3": pytest.approx(50.0),
                   "density": pytest.approx(50.0)}
    # exclude with no finite prediction on valid px: NaN errors, density 0.
    out = m.compute_metrics(np.full_like(gt, NAN), gt, names=("epe", "density"), holes="exclude")
    assert math.isnan(out["epe"]) and out["density"] == 0.0
    # interpolate with nothing predicted scores the devkit's -1 everywhere (error = gt + 1).
    out = m.compute_metrics(np.full_like(gt, NAN), gt, names=("epe", "d1_all"))
    assert out["epe"] == pytest.approx(11.0) and out["d1_all"] == pytest.approx(100.0)


def test_an_empty_inner_row_is_scored_as_the_devkit_does():
    """A prediction row with no valid pixel between filled rows: the devkit leaves it invalid
    (-1) and scores it so (error gt + 1), it does not fill it with 0 (error gt)."""
    gt = np.full((3, 4), 20.0, np.float32)
    pred = np.array([[20.0] * 4, [NAN] * 4, [20.0] * 4], np.float32)
    out = m.compute_metrics(pred, gt, names=("epe", "bad_3", "d1_all"))
    assert out["epe"] == pytest.approx(21.0 * 4 / 12)
    assert out["bad_3"] == pytest.approx(100.0 / 3) and out["d1_all"] == pytest.approx(100 / 3)


def test_pooling_counts_is_pixel_weighted():
    rng = np.random.default_rng(0)
    gt1, gt2 = rng.uniform(1, 50, (4, 6)), rng.uniform(1, 50, (3, 5))
    p1, p2 = gt1 + rng.normal(0, 3, gt1.shape), gt2 + rng.normal(0, 3, gt2.shape)
    names = ("epe", "rmse", "bad_1", "bad_3", "d1_all", "density", "n_valid")
    pooled = m.MetricCounts() + m.count_metrics(p1, gt1) + m.count_metrics(p2, gt2)
    pooled = pooled.finalize(names)
    joint = m.compute_metrics(np.concatenate([p1.ravel(), p2.ravel()])[None],
                              np.concatenate([gt1.ravel(), gt2.ravel()])[None], names=names)
    for name in names:
        assert pooled[name] == pytest.approx(joint[name], rel=1e-6), name


def test_metric_names_are_checked():
    assert m.parse_metric_names("epe, bad_0.5,d1_all") == ("epe", "bad_0.5", "d1_all")
    with pytest.raises(ValueError, match="unknown metric 'D1'"):
        m.parse_metric_names(["D1"])
    with pytest.raises(ValueError, match="hole policy"):
        m.compute_metrics(np.ones((2, 2)), np.ones((2, 2)), holes="zero")
    with pytest.raises(ValueError, match="same"):
        m.compute_metrics(np.ones((2, 2)), np.ones((2, 3)))
