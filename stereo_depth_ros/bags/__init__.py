"""Bags without ROS: reading ROS 1/ROS 2 bags as ROS 2 CDR (`reader`) and fixing kitti2bag's
camera_info and stamps (`kitti2bag_fix`). The player that publishes them is `ros.bag_player`."""

from stereo_depth_ros.bags.kitti2bag_fix import (PRESETS, ROLES, BagError, KittiStereoGrouper,
                                                 Preset)
from stereo_depth_ros.bags.reader import BagSource, Outgoing, header_stamp_ns

__all__ = ["PRESETS", "ROLES", "BagError", "BagSource", "KittiStereoGrouper", "Outgoing",
           "Preset", "header_stamp_ns"]
