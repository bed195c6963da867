"""What stereo_depth_eval --live must report on the synthetic LiDAR drive of helpers.kitti
(make_lidar_drive), computed here independently of the tool: SGBM run on the drive's images and
compared with the true plane depth at each LiDAR point's pixel; the per-frame CSV read back."""

from __future__ import annotations

import csv
from pathlib import Path

import cv2
import numpy as np

from helpers.kitti_lidar import LIDAR_BASELINE_M, LIDAR_CX, LIDAR_CY, LIDAR_FX


def true_pixels(camera_points: np.ndarray, height: int, width: int):
    """(row, col, depth) of the true camera-frame points inside the image (K only, by hand)."""
    z = camera_points[:, 2]
    u = LIDAR_FX * camera_points[:, 0] / np.where(z > 0, z, 1) + LIDAR_CX
    v = LIDAR_FX * camera_points[:, 1] / np.where(z > 0, z, 1) + LIDAR_CY
    col, row = np.floor(u + 0.5).astype(int), np.floor(v + 0.5).astype(int)
    keep = (z > 0.1) & (col >= 0) & (col < width) & (row >= 0) & (row < height)
    return row[keep], col[keep], z[keep]


def expected_sgbm_errors(scene) -> list[dict]:
    """SGBM (the node's parameters) run here on the drive's images; depth = fx B / d compared
    with the plane depth at each LiDAR point's pixel."""
    from stereo_depth_ros.backends import make_backend
    backend = make_backend("sgbm", num_disparities=32, block_size=5)
    height, width = scene.size
    expected = []
    for k, cam in enumerate(scene.camera_points):
        left, right = (cv2.imread(str(scene.drive / f"image_0{i}" / "data" / f"{k:010d}.png"))
                       [..., ::-1].copy() for i in (2, 3))
        disparity = backend.compute(left, right).disparity
        with np.errstate(divide="ignore"):
            depth = LIDAR_FX * LIDAR_BASELINE_M / disparity
        row, col, truth = true_pixels(cam, height, width)
        estimate = depth[row, col]
        has = np.isfinite(estimate) & (estimate > 0)
        error = np.abs(estimate[has] - truth[has])
        expected.append({"compared": int(has.sum()), "in_image": len(truth),
                         "mae_m": float(error.mean()),
                         "rmse_m": float(np.sqrt(np.mean(error ** 2))),
                         "over_1m_pct": float(100 * np.mean(error > 1.0))})
    return expected


def frame_rows(out: Path) -> list[dict]:
    with (out / "depth_error_frames.csv").open() as handle:
        return list(csv.DictReader(handle))
