"""ROS messages for the node tests: builders (`stamp`, `image_msg`, `camera_info_msg`,
`stereo_infos`) and readers (`as_array`, stamps in ns, the drop counts and statuses of
/diagnostics). Message classes are imported when called: no ROS import at collection."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from helpers.ros import Collector


def msg_type(name: str):
    """'sensor_msgs/Image' -> the rclpy message class."""
    import importlib
    package, type_name = name.split("/")
    return getattr(importlib.import_module(f"{package}.msg"), type_name)


def as_array(image) -> np.ndarray:
    """Array of a (dense) Image message as the node publishes them."""
    dtype = np.float32 if image.encoding == "32FC1" else np.uint8
    channels = {"bgr8": 3, "rgb8": 3}.get(image.encoding, 1)
    values = np.frombuffer(image.data, dtype=dtype)
    shape = (image.height, image.width) + ((channels,) if channels > 1 else ())
    return values.reshape(shape)


def time_ns(when) -> int:
    return when.sec * 1_000_000_000 + when.nanosec


def stamp_ns(msg) -> int:
    return time_ns(msg.header.stamp)


def status_drops(status: dict[str, str]) -> dict[str, int]:
    return {k[len("dropped."):]: int(v) for k, v in status.items() if k.startswith("dropped.")}


def stamp(sec: int, nanosec: int = 0):
    from builtin_interfaces.msg import Time
    return Time(sec=int(sec), nanosec=int(nanosec))


def image_msg(array: np.ndarray, encoding: str, stamp_msg, frame_id: str = "",
              pad: int = 0):
    """Image message from an array, optionally with `pad` extra bytes per row (step padding)."""
    from sensor_msgs.msg import Image
    arr = np.ascontiguousarray(array)
    height, width = arr.shape[:2]
    row = arr.reshape(height, -1).view(np.uint8).reshape(height, -1)
    if pad:
        row = np.concatenate([row, np.full((height, pad), 0xAB, np.uint8)], axis=1)
    msg = Image()
    msg.header.stamp = stamp_msg
    msg.header.frame_id = frame_id
    msg.height, msg.width = height, width
    msg.encoding = encoding
    msg.is_bigendian = 0
    msg.step = int(row.shape[1])
    msg.data = row.tobytes()
    return msg


def camera_info_msg(K, D, R, P, width: int, height: int, stamp_msg, frame_id: str,
                    distortion_model: str = "plumb_bob"):
    from sensor_msgs.msg import CameraInfo
    info = CameraInfo()
    info.header.stamp = stamp_msg
    info.header.frame_id = frame_id
    info.width, info.height = int(width), int(height)
    info.distortion_model = distortion_model
    info.k = np.asarray(K, np.float64).ravel()
    info.d = [float(v) for v in np.asarray(D, np.float64).ravel()]
    info.r = np.asarray(R, np.float64).ravel()
    info.p = np.asarray(P, np.float64).ravel()
    return info


def stereo_infos(rig, stamp_msg, frame_id: str = "left_camera_optical_frame"):
    """Rectified CameraInfo pair of a StereoRig (D = 0, R = I, K = P[:3,:3], right Tx = -fx*B)."""
    p_left, p_right = rig.projection_matrices()
    left = camera_info_msg(p_left[:, :3], np.zeros(5), np.eye(3), p_left, rig.width,
                           rig.height, stamp_msg, frame_id)
    right = camera_info_msg(p_right[:, :3], np.zeros(5), np.eye(3), p_right, rig.width,
                            rig.height, stamp_msg, frame_id.replace("left", "right"))
    return left, right


# ---------------------------------------------------------------------------- parameters, statuses


def statuses_of(diagnostics: Collector, hardware_id: str) -> list[tuple[int, dict[str, str]]]:
    """(header stamp ns, {key: value}) of every /diagnostics status a node published, in order."""
    from stereo_depth_ros.ros.diagnostics import key_values_to_dict
    return [(stamp_ns(array), key_values_to_dict(status))
            for array in diagnostics.snapshot() for status in array.status
            if status.hardware_id == hardware_id]
