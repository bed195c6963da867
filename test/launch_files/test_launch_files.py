"""Launch file, RViz config and package metadata.

The launch file is checked statically here (it parses, declares exactly the documented arguments,
and every package, executable, file and topic it names exists) and, where the real launch_ros is
importable, its RViz part through the real API; test_launch_real.py starts both launch files.
"""

from __future__ import annotations

import ast
import importlib.util
import os
import re
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
import yaml

REPO_ROOT = Path(__file__).resolve().parents[2]
LAUNCH_FILE = REPO_ROOT / "launch" / "stereo_depth.launch.py"
RVIZ_FILE = REPO_ROOT / "config" / "stereo_depth.rviz"
NODE_FILE = REPO_ROOT / "stereo_depth_ros" / "ros" / "stereo_depth_node.py"
REQUIRED_ARGUMENTS = {"params_file", "namespace", "left_namespace", "right_namespace",
                      "weights_path", "backend", "use_sim_time", "rviz", "fixed_frame"}


def module_constants(path: Path) -> dict[str, object]:
    """Top-level NAME = <literal> assignments of a Python file, without importing it."""
    constants = {}
    for node in ast.parse(path.read_text()).body:
        if isinstance(node, ast.Assign) and len(node.targets) == 1 and \
                isinstance(node.targets[0], ast.Name):
            try:
                constants[node.targets[0].id] = ast.literal_eval(node.value)
            except ValueError:
                pass
    return constants


def call_string_args(path: Path, function: str, position: int = 0) -> list[str]:
    """Constant string arguments at `position` of every call to `function` (name or attribute)."""
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Call):
            name = getattr(node.func, "id", None) or getattr(node.func, "attr", None)
            if name == function and len(node.args) > position and \
                    isinstance(node.args[position], ast.Constant):
                found.append(node.args[position].value)
    return found


def console_scripts() -> dict[str, str]:
    tree = ast.parse((REPO_ROOT / "setup.py").read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.Dict):
            for key, value in zip(node.keys, node.values):
                if isinstance(key, ast.Constant) and key.value == "console_scripts":
                    entries = ast.literal_eval(value)
                    return dict(re.match(r"\s*(\S+)\s*=\s*(\S+)", e).groups() for e in entries)
    raise AssertionError("no console_scripts in setup.py")


def top_level_imports(tree: ast.AST) -> set[str]:
    """The top-level package of every import in a parsed file."""
    imported = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            imported.add(node.module.split(".")[0])
        elif isinstance(node, ast.Import):
            imported.update(alias.name.split(".")[0] for alias in node.names)
    return imported


@pytest.fixture(scope="module")
def launch_constants():
    return module_constants(LAUNCH_FILE)


def test_launch_file_parses_and_imports_only_the_launch_api():
    tree = ast.parse(LAUNCH_FILE.read_text(), filename=str(LAUNCH_FILE))
    compile(tree, str(LAUNCH_FILE), "exec")
    imported = top_level_imports(tree)
    # The launch API, and the package's own RViz view (installed beside the launch file).
    assert imported <= {"launch", "launch_ros", "os", "stereo_depth_ros"}, imported
    functions = {n.name for n in tree.body if isinstance(n, ast.FunctionDef)}
    assert "generate_launch_description" in functions


def test_declared_arguments_are_the_documented_ones(launch_constants):
    names = [name for name, _, _ in launch_constants["ARGUMENTS"]]
    assert set(names) == REQUIRED_ARGUMENTS and len(names) == len(set(names))
    for name, default, description in launch_constants["ARGUMENTS"]:
        assert description, name
        assert default is None or isinstance(default, str), name
    # Every LaunchConfiguration the file reads is declared (the per-side ones included).
    used = set(call_string_args(LAUNCH_FILE, "LaunchConfiguration"))
    used |= {f"{side}_namespace" for side in launch_constants["CAMERA_TOPICS"]}
    assert used <= set(names), used - set(names)


def test_package_executable_and_files_exist(launch_constants):
    package_xml = ET.parse(REPO_ROOT / "package.xml").getroot()
    assert launch_constants["PACKAGE"] == package_xml.findtext("name")
    assert module_constants(REPO_ROOT / "setup.py")["PACKAGE"] == launch_constants["PACKAGE"]
    scripts = console_scripts()
    target = scripts[launch_constants["EXECUTABLE"]]
    module, function = target.split(":")
    module_path = REPO_ROOT / (module.replace(".", "/") + ".py")
    assert module_path.is_file()
    assert function in {n.name for n in ast.parse(module_path.read_text()).body
                        if isinstance(n, ast.FunctionDef)}
    for key in ("PARAMS_FILE", "RVIZ_FILE", "FASTDDS_PROFILE"):
        path = REPO_ROOT / "config" / launch_constants[key]
        assert path.is_file(), path
        # installed by setup.py's data_files globs (config/*.yaml, *.rviz, *.xml)
        assert path.suffix in (".yaml", ".rviz", ".xml")
    depends = {e.text for e in package_xml.iter("exec_depend")}
    assert {"launch", "launch_ros", "rviz2", "rclpy"} <= depends


def test_remapped_topics_are_the_nodes_topics(launch_constants):
    from stereo_depth_ros import topics as node_topics
    published = set(node_topics.OUTPUTS)
    for side, topics in launch_constants["CAMERA_TOPICS"].items():
        for topic in topics:
            name = f"{side}/{topic}"
            assert name in node_topics.INPUTS or name in published, name
    assert set(node_topics.INPUTS) <= {
        f"{side}/{topic}" for side, topics in launch_constants["CAMERA_TOPICS"].items()
        for topic in topics}


def test_rviz_config_shows_the_node_outputs():
    config = yaml.safe_load(RVIZ_FILE.read_text())
    manager = config["Visualization Manager"]
    assert manager["Global Options"]["Fixed Frame"].endswith("optical_frame")
    displays = {d["Class"]: d for d in manager["Displays"]}
    # Relative names: RViz in the node's namespace shows that node's outputs.
    assert all(not d["Topic"]["Value"].startswith("/") for d in manager["Displays"]
               if "Topic" in d)
    topics = {d["Topic"]["Value"]: d["Class"] for d in manager["Displays"] if "Topic" in d}
    from stereo_depth_ros import topics as node_topics
    assert set(topics) <= set(node_topics.OUTPUTS)
    assert topics == {"matcher/left/image_rect": "rviz_default_plugins/Image",
                      "disparity/image_color": "rviz_default_plugins/Image",
                      "depth/image_rect": "rviz_default_plugins/Image",
                      "points2": "rviz_default_plugins/PointCloud2"}
    assert displays["rviz_default_plugins/PointCloud2"]["Color Transformer"] == "RGB8"


def test_the_rviz_view_takes_the_fixed_frame(tmp_path):
    from stereo_depth_ros.rviz_view import config_for_frame, with_fixed_frame
    path = config_for_frame(RVIZ_FILE, "front_stereo_left_optical", directory=tmp_path)
    config = yaml.safe_load(path.read_text())
    assert config["Visualization Manager"]["Global Options"]["Fixed Frame"] == \
        "front_stereo_left_optical"
    assert path == config_for_frame(RVIZ_FILE, "front_stereo_left_optical", directory=tmp_path)
    with pytest.raises(ValueError, match="not a frame name"):
        with_fixed_frame(RVIZ_FILE.read_text(), "two words")


def test_fastdds_profile_has_the_16_mib_segment():
    root = ET.parse(REPO_ROOT / "config" / "fastdds_large_images.xml").getroot()
    ns = {"d": "http://www.eprosima.com"}
    sizes = [int(e.text) for e in root.iterfind(".//d:segment_size", ns)]
    assert sizes == [16 * 1024 * 1024]
    participant = root.find(".//d:participant", ns)
    assert participant.get("is_default_profile") == "true"


def test_rviz_argument_with_the_real_launch_api(real_ros_packages, colcon_install_space,
                                                monkeypatch):
    """rviz:=true adds RViz with the view written for fixed_frame (rviz2 itself is not
    installable here; the node part runs for real in test_launch_real.py)."""
    from launch import LaunchContext
    from launch.actions import DeclareLaunchArgument, OpaqueFunction
    from launch.substitutions import TextSubstitution
    from launch.utilities import perform_substitutions

    monkeypatch.setenv("AMENT_PREFIX_PATH", os.pathsep.join(
        (str(colcon_install_space / "stereo_depth_ros"), os.environ.get("AMENT_PREFIX_PATH", ""))))
    spec = importlib.util.spec_from_file_location("stereo_depth_launch", LAUNCH_FILE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    description = module.generate_launch_description()
    declared = {a.name for a in description.entities if isinstance(a, DeclareLaunchArgument)}
    assert declared == REQUIRED_ARGUMENTS
    context = LaunchContext()
    for name, default, _ in module.ARGUMENTS:
        context.launch_configurations[name] = default or "/tmp/params.yaml"
    opaque = [a for a in description.entities if isinstance(a, OpaqueFunction)][0]
    assert [n.node_executable for n in opaque.execute(context)] == ["stereo_depth_node"]
    context.launch_configurations.update(rviz="true", fixed_frame="front_left_optical")
    nodes = opaque.execute(context)
    assert [n.node_executable for n in nodes] == ["stereo_depth_node", "rviz2"]
    # Only the plain-text parts: the executable and the ROS arguments need rviz2's install and a
    # running launch service.
    command = [perform_substitutions(context, part) for part in nodes[1].cmd
               if all(isinstance(sub, TextSubstitution) for sub in part)]
    config = yaml.safe_load(Path(command[command.index("-d") + 1]).read_text())
    assert config["Visualization Manager"]["Global Options"]["Fixed Frame"] == \
        "front_left_optical"


# ---------------------------------------------------------------------- the managed launch file
MANAGED_LAUNCH_FILE = REPO_ROOT / "launch" / "stereo_depth_managed.launch.py"


def test_managed_launch_file_imports_only_the_launch_api_and_reuses_the_plain_one():
    tree = ast.parse(MANAGED_LAUNCH_FILE.read_text(), filename=str(MANAGED_LAUNCH_FILE))
    compile(tree, str(MANAGED_LAUNCH_FILE), "exec")
    imported = top_level_imports(tree)
    assert imported <= {"launch", "launch_ros", "lifecycle_msgs", "os", "importlib"}, imported
    assert "generate_launch_description" in {n.name for n in tree.body
                                             if isinstance(n, ast.FunctionDef)}
    constants = module_constants(MANAGED_LAUNCH_FILE)
    # The plain launch file it takes its arguments from is installed beside it.
    assert (REPO_ROOT / "launch" / constants["PLAIN_LAUNCH_FILE"]) == LAUNCH_FILE
    assert [name for name, _, _ in constants["ARGUMENTS"]] == ["autostart"]
    assert not {name for name, _, _ in constants["ARGUMENTS"]} & REQUIRED_ARGUMENTS
    used = set(call_string_args(MANAGED_LAUNCH_FILE, "LaunchConfiguration"))
    assert used <= REQUIRED_ARGUMENTS | {"autostart"}, used
    # launch_ros lifecycle events: configure, then activate when configuring -> inactive.
    names = {n.attr for n in ast.walk(tree) if isinstance(n, ast.Attribute)}
    assert {"TRANSITION_CONFIGURE", "TRANSITION_ACTIVATE"} <= names
    calls = {getattr(n.func, "id", None) for n in ast.walk(tree) if isinstance(n, ast.Call)}
    assert {"LifecycleNode", "OnStateTransition", "ChangeState", "IfCondition"} <= calls


def test_managed_launch_executable_and_dependencies_exist():
    target = console_scripts()[module_constants(MANAGED_LAUNCH_FILE)["EXECUTABLE"]]
    module, function = target.split(":")
    module_path = REPO_ROOT / (module.replace(".", "/") + ".py")
    assert function in {n.name for n in ast.parse(module_path.read_text()).body
                        if isinstance(n, ast.FunctionDef)}
    package_xml = ET.parse(REPO_ROOT / "package.xml").getroot()
    assert "lifecycle_msgs" in {e.text for e in package_xml.iter("exec_depend")}


def test_managed_launch_with_the_real_launch_api(real_ros_packages, colcon_install_space,
                                                 monkeypatch):
    """The plain file's arguments plus autostart; a LifecycleNode of the lifecycle executable
    with the plain file's remappings; configure and activate only with autostart:=true."""
    from launch import LaunchContext
    from launch.actions import (DeclareLaunchArgument, EmitEvent, OpaqueFunction,
                                RegisterEventHandler, SetEnvironmentVariable)
    from launch_ros.actions import LifecycleNode

    monkeypatch.setenv("AMENT_PREFIX_PATH", os.pathsep.join(
        (str(colcon_install_space / "stereo_depth_ros"), os.environ.get("AMENT_PREFIX_PATH", ""))))
    spec = importlib.util.spec_from_file_location("stereo_depth_managed_launch",
                                                  MANAGED_LAUNCH_FILE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    description = module.generate_launch_description()
    declared = {a.name: a for a in description.entities if isinstance(a, DeclareLaunchArgument)}
    assert set(declared) == REQUIRED_ARGUMENTS | {"autostart"}
    assert [sub.text for sub in declared["autostart"].default_value] == ["true"]
    assert any(isinstance(a, SetEnvironmentVariable) for a in description.entities)
    opaque = [a for a in description.entities if isinstance(a, OpaqueFunction)]
    assert len(opaque) == 1

    context = LaunchContext()
    for name, default, _ in module.PLAIN.ARGUMENTS + module.ARGUMENTS:
        context.launch_configurations[name] = "/tmp/params.yaml" if default is None else default
    context.launch_configurations.update(namespace="robot", left_namespace="/cam/left")
    actions = opaque[0].execute(context)
    nodes = [a for a in actions if isinstance(a, LifecycleNode)]
    assert [n.node_executable for n in nodes] == ["stereo_depth_lifecycle_node"]
    nodes[0]._perform_substitutions(context)     # what execute() does first
    assert ("left/image_raw", "/cam/left/image_raw") in nodes[0].expanded_remapping_rules
    assert nodes[0].node_name == "/robot/stereo_depth_node"
    events = [a for a in actions if isinstance(a, EmitEvent)]
    handlers = [a for a in actions if isinstance(a, RegisterEventHandler)]
    assert len(events) == 1 and len(handlers) == 1
    from lifecycle_msgs.msg import Transition
    assert events[0].event.transition_id == Transition.TRANSITION_CONFIGURE
    for autostart, expected in (("true", True), ("false", False)):
        context.launch_configurations["autostart"] = autostart
        assert events[0].condition.evaluate(context) is expected
        assert handlers[0].condition.evaluate(context) is expected
    context.launch_configurations.update(rviz="true")
    assert [n.node_executable for n in opaque[0].execute(context)
            if hasattr(n, "node_executable")] == ["stereo_depth_lifecycle_node", "rviz2"]
