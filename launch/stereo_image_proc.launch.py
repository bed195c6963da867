"""stereo_image_proc's launch file, for this node: the same arguments, plus backend and weights.

    ros2 launch stereo_image_proc stereo_image_proc.launch.py namespace:=stereo \
        left_namespace:=/camera/left right_namespace:=/camera/right approximate_sync:=True
becomes
    ros2 launch stereo_depth_ros stereo_image_proc.launch.py backend:=psmnet \
        weights_path:=/path/to/pretrained_model_KITTI2015.tar namespace:=stereo \
        left_namespace:=/camera/left right_namespace:=/camera/right approximate_sync:=True

One stereo_depth_node stands in for stereo_image_proc's DisparityNode + PointCloudNode (and, with
launch_image_proc:=True, image_proc's rectification): it publishes disparity, points2 and depth in
`namespace`. (stereo_depth_point_cloud_node, the PointCloudNode for disparities from elsewhere, is
not started: stereo_depth_node's own points2 would be published twice.) Arguments:
- stereo_image_proc's: namespace, left_namespace, right_namespace (camera topics, relative to
  namespace unless absolute), approximate_sync, approximate_sync_tolerance_seconds,
  use_system_default_qos, use_color, avoid_point_cloud_padding, launch_image_proc (True: the node
  takes <left_namespace>/image_raw and rectifies it itself, as image_proc would; False: it takes
  the already rectified <left_namespace>/image_rect), container (accepted for compatibility; a
  Python node cannot join an rclcpp container, so it runs as its own process; a name logs a
  warning), and the stereo algorithm parameters (stereo_algorithm, prefilter_size, prefilter_cap,
  correlation_window_size, min_disparity, disparity_range, texture_threshold, speckle_size,
  speckle_range, disp12_max_diff, uniqueness_ratio, P1, P2, sgbm_mode). An algorithm argument
  left empty takes stereo_image_proc's default with the classical matchers (bm, sgbm) and is not
  passed with psmnet (which keeps its max_disparity 192); stereo_algorithm's default applies only
  when backend is empty.
- this node's: backend (empty: from stereo_algorithm, 0 = bm as stereo_image_proc's default, 1 =
  sgbm; or psmnet), weights_path (PSMNet checkpoint), use_sim_time, rviz (RViz 2 in the node's
  namespace with config/stereo_depth.rviz) and fixed_frame (RViz's fixed frame).
"""

import importlib.util
import os

from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, LogInfo, OpaqueFunction
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import Node

PLAIN_LAUNCH_FILE = "stereo_depth.launch.py"

# stereo_image_proc's stereo algorithm arguments: (name, its default, description).
ALGORITHM_ARGUMENTS = (
    ("stereo_algorithm", "0", "Block Matching (0, backend bm) or Semi-Global Block Matching "
                              "(1, backend sgbm); ignored with backend psmnet"),
    ("prefilter_size", "9", "bm: normalization window size in pixels (odd)"),
    ("prefilter_cap", "31", "bound on normalized pixel values"),
    ("correlation_window_size", "15", "SAD correlation window width in pixels (odd)"),
    ("min_disparity", "0", "disparity to begin the search at, px (psmnet: start of the "
                           "published window)"),
    ("disparity_range", "64", "number of disparities searched, px, multiple of 16 (psmnet: "
                              "max_disparity - min_disparity)"),
    ("texture_threshold", "10", "bm: filter out if the SAD window response does not exceed it"),
    ("speckle_size", "100", "reject regions smaller than this, px"),
    ("speckle_range", "4", "largest disparity difference inside one region"),
    ("disp12_max_diff", "0", "left-right check tolerance, px"),
    ("uniqueness_ratio", "15.0", "margin (%) by which the best match must beat the next best"),
    ("P1", "200.0", "sgbm: penalty for 1 px disparity changes"),
    ("P2", "400.0", "sgbm: penalty for larger disparity changes"),
    ("sgbm_mode", "0", "sgbm mode: 0 sgbm, 1 hh, 2 sgbm_3way, 3 hh4"),
)
# (name, default, description); the algorithm arguments default to "" (see the docstring).
ARGUMENTS = (
    ("namespace", "", "namespace of the node and its outputs"),
    ("left_namespace", "left", "namespace of the left camera topics"),
    ("right_namespace", "right", "namespace of the right camera topics"),
    ("approximate_sync", "False", "approximate instead of exact stamp synchronisation"),
    ("approximate_sync_tolerance_seconds", "0.0",
     "with approximate_sync: largest stamp difference (s); 0 = no bound"),
    ("use_system_default_qos", "False", "reliable subscriptions instead of sensor-data QoS"),
    ("use_color", "True", "packed rgb in points2"),
    ("avoid_point_cloud_padding", "False", "packed points2 (point_step 16 with rgb) instead of "
                                           "the aligned layout (32)"),
    ("launch_image_proc", "True", "True: subscribe to image_raw and rectify in the node (what "
                                  "image_proc would do); False: subscribe to image_rect"),
    ("container", "", "accepted for compatibility; the node always runs as its own process"),
    ("backend", "", "psmnet, sgbm or bm; empty: from stereo_algorithm"),
    ("weights_path", "", "PSMNet checkpoint (backend psmnet)"),
    ("use_sim_time", "false", "use /clock (true when replaying a bag with --clock)"),
    ("rviz", "false", "also start RViz 2 in the node's namespace"),
    ("fixed_frame", "camera_left_optical_frame", "RViz fixed frame: the frame_id of the left "
                                                 "camera_info"),
) + tuple((name, "", f"{text} (empty: {default} with bm/sgbm, not passed with psmnet)")
          for name, default, text in ALGORITHM_ARGUMENTS)
SIP_NODE_ARGUMENTS = ("approximate_sync", "approximate_sync_tolerance_seconds",
                      "use_system_default_qos", "use_color", "avoid_point_cloud_padding")


def _plain_launch():
    """stereo_depth.launch.py (installed beside this file): node name, RViz, Fast DDS profile."""
    path = os.path.join(os.path.dirname(os.path.abspath(__file__)), PLAIN_LAUNCH_FILE)
    spec = importlib.util.spec_from_file_location("stereo_depth_plain_launch", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


PLAIN = _plain_launch()


def _typed(name: str, text: str):
    """A launch argument's text as the parameter's type (config.py has the types)."""
    from stereo_depth_ros.config import SIP_ALIAS_BY_NAME, SPECS
    spec = SIP_ALIAS_BY_NAME[name].spec if name in SIP_ALIAS_BY_NAME else SPECS[name]
    if spec.type is bool:
        return PLAIN._is_true(text)
    return spec.type(float(text)) if spec.type is int else spec.type(text)


def node_parameters(arg) -> dict:
    """The node's parameters for the launch arguments (arg(name) -> its text)."""
    parameters = {"use_sim_time": PLAIN._is_true(arg("use_sim_time"))}
    for name in SIP_NODE_ARGUMENTS:
        parameters[name] = _typed(name, arg(name))
    backend = arg("backend").lower()
    if backend:
        parameters["backend"] = backend
    if arg("weights_path"):
        parameters["weights_path"] = arg("weights_path")
    classical = backend != "psmnet"
    for name, default, _ in ALGORITHM_ARGUMENTS:
        if name == "stereo_algorithm" and backend:
            default = ""                     # backend names the matcher: no default to add
        text = arg(name) or (default if classical else "")
        if text:
            parameters[name] = _typed(name, text)
    return parameters


def node_remappings(arg) -> list:
    image = "image_raw" if PLAIN._is_true(arg("launch_image_proc")) else "image_rect"
    remappings = []
    for side in ("left", "right"):
        prefix = arg(f"{side}_namespace").rstrip("/") or side
        remappings += [(f"{side}/image_raw", f"{prefix}/{image}"),
                       (f"{side}/camera_info", f"{prefix}/camera_info")]
    return remappings


def _nodes(context):
    def arg(name: str) -> str:
        return LaunchConfiguration(name).perform(context).strip()

    actions = []
    if arg("container"):
        actions.append(LogInfo(msg=f"container:={arg('container')} is ignored: stereo_depth_node "
                                   "is a Python node and runs as its own process"))
    node = Node(package=PLAIN.PACKAGE, executable=PLAIN.EXECUTABLE, name=PLAIN.NODE_NAME,
                namespace=LaunchConfiguration("namespace"), parameters=[node_parameters(arg)],
                remappings=node_remappings(arg), output="screen", emulate_tty=True)
    actions.append(node)
    if PLAIN._is_true(arg("rviz")):
        actions += PLAIN._nodes(context)[1:]       # RViz exactly as stereo_depth.launch.py
    return actions


def generate_launch_description() -> LaunchDescription:
    actions = [DeclareLaunchArgument(name, default_value=default, description=description)
               for name, default, description in ARGUMENTS]
    # The plain file's Fast DDS large-image profile (its argument declarations are not used).
    actions += [action for action in PLAIN.generate_launch_description().entities
                if type(action).__name__ == "SetEnvironmentVariable"]
    actions.append(OpaqueFunction(function=_nodes))
    return LaunchDescription(actions)
