"""Parameters: descriptors from config.py, live validation with reasons, start-up errors, YAML."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

rclpy = pytest.importorskip("rclpy")

from rclpy.parameter import Parameter  # noqa: E402
from stereo_depth_ros import config as cfg  # noqa: E402
from stereo_depth_ros.ros.stereo_depth_node import StartupError  # noqa: E402

pytestmark = pytest.mark.ros
pytest_plugins = ("helpers.ros_nodes",)       # the make_node fixture

REPO_ROOT = Path(__file__).resolve().parents[2]


def _set(node, name, value):
    return node.set_parameters([Parameter(name, value=value)])[0]


def test_every_parameter_is_declared_with_its_descriptor(make_node):
    node = make_node(backend="sgbm")
    for spec in cfg.PARAMS:
        assert node.has_parameter(spec.name)
        desc = node.describe_parameter(spec.name)
        assert desc.description == spec.description
        assert desc.read_only == spec.read_only
    block = node.describe_parameter("sgbm.block_size").integer_range[0]
    assert (block.from_value, block.to_value, block.step) == (1, 51, 2)
    scale = node.describe_parameter("input_scale").floating_point_range[0]
    assert (scale.from_value, scale.to_value) == (0.1, 1.0)
    assert "psmnet, sgbm" in node.describe_parameter("backend").additional_constraints
    assert node.describe_parameter("rectify").dynamic_typing


def test_live_sgbm_change_reaches_the_backend(make_node):
    node = make_node(backend="sgbm")
    result = _set(node, "sgbm.block_size", 7)
    assert result.successful, result.reason
    assert node.backend.params.block_size == 7
    assert node.config.sgbm_block_size == 7
    result = node.set_parameters([Parameter("sgbm.num_disparities", value=64),
                                  Parameter("sgbm.min_disparity", value=-16)])
    assert all(r.successful for r in result)
    assert (node.backend.min_disparity, node.backend.max_disparity) == (-16.0, 48.0)


@pytest.mark.parametrize("name, value, reason", [
    ("sgbm.block_size", 4, "block_size"),            # descriptor step: odd only
    ("sgbm.num_disparities", 40, "num_disparities"),  # multiple of 16
    ("input_scale", 0.05, "input_scale"),             # out of range
    ("rectify", "sometimes", "expected one of auto, true, false"),
    ("sgbm.mode", "fast", "expected one of sgbm, hh, sgbm_3way, hh4"),
    ("confidence_threshold", 1.5, "confidence_threshold"),
])
def test_bad_live_values_are_rejected_with_a_reason(make_node, name, value, reason):
    node = make_node(backend="sgbm")
    before = node.config
    result = _set(node, name, value)
    assert not result.successful
    assert reason in result.reason
    assert node.config == before


def test_cross_parameter_rules(make_node):
    node = make_node(backend="sgbm")
    assert _set(node, "max_depth_m", 2.0).successful
    result = _set(node, "min_depth_m", 5.0)
    assert not result.successful and "must be below max_depth_m" in result.reason
    result = node.set_parameters([Parameter("sgbm.p1", value=1000),
                                  Parameter("sgbm.p2", value=500)])
    assert not result[0].successful or not result[1].successful
    result = _set(node, "sgbm.p1", 100000)  # larger than the default p2 = 32*1*5*5 = 800
    assert not result.successful and "p2" in result.reason
    assert node.backend.params.p1 is None


def test_read_only_parameters_cannot_change_live(make_node):
    node = make_node(backend="sgbm")
    for name, value in (("backend", "psmnet"), ("queue_size", 3), ("approximate_sync", True)):
        result = _set(node, name, value)
        assert not result.successful
        assert "read-only" in result.reason


def test_rectify_accepts_bools_and_strings(make_node):
    node = make_node(backend="sgbm", rectify=False)
    assert node.config.rectify == "false"
    assert _set(node, "rectify", True).successful and node.config.rectify == "true"
    assert _set(node, "rectify", "AUTO").successful and node.config.rectify == "auto"


def test_live_pipeline_parameters(make_node):
    node = make_node(backend="sgbm")
    assert _set(node, "input_scale", 0.5).successful and node.config.input_scale == 0.5
    assert _set(node, "use_color", False).successful and not node.config.use_color


@pytest.mark.parametrize("overrides, message", [
    ({"backend": "foo"}, "backend='foo' is not allowed: expected one of psmnet, sgbm"),
    ({"backend": "psmnet", "weights_path": ""}, "weights_path is empty but backend is psmnet"),
    ({"backend": "psmnet", "weights_path": "/nonexistent/psm.tar"},
     "'/nonexistent/psm.tar' does not exist"),
    ({"backend": "sgbm", "device": "gpu0"}, "device='gpu0' is not allowed"),
    ({"backend": "sgbm", "min_depth_m": 3.0, "max_depth_m": 1.0}, "must be below max_depth_m"),
])
def test_startup_errors_say_what_is_wrong(make_node, overrides, message):
    with pytest.raises(StartupError, match=message.replace("(", r"\(").replace(")", r"\)")):
        make_node(**overrides)


def test_out_of_range_and_wrong_type_at_startup(make_node):
    with pytest.raises(StartupError, match="sgbm.block_size"):
        make_node(backend="sgbm", **{"sgbm.block_size": 100})
    with pytest.raises(StartupError, match="max_disparity has the wrong type"):
        make_node(backend="sgbm", max_disparity="192")


def test_missing_weights_error_tells_where_to_get_them(make_node):
    with pytest.raises(StartupError, match=r"make assets"):
        make_node(backend="psmnet", weights_path="")


def test_shipped_yaml_matches_config_defaults():
    data = yaml.safe_load((REPO_ROOT / "config" / "stereo_depth.yaml").read_text())
    params = data["/**"]["ros__parameters"]
    flat = {}
    for key, value in params.items():
        if isinstance(value, dict):
            flat.update({f"{key}.{sub}": v for sub, v in value.items()})
        else:
            flat[key] = value
    assert set(flat) == set(cfg.SPECS)
    for name, value in flat.items():
        spec = cfg.SPECS[name]
        assert type(value) is spec.type, f"{name}: YAML type {type(value).__name__}"
        if name != "weights_path":
            assert value == spec.default, name
    assert flat["weights_path"] == "assets/weights/pretrained_model_KITTI2015.tar"
    text = (REPO_ROOT / "config" / "stereo_depth.yaml").read_text().splitlines()
    keyed = [i for i, line in enumerate(text)
             if ": " in line and not line.lstrip().startswith("#")]
    assert len(keyed) == len(cfg.SPECS)
    for index in keyed:  # one comment line (help text with unit/range) before every key
        assert text[index - 1].lstrip().startswith("# "), text[index]
    sgbm = yaml.safe_load((REPO_ROOT / "config" / "sgbm.yaml").read_text())
    sgbm_params = sgbm["/**"]["ros__parameters"]
    assert sgbm_params["backend"] == "sgbm"
    cfg.NodeConfig.from_params({f"sgbm.{k}": v for k, v in sgbm_params["sgbm"].items()})


def test_render_params_yaml_round_trips():
    text = cfg.render_params_yaml({"backend": "sgbm", "sgbm.block_size": 7})
    params = yaml.safe_load(text)["/**"]["ros__parameters"]
    assert params["backend"] == "sgbm" and params["sgbm"]["block_size"] == 7
    assert params["input_scale"] == 1.0 and isinstance(params["input_scale"], float)


def test_qos_sensor_data_by_default_and_system_default_on_request(make_node):
    from rclpy.qos import DurabilityPolicy, HistoryPolicy, ReliabilityPolicy
    node = make_node(backend="sgbm", queue_size=7)
    subscriptions = node._sync.subscriptions
    assert len(subscriptions) == 4
    for sub in subscriptions:
        assert sub.qos_profile.reliability == ReliabilityPolicy.BEST_EFFORT
        assert sub.qos_profile.history == HistoryPolicy.KEEP_LAST and sub.qos_profile.depth == 7
    for publisher in node._outputs:
        qos = publisher.qos_profile
        assert qos.reliability == ReliabilityPolicy.RELIABLE and qos.depth == 1
        assert qos.durability == DurabilityPolicy.VOLATILE
    other = make_node(backend="sgbm", use_system_default_qos=True)
    for sub in other._sync.subscriptions:
        assert sub.qos_profile.reliability == ReliabilityPolicy.SYSTEM_DEFAULT


def test_shipped_yaml_files_are_rendered_from_config():
    """config.py is the single source: the committed YAML must equal what it renders."""
    import importlib.util
    script = REPO_ROOT / "scripts" / "render_params_yaml.py"
    spec = importlib.util.spec_from_file_location("render_params_yaml", script)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    for path, text in module.rendered_files().items():
        assert path.read_text() == text, (
            f"{path.name} is out of date with config.py: run `python scripts/{script.name}`")


def test_readme_documents_every_drop_reason():
    from stereo_depth_ros.drop_reasons import DROP_REASONS
    readme = (REPO_ROOT / "README.md").read_text()
    assert [reason for reason in DROP_REASONS if f"`{reason}`" not in readme] == []


def test_missing_weights_hint_fits_where_the_package_runs(monkeypatch, tmp_path):
    """A relative weights_path names the directory it was resolved against; `make assets` only
    from a source checkout (colcon and pip installs have no Makefile)."""
    from stereo_depth_ros import assets

    checkout = tmp_path / "stereo_depth_ros"
    monkeypatch.setattr(assets, "source_checkout", lambda: checkout)
    hint = assets.missing_weights_hint("assets/weights/pretrained_model_KITTI2015.tar",
                                       cwd="/home/robot/ros2_ws")
    assert hint.startswith("the relative path is resolved against the directory the node "
                           "started in (/home/robot/ros2_ws), so give an absolute path; ")
    assert f"`make assets` in {checkout} puts the official KITTI 2015 checkpoint at " \
        f"{checkout}/assets/weights/pretrained_model_KITTI2015.tar" in hint
    monkeypatch.setattr(assets, "source_checkout", lambda: None)       # colcon / pip install
    hint = assets.missing_weights_hint("/opt/weights/psm.tar")
    assert "make assets" not in hint and "relative" not in hint
    assert hint == ("`python3 <the package's source>/scripts/fetch_assets.py --dir "
                    "~/stereo_assets --weights-only` fetches the official KITTI 2015 "
                    "checkpoint to "
                    "~/stereo_assets/weights/pretrained_model_KITTI2015.tar; or use "
                    "backend:=sgbm, which needs no weights")
    monkeypatch.undo()
    assert assets.source_checkout() == Path(assets.__file__).resolve().parents[1]
