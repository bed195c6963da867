"""core.fattening: the band of foreground disparity spread into textureless background, counted
by hand on constructed rows, and its torch twin (pipeline.device.fattened) equal to it."""

from __future__ import annotations

import numpy as np
import pytest

from helpers.pipeline import FixedOutputBackend

from stereo_depth_ros.core.camera import StereoRig
from stereo_depth_ros.core.fattening import fattened, texture_sum, textureless
from stereo_depth_ros.pipeline import PipelineOptions, StereoPipeline

HEIGHT, WIDTH = 6, 90
TEXTURE_FROM = 60        # columns >= 60 are textured; with the 5 x 5 window, 58+ see it


def _left() -> np.ndarray:
    """Flat grey (sky) on the left, strong random texture from column TEXTURE_FROM."""
    rng = np.random.default_rng(3)
    left = np.full((HEIGHT, WIDTH, 3), 230, np.uint8)
    left[:, TEXTURE_FROM:] = rng.integers(0, 255, (HEIGHT, WIDTH - TEXTURE_FROM, 1), np.uint8)
    return left


def _disparity(background: float, foreground: float, edge_at: int) -> np.ndarray:
    d = np.full((HEIGHT, WIDTH), background, np.float32)
    d[:, edge_at:] = foreground
    return d


def test_texture_is_the_windowed_central_difference_sum():
    left = np.zeros((5, 7), np.uint8)
    left[:, 4:] = 10                                    # one vertical step of 10 grey levels
    # mono counts 3x (channel sum); |G(x+1) - G(x-1)| = 30 at columns 3 and 4
    sums = texture_sum(left, radius=1)
    np.testing.assert_array_equal(sums[2], [0, 0, 90, 180, 180, 90, 0])
    assert textureless(left).all()              # 5 x 5 mean: 300 / 75 = 4 < 20 grey levels


def test_the_band_beside_an_unsupported_edge_is_withheld_up_to_the_foreground_reach():
    left = _left()
    assert textureless(left)[0].tolist() == [True] * (TEXTURE_FROM - 2) + [False] * (
        WIDTH - TEXTURE_FROM + 2)
    # sky at 5 px, foreground 30 px from column 40: the edge (d(x+2) - d(x-2) > 3) is found at
    # columns 38-41, inside the flat part; the band runs from 38 to the texture (57)
    band = fattened(left, _disparity(5.0, 30.0, 40))
    assert band.sum() == HEIGHT * (57 - 38 + 1)
    assert band[:, 38:58].all() and not band[:, :38].any() and not band[:, 58:].any()
    # a foreground of 11 px reaches 11 px from the last edge column (41): 38..52
    band = fattened(left, _disparity(5.0, 11.0, 40))
    assert band.sum() == HEIGHT * (52 - 38 + 1)
    # the reach is measured from the disparity at infinity: cx_offset 4 -> 7 px: 38..48
    band = fattened(left, _disparity(5.0, 11.0, 40), cx_offset=4.0)
    assert band.sum() == HEIGHT * (48 - 38 + 1)


def test_supported_edges_small_steps_and_the_other_side_keep_everything():
    left = _left()
    # the disparity edge on the image edge (texture from 60): a real depth edge
    assert not fattened(left, _disparity(5.0, 30.0, TEXTURE_FROM + 2)).any()
    # a rise of 3 px is not an edge
    assert not fattened(left, _disparity(5.0, 8.0, 40)).any()
    # foreground on the left (disparity falling to the right): not the occlusion side
    assert not fattened(left, _disparity(30.0, 5.0, 40)).any()
    # a smooth textureless surface
    assert not fattened(left, np.tile(np.linspace(5, 20, WIDTH, dtype=np.float32),
                                      (HEIGHT, 1))).any()


def test_size_mismatch_is_an_error():
    with pytest.raises(ValueError, match="differ in size"):
        fattened(_left(), np.zeros((HEIGHT, WIDTH - 1), np.float32))


def test_the_device_twin_gives_the_same_pixels():
    torch = pytest.importorskip("torch")
    from stereo_depth_ros.pipeline import device as ops

    rng = np.random.default_rng(5)
    cases = [(_left(), _disparity(5.0, 30.0, 40), 0.0),
             (_left(), _disparity(5.0, 11.0, 40), 4.0)]
    # random blobs of flat and textured image with random steps of disparity
    for _ in range(3):
        left = np.repeat(rng.integers(0, 4, (12, 40, 1), np.uint8), 4, axis=0).repeat(3, axis=1)
        left = (left * 60 + rng.integers(0, 3, left.shape, np.uint8)).astype(np.uint8)
        left = np.repeat(left, 3, axis=2)
        d = np.repeat(rng.uniform(0, 40, (12, 12)).astype(np.float32), 4, axis=0)
        d = np.repeat(d, 10, axis=1)
        d[rng.random(d.shape) < 0.01] = np.nan
        cases.append((left, d, float(rng.uniform(0, 3))))
    withheld = 0
    for left, d, offset in cases:
        host = fattened(left, d, offset)
        device = ops.fattened(torch.from_numpy(left), torch.from_numpy(d), offset).numpy()
        np.testing.assert_array_equal(device, host)
        withheld += int(host.sum())
    assert withheld > 0


def _band_backend(with_sigma: bool) -> FixedOutputBackend:
    """The sky-and-band disparity with a small sigma_d (or none, like SGBM)."""
    d = _disparity(5.0, 30.0, 40)
    return FixedOutputBackend(d, sigma=np.full(d.shape, 0.1, np.float32) if with_sigma else None)


@pytest.mark.parametrize("with_sigma, limit, enabled, withheld", [
    (True, 0.06, True, HEIGHT * 20),        # the default: the band (columns 38-57) goes
    (True, 0.06, False, 0),                 # fattening_filter false
    (True, 0.0, True, 0),                   # the uncertainty mask off: everything published
    (False, 0.06, True, 0),                 # a backend without sigma_d (SGBM) ignores it
])
def test_the_pipeline_withholds_the_band_with_the_uncertainty_mask(with_sigma, limit, enabled,
                                                                   withheld):
    rig = StereoRig(fx=100.0, fy=100.0, cx_left=45.0, cx_right=45.0, cy=3.0, baseline_m=0.5,
                    width=WIDTH, height=HEIGHT)
    options = PipelineOptions(max_relative_uncertainty=limit, fattening_filter=enabled)
    result = StereoPipeline(_band_backend(with_sigma), options).process(_left(), _left(), rig)
    dropped = np.isnan(result.disparity)
    assert dropped.sum() == withheld
    if withheld:
        assert dropped[:, 38:58].all()
        np.testing.assert_array_equal(np.isnan(result.depth_m), dropped)
