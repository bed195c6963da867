"""The sample type every dataset reader returns, the shared reader base and frame-id pairing.

Readers never pair files by sorted glob: each file's frame id comes from its name (a regular
expression with an `id` group), the sets of ids of the left, right and ground-truth folders must be
identical, and a mismatch raises `DatasetError` naming the pattern and the unmatched files.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from stereo_depth_ros.core.camera import StereoRig
from stereo_depth_ros.core.disparity_io import read_disparity
from stereo_depth_ros.core.image_io import read_image_rgb

#: How many file names an error message lists before "... and N more".
MAX_LISTED = 8


class DatasetError(ValueError):
    """A dataset tree is missing, malformed or its files do not pair up."""


@dataclass
class StereoSample:
    """One rectified pair with optional ground truth.

    left, right: (H, W, 3) uint8 RGB. disparity: (H, W) float32 px, NaN where there is no ground
    truth ("all" pixels, occluded ones included where the dataset has them), or None (test split).
    disparity_noc: (H, W) float32 px on non-occluded pixels only, or None when the dataset has no
    occlusion mask. frame_id: the id the files were paired by. name: a file-name stem unique in the
    dataset (may contain "/"); precomputed predictions are looked up as `<name>.png` etc.
    rig: the rectified camera pair when the dataset ships a calibration. calib: raw calibration
    values as read from the dataset's file, if any.
    """

    left: np.ndarray
    right: np.ndarray
    disparity: np.ndarray | None = None
    disparity_noc: np.ndarray | None = None
    frame_id: str = ""
    name: str = ""
    rig: StereoRig | None = None
    calib: dict = field(default_factory=dict, repr=False)

    @property
    def valid(self) -> np.ndarray | None:
        """(H, W) bool: pixels with ground truth, or None without ground truth."""
        return None if self.disparity is None else np.isfinite(self.disparity)


@dataclass(frozen=True)
class SampleFiles:
    """The files of one sample; optional ones are None."""

    frame_id: str
    name: str
    left: Path
    right: Path
    disparity: Path | None = None
    disparity_noc: Path | None = None
    calib: Path | None = None
    extra: Mapping[str, Path] = field(default_factory=dict)


def read_rgb(path: str | Path) -> np.ndarray:
    """Read an image file as (H, W, 3) uint8 RGB (core.image_io); DatasetError if unreadable."""
    try:
        return read_image_rgb(path)
    except ValueError as error:
        raise DatasetError(str(error)) from None


def _listing(names: list[str]) -> str:
    names = sorted(names)
    shown = ", ".join(names[:MAX_LISTED])
    if len(names) > MAX_LISTED:
        shown += f", ... and {len(names) - MAX_LISTED} more"
    return shown


def index_by_frame_id(directory: str | Path, pattern: str, *,
                      describe: str = "") -> dict[str, Path]:
    """Map frame id -> file for the files directly in `directory` whose name matches `pattern`.

    pattern: a regular expression matched against the whole file name, with a named group `id`
    (e.g. r"(?P<id>\\d{6}_10)\\.png"). Raises DatasetError if the directory is missing or holds
    no matching file.
    """
    directory = Path(directory)
    what = describe or str(directory)
    if not directory.is_dir():
        raise DatasetError(f"{what}: directory not found: {directory} (expected files matching "
                           f"{pattern!r})")
    regex = re.compile(pattern)
    found: dict[str, Path] = {}
    for path in directory.iterdir():
        match = regex.fullmatch(path.name)
        if match and path.is_file():
            found[match.group("id")] = path
    if not found:
        raise DatasetError(f"{what}: no files matching {pattern!r} in {directory}")
    return found


def pair_by_frame_id(groups: Mapping[str, Mapping[str, Path]], *, pattern: str = "",
                     dataset: str = "dataset", root: Path | None = None) -> list[str]:
    """Check that every group holds the same frame ids; return them sorted.

    groups: role (e.g. "image_2") -> {frame id: path}; the first group is the reference.
    Raises DatasetError naming the pattern, the counts and the unmatched files of each side
    (as paths relative to `root` when given, else as `folder/file`).
    """
    def shown(path: Path) -> str:
        if root is not None:
            try:
                return path.relative_to(root).as_posix()
            except ValueError:
                pass
        return f"{path.parent.name}/{path.name}"

    roles = list(groups)
    if not roles:
        raise DatasetError(f"{dataset}: nothing to pair")
    reference_role = roles[0]
    reference = groups[reference_role]
    problems = []
    for role in roles[1:]:
        other = groups[role]
        only_ref = [shown(reference[i]) for i in set(reference) - set(other)]
        only_other = [shown(other[i]) for i in set(other) - set(reference)]
        if only_ref:
            problems.append(f"{len(only_ref)} file(s) in {reference_role} have no match in "
                            f"{role}: {_listing(only_ref)}")
        if only_other:
            problems.append(f"{len(only_other)} file(s) in {role} have no match in "
                            f"{reference_role}: {_listing(only_other)}")
    if problems:
        counts = ", ".join(f"{role} {len(groups[role])}" for role in roles)
        hint = f" (pattern {pattern!r})" if pattern else ""
        raise DatasetError(f"{dataset}: files do not pair by frame id{hint}; counts: {counts}; "
                           + "; ".join(problems))
    return sorted(reference)


class StereoDataset:
    """Base reader: a sized, indexable sequence of StereoSample.

    Subclasses implement `__len__` and `_load(index)`. `dataset_name` names the dataset in errors.
    """

    dataset_name = "dataset"

    def __len__(self) -> int:
        raise NotImplementedError

    def _load(self, index: int) -> StereoSample:
        raise NotImplementedError

    def __getitem__(self, index: int) -> StereoSample:
        size = len(self)
        if not -size <= index < size:
            raise IndexError(f"{self.dataset_name}: index {index} out of range for {size} samples")
        return self._load(index % size)

    def __iter__(self) -> Iterator[StereoSample]:
        for index in range(len(self)):
            yield self[index]

    @property
    def has_ground_truth(self) -> bool:
        """Whether the samples carry ground-truth disparity."""
        return True

    def names(self) -> list[str]:
        """The sample names in index order (without loading images)."""
        raise NotImplementedError


class FileStereoDataset(StereoDataset):
    """A reader over a list of SampleFiles, loading images and disparities on access."""

    def __init__(self, files: list[SampleFiles]):
        self.files = list(files)

    def __len__(self) -> int:
        return len(self.files)

    @property
    def has_ground_truth(self) -> bool:
        return bool(self.files) and self.files[0].disparity is not None

    def names(self) -> list[str]:
        return [f.name for f in self.files]

    def _load(self, index: int) -> StereoSample:
        files = self.files[index]
        left = read_rgb(files.left)
        right = read_rgb(files.right)
        if left.shape != right.shape:
            raise DatasetError(f"{self.dataset_name}: left {files.left} {left.shape[:2]} and "
                               f"right {files.right} {right.shape[:2]} differ in size")
        disparity = self._read_gt(files.disparity, left.shape[:2])
        disparity_noc = self._read_gt(files.disparity_noc, left.shape[:2])
        sample = StereoSample(left=left, right=right, disparity=disparity,
                              disparity_noc=disparity_noc, frame_id=files.frame_id,
                              name=files.name)
        return self._finish(sample, files)

    def _read_gt(self, path: Path | None, shape: tuple[int, int]) -> np.ndarray | None:
        if path is None:
            return None
        try:
            disparity = read_disparity(path)
        except ValueError as error:
            raise DatasetError(f"{self.dataset_name}: {error}") from None
        if disparity.shape != tuple(shape):
            raise DatasetError(f"{self.dataset_name}: ground truth {path} is {disparity.shape}, "
                               f"the images are {tuple(shape)}")
        return disparity

    def _finish(self, sample: StereoSample, files: SampleFiles) -> StereoSample:
        """Hook for dataset specifics (calibration, occlusion masks)."""
        return sample
