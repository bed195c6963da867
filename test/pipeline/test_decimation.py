"""points_decimation's selection, hand-checked: point (r, c) of the result is pixel (N*r, N*c),
sizes round up (an odd-sized image keeps its last row/column at index 0 mod N), every per-pixel
array is decimated alike, and only 1, 2 and 4 are accepted."""

from __future__ import annotations

import numpy as np
import pytest

from stereo_depth_ros.pipeline.decimation import decimate_organized


@pytest.mark.parametrize("step", [1, 2, 4])
def test_point_r_c_is_pixel_n_r_n_c(step):
    height, width = 9, 14                                   # not multiples of 2 or 4
    rows, cols = np.mgrid[0:height, 0:width]
    points = np.dstack([cols, rows, rows * 100 + cols]).astype(np.float32)
    colours = np.dstack([rows, cols, rows + cols]).astype(np.uint8)
    out_points, out_colours, nothing = decimate_organized(step, points, colours, None)
    expected_shape = (-(-height // step), -(-width // step))
    assert out_points.shape[:2] == out_colours.shape[:2] == expected_shape
    assert nothing is None
    r, c = np.mgrid[0:expected_shape[0], 0:expected_shape[1]]
    np.testing.assert_array_equal(out_points[..., 2], (step * r) * 100 + step * c)
    np.testing.assert_array_equal(out_colours[..., 0], step * r)
    np.testing.assert_array_equal(out_colours[..., 1], step * c)


def test_only_1_2_4_and_arrays_of_one_size():
    points = np.zeros((4, 6, 3), np.float32)
    with pytest.raises(ValueError, match="points_decimation=3: expected one of 1, 2, 4"):
        decimate_organized(3, points)
    with pytest.raises(ValueError, match="differ in size"):
        decimate_organized(2, points, np.zeros((4, 5, 3), np.uint8))
