"""Evaluation against ground truth, without ROS: `offline` scores a matcher (or saved
disparities) on a dataset (stereo_depth_eval); `live_report` writes up the node's depth checked
against LiDAR scans while a bag plays (stereo_depth_eval --live; the checking itself is
`core.lidar_eval`)."""
