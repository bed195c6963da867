"""Middlebury 2014 / MiddEval3 reader, the `calib.txt` parser and the scene-folder base reader.

Layout: `root/<scene>/im0.png` (left), `im1.png` (right), `calib.txt`, ground truth `disp0GT.pfm`
(MiddEval3) or `disp0.pfm` (2014 full-size scenes), optional `mask0nocc.png` (255 =
non-occluded, 128 = occluded, 0 = no ground truth). `root` may also be a single scene folder.
PFM ground truth marks unknown pixels with inf (read as NaN). The frame id and sample name are the
scene folder name.

`calib.txt` lines are `key=value`; `cam0`/`cam1` hold 3x3 matrices as `[fx 0 cx; 0 fy cy; 0 0 1]`,
`doffs` = cx1 - cx0 (px), `baseline` in mm, `width`, `height`, `ndisp`, `isint`, `vmin`, `vmax`,
`dyavg`, `dymax`.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from stereo_depth_ros.core.camera import StereoRig
from stereo_depth_ros.data.samples import (
    DatasetError, FileStereoDataset, SampleFiles, StereoSample, pair_by_frame_id)


def read_calib_txt(path: str | Path) -> dict:
    """Parse a Middlebury/ETH3D `calib.txt`: matrices -> (3, 3) float64, numbers -> int/float."""
    path = Path(path)
    if not path.is_file():
        raise DatasetError(f"calibration file not found: {path}")
    values: dict = {}
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        if "=" not in line:
            raise DatasetError(f"{path}:{number}: expected key=value, got {line[:60]!r}")
        key, raw = (part.strip() for part in line.split("=", 1))
        try:
            if raw.startswith("["):
                rows = [r.split() for r in raw.strip("[]").split(";")]
                matrix = np.array(rows, dtype=np.float64)
                if matrix.shape != (3, 3):
                    raise ValueError(f"matrix shape {matrix.shape}")
                values[key] = matrix
            else:
                number_value = float(raw)
                values[key] = int(number_value) if number_value.is_integer() and "." not in raw \
                    else number_value
        except ValueError as error:
            raise DatasetError(f"{path}:{number}: cannot parse {key}: {error}") from None
    return values


def rig_from_calib(calib: dict, width: int | None = None, height: int | None = None) -> StereoRig:
    """StereoRig from a parsed calib.txt (baseline mm -> m); width/height default to the file's."""
    try:
        cam0, cam1 = calib["cam0"], calib["cam1"]
        baseline_m = float(calib["baseline"]) / 1000.0
    except KeyError as error:
        raise DatasetError(f"calib.txt lacks {error.args[0]!r}") from None
    width = int(width if width is not None else calib.get("width", 0))
    height = int(height if height is not None else calib.get("height", 0))
    return StereoRig(fx=float(cam0[0, 0]), fy=float(cam0[1, 1]), cx_left=float(cam0[0, 2]),
                     cx_right=float(cam1[0, 2]), cy=float(cam0[1, 2]), baseline_m=baseline_m,
                     width=width, height=height)


class SceneFolderDataset(FileStereoDataset):
    """One folder per scene with `im0.png`, `im1.png`, `calib.txt` and PFM ground truth.

    root: the folder of scene folders (or one scene folder). gt_root: where ground truth lives when
    not beside the images (`gt_root/<scene>/...`). gt_names: accepted ground-truth file names, in
    order of preference. Scenes either all have ground truth or none has (DatasetError otherwise).
    """

    gt_names: tuple[str, ...] = ("disp0GT.pfm",)
    noc_mask_name = "mask0nocc.png"

    def __init__(self, root: str | Path, *, gt_root: str | Path | None = None):
        root = Path(root)
        if not root.is_dir():
            raise DatasetError(f"{self.dataset_name}: root directory not found: {root}")
        if (root / "im0.png").is_file():
            scene_dirs = [root]
        else:
            scene_dirs = sorted(p for p in root.iterdir() if p.is_dir() and (
                (p / "im0.png").is_file() or (p / "im1.png").is_file()))
        if not scene_dirs:
            raise DatasetError(f"{self.dataset_name}: no scene folders with im0.png/im1.png "
                               f"under {root}")
        self.root = root
        self.gt_root = Path(gt_root) if gt_root is not None else self._default_gt_root(root)
        lefts, rights, gts = {}, {}, {}
        for scene in scene_dirs:
            if (scene / "im0.png").is_file():
                lefts[scene.name] = scene / "im0.png"
            if (scene / "im1.png").is_file():
                rights[scene.name] = scene / "im1.png"
            gt = self._find_gt(scene)
            if gt is not None:
                gts[scene.name] = gt
        groups = {"im0.png": lefts, "im1.png": rights}
        if gts:
            groups[" or ".join(self.gt_names)] = gts
        ids = pair_by_frame_id(groups, pattern="<scene>/im0.png, <scene>/im1.png",
                               dataset=self.dataset_name, root=root)
        files = []
        for scene_id in ids:
            folder = lefts[scene_id].parent
            gt = gts.get(scene_id)
            mask = gt.parent / self.noc_mask_name if gt is not None else None
            calib = folder / "calib.txt"
            files.append(SampleFiles(
                frame_id=scene_id, name=scene_id, left=lefts[scene_id], right=rights[scene_id],
                disparity=gt, calib=calib if calib.is_file() else None,
                extra={"noc_mask": mask} if mask is not None and mask.is_file() else {}))
        super().__init__(files)

    def _default_gt_root(self, root: Path) -> Path | None:
        return None

    def _find_gt(self, scene: Path) -> Path | None:
        folders = [scene]
        if self.gt_root is not None:
            folders.append(self.gt_root / scene.name)
        for folder in folders:
            for name in self.gt_names:
                if (folder / name).is_file():
                    return folder / name
        return None

    def _finish(self, sample: StereoSample, files: SampleFiles) -> StereoSample:
        height, width = sample.left.shape[:2]
        if files.calib is not None:
            sample.calib = read_calib_txt(files.calib)
            try:
                sample.rig = rig_from_calib(sample.calib, width, height)
            except ValueError as error:
                raise DatasetError(f"{files.calib}: {error}") from None
        mask_path = files.extra.get("noc_mask")
        if mask_path is not None and sample.disparity is not None:
            mask = cv2.imread(str(mask_path), cv2.IMREAD_GRAYSCALE)
            if mask is None or mask.shape != (height, width):
                raise DatasetError(f"{self.dataset_name}: {mask_path} is not a {width}x{height} "
                                   "grey mask")
            sample.disparity_noc = np.where(mask == 255, sample.disparity, np.nan).astype(
                np.float32)
        return sample


class Middlebury(SceneFolderDataset):
    """Middlebury 2014 scenes / MiddEval3 (`disp0GT.pfm`, else `disp0.pfm`)."""

    dataset_name = "middlebury"
    gt_names = ("disp0GT.pfm", "disp0.pfm")
