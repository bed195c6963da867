"""sigma_d's calibration and the default mask, computed here from pairs with ground truth: the
real Middlebury pairs `make assets` fetches (Motorcycle 2014, Cones 2003) and the project's
synthetic scenes, with the released weights and the script that makes the README's tables."""

from __future__ import annotations

import numpy as np
import pytest

from helpers.scripts import load_script

from stereo_depth_ros.config import SPECS

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def script():
    return load_script("uncertainty_calibration")


@pytest.fixture(scope="module")
def pipeline(script, kitti_weights):
    return script._pipeline(kitti_weights, "exact")


@pytest.fixture(scope="module")
def real(script, pipeline, assets_dir):
    outputs = script.real_outputs(pipeline, assets_dir)
    assert sorted(out["name"] for out in outputs) == ["middlebury_2003/Cones-quarter",
                                                      "middlebury_2014/Motorcycle-quarter"]
    return outputs


@pytest.fixture(scope="module")
def synthetic(script, pipeline):
    return script.synthetic_outputs(pipeline, 2, 256, 384)


def test_two_sigma_coverage_and_ranking_on_the_real_pairs(script, real):
    rows = {row["pair"].split("/")[1]: row for row in script.calibration_rows(real)}
    for row in rows.values():
        assert row["pixels"] > 150000
        # sigma is calibrated: 85-99 % of the errors within 2 sigma (92.1-92.2 % measured)
        assert 0.85 <= row["coverage"] <= 0.99, row
        # ranked by sigma, the confident half has the smaller errors
        assert row["half_ratio"] < 0.6, row
    # the target (lower half <= 0.5 x the upper's) is met on Cones; Motorcycle misses it
    # narrowly (0.51, README "Which depth to trust")
    assert rows["Cones-quarter"]["half_ratio"] <= 0.5


def test_two_sigma_coverage_and_ranking_on_synthetic_pairs(script, synthetic):
    for row in script.calibration_rows(synthetic):
        assert row["pixels"] > 50000
        assert 0.85 <= row["coverage"] <= 0.999, row
        assert row["half_ratio"] < 0.9, row


def test_default_mask_meets_its_targets_on_the_real_pairs(script, real, synthetic):
    default = script.Mask.defaults()
    assert default.max_disparity_uncertainty > 0 and default.max_relative_uncertainty > 0
    assert default.fattening_filter and default.occlusion_filter
    everything = script.Mask(fattening_filter=False, occlusion_filter=False)
    for out in real:
        unmasked = script.mask_totals([out], everything)
        assert unmasked["density_pct"] == 100.0             # 0 and 0 publish everything
        masked = script.mask_totals([out], default)
        # the target on Middlebury-like indoor scenes: bad-2 <= 6 % at >= 80 % density
        assert masked["density_pct"] >= 80.0, (out["name"], masked)
        assert masked["bad_2_pct"] <= 6.0, (out["name"], masked)
        assert masked["bad_2_pct"] < unmasked["bad_2_pct"] - 3.0     # the worse pixels go
    masked = script.mask_totals(synthetic, default)
    assert masked["density_pct"] >= 90.0 and masked["bad_2_pct"] <= 2.0


def test_each_part_of_the_default_mask_removes_more_bad_than_good(script, real):
    """Dropping a part of the default mask raises bad-2 on the real pairs pooled."""
    from dataclasses import replace
    default = script.Mask.defaults()
    full = script.mask_totals(real, default)
    for part in (replace(default, max_disparity_uncertainty=0.0),
                 replace(default, occlusion_filter=False)):
        without = script.mask_totals(real, part)
        assert without["density_pct"] > full["density_pct"]
        assert without["bad_2_pct"] > full["bad_2_pct"], part


def test_truth_interval_is_the_range_inside_each_matcher_pixel(script):
    truth = np.array([[1, 2, 5, 5], [3, 4, 5, np.nan]], np.float32)
    interval = script.truth_interval(truth, 2)
    np.testing.assert_array_equal(interval[0, 0], [1, 4])
    assert np.isnan(interval[0, 1]).all()            # one unknown pixel: unknown


def test_the_defaults_are_the_parameters(script):
    from stereo_depth_ros.config import DEPTH_MASK_FILTERS, DEPTH_MASK_LIMITS
    names = DEPTH_MASK_LIMITS + DEPTH_MASK_FILTERS
    assert script.Mask.defaults() == script.Mask(**{n: SPECS[n].default for n in names})
