"""sigma_d's calibration and the default mask, computed here from pairs with exact ground truth
(the project's synthetic scenes: no real pair with ground truth is available, README "Which depth
to trust"), with the released weights and the script that makes the README's table."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest

from stereo_depth_ros.config import SPECS

pytestmark = pytest.mark.slow

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "uncertainty_calibration.py"


@pytest.fixture(scope="module")
def script():
    spec = importlib.util.spec_from_file_location("uncertainty_calibration", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def outputs(script, kitti_weights):
    pipeline = script._pipeline(kitti_weights, "exact")
    return script.synthetic_outputs(pipeline, 2, 256, 384)


def test_two_sigma_coverage_and_ranking(script, outputs):
    rows = script.calibration_rows(outputs)
    pooled_coverage = sum(r["coverage"] * r["pixels"] for r in rows) / sum(
        r["pixels"] for r in rows)
    for row in rows:
        assert row["pixels"] > 50000
        # sigma is not overconfident: at least 85 % of the errors within 2 sigma
        assert 0.85 <= row["coverage"] <= 0.999, row
        # ranked by sigma, the confident half has clearly smaller errors
        assert row["half_ratio"] < 0.9, row
    assert 0.85 <= pooled_coverage <= 0.999


def test_default_mask_meets_its_targets_on_pairs_with_ground_truth(script, outputs):
    threshold = SPECS["confidence_threshold"].default
    limit = SPECS["max_relative_uncertainty"].default
    assert limit > 0                                  # the default masks something
    from stereo_depth_ros.core.uncertainty import mask_tradeoff
    totals = {"known": 0, "kept": 0, "bad_2_kept": 0}
    unmasked = dict(totals)
    assert SPECS["fattening_filter"].default is True      # applied with the limit, as the node
    for out in outputs:
        for target, (t, r) in ((totals, (threshold, limit)), (unmasked, (0.0, 0.0))):
            counts = mask_tradeoff(out["disparity"], out["confidence"], out["sigma"], out["gt"],
                                   confidence_threshold=t, max_relative_uncertainty=r,
                                   cx_offset=out["cx_offset"],
                                   withheld=out["withheld"] if r > 0 else None)
            for key in target:
                target[key] += counts[key]
    assert unmasked["kept"] == unmasked["known"]      # 0 and 0 publish everything
    density = totals["kept"] / totals["known"]
    assert density >= 0.80, density
    assert totals["bad_2_kept"] / totals["kept"] <= 0.06
    # the mask removes the worse pixels: bad-2 among the kept is below the unmasked rate
    assert totals["bad_2_kept"] / totals["kept"] < unmasked["bad_2_kept"] / unmasked["kept"]
    assert np.isfinite(density)


def test_truth_interval_is_the_range_inside_each_matcher_pixel(script):
    truth = np.array([[1, 2, 5, 5], [3, 4, 5, np.nan]], np.float32)
    interval = script.truth_interval(truth, 2)
    np.testing.assert_array_equal(interval[0, 0], [1, 4])
    assert np.isnan(interval[0, 1]).all()            # one unknown pixel: unknown
