"""SGBM backend: recovers a synthetic scene's known disparity; validation; live updates."""

from __future__ import annotations

import threading

import numpy as np
import pytest

from stereo_depth_ros.backends import DisparityResult, StereoBackend, make_backend
from stereo_depth_ros.backends.sgbm import SgbmBackend, SgbmParams
from stereo_depth_ros.core import geometry
from stereo_depth_ros.core.synthetic import make_scene


@pytest.fixture(scope="module")
def scene():
    return make_scene(120, 192, background_disparity=7.25, background_slope=0.04,
                      foreground_disparity=21.5, seed=11)


def searchable(scene, backend) -> np.ndarray:
    """Ground-truth-valid pixels the matcher can reach (right of the min + num band)."""
    region = scene.valid.copy()
    region[:, :int(backend.max_disparity)] = False
    return region


def fraction_within(disparity: np.ndarray, truth: np.ndarray, region: np.ndarray,
                    tol_px: float = 1.0) -> float:
    error = np.abs(disparity - truth)[region]
    return float(np.mean(error <= tol_px))  # NaN (invalid) counts as wrong


@pytest.mark.parametrize("options", [{}, {"mode": "hh"}, {"mode": "sgbm_3way"},
                                     {"grayscale": False, "block_size": 3},
                                     {"min_disparity": 4, "num_disparities": 32}])
def test_recovers_known_disparity(scene, options):
    options = {"num_disparities": 48, **options}
    backend = make_backend("sgbm", **options)
    assert isinstance(backend, StereoBackend) and backend.name == "sgbm"
    result = backend.compute(scene.left, scene.right)
    assert isinstance(result, DisparityResult)
    assert result.disparity.shape == (120, 192) and result.disparity.dtype == np.float32
    assert result.confidence is None
    assert set(result.timings_s) == {"preprocess", "infer", "postprocess"}
    region = searchable(scene, backend)
    assert region.sum() > 0.4 * region.size
    assert fraction_within(result.disparity, scene.disparity, region) >= 0.9
    finite = result.disparity[np.isfinite(result.disparity)]
    assert finite.min() >= backend.min_disparity
    assert finite.max() < backend.max_disparity


def test_depth_and_points_from_sgbm_match_the_scene(scene):
    backend = SgbmBackend(num_disparities=48)
    disparity = backend.compute(scene.left, scene.right).disparity
    region = searchable(scene, backend) & np.isfinite(disparity)
    rig = scene.rig
    depth = geometry.disparity_to_depth(disparity, rig.fx, rig.baseline_m, rig.cx_offset)
    relative = np.abs(depth - scene.depth)[region] / scene.depth[region]
    assert np.median(relative) < 0.02
    points = geometry.disparity_to_points(disparity, rig)
    np.testing.assert_array_equal(points[:, :, 2], depth)


def test_mono_input_and_invalid_band_is_nan(scene):
    backend = SgbmBackend(num_disparities=32)
    grey = scene.left.mean(axis=2).astype(np.uint8)
    result = backend.compute(grey, scene.right.mean(axis=2).astype(np.uint8))
    assert np.isnan(result.disparity[:, :20]).all()  # nothing to match against
    assert not np.any(result.disparity[np.isfinite(result.disparity)] < 0)


def test_negative_min_disparity_keeps_negative_values():
    scene = make_scene(80, 128, background_disparity=3.0, foreground_disparity=None, seed=5)
    # Shifting the right view 6 px to the right turns d = 3 px into d = -3 px.
    right = np.roll(scene.right, 6, axis=1)
    backend = SgbmBackend(min_disparity=-16, num_disparities=32)
    disparity = backend.compute(scene.left, right).disparity
    middle = disparity[10:-10, 40:-10]
    assert np.nanmedian(middle) == pytest.approx(-3.0, abs=0.25)


@pytest.mark.parametrize("options, match", [
    ({"num_disparities": 40}, "multiple of 16"),
    ({"num_disparities": 0}, "multiple of 16"),
    ({"block_size": 4}, "odd"),
    ({"block_size": 53}, "odd"),
    ({"block_size": 5.5}, "integer"),
    ({"p1": 100, "p2": 50}, "greater than p1"),
    ({"p1": -1}, "p1"),
    ({"uniqueness_ratio": 101}, "uniqueness_ratio"),
    ({"speckle_range": -1}, "speckle_range"),
    ({"pre_filter_cap": 0}, "pre_filter_cap"),
    ({"pre_filter_cap": 200}, "pre_filter_cap"),
    ({"mode": "fast"}, "mode"),
])
def test_bad_parameters(options, match):
    with pytest.raises(ValueError, match=match):
        SgbmBackend(**options)


def test_default_penalties_and_zero_means_default():
    params = SgbmParams(block_size=5)
    assert params.penalties() == (200, 800)
    assert SgbmParams(block_size=3, grayscale=False, p1=0, p2=0).penalties() == (216, 864)
    assert SgbmParams(p1=10, p2=20).penalties() == (10, 20)


def test_bad_input_pairs(scene):
    backend = SgbmBackend(num_disparities=16)
    with pytest.raises(ValueError, match="differ in size"):
        backend.compute(scene.left, scene.right[:, :-1])
    with pytest.raises(ValueError, match="uint8"):
        backend.compute(scene.left.astype(np.float32), scene.right.astype(np.float32))
    with pytest.raises(ValueError, match="empty"):
        backend.compute(np.zeros((0, 5), np.uint8), np.zeros((0, 5), np.uint8))


def test_update_is_validated_and_all_or_nothing(scene):
    backend = SgbmBackend(num_disparities=32)
    backend.update(num_disparities=48, block_size=7)
    assert (backend.params.num_disparities, backend.params.block_size) == (48, 7)
    assert backend.max_disparity == 48.0
    with pytest.raises(ValueError, match="odd"):
        backend.update(num_disparities=64, block_size=8)
    assert (backend.params.num_disparities, backend.params.block_size) == (48, 7)
    with pytest.raises(ValueError, match="unknown SGBM parameter"):
        backend.update(blocksize=5)
    result = backend.compute(scene.left, scene.right)
    assert fraction_within(result.disparity, scene.disparity, searchable(scene, backend)) >= 0.9


def test_update_while_computing_from_another_thread(scene):
    backend = SgbmBackend(num_disparities=48)
    errors = []

    def worker():
        try:
            for _ in range(5):
                backend.compute(scene.left, scene.right)
        except Exception as error:  # noqa: BLE001 - reported below
            errors.append(error)

    thread = threading.Thread(target=worker)
    thread.start()
    for block_size in (3, 5, 7, 9, 5):
        backend.update(block_size=block_size)
    thread.join()
    assert not errors


def test_option_defaults_are_the_parameter_specs():
    """SGBM's defaults are the sgbm.* parameters'; BM's stereo_image_proc's (StereoBM's -1 for
    disp12_max_diff, which stereo_image_proc sets for SGBM only)."""
    from dataclasses import asdict

    from stereo_depth_ros.backends.bm import BmParams
    from stereo_depth_ros.config import SPECS
    for option, value in asdict(SgbmParams()).items():
        assert (value or 0) == SPECS[f"sgbm.{option}"].default, option
    assert asdict(BmParams()) == {
        "min_disparity": 0, "num_disparities": 64, "block_size": 15, "pre_filter_size": 9,
        "pre_filter_cap": 31, "texture_threshold": 10, "uniqueness_ratio": 15,
        "speckle_window_size": 100, "speckle_range": 4, "disp12_max_diff": -1}
