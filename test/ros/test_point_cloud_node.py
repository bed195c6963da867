"""stereo_depth_point_cloud_node (stereo_image_proc's point_cloud_node): disparity + left image +
camera_infos -> points2, values read back.

The message conversions first (camera_info pair -> rig, DisparityImage -> values, colours), then
the node in this process fed a tiny 8x6 set over real DDS (XYZ as hand-computed, colours, NaN for
invalid disparities, stereo_image_proc's four layouts, approximate sync), then the node as a
subprocess fed bad sets (a specific log line and a counted drop each, and it keeps publishing).
"""

from __future__ import annotations

import math
import re
from pathlib import Path

import numpy as np
import pytest

rclpy = pytest.importorskip("rclpy")

from rclpy.parameter import Parameter  # noqa: E402
from ros_helpers import (NodeProcess, RosTestContext, _SpunNode,  # noqa: E402
                         image_msg, stamp, stereo_infos, wait_for)

from stereo_depth_ros import drop_reasons  # noqa: E402
from stereo_depth_ros.core.camera import NON_POSITIVE_FOCAL_LENGTH, StereoRig  # noqa: E402
from stereo_depth_ros.drop_reasons import FrameDropped  # noqa: E402
from stereo_depth_ros.ros.image_conversion import (ImageDataError,  # noqa: E402
                                                   UnsupportedEncodingError, numpy_to_image)
from stereo_depth_ros.ros.messages import (CalibrationError, disparity_image_values,  # noqa: E402
                                           pointcloud2_to_numpy, rectified_rig, unpack_rgb)
from stereo_depth_ros.ros.point_cloud import cloud_colours, cloud_geometry  # noqa: E402

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


# ------------------------------------------------------------------------ messages -> arrays
def test_rig_from_the_two_p_matrices_alone():
    left, right = stereo_infos(RIG, stamp(1))
    left.k = np.zeros(9)                       # a rectified stream that carries only P
    left.d = [0.1, 0.0, 0.0, 0.0, 0.0]         # the raw camera's D: not used for the cloud
    rig, note = rectified_rig(left, right)
    assert note == "" and rig == RIG


def test_rig_honours_binning():
    left, right = stereo_infos(RIG.scaled(2.0), stamp(1))
    for info in (left, right):
        info.binning_x = info.binning_y = 2
    rig, _ = rectified_rig(left, right)
    assert (rig.width, rig.height, rig.fx, rig.cx_left) == (8, 6, 100.0, 3.5)


def test_all_zero_camera_info_gives_a_rig_without_metric_depth_and_says_why():
    """stereo_image_proc's point cloud fixture publishes CameraInfos with only the size set."""
    from sensor_msgs.msg import CameraInfo
    info = CameraInfo(width=8, height=6)
    rig, note = rectified_rig(info, info, "/l/camera_info", "/r/camera_info")
    assert rig.depth_problem == NON_POSITIVE_FOCAL_LENGTH
    assert note == ("/l/camera_info P[0,0]=0.0, P[1,1]=0.0: a focal length must be > 0 for "
                    "metric depth; P is all zero: the camera is not calibrated")


@pytest.mark.parametrize("change, reason, text", [
    (lambda left, right: left.p.__setitem__(5, math.nan), drop_reasons.NAN_IN_CALIBRATION,
     "nan in left/camera_info P[1,1]"),
    (lambda left, right: setattr(right, "width", 10), drop_reasons.INFO_SIZE_MISMATCH,
     "camera_info sizes differ: left/camera_info is 8x6, right/camera_info is 10x6"),
    (lambda left, right: right.p.__setitem__(0, 140.0), drop_reasons.INVALID_CALIBRATION,
     "differ in fx"),
])
def test_bad_camera_info_names_the_field(change, reason, text):
    left, right = stereo_infos(RIG, stamp(1))
    change(left, right)
    with pytest.raises(CalibrationError, match=re.escape(text)) as caught:
        rectified_rig(left, right)
    assert caught.value.reason == reason


def test_disparity_values_accept_32fc1_and_an_empty_encoding_only():
    values = disparity_values()
    for encoding in ("32FC1", ""):
        read = disparity_image_values(disparity_msg(values, stamp(1), encoding=encoding))
        np.testing.assert_array_equal(read, values)
    with pytest.raises(UnsupportedEncodingError, match="'16UC1': a DisparityImage carries"):
        disparity_image_values(disparity_msg(values, stamp(1), encoding="16UC1"))
    short = disparity_msg(values, stamp(1))
    short.image.data = bytes(short.image.data)[:-4]
    with pytest.raises(ImageDataError, match="shorter than step"):
        disparity_image_values(short)


def test_a_disparity_at_a_resized_scale_gets_the_scaled_rig():
    """The depth node publishes with input_scale: a half-size disparity of a 16x12 camera."""
    left, right = stereo_infos(RIG.scaled(2.0), stamp(1))
    geometry = cloud_geometry(left, right, 8, 6)
    assert geometry.scaled_from == (16, 12) and geometry.rig == RIG
    with pytest.raises(FrameDropped, match="disparity is 8x3 but left/camera_info is 16x12") \
            as caught:
        cloud_geometry(left, right, 8, 3)
    assert caught.value.reason == drop_reasons.INFO_SIZE_MISMATCH


def test_colours_from_camera_encodings_and_the_problems_named():
    bgr = colour_image()
    np.testing.assert_array_equal(cloud_colours(image_msg(bgr, "bgr8", stamp(1)), (6, 8)),
                                  bgr[..., ::-1])
    assert cloud_colours(image_msg(bgr[..., 0], "mono8", stamp(1)), (6, 8)).shape == (6, 8)
    for msg, reason, text in (
            (image_msg(bgr, "bgr8", stamp(1)), drop_reasons.SIZE_MISMATCH,
             "left/image_rect_color is 8x6 but disparity is 9x6"),
            (image_msg(np.ones((6, 8), np.float32), "32FC1", stamp(1)),
             drop_reasons.UNSUPPORTED_ENCODING, "set use_color false")):
        with pytest.raises(FrameDropped, match=text) as caught:
            cloud_colours(msg, (6, 9) if reason == drop_reasons.SIZE_MISMATCH else (6, 8))
        assert caught.value.reason == reason


# ------------------------------------------------------------------------ node, in process
class InProcessCloudNode(_SpunNode):
    """PointCloudNode in this process, its own context and executor thread."""

    def __init__(self, namespace: str, parameters: dict) -> None:
        from rclpy.context import Context
        from stereo_depth_ros.ros.point_cloud_node import PointCloudNode

        self.context = Context()
        rclpy.init(context=self.context)
        try:
            self.node = PointCloudNode(
                context=self.context, namespace=namespace,
                parameter_overrides=[Parameter(k, value=v) for k, v in parameters.items()])
        except BaseException:
            rclpy.try_shutdown(context=self.context)
            raise
        self._start_spinning()


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


@pytest.fixture
def cloud_node(request):
    """(node, peer) factory; everything started is stopped afterwards."""
    made = []

    def factory(namespace: str, **parameters):
        node = InProcessCloudNode(namespace, parameters)
        made.append(node)
        peer = Peer(namespace, parameters.get("image_transport") == "compressed")
        made.append(peer)
        peer.connect(node.node)
        return node.node, peer

    yield factory
    for thing in reversed(made):
        thing.close()


def xyz(cloud: np.ndarray) -> np.ndarray:
    return np.stack([cloud["x"], cloud["y"], cloud["z"]], axis=-1)


@pytest.mark.ros
def test_cloud_values_colours_and_nan_for_invalid_disparities(cloud_node):
    node, peer = cloud_node("/pc_values")
    msg = peer.cloud()
    assert (msg.header.frame_id, msg.height, msg.width, msg.is_dense) == (FRAME, 6, 8, False)
    # stereo_image_proc's default layout: x y z at 0/4/8, rgb at 16, point_step 32
    assert msg.point_step == 32 and msg.row_step == 32 * 8
    assert [(f.name, f.offset, f.datatype, f.count) for f in msg.fields] == [
        ("x", 0, 7, 1), ("y", 4, 7, 1), ("z", 8, 7, 1), ("rgb", 16, 7, 1)]
    cloud = pointcloud2_to_numpy(msg)
    np.testing.assert_allclose(xyz(cloud), expected_points(), rtol=1e-6, equal_nan=True)
    assert np.isnan(xyz(cloud)[0, :2]).all()           # the min - 1 marker and NaN
    np.testing.assert_array_equal(unpack_rgb(cloud["rgb"]), colour_image()[..., ::-1])


@pytest.mark.ros
def test_the_four_layouts_of_stereo_image_proc_live(cloud_node):
    node, peer = cloud_node("/pc_layouts")
    layouts = {(False, True): (32, ["x", "y", "z", "rgb"], [0, 4, 8, 16]),
               (False, False): (16, ["x", "y", "z"], [0, 4, 8]),
               (True, True): (16, ["x", "y", "z", "rgb"], [0, 4, 8, 12]),
               (True, False): (12, ["x", "y", "z"], [0, 4, 8])}
    for (avoid_padding, use_color), (step, names, offsets) in layouts.items():
        results = node.set_parameters([Parameter("avoid_point_cloud_padding", value=avoid_padding),
                                       Parameter("use_color", value=use_color)])
        assert all(result.successful for result in results)
        msg = peer.cloud()
        assert msg.point_step == step, (avoid_padding, use_color)
        assert [f.name for f in msg.fields] == names and [f.offset for f in msg.fields] == offsets
        np.testing.assert_allclose(xyz(pointcloud2_to_numpy(msg)), expected_points(), rtol=1e-6,
                                   equal_nan=True)
    refused = node.set_parameters([Parameter("queue_size", value=9)])[0]
    assert not refused.successful                           # read-only, as in config.py


@pytest.mark.ros
def test_approximate_sync_pairs_nearby_stamps_and_keeps_the_disparity_stamp(cloud_node):
    node, peer = cloud_node("/pc_approx", approximate_sync=True,
                            approximate_sync_tolerance_seconds=0.02)
    assert node.get_parameter("queue_size").value == 5        # stereo_image_proc's default
    msg = peer.cloud(info_offset_ns=5_000_000)                  # infos 5 ms after the images
    assert np.isfinite(xyz(pointcloud2_to_numpy(msg))[3, 3]).all()


@pytest.mark.ros
def test_colours_from_a_compressed_image_with_image_transport_compressed(cloud_node):
    import cv2
    from sensor_msgs.msg import CompressedImage
    namespace = "/pc_png"
    node, peer = cloud_node(namespace, image_transport="compressed")
    png = CompressedImage(format="bgr8; png compressed bgr8",
                          data=cv2.imencode(".png", colour_image())[1].tobytes())
    png.header.frame_id = FRAME
    cloud = pointcloud2_to_numpy(peer.cloud(image=png))
    np.testing.assert_array_equal(unpack_rgb(cloud["rgb"]), colour_image()[..., ::-1])
    np.testing.assert_allclose(xyz(cloud), expected_points(), rtol=1e-6, equal_nan=True)


INPUTS = ("disparity", "left/image_rect_color", "left/camera_info", "right/camera_info")


@pytest.mark.ros
@pytest.mark.parametrize("namespace, parameters, reliability", [
    ("/pc_qos0", {}, dict.fromkeys(INPUTS, "BEST_EFFORT")),            # REP 2003 sensor data
    ("/pc_qos1", {"use_system_default_qos": True}, dict.fromkeys(INPUTS, "SYSTEM_DEFAULT")),
    ("/pc_qos2",                                   # stereo_image_proc's own test does this
     {"qos_overrides./pc_qos2/left/image_rect_color.subscription.reliability": "reliable"},
     {**dict.fromkeys(INPUTS, "BEST_EFFORT"), "left/image_rect_color": "RELIABLE"}),
])
def test_input_qos_follows_use_system_default_qos_and_qos_overrides(
        cloud_node, namespace, parameters, reliability):
    from rclpy.qos import ReliabilityPolicy
    node, _ = cloud_node(namespace, **parameters)
    requested = {sub.topic_name: sub.qos_profile.reliability for sub in node.subscriptions}
    assert requested == {f"{namespace}/{topic}": ReliabilityPolicy[name]
                         for topic, name in reliability.items()}


# ------------------------------------------------------------------------ node, subprocess
@pytest.mark.ros
def test_bad_sets_are_logged_and_counted_and_the_node_keeps_publishing():
    from diagnostic_msgs.msg import DiagnosticArray
    from stereo_depth_ros.ros.diagnostics import key_values_to_dict

    namespace = "/pc_bad"
    with NodeProcess(["-r", f"__ns:={namespace}", "-p", "diagnostics_period_seconds:=0.2"],
                     module=MODULE) as process:
        process.wait_for_output(r"ready: /pc_bad/points2 from /pc_bad/disparity")
        peer = Peer(namespace)
        try:
            diagnostics = peer.ctx.collect(DiagnosticArray, "/diagnostics")
            wait_for(lambda: all(p.get_subscription_count() for p in peer.pubs), 20.0,
                     what="the node subscribing")

            def status() -> dict:
                for array in reversed(diagnostics.snapshot()):
                    for item in array.status:
                        if item.hardware_id == f"{namespace}/point_cloud_node":
                            return key_values_to_dict(item)
                return {}

            wait_for(lambda: status().get(f"subscribers.{namespace}/points2") == "1", 20.0,
                     what="the node seeing our points2 subscription")
            wide = image_msg(np.zeros((6, 10, 3), np.uint8), "bgr8", stamp(1), FRAME)
            nan_left, right = stereo_infos(RIG, stamp(1), FRAME)
            nan_left.p = [math.nan] + list(nan_left.p)[1:]
            cases = [
                (dict(image=wide), "size_mismatch",
                 r"/pc_bad/left/image_rect_color is 10x6 but /pc_bad/disparity is 8x6: the "
                 r"colours must come from the image the disparity was computed on -> set "
                 r"dropped \(dropped.size_mismatch\)"),
                (dict(disparity=disparity_msg(disparity_values(), stamp(1), encoding="16UC1")),
                 "unsupported_encoding",
                 r"/pc_bad/disparity: disparity image encoding '16UC1': a DisparityImage "
                 r"carries 32FC1 -> set dropped \(dropped.unsupported_encoding\)"),
                (dict(infos=(nan_left, right)), "nan_in_calibration",
                 r"nan in /pc_bad/left/camera_info P\[0,0\]: the calibration must be finite "
                 r"-> set dropped \(dropped.nan_in_calibration\)"),
            ]
            for kwargs, reason, pattern in cases:
                line = len(process.lines())

                def logged():
                    peer.send(**kwargs)
                    try:
                        return process.wait_for_output(pattern, 0.5, start_line=line)
                    except AssertionError:
                        return None
                wait_for(logged, 30.0, interval=0.0, what=f"the {reason} line")
                wait_for(lambda: int(status().get(f"dropped.{reason}", 0)) >= 1, 20.0,
                         what=f"dropped.{reason} in /diagnostics")
            # stereo_image_proc's fixture camera_info (only the size): NaN points, counted, WARN
            from sensor_msgs.msg import CameraInfo
            line = len(process.lines())
            msg = peer.cloud(infos=(CameraInfo(width=8, height=6), CameraInfo(width=8, height=6)))
            cloud = pointcloud2_to_numpy(msg)
            assert np.isnan(xyz(cloud)).all() and cloud.shape == (6, 8)
            process.wait_for_output(r"WARN.*points2 carries NaN for every pixel "
                                    r"\(depth_unavailable.non_positive_focal_length\)",
                                    start_line=line)
            wait_for(lambda: int(status().get(
                "depth_unavailable.non_positive_focal_length", 0)) >= 1, 20.0,
                what="the NaN cloud counted")
            # and a good set afterwards comes out with its values
            msg = peer.cloud()
            np.testing.assert_allclose(xyz(pointcloud2_to_numpy(msg)), expected_points(),
                                       rtol=1e-6, equal_nan=True)
            final = status()
            drops = {key: int(value) for key, value in final.items()
                     if key.startswith("dropped.")}
            assert set(drops) == {f"dropped.{reason}" for _, reason, _ in cases}
            assert int(final["dropped_total"]) == sum(drops.values())
        finally:
            peer.close()
        assert process.stop() == 0


def test_help_lists_the_point_cloud_parameters_only():
    import subprocess
    import sys
    result = subprocess.run([sys.executable, "-m", MODULE, "--help"], capture_output=True,
                            text=True, timeout=60)
    assert result.returncode == 0
    assert result.stdout.startswith("usage: stereo_depth_point_cloud_node ")
    for name in ("use_color", "avoid_point_cloud_padding", "approximate_sync", "queue_size",
                 "use_system_default_qos", "image_transport"):
        assert f"\n  {name} (default " in result.stdout
    assert "backend" not in result.stdout and "input_scale" not in result.stdout
    assert "config/stereo_depth.yaml" not in result.stdout       # the depth node's file
    setup = (Path(__file__).resolve().parents[1] / "setup.py").read_text()
    assert '"stereo_depth_point_cloud_node = stereo_depth_ros.ros.point_cloud_node:main"' in setup


@pytest.mark.ros
@pytest.mark.slow
def test_behind_the_depth_node_it_rebuilds_the_depth_nodes_own_cloud(cloud_node):
    """stereo_depth_node (sgbm) publishes disparity and points2 of a verged pair (cx_left -
    cx_right = 3 px, fx != fy); this node, fed that disparity, gives the same points and
    colours: the published disparity's offset and inclusive range are read as they are meant."""
    from sensor_msgs.msg import Image, PointCloud2
    from stereo_depth_ros.core.synthetic import make_scene

    scene = make_scene(64, 96, background_disparity=12.0, foreground_disparity=19.0, fx=80.0,
                       fy=90.0, cx_offset=3.0, texture_cell_px=2.0, seed=3)
    namespace = "/pc_chain"
    with NodeProcess(["-r", f"__ns:={namespace}", "-r", "points2:=depth_node_points2",
                      "-p", "backend:=sgbm", "-p", "sgbm.num_disparities:=32"]) as depth_node:
        depth_node.wait_for_output(r"ready: backend=sgbm", timeout=60.0)
        node, peer = cloud_node(namespace)
        raw = [peer.ctx.publisher(Image, f"{namespace}/{side}/image_raw")
               for side in ("left", "right")]
        theirs = peer.ctx.collect(PointCloud2, f"{namespace}/depth_node_points2")
        wait_for(lambda: all(p.get_subscription_count() for p in raw), 20.0,
                 what="the depth node subscribing")
        sent: dict = {}

        def both_clouds():
            when = stamp(1000 + len(sent))
            left_info, right_info = stereo_infos(scene.rig, when, FRAME)
            image = image_msg(scene.left, "rgb8", when, FRAME)
            raw[0].publish(image)
            raw[1].publish(image_msg(scene.right, "rgb8", when, FRAME))
            sent[len(sent)] = when
            for pub, msg in zip(peer.pubs[1:], (image, left_info, right_info)):
                pub.publish(msg)       # the cloud node's inputs besides the depth node's disparity
            mine = {m.header.stamp.sec: m for m in peer.points.snapshot()}
            for msg in theirs.snapshot():
                if msg.header.stamp.sec in mine:
                    return msg, mine[msg.header.stamp.sec]
            return None
        reference, rebuilt = wait_for(both_clouds, 60.0, interval=0.5,
                                      what="both clouds of one pair")
        depth_node.stop()
    ours, depth_nodes = pointcloud2_to_numpy(rebuilt), pointcloud2_to_numpy(reference)
    assert rebuilt.header.frame_id == reference.header.frame_id == FRAME
    assert (rebuilt.point_step, ours.shape) == (reference.point_step, (64, 96))
    valid = np.isfinite(xyz(depth_nodes)).all(-1)
    assert valid.mean() > 0.5
    np.testing.assert_allclose(xyz(ours), xyz(depth_nodes), rtol=2e-6, equal_nan=True)
    np.testing.assert_array_equal(unpack_rgb(ours["rgb"]), unpack_rgb(depth_nodes["rgb"]))
    # the foreground: raw disparity 19 px includes the 3 px offset, Z = 80 * 0.1 / 16 m
    assert np.nanmedian(xyz(ours)[..., 2][24:40, 40:56]) == pytest.approx(0.5, rel=0.02)
