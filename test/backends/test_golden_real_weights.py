"""The network pinned to the official implementation with the released KITTI 2015 weights on a
real 256x512 crop (test/reference/golden_real_weights, provenance in its README): max |Δ| <= 1e-2
px and mean <= 1e-3 px for the reference model and the exact engine; fast mode within its bounds.
Runs in every checkout (the data is in the repository; the weights come with `make assets`)."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest

DATA = Path(__file__).resolve().parents[1] / "reference" / "golden_real_weights"
SHA256 = {
    "drivingstereo_crop_left.png":
        "cf68718582501276f081e752d49d9f409dfc40c6cef10ac6e90e945239af4fcd",
    "drivingstereo_crop_right.png":
        "29e8be5ddcfe82c26a6a6df876ceb18395e82d0b7d4a227a17906894dd31477c",
    "official_disp_align_corners_true.npy":
        "68ff1d1fdb6b1dae0b6b8c46505622e94d45f5491d9b0de82e6bd18cd8089f14",
    "official_disp_align_corners_false.npy":
        "a65ae7d55c75d0bbe66aa05353923c13c742dfff54332c68219a819165e81a95",
}


def test_the_golden_files_are_the_published_ones():
    for name, digest in SHA256.items():
        assert hashlib.sha256((DATA / name).read_bytes()).hexdigest() == digest, name


def _disparity(kitti_weights, real_golden, **options) -> np.ndarray:
    from stereo_depth_ros.backends.psmnet import PsmnetBackend
    backend = PsmnetBackend(kitti_weights, device="cpu", **options)
    return backend.compute(real_golden["left"], real_golden["right"]).disparity


@pytest.mark.parametrize("engine, align_corners", [("reference", True), ("reference", False),
                                                   ("exact", True)])
@pytest.mark.slow
def test_reference_and_exact_equal_the_official_output(kitti_weights, real_golden, engine,
                                                       align_corners):
    official = real_golden[align_corners]
    got = _disparity(kitti_weights, real_golden, engine=engine, align_corners=align_corners)
    diff = np.abs(got - official)
    assert got.shape == official.shape == (256, 512)
    assert diff.max() <= 1e-2 and diff.mean() <= 1e-3, (diff.max(), diff.mean())


@pytest.mark.slow
def test_fast_mode_within_its_bounds_of_the_official_output(kitti_weights, real_golden):
    official = real_golden[True]
    got = _disparity(kitti_weights, real_golden, engine="fast")
    diff = np.abs(got - official)
    assert diff.mean() <= 0.1 and 100.0 * (diff > 3).mean() <= 0.5
