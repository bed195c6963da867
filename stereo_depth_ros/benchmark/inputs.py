"""The benchmark's inputs: a stereo pair of any size and a raw (distorted) calibration for it."""

from __future__ import annotations

import os
from pathlib import Path


def _sample_pair_paths(weights: Path | None = None) -> tuple[Path, Path] | None:
    """The KITTI 2015 sample pair from `make assets`: beside `weights`, in $STEREO_DEPTH_ASSETS,
    ./assets or the source checkout's assets/."""
    roots = [Path(os.environ["STEREO_DEPTH_ASSETS"])] if os.environ.get(
        "STEREO_DEPTH_ASSETS") else []
    roots += [weights.parent.parent] if weights is not None else []
    roots += [Path.cwd() / "assets", Path(__file__).resolve().parents[2] / "assets"]
    for root in roots:
        folder = root / "samples" / "kitti2015"
        left, right = folder / "kitti_000046_left.png", folder / "kitti_000046_right.png"
        if left.is_file() and right.is_file():
            return left, right
    return None


def load_pair(height: int, width: int, weights: Path | None = None):
    """An RGB uint8 pair of the given size: the KITTI sample resized, else a random-dot pair."""
    import cv2
    import numpy as np
    paths = _sample_pair_paths(weights)
    if paths is not None:
        images = [cv2.imread(str(path), cv2.IMREAD_COLOR) for path in paths]
        if all(image is not None for image in images):
            return tuple(np.ascontiguousarray(cv2.resize(image, (width, height),
                                                         interpolation=cv2.INTER_AREA)[..., ::-1])
                         for image in images), "kitti2015/000046 resized"
    rng = np.random.default_rng(0)
    left = rng.integers(0, 256, (height, width + 32, 3), dtype=np.uint8)
    right = np.ascontiguousarray(left[:, 16:16 + width])                 # 16 px disparity
    return (np.ascontiguousarray(left[:, :width]), right), "random dots, 16 px shift"


def raw_calibration(width: int, height: int):
    """A KITTI-like stereo calibration with lens distortion and a small rotation, so that the
    frame measurement rectifies (core.rectify.StereoCalibration)."""
    import numpy as np
    from stereo_depth_ros.core.camera import StereoRig
    from stereo_depth_ros.core.rectify import CameraCalibration, StereoCalibration

    fx = 721.5377 * width / 1242.0
    K = np.array([[fx, 0, width / 2 + 3.2], [0, fx, height / 2 - 1.7], [0, 0, 1.0]])
    D = np.array([-0.37, 0.2, 0.0005, -0.001, -0.07])
    angle = 0.004
    R = np.array([[np.cos(angle), 0, np.sin(angle)], [0, 1, 0],
                  [-np.sin(angle), 0, np.cos(angle)]])
    P_left = np.hstack([K, np.zeros((3, 1))])
    P_right = np.hstack([K, np.array([[-fx * 0.54], [0], [0]])])
    return StereoCalibration(
        left=CameraCalibration.create(K, D, R, P_left, name="left"),
        right=CameraCalibration.create(K, D, R.T, P_right, name="right"),
        rig=StereoRig.from_projection_matrices(P_left, P_right, width, height),
        already_rectified=False, frame_id="left_camera_optical_frame")
