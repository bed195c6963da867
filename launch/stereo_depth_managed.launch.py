"""Launch the managed stereo depth node (stereo_depth_lifecycle_node) and bring it up.

    ros2 launch stereo_depth_ros stereo_depth_managed.launch.py \
        namespace:=stereo weights_path:=/path/to/pretrained_model_KITTI2015.tar

The arguments of stereo_depth.launch.py (params_file, namespace, left_namespace, right_namespace,
weights_path, backend, use_sim_time, rviz, fixed_frame; the same Fast DDS large-image profile),
plus autostart: true (default) configures the node and, once it is inactive, activates it
(launch_ros lifecycle events); false leaves it unconfigured for a lifecycle manager (Nav2's
lifecycle_manager) or `ros2 lifecycle set <node> configure|activate`. A failed configure (say,
missing weights) is logged by the node with the reason; it then stays unconfigured.

The arguments, the remappings and RViz come from stereo_depth.launch.py, installed beside this
file, so both launch files always take the same arguments.
"""

import importlib.util
import os

from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, EmitEvent, OpaqueFunction, RegisterEventHandler
from launch.conditions import IfCondition
from launch.events import matches_action
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import LifecycleNode
from launch_ros.event_handlers import OnStateTransition
from launch_ros.events.lifecycle import ChangeState
from lifecycle_msgs.msg import Transition

PLAIN_LAUNCH_FILE = "stereo_depth.launch.py"
EXECUTABLE = "stereo_depth_lifecycle_node"
ARGUMENTS = (
    ("autostart", "true", "configure and activate the node at launch; false: it waits, "
                          "unconfigured, for a lifecycle manager or `ros2 lifecycle set`"),
)


def _plain_launch():
    """stereo_depth.launch.py as a module (its ARGUMENTS, CAMERA_TOPICS and helpers)."""
    path = os.path.join(os.path.dirname(os.path.abspath(__file__)), PLAIN_LAUNCH_FILE)
    spec = importlib.util.spec_from_file_location("stereo_depth_plain_launch", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


PLAIN = _plain_launch()


def _transition(node, transition_id: int, **options) -> EmitEvent:
    return EmitEvent(event=ChangeState(lifecycle_node_matcher=matches_action(node),
                                       transition_id=transition_id), **options)


def _managed_node(context):
    def arg(name: str) -> str:
        return LaunchConfiguration(name).perform(context).strip()

    overrides = {"use_sim_time": PLAIN._is_true(arg("use_sim_time"))}
    for name in ("weights_path", "backend"):
        if arg(name):
            overrides[name] = arg(name)
    remappings = [(f"{side}/{topic}", f"{arg(side + '_namespace').rstrip('/') or side}/{topic}")
                  for side, topics in PLAIN.CAMERA_TOPICS.items() for topic in topics]
    node = LifecycleNode(package=PLAIN.PACKAGE, executable=EXECUTABLE, name=PLAIN.NODE_NAME,
                         namespace=LaunchConfiguration("namespace"),
                         parameters=[LaunchConfiguration("params_file"), overrides],
                         remappings=remappings, output="screen", emulate_tty=True)
    autostart = IfCondition(LaunchConfiguration("autostart"))
    activate_when_inactive = RegisterEventHandler(OnStateTransition(
        target_lifecycle_node=node, start_state="configuring", goal_state="inactive",
        entities=[_transition(node, Transition.TRANSITION_ACTIVATE)]), condition=autostart)
    configure = _transition(node, Transition.TRANSITION_CONFIGURE, condition=autostart)
    rviz = PLAIN._nodes(context)[1:]           # RViz (rviz:=true) exactly as the plain launch
    return [activate_when_inactive, node, configure, *rviz]


def generate_launch_description() -> LaunchDescription:
    plain = PLAIN.generate_launch_description().entities
    actions = [DeclareLaunchArgument(name, default_value=default, description=description)
               for name, default, description in ARGUMENTS]
    # The plain file's argument declarations and Fast DDS profile; this file's node instead.
    actions += [action for action in plain if not isinstance(action, OpaqueFunction)]
    actions.append(OpaqueFunction(function=_managed_node))
    return LaunchDescription(actions)
