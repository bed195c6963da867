"""The bags the replay tests play: a kitti2bag-style ROS 1 bag, a ROS 2 bag (sqlite3) of a
synthetic raw drive, each 3 frames of 96x192 at 8 px, and an mcap bag of the LiDAR test bench's
3-frame drive."""

from __future__ import annotations

from pathlib import Path

from helpers.kitti import make_kitti2bag_ros1, make_raw_drive
from helpers.kitti_lidar import make_lidar_drive
from stereo_depth_ros.bags.bag_writer import convert


SIZE = (96, 192)
SHIFT = 8
NODE_INPUTS = {"left/image_raw", "right/image_raw", "left/camera_info", "right/camera_info"}


def ros1_bag_in(folder: Path) -> Path:
    return make_kitti2bag_ros1(folder / "kitti.bag", n_frames=3, size=SIZE, shift=SHIFT)


def ros2_bag_in(root: Path) -> Path:
    drive = make_raw_drive(root / "kitti", n_frames=3, size=SIZE, shift=SHIFT)
    return Path(convert(drive, root / "bag", storage="sqlite3")["bag"])


def lidar_bag_in(root: Path):
    """(the LiDAR drive, its mcap bag)."""
    scene = make_lidar_drive(root / "kitti", n_frames=3, per_band=10)
    return scene, Path(convert(scene.drive, root / "bag", storage="mcap")["bag"])
