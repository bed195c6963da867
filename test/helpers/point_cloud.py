"""stereo_depth_point_cloud_node's test inputs: a tiny 8x6 set with hand-computed points, the node
in this process, and a peer publishing its four inputs and collecting its points2."""

from __future__ import annotations

import numpy as np

from helpers.ros import RosTestContext, wait_for
from helpers.ros_messages import image_msg, stamp, stereo_infos
from helpers.ros_nodes import InProcessNode

from stereo_depth_ros.core.camera import StereoRig
from stereo_depth_ros.ros.image_conversion import numpy_to_image

MODULE = "stereo_depth_ros.ros.point_cloud_node"
FRAME = "cam_left_optical_frame"
RIG = StereoRig(fx=100.0, fy=120.0, cx_left=3.5, cx_right=2.5, cy=2.5, baseline_m=0.2,
                width=8, height=6)
MIN_D, MAX_D = 2.0, 63.0


def disparity_values() -> np.ndarray:
    """10 px everywhere (Z = 100 * 0.2 / 10 = 2 m), 40 px at (u=7, v=5) (Z = 0.5 m), the invalid
    marker min - 1 at (0, 0) and NaN at (1, 0)."""
    values = np.full((6, 8), 10.0, np.float32)
    values[5, 7] = 40.0
    values[0, 0] = MIN_D - 1.0
    values[0, 1] = np.nan
    return values


def disparity_msg(values: np.ndarray, when, *, encoding: str = "32FC1", frame_id: str = FRAME):
    from stereo_msgs.msg import DisparityImage
    msg = DisparityImage()
    msg.header.stamp, msg.header.frame_id = when, frame_id
    msg.image = numpy_to_image(np.asarray(values, np.float32), "32FC1", msg.header)
    msg.image.encoding = encoding
    msg.f, msg.t = RIG.fx, RIG.baseline_m
    msg.min_disparity, msg.max_disparity, msg.delta_d = MIN_D, MAX_D, 1.0 / 16
    return msg


def colour_image() -> np.ndarray:
    return np.random.default_rng(7).integers(0, 256, (6, 8, 3), dtype=np.uint8)


def expected_points() -> np.ndarray:
    u, v = np.meshgrid(np.arange(8.0), np.arange(6.0))
    z = np.full((6, 8), 2.0)
    z[5, 7] = 0.5
    points = np.stack([(u - 3.5) * z / 100.0, (v - 2.5) * z / 120.0, z], axis=-1)
    points[0, 0] = points[0, 1] = np.nan
    return points


class InProcessCloudNode(InProcessNode):
    """PointCloudNode in this process, its own context and executor thread."""

    def __init__(self, namespace: str, parameters: dict) -> None:
        from stereo_depth_ros.ros.point_cloud_node import PointCloudNode
        super().__init__(namespace, parameters, node_class=PointCloudNode)


class Peer:
    """Publishers of the node's four inputs in `namespace` and a collector of its points2."""

    def __init__(self, namespace: str, compressed: bool = False) -> None:
        from sensor_msgs.msg import CameraInfo, CompressedImage, Image, PointCloud2
        from stereo_msgs.msg import DisparityImage
        self.ctx = RosTestContext("cloud_peer" + namespace.replace("/", "_"))
        image_type, suffix = (CompressedImage, "/compressed") if compressed else (Image, "")
        self.pubs = [self.ctx.publisher(DisparityImage, f"{namespace}/disparity"),
                     self.ctx.publisher(image_type, f"{namespace}/left/image_rect_color{suffix}"),
                     self.ctx.publisher(CameraInfo, f"{namespace}/left/camera_info"),
                     self.ctx.publisher(CameraInfo, f"{namespace}/right/camera_info")]
        self.points = self.ctx.collect(PointCloud2, f"{namespace}/points2")
        self._sec = 100

    def connect(self, node) -> None:
        for pub in self.pubs:
            wait_for(lambda: pub.get_subscription_count() > 0
                     and node.count_publishers(pub.topic_name) > 0, 20.0,
                     what=f"the node subscribing to {pub.topic_name}")
        topic = self.points.subscription.topic_name
        wait_for(lambda: node.count_subscribers(topic) > 0, 20.0,
                 what=f"the node seeing our {topic} subscription")

    def send(self, disparity=None, image=None, infos=None, info_offset_ns: int = 0):
        """One set, stamped a new whole second (the infos `info_offset_ns` later); returns it."""
        self._sec += 1
        when, info_when = stamp(self._sec), stamp(self._sec, info_offset_ns)
        left, right = infos or stereo_infos(RIG, info_when, FRAME)
        left.header.stamp = right.header.stamp = info_when
        image = image if image is not None else image_msg(colour_image(), "bgr8", when, FRAME)
        image.header.stamp = when
        disparity = disparity if disparity is not None else disparity_msg(disparity_values(),
                                                                          when)
        disparity.header.stamp = when
        for pub, msg in zip(self.pubs, (disparity, image, left, right)):
            pub.publish(msg)
        return when

    def cloud(self, timeout: float = 30.0, **kwargs):
        """Send sets (kwargs as `send`) every 0.5 s until the cloud of one of them arrives (a
        best-effort subscription may miss the first set right after discovery)."""
        sent = []

        def arrived():
            sent.append(self.send(**kwargs))
            try:
                return self.points.wait_for(
                    lambda m: any(m.header.stamp == when for when in sent), 0.5)
            except AssertionError:
                return None
        return wait_for(arrived, timeout, interval=0.0, what="a cloud of the sets sent")

    def close(self) -> None:
        self.ctx.close()
