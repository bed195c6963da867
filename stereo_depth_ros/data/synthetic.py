"""The project's synthetic scenes (core.synthetic) as a dataset with exact ground truth.

Scene `i` of a dataset with seed `s` is rendered from `numpy.random.default_rng([s, i])`: a
background plane (possibly tilted like a floor) and a fronto-parallel foreground rectangle, with
disparities drawn inside `[0.08, 0.85] * max_disparity`. Scenes are rendered on access, so
`SyntheticDataset(count, seed=seed)[i]` is the same everywhere. Occluded pixels have NaN ground
truth, so `disparity` is the "all" map and there is no separate `disparity_noc`.
"""

from __future__ import annotations

import numpy as np

from stereo_depth_ros.core.synthetic import make_scene
from stereo_depth_ros.data.samples import DatasetError, StereoDataset, StereoSample


class SyntheticDataset(StereoDataset):
    """`count` deterministic synthetic scenes of `height` x `width` px.

    max_disparity: px; scene disparities stay below 0.85 of it. texture_cell_px: random-dot cell
    size (px); noise_std: intensity noise per view (grey levels).
    """

    dataset_name = "synthetic"

    def __init__(self, count: int = 8, *, seed: int = 0, height: int = 256, width: int = 320,
                 max_disparity: float = 64.0, texture_cell_px: float = 1.5,
                 noise_std: float = 1.0):
        if count < 1:
            raise DatasetError(f"synthetic: count must be >= 1, got {count}")
        if max_disparity < 8:
            raise DatasetError(f"synthetic: max_disparity must be >= 8 px, got {max_disparity}")
        if width <= max_disparity:
            raise DatasetError(f"synthetic: width {width} must exceed max_disparity "
                               f"{max_disparity}")
        self.count = int(count)
        self.seed = int(seed)
        self.height, self.width = int(height), int(width)
        self.max_disparity = float(max_disparity)
        self.texture_cell_px = float(texture_cell_px)
        self.noise_std = float(noise_std)

    def __len__(self) -> int:
        return self.count

    def names(self) -> list[str]:
        return [self._name(i) for i in range(self.count)]

    def _name(self, index: int) -> str:
        return f"synthetic_{self.seed:04d}_{index:06d}"

    def scene_parameters(self, index: int) -> dict:
        """The make_scene keyword arguments of scene `index`."""
        rng = np.random.default_rng([self.seed, index])
        d_max = self.max_disparity
        height, width = self.height, self.width
        background = rng.uniform(0.08, 0.3) * d_max
        # A floor-like tilt in half of the scenes: up to +0.15 * d_max from the middle row down.
        slope = rng.uniform(0.0, 0.3 * d_max / height) if rng.random() < 0.5 else 0.0
        background = max(background, slope * height / 2.0 + 0.08 * d_max)
        top = background + slope * height / 2.0
        foreground = min(top + rng.uniform(0.1, 0.35) * d_max, 0.85 * d_max)
        box_w = rng.uniform(0.2, 0.45) * width
        box_h = rng.uniform(0.25, 0.55) * height
        u0 = rng.uniform(0.05 * width, width - box_w - 0.05 * width)
        v0 = rng.uniform(0.05 * height, height - box_h - 0.05 * height)
        return dict(height=height, width=width, background_disparity=float(background),
                    background_slope=float(slope), foreground_disparity=float(foreground),
                    foreground_box=(float(u0), float(v0), float(u0 + box_w), float(v0 + box_h)),
                    texture_cell_px=self.texture_cell_px, noise_std=self.noise_std,
                    seed=int(rng.integers(0, 2**31 - 1)))

    def _load(self, index: int) -> StereoSample:
        scene = make_scene(**self.scene_parameters(index))
        name = self._name(index)
        return StereoSample(left=scene.left, right=scene.right, disparity=scene.disparity,
                            disparity_noc=None, frame_id=name, name=name, rig=scene.rig)
