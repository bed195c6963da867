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
LEFT_RECT = "left/image_rect"                 # the rectified left image the matcher saw
CONFIDENCE = "disparity/confidence"           # 32FC1 in [0, 1]
DISPARITY_COLOR = "disparity/image_color"     # bgr8 colour map for RViz
OUTPUTS = (DISPARITY, DEPTH, DEPTH_INFO, POINTS, LEFT_RECT, CONFIDENCE, DISPARITY_COLOR)
DIAGNOSTICS = "/diagnostics"
