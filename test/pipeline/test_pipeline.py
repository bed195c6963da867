"""pipeline.StereoPipeline on the host (numpy/cv2, SGBM): the per-frame path the node and the
tools share. Needs no torch, so it also runs on the oldest supported stack (`make test-oldest`);
the torch stages are in test_pipeline_device.py."""

from __future__ import annotations

import numpy as np
import pytest

from helpers.pipeline import BASELINE, FX, HEIGHT, WIDTH, make_calibration, textured_pair
from stereo_depth_ros import drop_reasons
from stereo_depth_ros.backends import make_backend
from stereo_depth_ros.core.camera import StereoRig
from stereo_depth_ros.core.rectify import Rectifier
from stereo_depth_ros.core.synthetic import make_scene
from stereo_depth_ros.drop_reasons import FrameDropped
from stereo_depth_ros.pipeline import PipelineOptions, StereoPipeline


# ---------------------------------------------------------------------------- host path

def _plane(disparity: float = 8.0):
    """A rectified random-dot pair of a fronto-parallel plane at `disparity` px (exact)."""
    return make_scene(HEIGHT, WIDTH, background_disparity=disparity, foreground_disparity=None,
                      fx=FX, baseline_m=BASELINE, texture_cell_px=2.0)


def test_depth_follows_the_disparity_and_the_rig():
    """A plane at 8 px on an already rectified rig -> depth fx*B/8 where SGBM matched."""
    sgbm = make_backend("sgbm", num_disparities=32, block_size=5)
    scene = _plane(8.0)
    result = StereoPipeline(sgbm).process(scene.left, scene.right, scene.rig)
    valid = np.isfinite(result.disparity)
    assert valid.mean() > 0.6
    assert np.median(result.disparity[valid]) == pytest.approx(8.0, abs=0.1)
    assert np.nanmedian(result.depth_m) == pytest.approx(FX * BASELINE / 8.0, rel=0.02)
    np.testing.assert_allclose(result.points[..., 2], result.depth_m, equal_nan=True)
    assert result.delta_d == 1 / 16 and (result.min_disparity, result.max_disparity) == (0, 32)
    assert result.left is scene.left                            # nothing to rectify


def test_input_scale_scales_images_rig_and_disparity():
    sgbm = make_backend("sgbm", num_disparities=16, block_size=5)
    scene = _plane(8.0)
    result = StereoPipeline(sgbm, PipelineOptions(input_scale=0.5)).process(
        scene.left, scene.right, scene.rig)
    assert result.disparity.shape == (HEIGHT // 2, WIDTH // 2) == result.left.shape[:2]
    assert result.rig.width == WIDTH // 2 and result.rig.fx == pytest.approx(FX / 2)
    valid = np.isfinite(result.disparity)
    assert np.median(result.disparity[valid]) == pytest.approx(4.0, abs=0.1)
    # Depth does not depend on the scale: fx and the disparity both halve.
    assert np.nanmedian(result.depth_m) == pytest.approx(FX * BASELINE / 8.0, rel=0.03)


def test_outputs_are_built_only_when_asked():
    sgbm = make_backend("sgbm", num_disparities=16)
    left, right = textured_pair()
    pipeline = StereoPipeline(sgbm)
    calibration = make_calibration(distorted=False)
    none = pipeline.process(left, right, calibration, depth=False, points=False)
    assert none.depth_m is None and none.points is None
    points_only = pipeline.process(left, right, calibration, depth=False, points=True)
    assert points_only.depth_m is None and points_only.points is not None
    no_rig = pipeline.process(left, right, None)
    assert no_rig.rig is None and no_rig.depth_m is None and no_rig.points is None


def test_rectify_modes_and_maps_built_once_per_calibration():
    sgbm = make_backend("sgbm", num_disparities=16)
    left, right = textured_pair()
    events = []
    pipeline = StereoPipeline(sgbm, on_event=events.append)
    calibration = make_calibration()
    first = pipeline.process(left, right, calibration)
    pipeline.process(left, right, calibration)
    assert len(events) == 1 and "rectification maps built" in events[0]
    rectifier = Rectifier(calibration.left, calibration.right, WIDTH, HEIGHT)
    np.testing.assert_array_equal(first.left, rectifier.rectify_left(left))
    pipeline.process(left, right, make_calibration())                   # a new calibration
    assert len(events) == 2
    pipeline.options = PipelineOptions(rectify="false")
    assert pipeline.process(left, right, calibration).left is left
    rectified = make_calibration(distorted=False)
    pipeline.options = PipelineOptions(rectify="auto")
    assert pipeline.process(left, right, rectified).left is left
    pipeline.options = PipelineOptions(rectify="true")
    forced = pipeline.process(left, right, rectified).left            # identity maps
    np.testing.assert_array_equal(forced, left)


def test_depth_limits_keep_the_part_inside():
    sgbm = make_backend("sgbm", num_disparities=32)
    scene = make_scene(HEIGHT, WIDTH, background_slope=0.1, fx=FX, baseline_m=BASELINE,
                       texture_cell_px=2.0)
    left, right, calibration = scene.left, scene.right, scene.rig
    plain = StereoPipeline(sgbm).process(left, right, calibration)
    depth = plain.depth_m[np.isfinite(plain.depth_m)]
    low, high = np.percentile(depth, [25, 75])
    clipped = StereoPipeline(sgbm, PipelineOptions(min_depth_m=low, max_depth_m=high)).process(
        left, right, calibration)
    inside = (plain.depth_m >= np.float32(low)) & (plain.depth_m <= np.float32(high))
    np.testing.assert_array_equal(clipped.depth_m[inside], plain.depth_m[inside])
    assert np.isnan(clipped.depth_m[~inside]).all() and inside.any() and (~inside).any()


@pytest.mark.parametrize("case, reason", [
    ("size_mismatch", drop_reasons.SIZE_MISMATCH),
    ("info_size", drop_reasons.INFO_SIZE_MISMATCH),
    ("too_narrow", drop_reasons.IMAGE_TOO_SMALL),
])
def test_bad_pairs_are_dropped_with_a_reason(case, reason):
    sgbm = make_backend("sgbm", num_disparities=16 if case != "too_narrow" else 256)
    left, right = textured_pair()
    calibration = make_calibration(distorted=False)
    if case == "size_mismatch":
        right = right[:, :-2]
    elif case == "info_size":
        calibration = make_calibration(distorted=False, width=WIDTH + 10)
    with pytest.raises(FrameDropped) as caught:
        StereoPipeline(sgbm).process(left, right, calibration)
    assert caught.value.reason == reason
    assert str(WIDTH) in str(caught.value) or "256" in str(caught.value)


def test_options_are_checked():
    with pytest.raises(ValueError, match="input_scale"):
        PipelineOptions(input_scale=0.0)
    with pytest.raises(ValueError, match="rectify"):
        PipelineOptions(rectify="maybe")


def test_the_packages_own_calibration_loader_feeds_process(tmp_path):
    """`load_stereo_calibration()` (a KITTI calib file) goes straight into process(): the same
    depth as with the StereoRig it describes, input_scale included; other types: TypeError."""
    from stereo_depth_ros.core.kitti_calib import format_calib_text, load_stereo_calibration

    scene = _plane(8.0)
    left_p = np.array([[FX, 0, WIDTH / 2, 0], [0, FX, HEIGHT / 2, 0], [0, 0, 1, 0]])
    right_p = left_p.copy()
    right_p[0, 3] = -FX * BASELINE
    path = tmp_path / "calib.txt"
    path.write_text(format_calib_text({"P2": left_p, "P3": right_p}))
    calibration = load_stereo_calibration(path, WIDTH, HEIGHT)
    sgbm = make_backend("sgbm", num_disparities=16, block_size=5)
    pipeline = StereoPipeline(sgbm, PipelineOptions(input_scale=0.5))
    result = pipeline.process(scene.left, scene.right, calibration)
    assert result.rig == StereoRig.from_projection_matrices(left_p, right_p, WIDTH, HEIGHT) \
        .scaled_to(WIDTH // 2, HEIGHT // 2)
    assert np.nanmedian(result.depth_m) == pytest.approx(FX * BASELINE / 8.0, rel=0.03)
    with pytest.raises(TypeError, match="got dict"):
        pipeline.process(scene.left, scene.right, {"fx": FX})
