"""KITTI stereo 2015 and 2012 readers.

Layouts (`root` is the split folder, e.g. `data_scene_flow/training`, or its parent):

- KITTI 2015: `image_2/NNNNNN_10.png` (left), `image_3/NNNNNN_10.png` (right), ground truth
  `disp_occ_0/NNNNNN_10.png` (all px) and `disp_noc_0/NNNNNN_10.png` (non-occluded px).
- KITTI 2012: `colored_0/`, `colored_1/` (or the grey `image_0/`, `image_1/`), `disp_occ/`,
  `disp_noc/`, same file names.

Disparity PNGs are uint16 with value / 256 px and 0 = invalid. Only the `_10` (reference) frames
are stereo pairs with ground truth; `_11` files are ignored. The frame id and sample name are the
stem, e.g. `000123_10`. Without ground-truth folders (the testing split) `disparity` is None.

Calibration is optional: when the split folder also holds `calib_cam_to_cam/NNNNNN.txt` (2015,
from data_scene_flow_calib.zip; P_rect_02/P_rect_03) or `calib/NNNNNN.txt` (2012; P2/P3, or P0/P1
for the grey images), every frame must have one and `sample.rig` is filled (core.kitti_calib).
"""

from __future__ import annotations

from pathlib import Path

from stereo_depth_ros.core.camera import StereoRig
from stereo_depth_ros.core.kitti_calib import CalibrationFileError, load_stereo_calibration
from stereo_depth_ros.data.samples import (
    DatasetError, FileStereoDataset, SampleFiles, StereoSample, index_by_frame_id,
    pair_by_frame_id)

KITTI_PATTERN = r"(?P<id>\d{6}_10)\.png"
CALIB_PATTERN = r"(?P<id>\d{6})\.txt"


class _KittiBase(FileStereoDataset):
    left_dirs: tuple[str, ...] = ()
    right_dirs: tuple[str, ...] = ()
    occ_dir = ""
    noc_dir = ""
    calib_dir = ""
    calib_keys: dict[str, tuple[str, str]] = {}

    def __init__(self, root: str | Path, *, split: str = "training"):
        self.root = self._pick_root(Path(root), split)
        left_dir, right_dir = self._image_dirs()
        groups = {
            left_dir: index_by_frame_id(self.root / left_dir, KITTI_PATTERN,
                                        describe=self.dataset_name),
            right_dir: index_by_frame_id(self.root / right_dir, KITTI_PATTERN,
                                         describe=self.dataset_name),
        }
        for gt_dir in (self.occ_dir, self.noc_dir):
            if (self.root / gt_dir).is_dir():
                groups[gt_dir] = index_by_frame_id(self.root / gt_dir, KITTI_PATTERN,
                                                   describe=self.dataset_name)
        if self.noc_dir in groups and self.occ_dir not in groups:
            raise DatasetError(f"{self.dataset_name}: {self.root / self.noc_dir} exists but "
                               f"{self.root / self.occ_dir} does not")
        if (self.root / self.calib_dir).is_dir():
            calibs = index_by_frame_id(self.root / self.calib_dir, CALIB_PATTERN,
                                       describe=self.dataset_name)
            groups[self.calib_dir] = {f"{i}_10": path for i, path in calibs.items()}
        pattern = "NNNNNN_10.png" + (f", {self.calib_dir}/NNNNNN.txt"
                                     if self.calib_dir in groups else "")
        ids = pair_by_frame_id(groups, pattern=pattern, dataset=self.dataset_name,
                               root=self.root)
        self.projection_keys = self.calib_keys[left_dir]
        files = [SampleFiles(frame_id=i, name=i, left=groups[left_dir][i],
                             right=groups[right_dir][i],
                             disparity=groups.get(self.occ_dir, {}).get(i),
                             disparity_noc=groups.get(self.noc_dir, {}).get(i),
                             calib=groups.get(self.calib_dir, {}).get(i))
                 for i in ids]
        super().__init__(files)

    def _finish(self, sample: StereoSample, files: SampleFiles) -> StereoSample:
        if files.calib is not None:
            height, width = sample.left.shape[:2]
            try:
                calibration = load_stereo_calibration(files.calib, width, height,
                                                      keys=self.projection_keys)
            except (CalibrationFileError, ValueError) as error:
                raise DatasetError(f"{self.dataset_name}: {error}") from None
            sample.rig = StereoRig.from_projection_matrices(
                calibration.p_left, calibration.p_right, width, height)
        return sample

    def _pick_root(self, root: Path, split: str) -> Path:
        markers = self.left_dirs
        if not root.is_dir():
            raise DatasetError(f"{self.dataset_name}: root directory not found: {root}")
        for candidate in (root, root / split):
            if any((candidate / m).is_dir() for m in markers):
                return candidate
        raise DatasetError(f"{self.dataset_name}: no {' or '.join(markers)} folder in {root} "
                           f"or {root / split}")

    def _image_dirs(self) -> tuple[str, str]:
        for left, right in zip(self.left_dirs, self.right_dirs):
            if (self.root / left).is_dir():
                return left, right
        raise DatasetError(f"{self.dataset_name}: no image folder in {self.root}")


class Kitti2015(_KittiBase):
    """KITTI stereo 2015 (`image_2`/`image_3`, `disp_occ_0`/`disp_noc_0`)."""

    dataset_name = "kitti2015"
    left_dirs = ("image_2",)
    right_dirs = ("image_3",)
    occ_dir = "disp_occ_0"
    noc_dir = "disp_noc_0"
    calib_dir = "calib_cam_to_cam"
    calib_keys = {"image_2": ("P_rect_02", "P_rect_03")}


class Kitti2012(_KittiBase):
    """KITTI stereo 2012 (`colored_0/1`, else grey `image_0/1`; `disp_occ`, `disp_noc`)."""

    dataset_name = "kitti2012"
    left_dirs = ("colored_0", "image_0")
    right_dirs = ("colored_1", "image_1")
    occ_dir = "disp_occ"
    noc_dir = "disp_noc"
    calib_dir = "calib"
    calib_keys = {"colored_0": ("P2", "P3"), "image_0": ("P0", "P1")}
