"""Organised point clouds at a lower resolution than the depth image: every Nth pixel.

`decimate_organized(step, points, colours, ...)` keeps rows 0, N, 2N, ... and the same columns of
every per-pixel array it is given (points, colours, and any other per-pixel field a cloud
carries), so the cloud stays organised (height = ceil(H / N), width = ceil(W / N)) and point
(r, c) of the result is pixel (N*r, N*c) of the depth image. Done before the PointCloud2 is built,
so its size (and the time to build and send it) shrinks by N^2.
"""

from __future__ import annotations

import numpy as np

DECIMATIONS = (1, 2, 4)


def decimate_organized(step: int, *arrays: np.ndarray | None) -> tuple[np.ndarray | None, ...]:
    """Every step-th row and column of each (H, W, ...) array (None passes through).

    step: 1 (unchanged), 2 or 4. All arrays must share H and W. Returns views.
    """
    if step not in DECIMATIONS:
        raise ValueError(f"points_decimation={step!r}: expected one of "
                         f"{', '.join(map(str, DECIMATIONS))}")
    shapes = {array.shape[:2] for array in arrays if array is not None}
    if len(shapes) > 1:
        raise ValueError(f"per-pixel arrays differ in size: {sorted(shapes)}")
    if step == 1:
        return tuple(arrays)
    return tuple(None if array is None else array[::step, ::step] for array in arrays)
