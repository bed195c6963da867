"""Crops of the shipped sample pairs (assets/samples, from `make assets`) for the node tests that
run PSMNet with the released weights on a small real input."""

from __future__ import annotations

import json

import cv2
import numpy as np

from stereo_depth_ros.core.camera import StereoRig


def kitti_crop(assets_dir):
    """A 96x160 crop of the sample KITTI pair (RGB) and its rig."""
    samples = assets_dir / "samples" / "kitti2015"
    calib = json.loads((samples / "stereo_calibration.json").read_text())
    top, x0, height, width = 150, 600, 96, 160
    left, right = (np.ascontiguousarray(cv2.imread(str(samples / f"kitti_000046_{side}.png"))
                                        [top:top + height, x0:x0 + width, ::-1])
                   for side in ("left", "right"))
    rig = StereoRig(fx=calib["fx"], fy=calib["fy"], cx_left=calib["cx0"] - x0,
                    cx_right=calib["cx1"] - x0, cy=calib["cy"] - top,
                    baseline_m=calib["baseline_meters"], width=width, height=height)
    return left, right, rig
