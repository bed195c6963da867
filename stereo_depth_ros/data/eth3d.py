"""ETH3D two-view stereo reader.

Layout: `two_view_training/<scene>/im0.png`, `im1.png`, `calib.txt` (Middlebury format, baseline in
mm), ground truth `disp0GT.pfm` and `mask0nocc.png` (255 = non-occluded) either beside the images
or in the separate ground-truth download `two_view_training_gt/<scene>/`. When `gt_root` is not
given, a sibling folder named `<root>_gt` is used if it exists. Images are grey (replicated
to RGB).
"""

from __future__ import annotations

from pathlib import Path

from stereo_depth_ros.data.middlebury import SceneFolderDataset


class Eth3d(SceneFolderDataset):
    """ETH3D two-view (`disp0GT.pfm`, `mask0nocc.png`)."""

    dataset_name = "eth3d"
    gt_names = ("disp0GT.pfm",)

    def _default_gt_root(self, root: Path) -> Path | None:
        sibling = root.parent / f"{root.name}_gt"
        return sibling if sibling.is_dir() else None
