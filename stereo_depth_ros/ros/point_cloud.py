"""The point cloud node's per-set work: DisparityImage + left image + camera_infos -> PointCloud2.

Messages become arrays here (ros/messages, ros/image_conversion), the geometry is pure
(`core.geometry.disparity_image_to_points`), and the cloud is built by `messages.make_pointcloud2`
in stereo_image_proc's two layouts. Every problem raises FrameDropped with a drop_reasons key and
a message naming the topic, the field and the value.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from sensor_msgs.msg import CameraInfo, CompressedImage, Image, PointCloud2
from std_msgs.msg import Header
from stereo_msgs.msg import DisparityImage

from stereo_depth_ros.core.camera import StereoRig
from stereo_depth_ros.core.geometry import disparity_image_to_points
from stereo_depth_ros.drop_reasons import (BAD_COMPRESSED_DATA, BAD_IMAGE_DATA,
                                           INFO_SIZE_MISMATCH, SIZE_MISMATCH,
                                           UNSUPPORTED_ENCODING, FrameDropped)
from stereo_depth_ros.ros.image_conversion import (CompressedDataError, ImageDataError,
                                                   UnsupportedEncodingError, compressed_to_numpy,
                                                   image_to_numpy, to_matcher_input)
from stereo_depth_ros.ros.messages import (disparity_image_values, make_pointcloud2,
                                           rectified_rig)

RESIZE_SLACK_PX = 1.0
"""A disparity image smaller or larger than the camera_info is taken as the camera image resized
(the depth node's input_scale) when its other side matches the same scale within this (px)."""


@dataclass(frozen=True)
class InputTopics:
    """The four inputs' names as the logs give them (resolved, remapped)."""

    disparity: str = "disparity"
    image: str = "left/image_rect_color"
    left_info: str = "left/camera_info"
    right_info: str = "right/camera_info"

    def all(self) -> tuple[str, str, str, str]:
        """The four names in the synchroniser's order."""
        return (self.disparity, self.image, self.left_info, self.right_info)


@dataclass(frozen=True)
class CloudGeometry:
    """The rectified rig at the disparity's resolution; `depth_note` says why it gives no metric
    points ("" when it does), `scaled_from` the camera_info size when it was resized, else None."""

    rig: StereoRig
    depth_note: str = ""
    scaled_from: tuple[int, int] | None = None


def disparity_values(msg: DisparityImage, topic: str) -> np.ndarray:
    """(H, W) float32 values of a DisparityImage; FrameDropped naming the field otherwise."""
    try:
        return disparity_image_values(msg)
    except UnsupportedEncodingError as error:
        raise FrameDropped(UNSUPPORTED_ENCODING, f"{topic}: {error}") from None
    except ImageDataError as error:
        raise FrameDropped(BAD_IMAGE_DATA, f"{topic} image: {error}") from None


def cloud_geometry(left_info: CameraInfo, right_info: CameraInfo, width: int, height: int,
                   names: InputTopics = InputTopics()) -> CloudGeometry:
    """The rig of the camera_info pair for a width x height disparity image.

    A disparity at another size than the camera_info (binning and ROI applied) is accepted when
    it is the camera image resized by one factor (within RESIZE_SLACK_PX), as the depth node
    publishes it with input_scale: the rig is scaled to it. FrameDropped (CalibrationError, or
    camera_info_size_mismatch naming both sizes) otherwise.
    """
    rig, note = rectified_rig(left_info, right_info, names.left_info, names.right_info)
    if (rig.width, rig.height) == (width, height):
        return CloudGeometry(rig, note)
    scale = width / rig.width
    if abs(rig.height * scale - height) > RESIZE_SLACK_PX:
        raise FrameDropped(INFO_SIZE_MISMATCH, (
            f"{names.disparity} is {width}x{height} but {names.left_info} is {rig.width}x"
            f"{rig.height}: not the camera image resized by one factor (x {scale:.4g}, "
            f"y {height / rig.height:.4g}); the disparity must come from this camera pair"))
    return CloudGeometry(rig.scaled_to(width, height), note, (rig.width, rig.height))


def cloud_colours(msg: Image | CompressedImage, shape: tuple[int, int],
                  names: InputTopics = InputTopics()) -> np.ndarray:
    """(H, W, 3) uint8 RGB or (H, W) mono of the left image for the cloud's rgb field (every
    camera encoding: mono, colour, Bayer, YUV, 16-bit); FrameDropped naming the problem, or
    size_mismatch when it is not the disparity's `shape` (H, W)."""
    topic = names.image
    try:
        if isinstance(msg, CompressedImage):
            image, encoding = compressed_to_numpy(msg)
        else:
            image, encoding = image_to_numpy(msg), msg.encoding
        colours = to_matcher_input(image, encoding)
    except UnsupportedEncodingError as error:
        raise FrameDropped(UNSUPPORTED_ENCODING, (
            f"{topic}: {error}; use_color takes the colours from a camera image (set use_color "
            "false for a cloud without rgb)")) from None
    except CompressedDataError as error:
        raise FrameDropped(BAD_COMPRESSED_DATA, f"{topic}: {error}") from None
    except ImageDataError as error:
        raise FrameDropped(BAD_IMAGE_DATA, f"{topic}: {error}") from None
    if colours.shape[:2] != tuple(shape):
        raise FrameDropped(SIZE_MISMATCH, (
            f"{topic} is {colours.shape[1]}x{colours.shape[0]} but {names.disparity} is "
            f"{shape[1]}x{shape[0]}: the colours must come from the image the disparity was "
            "computed on"))
    return colours


def cloud_header(disparity: DisparityImage, left_info: CameraInfo, image) -> Header:
    """The disparity's header (stereo_image_proc's); an empty frame_id is taken from the left
    camera_info, then from the image."""
    frame_id = (disparity.header.frame_id or left_info.header.frame_id
                or image.header.frame_id)
    return Header(stamp=disparity.header.stamp, frame_id=frame_id)


def make_cloud(disparity: DisparityImage, values: np.ndarray, geometry: CloudGeometry,
               header: Header, colours: np.ndarray | None, *, padded: bool) -> PointCloud2:
    """The organized cloud of one set: NaN points where the disparity is invalid or the rig
    gives no metric depth; rgb when `colours` is given; stereo_image_proc's aligned layout
    (`padded`) or the packed one."""
    points = disparity_image_to_points(values, geometry.rig, disparity.min_disparity,
                                       disparity.max_disparity)
    return make_pointcloud2(points, header, colours, padded=padded)
