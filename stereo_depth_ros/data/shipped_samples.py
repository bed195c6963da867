"""The real rectified sample pairs under assets/samples, each with its calibration as a StereoRig.

Every folder ships a `stereodemo_calibration.json` (fx, fy, cx0, cx1, cy, baseline_meters, width,
height) for its pairs; pairs are `<name>_left.<ext>` / `<name>_right.<ext>` or `im0` / `im1`.
No ground truth (see data.md): these are for checks that need real images and a real rig, such
as the rectification check. `SAMPLE_SETS` names the folders read, in order.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from stereo_depth_ros.core.camera import StereoRig
from stereo_depth_ros.data.samples import DatasetError, read_rgb

SAMPLE_SETS = ("kitti2015", "drivingstereo", "eth3d_lowres", "middlebury_2014", "oak-d")
CALIBRATION_FILE = "stereodemo_calibration.json"


@dataclass(frozen=True)
class ShippedPair:
    """One rectified pair: name "<set>/<scene or file stem>", the two files and the rig."""

    name: str
    left_path: Path
    right_path: Path
    rig: StereoRig

    def load(self, max_width: int | None = None) -> tuple[np.ndarray, np.ndarray, StereoRig]:
        """(left, right, rig): (H, W, 3) uint8 RGB and the matching rig; pairs wider than
        max_width are resized (INTER_AREA) by a power of two, the rig scaled alike."""
        left, right = read_rgb(self.left_path), read_rgb(self.right_path)
        if left.shape != right.shape or (left.shape[1], left.shape[0]) != self.rig.size:
            raise DatasetError(f"{self.name}: images {left.shape[:2]} / {right.shape[:2]} and "
                               f"calibration {self.rig.size} disagree")
        rig, scale = self.rig, 1.0
        while max_width is not None and left.shape[1] * scale > max_width:
            scale /= 2.0
        if scale != 1.0:
            size = (round(left.shape[1] * scale), round(left.shape[0] * scale))
            left = cv2.resize(left, size, interpolation=cv2.INTER_AREA)
            right = cv2.resize(right, size, interpolation=cv2.INTER_AREA)
            rig = rig.scaled_to(*size)
        return left, right, rig


def _rig(path: Path) -> StereoRig:
    try:
        values = json.loads(path.read_text())
        return StereoRig(fx=values["fx"], fy=values["fy"], cx_left=values["cx0"],
                         cx_right=values["cx1"], cy=values["cy"],
                         baseline_m=values["baseline_meters"], width=values["width"],
                         height=values["height"])
    except (OSError, ValueError, KeyError) as error:
        raise DatasetError(f"{path}: unreadable calibration ({error})") from None


def _pairs_in(folder: Path, prefix: str) -> list[ShippedPair]:
    calibration = folder / CALIBRATION_FILE
    if not calibration.is_file():
        calibration = folder / "stereo_calibration.json"
    rig = _rig(calibration)
    pairs = []
    for left in sorted(folder.glob("*_left.*")):
        right = left.with_name(left.name.replace("_left.", "_right."))
        if not right.is_file():
            raise DatasetError(f"{left}: no right image {right.name}")
        pairs.append(ShippedPair(f"{prefix}/{left.name.split('_left.')[0]}", left, right, rig))
    for left in sorted(folder.glob("im0.*")):
        right = next(iter(sorted(folder.glob("im1.*"))), None)
        if right is None:
            raise DatasetError(f"{left}: no im1 beside it")
        pairs.append(ShippedPair(prefix, left, right, rig))
    return pairs


def shipped_pairs(samples_dir: str | Path) -> list[ShippedPair]:
    """Every pair of SAMPLE_SETS under samples_dir (assets/samples); DatasetError if none."""
    root = Path(samples_dir)
    pairs: list[ShippedPair] = []
    for name in SAMPLE_SETS:
        folder = root / name
        if not folder.is_dir():
            continue
        scenes = [p for p in sorted(folder.iterdir()) if p.is_dir()]
        for scene in scenes or [folder]:
            prefix = f"{name}/{scene.name}" if scenes and name != "drivingstereo" else name
            pairs += _pairs_in(scene, prefix)
    if not pairs:
        raise DatasetError(f"no sample pairs under {root} (expected {', '.join(SAMPLE_SETS)})")
    return pairs
