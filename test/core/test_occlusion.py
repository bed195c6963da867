"""core.occlusion: the pixels the right camera cannot see, counted by hand on constructed rows,
its torch twin (pipeline.device.occluded) equal to it, and where the pipeline applies it."""

from __future__ import annotations

import numpy as np
import pytest

from helpers.pipeline import FixedOutputBackend

from stereo_depth_ros.core.camera import StereoRig
from stereo_depth_ros.core.occlusion import OCCLUSION_MARGIN_PX, occluded
from stereo_depth_ros.pipeline import PipelineOptions, StereoPipeline

HEIGHT, WIDTH = 4, 80


def _step(left_value: float, right_value: float, edge_at: int = 40) -> np.ndarray:
    d = np.full((HEIGHT, WIDTH), left_value, np.float32)
    d[:, edge_at:] = right_value
    return d


def test_the_band_left_of_a_near_object_is_hidden_by_hand():
    # background 5 px, object 30 px from column 40: the object's first pixel lands at 40 - 30
    # = 10 in the right image, which hides background pixels x with 10 <= x - 5 - margin (1):
    # x = 16..39, d_fg - d_bg - margin = 24 px a row
    assert OCCLUSION_MARGIN_PX == 1.0
    hidden = occluded(_step(5.0, 30.0))
    expected = np.zeros((HEIGHT, WIDTH), bool)
    expected[:, 16:40] = True
    np.testing.assert_array_equal(hidden, expected)
    # a larger margin narrows the band by as much
    assert occluded(_step(5.0, 30.0), margin_px=4.0).sum() == HEIGHT * 21


@pytest.mark.parametrize("disparity, why", [
    (_step(30.0, 5.0), "object on the left: its right edge uncovers background, hides none"),
    (np.tile(np.linspace(5.0, 45.0, WIDTH, dtype=np.float32), (HEIGHT, 1)),
     "a surface slanted towards the cameras, 0.5 px more disparity a column"),
    (_step(5.0, 5.9), "a rise below the margin"),
])
def test_nothing_hidden_where_nothing_is_in_front(disparity, why):
    assert not occluded(disparity).any(), why


def test_nan_neither_hidden_nor_hiding():
    d = _step(5.0, 30.0)
    d[:, 40:] = np.nan                     # the object has no disparity: nothing in front
    assert not occluded(d).any()
    d = _step(5.0, 30.0)
    d[:, 20:30] = np.nan
    hidden = occluded(d)
    assert not hidden[:, 20:30].any() and hidden[:, 16:20].all() and hidden[:, 30:40].all()


def test_refuses_other_than_a_disparity_image():
    with pytest.raises(ValueError, match=r"\(H, W\) disparity"):
        occluded(np.zeros((2, 3, 4), np.float32))


def test_torch_twin_is_exact_on_random_scenes():
    torch = pytest.importorskip("torch")
    from stereo_depth_ros.pipeline.device import occluded as occluded_on_device
    rng = np.random.default_rng(5)
    for _ in range(5):
        d = rng.uniform(0.0, 60.0, (24, 96)).astype(np.float32)
        d[rng.random(d.shape) < 0.05] = np.nan
        expected = occluded(d)
        assert 0.05 < expected.mean() < 0.95
        got = occluded_on_device(torch.from_numpy(d)).numpy()
        np.testing.assert_array_equal(got, expected)


@pytest.mark.parametrize("with_sigma, relative, absolute, enabled, withheld", [
    (True, 0.1, 1.4, True, HEIGHT * 24),      # the defaults: the hidden band goes
    (True, 0.0, 1.4, True, HEIGHT * 24),      # either uncertainty limit turns the mask on
    (True, 0.1, 0.0, True, HEIGHT * 24),
    (True, 0.1, 1.4, False, 0),               # occlusion_filter false
    (True, 0.0, 0.0, True, 0),                # the uncertainty mask off: everything published
    (False, 0.1, 1.4, True, 0),               # a backend without sigma_d (SGBM) ignores it
])
def test_the_pipeline_withholds_hidden_pixels_with_the_uncertainty_mask(
        with_sigma, relative, absolute, enabled, withheld):
    rig = StereoRig(fx=100.0, fy=100.0, cx_left=40.0, cx_right=40.0, cy=2.0, baseline_m=0.5,
                    width=WIDTH, height=HEIGHT)
    options = PipelineOptions(max_relative_uncertainty=relative,
                              max_disparity_uncertainty=absolute, occlusion_filter=enabled)
    image = np.random.default_rng(1).integers(0, 255, (HEIGHT, WIDTH, 3), np.uint8)
    result = StereoPipeline(
        FixedOutputBackend(_step(5.0, 30.0),
                           sigma=np.full((HEIGHT, WIDTH), 0.1) if with_sigma else None),
        options).process(image, image, rig)
    dropped = np.isnan(result.disparity)
    assert dropped.sum() == withheld
    if withheld:
        assert dropped[:, 16:40].all()
        np.testing.assert_array_equal(np.isnan(result.depth_m), dropped)
