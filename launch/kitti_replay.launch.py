"""Replay a KITTI bag into stereo_depth_node, with sim time and (optionally) RViz.

    ros2 launch stereo_depth_ros kitti_replay.launch.py bag:=/data/drive5_bag
    ros2 launch stereo_depth_ros kitti_replay.launch.py \
        bag:=/data/kitti_2011_09_26_drive_0005_synced.bag preset:=kitti2bag rviz:=true

`bag` is a ROS 2 bag folder written by stereo_depth_kitti2bag (or any bag with the node's input
topics at /left/image_raw, /left/camera_info, ...: they are replayed into `namespace`) or a ROS 1
.bag from tomas789/kitti2bag (then use preset:=kitti2bag, which maps its /kitti/camera_color_*
topics to the node's inputs and fixes their camera_info). The node and the
replay share `namespace`; the replay publishes /clock and both use sim time when
use_sim_time:=true (default). The replay waits for the node's subscriptions before it plays.
The bag's Velodyne scans (`velodyne_points`) are played into `namespace` too, and /tf_static
latched, for `stereo_depth_eval --live` (started first, in the same namespace).

The `launch` imports are inside generate_launch_description() so that this file (and the
argument builder below) can be imported and tested where the launch packages are not installed.
"""

from __future__ import annotations

import os

PACKAGE = "stereo_depth_ros"

ARGUMENTS = (
    # name, default, description
    ("bag", "", "ROS 2 bag folder or ROS 1 .bag file to play (required)"),
    ("preset", "", "'' (bag already has left/right image_raw + camera_info) or kitti2bag / "
                   "kitti2bag-gray for bags made by tomas789/kitti2bag"),
    ("namespace", "", "namespace of the node and of the replayed topics"),
    ("params_file", "", "node parameters YAML (default: the package's config/stereo_depth.yaml)"),
    ("use_sim_time", "true", "replay publishes /clock and the node uses it"),
    ("rate", "1.0", "playback speed factor"),
    ("loop", "false", "play the bag again and again"),
    ("start", "0.0", "seconds to skip at the start of the bag"),
    ("rviz", "false", "start RViz2 in the node's namespace, showing its outputs"),
    ("rviz_config", "", "RViz2 config file (default: the package's config/stereo_depth.rviz "
                        "with fixed_frame)"),
    ("fixed_frame", "camera_left_optical_frame",
     "the camera's optical frame: RViz's fixed frame, and the frame id the kitti2bag preset "
     "gives the replayed messages (default: what stereo_depth_kitti2bag writes)"),
)


def _true(text: str) -> bool:
    return str(text).strip().lower() in ("1", "true", "yes", "on")


def replay_arguments(bag: str, preset: str = "", rate: str = "1.0", loop: str = "false",
                     start: str = "0.0", use_sim_time: str = "true",
                     fixed_frame: str = "") -> list[str]:
    """Command-line arguments of stereo_depth_replay for the launch arguments' values."""
    if not bag:
        raise ValueError("kitti_replay.launch.py needs bag:=<ROS 2 bag folder or ROS 1 .bag>")
    args = [bag, "--rate", str(float(rate)), "--start", str(float(start))]
    if preset:
        args += ["--preset", preset]
        if fixed_frame:
            args += ["--frame-id", fixed_frame]
    else:
        # A ROS 2 bag stores fully qualified names (/left/image_raw, ...): make the node's inputs
        # relative so that they land in `namespace`, where the node listens, and so the LiDAR and
        # OXTS topics of stereo_depth_kitti2bag, where `stereo_depth_eval --live` run in that
        # namespace listens (/tf_static stays global, as tf2 reads it).
        from stereo_depth_ros import topics
        for topic in (*topics.inputs("raw"), *topics.inputs("compressed")[:2],
                      topics.LIDAR_POINTS, topics.IMU, topics.GPS_FIX):
            args += ["--remap", f"/{topic}:={topic}"]
    if _true(loop):
        args.append("--loop")
    if _true(use_sim_time):
        args.append("--clock")
    return args


def _share_file(*parts: str) -> str:
    try:
        from ament_index_python.packages import get_package_share_directory
        return os.path.join(get_package_share_directory(PACKAGE), *parts)
    except Exception:  # noqa: BLE001  (not installed with colcon: use the source tree)
        return os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), *parts)


def _launch_setup(context, *args, **kwargs):
    from launch_ros.actions import Node

    def value(name: str) -> str:
        return context.launch_configurations.get(name, "")

    namespace = value("namespace")
    use_sim_time = _true(value("use_sim_time"))
    params_file = value("params_file") or _share_file("config", "stereo_depth.yaml")
    actions = [
        Node(package=PACKAGE, executable="stereo_depth_node", name="stereo_depth_node",
             namespace=namespace, output="screen",
             parameters=[params_file, {"use_sim_time": use_sim_time}]),
        Node(package=PACKAGE, executable="stereo_depth_replay", name="stereo_depth_replay",
             namespace=namespace, output="screen",
             arguments=replay_arguments(value("bag"), value("preset"), value("rate"),
                                        value("loop"), value("start"), value("use_sim_time"),
                                        value("fixed_frame"))),
    ]
    if _true(value("rviz")):
        actions.append(rviz_node(value("rviz_config"), value("fixed_frame"), namespace,
                                 use_sim_time))
    return actions


def rviz_node(rviz_config: str, fixed_frame: str, namespace: str, use_sim_time: bool):
    """RViz in the node's namespace with the package's view (fixed frame written in) or
    `rviz_config` as given."""
    from launch_ros.actions import Node

    if not rviz_config:
        from stereo_depth_ros.rviz_view import config_for_frame
        rviz_config = str(config_for_frame(_share_file("config", "stereo_depth.rviz"),
                                           fixed_frame))
    return Node(package="rviz2", executable="rviz2", name="rviz2", namespace=namespace,
                arguments=["-d", rviz_config], output="screen",
                parameters=[{"use_sim_time": use_sim_time}])


def generate_launch_description():
    from launch import LaunchDescription
    from launch.actions import DeclareLaunchArgument, OpaqueFunction

    declared = [DeclareLaunchArgument(name, default_value=default, description=description)
                for name, default, description in ARGUMENTS]
    return LaunchDescription(declared + [OpaqueFunction(function=_launch_setup)])
