"""Launch stereo_depth_node (and optionally RViz 2).

    ros2 launch stereo_depth_ros stereo_depth.launch.py \
        namespace:=stereo left_namespace:=left right_namespace:=right \
        weights_path:=/path/to/pretrained_model_KITTI2015.tar rviz:=true

Arguments (see ARGUMENTS): params_file (all node parameters, default the installed
config/stereo_depth.yaml), namespace (of the node and its outputs), left_namespace /
right_namespace (where the camera topics live, relative to namespace: <left_namespace>/image_raw
and <left_namespace>/camera_info), weights_path and backend (override the params file when not
empty), use_sim_time (true when playing a bag with --clock), rviz (start RViz 2 with
config/stereo_depth.rviz in the node's namespace, so it shows this node's outputs) and
fixed_frame (RViz's fixed frame: the camera's optical frame, the frame_id of left/camera_info).

Large images: the node and RViz get FASTDDS_DEFAULT_PROFILES_FILE (Fast DDS 3, Kilted and newer)
pointing at config/fastdds_large_images.xml unless it is already set; on Humble/Iron/Jazzy
(Fast DDS 2, which reads FASTRTPS_DEFAULT_PROFILES_FILE; Fast DDS 3 warns that this name is
deprecated) FASTRTPS_DEFAULT_PROFILES_FILE as well. Export the same for the camera driver or bag
player: best-effort image topics lose 30-45 % of 1.4 MB frames without it.
"""

import os

from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, OpaqueFunction, SetEnvironmentVariable
from launch.substitutions import EnvironmentVariable, LaunchConfiguration
from launch_ros.actions import Node
from launch_ros.substitutions import FindPackageShare

PACKAGE = "stereo_depth_ros"
EXECUTABLE = "stereo_depth_node"
NODE_NAME = "stereo_depth_node"
PARAMS_FILE = "stereo_depth.yaml"
RVIZ_FILE = "stereo_depth.rviz"
FASTDDS_PROFILE = "fastdds_large_images.xml"
FAST_DDS_2_DISTROS = ("humble", "iron", "jazzy")

# (name, default, description); None = a file in the installed share/config directory.
ARGUMENTS = (
    ("params_file", None, "node parameters (YAML with /**: ros__parameters:)"),
    ("namespace", "", "namespace of the node and of its outputs"),
    ("left_namespace", "left", "namespace of the left camera topics (image_raw, camera_info), "
                               "relative to namespace unless it starts with /"),
    ("right_namespace", "right", "namespace of the right camera topics, like left_namespace"),
    ("weights_path", "", "PSMNet checkpoint; overrides params_file when not empty"),
    ("backend", "", "psmnet or sgbm; overrides params_file when not empty"),
    ("use_sim_time", "false", "use /clock (true when replaying a bag with --clock)"),
    ("rviz", "false", "also start RViz 2 with config/stereo_depth.rviz, in the node's namespace"),
    ("fixed_frame", "camera_left_optical_frame",
     "RViz fixed frame: the camera's optical frame, i.e. the frame_id of left/camera_info, which "
     "every output carries (default: what stereo_depth_kitti2bag writes)"),
)

# The node's camera inputs. Its outputs (matcher/left/image_rect included) stay in the node's
# namespace, where RViz (started in that namespace) finds them.
CAMERA_TOPICS = {
    "left": ("image_raw", "camera_info"),
    "right": ("image_raw", "camera_info"),
}


def _share_file(name: str):
    return [FindPackageShare(PACKAGE), "/config/", name]


def _is_true(text: str) -> bool:
    return text.strip().lower() in ("true", "1", "yes", "on")


def _nodes(context):
    def arg(name: str) -> str:
        return LaunchConfiguration(name).perform(context).strip()

    overrides = {"use_sim_time": _is_true(arg("use_sim_time"))}
    for name in ("weights_path", "backend"):
        if arg(name):
            overrides[name] = arg(name)
    remappings = []
    for side, topics in CAMERA_TOPICS.items():
        prefix = arg(f"{side}_namespace").rstrip("/") or side
        for topic in topics:
            remappings.append((f"{side}/{topic}", f"{prefix}/{topic}"))
    node = Node(package=PACKAGE, executable=EXECUTABLE, name=NODE_NAME,
                namespace=LaunchConfiguration("namespace"),
                parameters=[LaunchConfiguration("params_file"), overrides],
                remappings=remappings, output="screen", emulate_tty=True)
    if not _is_true(arg("rviz")):
        return [node]
    from stereo_depth_ros.rviz_view import config_for_frame
    template = FindPackageShare(PACKAGE).perform(context) + "/config/" + RVIZ_FILE
    rviz = Node(package="rviz2", executable="rviz2", name="stereo_depth_rviz",
                namespace=LaunchConfiguration("namespace"),
                arguments=["-d", str(config_for_frame(template, arg("fixed_frame")))],
                parameters=[{"use_sim_time": overrides["use_sim_time"]}], output="screen")
    return [node, rviz]


def generate_launch_description() -> LaunchDescription:
    actions = []
    for name, default, description in ARGUMENTS:
        value = _share_file(PARAMS_FILE) if default is None else default
        actions.append(DeclareLaunchArgument(name, default_value=value, description=description))
    variables = ["FASTDDS_DEFAULT_PROFILES_FILE"]
    if os.environ.get("ROS_DISTRO", "") in FAST_DDS_2_DISTROS:
        variables.append("FASTRTPS_DEFAULT_PROFILES_FILE")
    for variable in variables:
        actions.append(SetEnvironmentVariable(variable, EnvironmentVariable(
            variable, default_value=_share_file(FASTDDS_PROFILE))))
    actions.append(OpaqueFunction(function=_nodes))
    return LaunchDescription(actions)
