"""Training crops: random windows of a stereo dataset, normalised as the official weights expect.
"""

from __future__ import annotations

import numpy as np
import torch
from torch.utils.data import Dataset

from stereo_depth_ros.models import OFFICIAL_PREPROCESSING
from stereo_depth_ros.training.errors import TrainingError

_SPP_LARGEST_POOL = 64
_SEED_MIX = (1_000_003, 998_244_353)


def normalize_image(image: np.ndarray) -> torch.Tensor:
    """(H, W, 3) uint8 RGB -> (3, H, W) float32 normalised as the official weights expect."""
    tensor = torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1).float().div_(
        OFFICIAL_PREPROCESSING.scale)
    mean = torch.tensor(OFFICIAL_PREPROCESSING.mean).view(3, 1, 1)
    std = torch.tensor(OFFICIAL_PREPROCESSING.std).view(3, 1, 1)
    return (tensor - mean) / std


def denormalize_image(tensor: torch.Tensor) -> np.ndarray:
    """Inverse of normalize_image: (3, H, W) float normalised -> (H, W, 3) uint8 RGB."""
    mean = torch.tensor(OFFICIAL_PREPROCESSING.mean).view(3, 1, 1)
    std = torch.tensor(OFFICIAL_PREPROCESSING.std).view(3, 1, 1)
    rgb = (tensor.detach().float().cpu() * std + mean) * OFFICIAL_PREPROCESSING.scale
    return rgb.round().clamp(0, 255).to(torch.uint8).permute(1, 2, 0).numpy()


def crop_seed(seed: int, epoch: int, index: int) -> int:
    """The seed of the crop window of dataset sample `index` in `epoch` (a 63-bit integer)."""
    return ((seed * _SEED_MIX[0] + epoch) * _SEED_MIX[1] + index) % (2 ** 63)


class RandomCropDataset(Dataset):
    """Random (crop_h, crop_w) windows of a StereoDataset, one window for images and gt.

    Items: (left (3, h, w) float32 normalised, right (same), gt (h, w) float32 px, NaN invalid).
    seed None: the window is drawn with torch's global RNG (seed it for reproducible crops).
    seed given: the window of sample i in epoch e is drawn from crop_seed(seed, e, i) alone, so
    it is the same whichever process or worker loads the sample (call set_epoch every epoch).
    cache: keep decoded samples in memory (fine for a few hundred KITTI pairs).
    """

    def __init__(self, dataset, crop: tuple[int, int], *, indices: list[int] | None = None,
                 cache: bool = False, seed: int | None = None):
        self.dataset = dataset
        self.crop = crop
        self.indices = list(range(len(dataset))) if indices is None else list(indices)
        self.cache = {} if cache else None
        self.seed = seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """Epoch whose windows __getitem__ draws (only matters with a seed)."""
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return len(self.indices)

    def _sample(self, index: int):
        if self.cache is not None and index in self.cache:
            return self.cache[index]
        sample = self.dataset[index]
        if sample.disparity is None:
            raise TrainingError(f"{sample.name}: no ground-truth disparity to train on")
        item = (sample.left, sample.right, sample.disparity, sample.name)
        if self.cache is not None:
            self.cache[index] = item
        return item

    def __getitem__(self, i: int):
        left, right, gt, name = self._sample(self.indices[i])
        height, width = gt.shape
        crop_h, crop_w = self.crop
        if height < crop_h or width < crop_w:
            raise TrainingError(f"{name}: image {width}x{height} is smaller than the crop "
                                f"{crop_w}x{crop_h} (--crop is HxW)")
        generator = None
        if self.seed is not None:
            generator = torch.Generator().manual_seed(
                crop_seed(self.seed, self.epoch, self.indices[i]))
        top = int(torch.randint(0, height - crop_h + 1, (1,), generator=generator))
        x0 = int(torch.randint(0, width - crop_w + 1, (1,), generator=generator))
        window = (slice(top, top + crop_h), slice(x0, x0 + crop_w))
        return (normalize_image(left[window]), normalize_image(right[window]),
                torch.from_numpy(np.ascontiguousarray(gt[window], dtype=np.float32)))


def check_batchnorm_trainable(crop: tuple[int, int], batch_size: int) -> None:
    """PSMNet's largest SPP branch pools 64x64 at 1/4 resolution; BatchNorm needs > 1 value.

    batch_size: the pairs one BatchNorm sees at once (the micro-batch of one process).
    """
    half = [-(-size // 2) for size in crop]
    pooled = [-(-size // 2) // _SPP_LARGEST_POOL for size in half]     # ceil(ceil(s/2)/2) // 64
    if min(crop) < 256 or crop[0] % 16 or crop[1] % 16:
        raise TrainingError(f"crop {crop[0]}x{crop[1]} must be at least 256x256 and a multiple "
                            "of 16 (PSMNet's SPP and hourglass need it)")
    if batch_size * pooled[0] * pooled[1] <= 1:
        raise TrainingError(f"crop {crop[0]}x{crop[1]} with batch size {batch_size} leaves the "
                            "64-px SPP branch one value per channel, which BatchNorm cannot train "
                            "on: use --batch-size >= 2 or a crop of at least 256x512")
