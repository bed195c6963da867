"""The node's topic names (relative, remappable; image_pipeline's names), defined once.

Used by the node, the replay/dump tools, the launch files' RViz view and the tests.
"""

from __future__ import annotations

LEFT_IMAGE = "left/image_raw"
RIGHT_IMAGE = "right/image_raw"
LEFT_INFO = "left/camera_info"
RIGHT_INFO = "right/camera_info"
INPUTS = (LEFT_IMAGE, RIGHT_IMAGE, LEFT_INFO, RIGHT_INFO)
"""The four synchronised inputs, in the order the synchroniser hands them over."""

COMPRESSED_SUFFIX = "/compressed"
"""image_transport's "compressed" topic of an image topic (sensor_msgs/CompressedImage)."""


def inputs(image_transport: str = "raw") -> tuple[str, str, str, str]:
    """The four input topics for an image transport ("raw" or "compressed")."""
    suffix = COMPRESSED_SUFFIX if image_transport == "compressed" else ""
    return (LEFT_IMAGE + suffix, RIGHT_IMAGE + suffix, LEFT_INFO, RIGHT_INFO)


NODE_INPUTS = {"left_image": LEFT_IMAGE, "right_image": RIGHT_IMAGE,
               "left_info": LEFT_INFO, "right_info": RIGHT_INFO}
"""Input topic by the role of the message in a stereo frame (bags.ROLES)."""

DISPARITY = "disparity"                       # stereo_msgs/DisparityImage
DEPTH = "depth/image_rect"                    # sensor_msgs/Image 32FC1 metres (REP 118)
DEPTH_INFO = "depth/camera_info"              # the rectified (scaled) camera of depth
POINTS = "points2"                            # organized sensor_msgs/PointCloud2
LEFT_RECT = "matcher/left/image_rect"         # the rectified (scaled) left image the matcher saw;
#                                               not left/image_rect: that is an input name
CONFIDENCE = "disparity/confidence"           # 32FC1 in [0, 1]
DISPARITY_COLOR = "disparity/image_color"     # bgr8 colour map for RViz
DEPTH_UNCERTAINTY = "depth/uncertainty"       # 32FC1 sigma_Z metres (PSMNet only, see README)
OUTPUTS = (DISPARITY, DEPTH, DEPTH_INFO, POINTS, LEFT_RECT, CONFIDENCE, DISPARITY_COLOR)
DIAGNOSTICS = "/diagnostics"

# stereo_depth_point_cloud_node (stereo_image_proc's point_cloud_node): disparity + the rectified
# left colour image + both camera_infos -> POINTS.
LEFT_RECT_COLOR = "left/image_rect_color"     # sensor_msgs/Image, colours of the cloud


def point_cloud_inputs(image_transport: str = "raw") -> tuple[str, str, str, str]:
    """The point cloud node's four inputs, in the order its synchroniser hands them over (the
    disparity first: it keys the set), for an image transport ("raw" or "compressed")."""
    suffix = COMPRESSED_SUFFIX if image_transport == "compressed" else ""
    return (DISPARITY, LEFT_RECT_COLOR + suffix, LEFT_INFO, RIGHT_INFO)


# KITTI test bench: LiDAR ground truth and the live depth error (stereo_depth_kitti2bag writes the
# first four, stereo_depth_replay --preset kitti2bag plays them, stereo_depth_eval --live reads
# them and publishes DEPTH_ERROR).
LIDAR_POINTS = "velodyne_points"              # sensor_msgs/PointCloud2 x, y, z, intensity
TF_STATIC = "/tf_static"                      # tf2_msgs/TFMessage, transient local (tf2's name)
IMU = "oxts/imu"                              # sensor_msgs/Imu (KITTI OXTS)
GPS_FIX = "oxts/gps/fix"                      # sensor_msgs/NavSatFix (KITTI OXTS)
DEPTH_ERROR = "depth_error"                   # diagnostic_msgs/DiagnosticArray per scan

# Frame ids (REP 103 / REP 105 style), defined once.
CAMERA_FRAME = "camera_left_optical_frame"    # the rectified left camera (x right, y down, z fwd)
LIDAR_FRAME = "velodyne"                      # the Velodyne (x forward, y left, z up)
IMU_FRAME = "imu_link"                        # the OXTS unit (x forward, y left, z up)
