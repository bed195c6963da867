"""launch/stereo_image_proc.launch.py through the real launch API: stereo_image_proc's launch
arguments, what they become on the node, and RViz's displays resolved in RViz's namespace against
the topics the node actually publishes, for several namespace combinations (the node itself runs;
rviz2 is not installable here). test_launch_real.py starts the launch file and reads depth."""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import pytest
import yaml

pytest.importorskip("rclpy")

from helpers.ros import NodeProcess, RosTestContext, wait_for  # noqa: E402

REPO_ROOT = Path(__file__).resolve().parents[2]
LAUNCH_FILE = REPO_ROOT / "launch" / "stereo_image_proc.launch.py"
# stereo_image_proc.launch.py's arguments (image_pipeline rolling) that apply to this node.
SIP_ARGUMENTS = {"approximate_sync", "avoid_point_cloud_padding", "use_color", "launch_image_proc",
                 "namespace", "left_namespace", "right_namespace", "container",
                 "stereo_algorithm", "prefilter_size", "prefilter_cap", "correlation_window_size",
                 "min_disparity", "disparity_range", "texture_threshold", "speckle_size",
                 "speckle_range", "disp12_max_diff", "uniqueness_ratio", "P1", "P2", "sgbm_mode"}


@pytest.fixture(scope="module")
def launch_module(real_ros_packages, colcon_install_space):
    os.environ["AMENT_PREFIX_PATH"] = os.pathsep.join(
        (str(colcon_install_space / "stereo_depth_ros"), os.environ.get("AMENT_PREFIX_PATH", "")))
    spec = importlib.util.spec_from_file_location("sip_launch", LAUNCH_FILE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _actions(module, **arguments):
    """The actions the launch file's OpaqueFunction returns for these arguments, with the node
    substitutions performed (as LaunchService would)."""
    from launch import LaunchContext
    from launch.actions import OpaqueFunction
    from launch_ros.actions import Node

    description = module.generate_launch_description()
    context = LaunchContext()
    for name, default, _ in module.ARGUMENTS:
        context.launch_configurations[name] = default
    context.launch_configurations.update(arguments)
    opaque = [a for a in description.entities if isinstance(a, OpaqueFunction)][0]
    nodes = [a for a in opaque.execute(context) if isinstance(a, Node)]
    for node in nodes:
        node._perform_substitutions(context)
    return context, nodes


def test_declares_stereo_image_procs_arguments_plus_backend_and_weights(launch_module):
    from launch.actions import DeclareLaunchArgument
    declared = {a.name for a in launch_module.generate_launch_description().entities
                if isinstance(a, DeclareLaunchArgument)}
    assert SIP_ARGUMENTS | {"backend", "weights_path", "approximate_sync_tolerance_seconds",
                            "use_system_default_qos", "rviz"} <= declared


def test_arguments_become_the_nodes_parameters_and_remappings(launch_module):
    _, nodes = _actions(launch_module)                      # all defaults: stereo_image_proc's
    node = nodes[0]
    assert node.node_name == "/stereo_depth_node"
    plain = launch_module.node_parameters(lambda name: {
        n: d for n, d, _ in launch_module.ARGUMENTS}[name])
    # Defaults: block matching (stereo_algorithm 0) with stereo_image_proc's values.
    assert plain["stereo_algorithm"] == 0 and "backend" not in plain
    assert (plain["disparity_range"], plain["correlation_window_size"], plain["P1"]) == \
        (64, 15, 200.0)
    assert plain["approximate_sync"] is False and plain["avoid_point_cloud_padding"] is False
    assert ("left/image_raw", "left/image_raw") in node.expanded_remapping_rules
    # psmnet: the algorithm arguments not given stay with the network (max_disparity 192).
    args = {n: d for n, d, _ in launch_module.ARGUMENTS}
    args.update(backend="psmnet", weights_path="/w.tar", disparity_range="128")
    psm = launch_module.node_parameters(args.__getitem__)
    assert psm["backend"] == "psmnet" and psm["disparity_range"] == 128
    assert "correlation_window_size" not in psm and "stereo_algorithm" not in psm
    args.update(backend="sgbm")            # backend given: no stereo_algorithm default to fight it
    sgbm = launch_module.node_parameters(args.__getitem__)
    assert "stereo_algorithm" not in sgbm and sgbm["correlation_window_size"] == 15
    # launch_image_proc False: the node takes the rectified stream.
    _, nodes = _actions(launch_module, launch_image_proc="False", left_namespace="/cam/l")
    assert ("left/image_raw", "/cam/l/image_rect") in nodes[0].expanded_remapping_rules


def _resolve(topic: str, namespace: str) -> str:
    if topic.startswith("/"):
        return topic
    return namespace.rstrip("/") + "/" + topic


@pytest.mark.ros
@pytest.mark.parametrize("namespace, left, right", [
    ("", "left", "right"),
    ("stereo", "/camera/left", "/camera/right"),              # the README's robot example
    ("robot/stereo", "cam/left", "cam/right"),
])
def test_rviz_displays_resolve_to_the_nodes_publishers(launch_module, namespace, left, right):
    from launch.substitutions import TextSubstitution
    from launch.utilities import perform_substitutions

    context, nodes = _actions(launch_module, namespace=namespace, left_namespace=left,
                              right_namespace=right, rviz="true", backend="sgbm")
    node, rviz = nodes
    node_ns = node.node_name.rsplit("/", 1)[0] or "/"
    rviz_ns = rviz.node_name.rsplit("/", 1)[0] or "/"
    command = [perform_substitutions(context, part) for part in rviz.cmd
               if all(isinstance(sub, TextSubstitution) for sub in part)]
    config = yaml.safe_load(Path(command[command.index("-d") + 1]).read_text())
    shown = {_resolve(d["Topic"]["Value"], rviz_ns)
             for d in config["Visualization Manager"]["Displays"] if "Topic" in d}
    assert len(shown) == 4
    ros_args = ["-r", f"__ns:={node_ns}", "-p", "backend:=sgbm"]
    for source, target in node.expanded_remapping_rules:
        ros_args += ["-r", f"{source}:={target}"]
    process = NodeProcess(ros_args).start()
    ctx = RosTestContext("rviz_check")
    try:
        process.wait_for_output(r"ready: backend=sgbm", timeout=60.0)

        def graph(kind):
            from rclpy.node import NodeNameNonExistentError
            method = getattr(ctx.node, f"get_{kind}_names_and_types_by_node")
            try:
                return {name for name, _ in method("stereo_depth_node", node_ns)}
            except NodeNameNonExistentError:            # not discovered yet
                return set()
        published = wait_for(lambda: (lambda p: p if shown <= p else None)(graph("publisher")),
                             20.0, what=f"publishers {sorted(shown)} of the node in {node_ns}")
        camera = _resolve(left, node_ns) + "/image_raw"
        subscribed = wait_for(lambda: (lambda s: s if camera in s else None)(
            graph("subscriber")), 20.0, what=f"the node subscribing to {camera}")
    finally:
        ctx.close()
        process.stop()
    assert shown <= published, (sorted(shown), sorted(published))
    # Nothing the node publishes is one of its input names (no feedback on remapping).
    assert not published & subscribed
