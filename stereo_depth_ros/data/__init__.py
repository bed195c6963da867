"""Dataset readers: `make_dataset(name, root, **options)` -> a sequence of StereoSample."""

from __future__ import annotations

from pathlib import Path

from stereo_depth_ros.data.samples import (
    DatasetError, StereoDataset, StereoSample, index_by_frame_id, pair_by_frame_id)

DATASET_NAMES = ("kitti2015", "kitti2012", "middlebury", "eth3d", "sceneflow", "synthetic")

__all__ = ["DATASET_NAMES", "DatasetError", "StereoDataset", "StereoSample",
           "dataset_from_options", "index_by_frame_id", "make_dataset", "pair_by_frame_id"]


def make_dataset(name: str, root: str | Path | None = None, **options) -> StereoDataset:
    """Build a reader by name; options go to its constructor.

    kitti2015/kitti2012: split. middlebury/eth3d: gt_root. sceneflow: passes, subset.
    synthetic (root unused): count, seed, height, width, max_disparity, texture_cell_px, noise_std.
    """
    if name == "synthetic":
        from stereo_depth_ros.data.synthetic import SyntheticDataset
        return SyntheticDataset(**options)
    if name not in DATASET_NAMES:
        raise DatasetError(f"unknown dataset {name!r}: expected one of {', '.join(DATASET_NAMES)}")
    if root is None:
        raise DatasetError(f"{name}: a root directory is required")
    if name == "kitti2015":
        from stereo_depth_ros.data.kitti import Kitti2015
        return Kitti2015(root, **options)
    if name == "kitti2012":
        from stereo_depth_ros.data.kitti import Kitti2012
        return Kitti2012(root, **options)
    if name == "middlebury":
        from stereo_depth_ros.data.middlebury import Middlebury
        return Middlebury(root, **options)
    if name == "eth3d":
        from stereo_depth_ros.data.eth3d import Eth3d
        return Eth3d(root, **options)
    from stereo_depth_ros.data.sceneflow import SceneFlow
    return SceneFlow(root, **options)


def dataset_from_options(options, *, seed: int, size: tuple[int, int], max_disparity: float,
                         error: type[Exception] = DatasetError) -> StereoDataset:
    """The dataset a tool's dataset options select (`tools._cli.add_dataset_arguments`: any
    object with `dataset`, `root`, `split`, `gt_root`, `subset`, `passes` and `count`).

    seed, size (height, width) and max_disparity (px) configure synthetic scenes; a missing
    root for a dataset on disk raises `error` (the caller's user-error class).
    """
    if options.dataset == "synthetic":
        height, width = size
        return make_dataset("synthetic", count=options.count, seed=seed, height=height,
                            width=width, max_disparity=max_disparity)
    if options.root is None:
        raise error(f"--root is required for --dataset {options.dataset}")
    extra: dict = {}
    if options.dataset in ("kitti2015", "kitti2012"):
        extra["split"] = options.split
    elif options.dataset == "sceneflow":
        extra.update(passes=options.passes, subset=options.subset)
    elif options.dataset in ("middlebury", "eth3d") and options.gt_root is not None:
        extra["gt_root"] = options.gt_root
    return make_dataset(options.dataset, options.root, **extra)
