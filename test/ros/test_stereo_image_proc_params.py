"""stereo_image_proc's parameter names on this node: one value per fact, each proven by its effect.

Pure resolution rules first (config.py), then a node in this process (its backend and parameters
read back), then a node as a subprocess fed a synthetic pair over real DDS: the searched range,
the algorithm (bit-exact against OpenCV's StereoBM / StereoSGBM with the same settings), the
cloud layout and the sync policy read back from what it publishes, and the WARN lines for
parameters it does not know (typos, qos_overrides of topics it does not use).
"""

from __future__ import annotations

import numpy as np
import pytest

from helpers.process import assert_clean_exit
from stereo_depth_ros import config as cfg

rclpy = pytest.importorskip("rclpy")

from rclpy.context import Context  # noqa: E402
from rclpy.parameter import Parameter  # noqa: E402
from helpers.parameter_effects import (BASELINE, FOREGROUND, FOREGROUND_D,  # noqa: E402
                                       FX, two_plane_scene)
from helpers.ros import FRAME, Harness, NodeProcess  # noqa: E402
from helpers.ros_messages import as_array, image_msg, stamp, stereo_infos, time_ns  # noqa: E402
from helpers.ros_nodes import set_parameters  # noqa: E402

from stereo_depth_ros.backends.bm import BmBackend  # noqa: E402
from stereo_depth_ros.backends.sgbm import SgbmBackend  # noqa: E402
from stereo_depth_ros.ros.messages import pointcloud2_to_numpy  # noqa: E402
from stereo_depth_ros.ros.stereo_depth_node import StereoDepthNode  # noqa: E402

pytest_plugins = ("helpers.ros_nodes",)       # the make_node fixture


# ------------------------------------------------------------------------ resolution (pure)
def test_stereo_image_proc_names_set_their_counterparts():
    changes, warnings = cfg.resolve_sip_aliases({
        "stereo_algorithm": 0, "disparity_range": 48, "correlation_window_size": 9,
        "min_disparity": -16, "uniqueness_ratio": 12.7, "speckle_size": 50, "P1": 100.0,
        "P2": 900.0, "sgbm_mode": 2, "prefilter_cap": 20, "disp12_max_diff": 3,
        "speckle_range": 5})
    assert warnings == []
    assert changes == {"backend": "bm", "sgbm.num_disparities": 48, "sgbm.block_size": 9,
                       "sgbm.min_disparity": -16, "sgbm.uniqueness_ratio": 12,
                       "sgbm.speckle_window_size": 50, "sgbm.p1": 100, "sgbm.p2": 900,
                       "sgbm.mode": "sgbm_3way", "sgbm.pre_filter_cap": 20,
                       "sgbm.disp12_max_diff": 3, "sgbm.speckle_range": 5}


def test_conflicting_names_warn_and_stereo_image_procs_wins():
    changes, warnings = cfg.resolve_sip_aliases({
        "disparity_range": 64, "sgbm.num_disparities": 32, "correlation_window_size": 7,
        "sgbm.block_size": 7, "backend": "sgbm", "stereo_algorithm": 0})
    assert changes["sgbm.num_disparities"] == 64 and changes["backend"] == "bm"
    assert len(warnings) == 2                                      # equal values: no warning
    assert "disparity_range=64 and sgbm.num_disparities=32 are both given" in warnings[0] + \
        warnings[1]
    assert any("stereo_image_proc's stereo_algorithm wins, backend is 'bm'" in w
               for w in warnings)


def test_psmnet_takes_the_window_and_ignores_stereo_algorithm():
    changes, warnings = cfg.resolve_sip_aliases({"backend": "psmnet", "stereo_algorithm": 1,
                                                 "min_disparity": 16, "disparity_range": 176})
    assert changes == {"sgbm.min_disparity": 16, "max_disparity": 192}
    assert warnings == ["stereo_algorithm=1 is ignored: backend psmnet is set (stereo_algorithm "
                        "picks between bm and sgbm)"]
    with pytest.raises(ValueError, match="disparity_range=64 sets max_disparity=69"):
        cfg.resolve_sip_aliases({"min_disparity": 5, "disparity_range": 64})
    with pytest.raises(ValueError, match="stereo_algorithm=2 is above the maximum 1"):
        cfg.resolve_sip_aliases({"stereo_algorithm": 2})


def test_mirrored_values_read_back_from_this_projects_names():
    values = {"backend": "sgbm", "sgbm.num_disparities": 80, "sgbm.mode": "hh",
              "sgbm.uniqueness_ratio": 7}
    mirrored = {a.spec.name: cfg.alias_value(a, values) for a in cfg.SIP_ALIASES}
    assert mirrored["stereo_algorithm"] == 1 and mirrored["disparity_range"] == 80
    assert mirrored["sgbm_mode"] == 1 and mirrored["uniqueness_ratio"] == 7.0
    psm = {a.spec.name: cfg.alias_value(a, {"backend": "psmnet", "max_disparity": 192,
                                            "sgbm.min_disparity": 32})
           for a in cfg.SIP_ALIASES}
    assert psm["disparity_range"] == 160 and psm["stereo_algorithm"] is None


def test_unbounded_sync_tolerance_is_stereo_image_procs_zero():
    assert cfg.SPECS["approximate_sync_tolerance_seconds"].default == 0.0
    assert cfg.SPECS["queue_size"].default == 5
    assert cfg.NodeConfig().sync_tolerance_s() == cfg.UNBOUNDED_SYNC_TOLERANCE_S
    assert cfg.NodeConfig(approximate_sync_tolerance_seconds=0.02).sync_tolerance_s() == 0.02


def test_the_tools_build_block_matching_for_backend_bm():
    import argparse
    from stereo_depth_ros.tools._cli import add_backend_arguments, backend_from_args
    parser = argparse.ArgumentParser()
    add_backend_arguments(parser)
    backend = backend_from_args(parser.parse_args(["--backend", "bm", "--max-disparity", "32",
                                                   "--block-size", "7"]))
    assert backend.name == "bm"
    assert (backend.params.num_disparities, backend.params.block_size) == (32, 7)


# ------------------------------------------------------------------------ node, in process
def _value(node, name):
    return node.get_parameter(name).value


@pytest.mark.ros
def test_stereo_algorithm_0_runs_block_matching_with_the_sip_values(make_node):
    node = make_node(stereo_algorithm=0, disparity_range=32, correlation_window_size=9,
                     prefilter_size=11, prefilter_cap=20, texture_threshold=5,
                     uniqueness_ratio=12.0)
    assert isinstance(node.backend, BmBackend)
    matcher = node.backend.matcher
    assert (matcher.getNumDisparities(), matcher.getBlockSize(), matcher.getPreFilterSize(),
            matcher.getPreFilterCap(), matcher.getTextureThreshold(),
            matcher.getUniquenessRatio()) == (32, 9, 11, 20, 5, 12)
    # One value per fact: both names read back the same.
    assert (_value(node, "backend"), _value(node, "sgbm.num_disparities"),
            _value(node, "sgbm.block_size")) == ("bm", 32, 9)
    assert node.describe_parameter("disparity_range").integer_range[0].step == 16


@pytest.mark.ros
def test_live_changes_keep_both_names_equal(make_node):
    node = make_node(stereo_algorithm=1, disparity_range=64)
    assert isinstance(node.backend, SgbmBackend)
    assert all(r.successful for r in node.set_parameters([Parameter("disparity_range",
                                                                    value=32)]))
    assert _value(node, "sgbm.num_disparities") == 32 and node.backend.max_disparity == 32.0
    assert all(r.successful for r in node.set_parameters([Parameter("sgbm.block_size",
                                                                    value=7)]))
    assert _value(node, "correlation_window_size") == 7
    assert all(r.successful for r in node.set_parameters([Parameter("sgbm_mode", value=1)]))
    assert _value(node, "sgbm.mode") == "hh" and node.backend.params.mode == "hh"
    # A value stereo_image_proc's range allows but this SGBM cannot use: refused, both unchanged.
    result = node.set_parameters([Parameter("correlation_window_size", value=55)])[0]
    assert not result.successful and "sgbm.block_size" in result.reason
    assert _value(node, "correlation_window_size") == 7 and _value(node, "sgbm.block_size") == 7


@pytest.mark.ros
@pytest.mark.parametrize("key_topic", ["/left/image_raw", "/cam/left/image_rect"])
def test_qos_overrides_under_the_unremapped_or_the_remapped_name(key_topic):
    from rclpy.qos import ReliabilityPolicy
    context = Context()
    rclpy.init(context=context)
    node = None
    try:
        node = StereoDepthNode(
            context=context, cli_args=["--ros-args", "-r", "left/image_raw:=/cam/left/image_rect"],
            parameter_overrides=[
                Parameter("backend", value="sgbm"),
                Parameter(f"qos_overrides.{key_topic}.subscription.reliability",
                          value="reliable")])
        by_topic = {sub.topic_name: sub.qos_profile.reliability
                    for sub in node._sync.subscriptions}
        assert by_topic["/cam/left/image_rect"] == ReliabilityPolicy.RELIABLE
        assert by_topic["/right/image_raw"] == ReliabilityPolicy.BEST_EFFORT
        assert node.get_parameter("qos_overrides./cam/left/image_rect.subscription."
                                  "reliability").value == "reliable"
        from stereo_depth_ros.ros.params import unknown_parameter_warnings
        assert unknown_parameter_warnings(node, node.adopted_qos_overrides) == []
    finally:
        if node is not None:
            node.destroy_node()
        rclpy.try_shutdown(context=context)


@pytest.mark.ros
def test_managed_node_takes_stereo_image_procs_names():
    from lifecycle_msgs.msg import State  # noqa: F401  (the managed node's dependency)
    from stereo_depth_ros.ros.stereo_depth_lifecycle_node import StereoDepthLifecycleNode
    context = Context()
    rclpy.init(context=context)
    node = None
    try:
        node = StereoDepthLifecycleNode(context=context, parameter_overrides=[
            Parameter("stereo_algorithm", value=0), Parameter("disparity_range", value=32),
            Parameter("correlation_window_size", value=11)])
        assert _value(node, "backend") == "bm" and _value(node, "sgbm.num_disparities") == 32
        node.trigger_configure()
        assert isinstance(node.backend, BmBackend)
        assert (node.backend.params.num_disparities, node.backend.params.block_size) == (32, 11)
        assert all(r.successful for r in node.set_parameters([Parameter("disparity_range",
                                                                        value=48)]))
        assert _value(node, "sgbm.num_disparities") == 48 and node.backend.max_disparity == 48
    finally:
        if node is not None:
            node.destroy_node()
        rclpy.try_shutdown(context=context)


# ------------------------------------------------------------------------ node, over DDS
@pytest.fixture(scope="module")
def scene():
    return two_plane_scene()


def _run(args: list[str]) -> tuple[NodeProcess, Harness]:
    node = NodeProcess(args).start()
    try:
        node.wait_for_output(r"ready: backend=", timeout=60.0)
        harness = Harness(node)
    except BaseException:
        node.stop()
        raise
    return node, harness


def _close(node: NodeProcess, harness: Harness) -> None:
    harness.close()
    code = node.stop()
    assert_clean_exit(node.output(), code)


def _later(when, delay_ns: int):
    ns = time_ns(when) + delay_ns
    return stamp(ns // 10**9, ns % 10**9)


def _send(h: Harness, scene, names, right_delay_ns: int = 0, when=None):
    """One pair stamped `when` (default now); the right image and info `right_delay_ns` later."""
    when = when or h.next_stamp()
    left_info, right_info = stereo_infos(scene.rig, when, FRAME)
    later = _later(when, right_delay_ns)
    right_info.header.stamp = later
    h.send_msgs(image_msg(scene.left, "rgb8", when, FRAME),
                image_msg(scene.right, "rgb8", later, FRAME), left_info, right_info)
    return when


@pytest.mark.ros
@pytest.mark.slow
def test_algorithm_range_and_cloud_layout_read_back_from_the_output(scene, tmp_path):
    params = tmp_path / "sip.yaml"
    params.write_text("/**:\n  ros__parameters:\n    stereo_algorithm: 0\n"
                      "    disparity_range: 32\n    correlation_window_size: 9\n"
                      "    sgbm:\n      num_disparities: 64\n"
                      "    texture_threshold: 0\n    inptu_scale: 0.5\n"
                      "    qos_overrides:\n      /left/image_rect_color:\n"
                      "        subscription:\n          reliability: reliable\n")
    node, h = _run(["--params-file", str(params)])
    try:
        # Both names of one value: a WARN, stereo_image_proc's wins (the range below is 32).
        node.wait_for_output(r"disparity_range=32 and sgbm.num_disparities=64 are both given "
                             r"and name one value: stereo_image_proc's disparity_range wins")
        # Typos: a WARN naming the parameter and the closest declared one.
        node.wait_for_output(r"parameter inptu_scale is not a parameter of this node and is "
                             r"ignored; did you mean input_scale\?")
        node.wait_for_output(r"parameter qos_overrides\./left/image_rect_color\.subscription\."
                             r"reliability names a topic .* does not subscribe or publish.*did "
                             r"you mean qos_overrides\./left/image_raw\.subscription\."
                             r"reliability\?")
        names = ["disparity", "points2"]
        h.wait_until_connected(names)
        out = h.outputs_for(_send(h, scene, names), names)
        disparity = out["disparity"]
        assert (disparity.min_disparity, disparity.max_disparity) == (0.0, 31.0)
        expected = BmBackend(num_disparities=32, block_size=9, texture_threshold=0,
                             pre_filter_cap=63, uniqueness_ratio=10, speckle_range=2,
                             disp12_max_diff=1).compute(scene.left, scene.right).disparity
        published = as_array(disparity.image)
        valid = published >= disparity.min_disparity
        # StereoBM's output (a handful of pixels may flip at OpenCV's speckle filter between
        # processes); SGBM with the same window and range disagrees on 12 % of the pixels.
        assert (valid != np.isfinite(expected)).mean() < 0.001
        both = valid & np.isfinite(expected)
        np.testing.assert_array_equal(published[both], expected[both])
        sgbm = SgbmBackend(num_disparities=32, block_size=9).compute(scene.left, scene.right)
        assert (np.isfinite(sgbm.disparity) != valid).mean() > 0.05
        roi = disparity.valid_window                      # 32 + 0 + 4 - 1, border 4
        assert roi.x_offset >= 35 and roi.y_offset >= 4
        assert np.median(published[FOREGROUND][valid[FOREGROUND]]) == pytest.approx(
            FOREGROUND_D, abs=0.2)
        cloud = out["points2"]                            # SIP default: padded, rgb at 16
        assert cloud.point_step == 32 and [(f.name, f.offset) for f in cloud.fields] == [
            ("x", 0), ("y", 4), ("z", 8), ("rgb", 16)]
        z = pointcloud2_to_numpy(cloud)["z"]
        assert np.nanmedian(z[FOREGROUND]) == pytest.approx(FX * BASELINE / FOREGROUND_D,
                                                            rel=0.02)
        # Live: the range by stereo_image_proc's names, the layout by its parameters.
        results = set_parameters(h.ctx.node, h.fqn, {"disparity_range": 16,
                                                     "avoid_point_cloud_padding": True,
                                                     "use_color": False})
        assert all(r.successful for r in results), [r.reason for r in results]
        out = h.outputs_for(_send(h, scene, names), names)
        assert out["disparity"].max_disparity == 15.0
        short = as_array(out["disparity"].image)
        assert np.nanmax(np.where(short >= 0, short, np.nan)) < 16.0   # foreground lost
        assert out["points2"].point_step == 12
        set_parameters(h.ctx.node, h.fqn, {"use_color": True})
        assert h.outputs_for(_send(h, scene, names), names)["points2"].point_step == 16
    finally:
        _close(node, h)


@pytest.mark.ros
@pytest.mark.slow
@pytest.mark.parametrize("synchronizer", ["auto", "in_package"])
@pytest.mark.parametrize("tolerance, published", [(0.0, True), (0.005, False)])
def test_approximate_tolerance_zero_pairs_any_skew(scene, tolerance, published, synchronizer):
    node, h = _run(["-p", "stereo_algorithm:=1", "-p", "disparity_range:=32",
                    "-p", f"synchronizer:={synchronizer}",
                    "-p", "approximate_sync:=true",
                    "-p", f"approximate_sync_tolerance_seconds:={tolerance}"])
    try:
        h.wait_until_connected(["disparity"])
        # The right image and info 40 ms after the left ones: only the unbounded policy pairs
        # them. A later in-step pair (after the skewed one's right stamp) shows the node runs.
        skewed = _send(h, scene, ["disparity"], right_delay_ns=40_000_000)
        if published:
            h.outputs_for(skewed, ["disparity"])
        flush = _send(h, scene, ["disparity"], when=_later(skewed, 200_000_000))
        h.outputs_for(flush, ["disparity"])
        stamps = [time_ns(m.header.stamp) for m in h.out["disparity"].snapshot()]
        assert (time_ns(skewed) in stamps) is published, stamps
        if not published:
            h.wait_status(lambda s: int(s.get("dropped.stamp_skew", 0)) >= 1,
                          what="the skewed pair counted as stamp_skew")
            assert "approximate_sync_tolerance_seconds=0.005" in node.output()
    finally:
        _close(node, h)


def test_psmnet_min_disparity_starts_the_published_window():
    """PSMNet honours min_disparity: smaller disparities become invalid, live too; the search
    range itself (max_disparity) needs a rebuild."""
    from stereo_depth_ros.backends.psmnet import PsmnetBackend
    rng = np.random.default_rng(3)
    left = rng.integers(0, 255, (32, 64, 3), dtype=np.uint8)
    right = np.roll(left, -3, axis=1)
    backend = PsmnetBackend(None, model="basic", max_disparity=16, device="cpu",
                            engine="reference", min_disparity=2)
    assert backend.min_disparity == 2.0
    backend.update(min_disparity=0)
    ungated = backend.compute(left, right).disparity
    assert np.isfinite(ungated).all()
    low, high = float(ungated.min()), float(ungated.max())
    assert 0.0 <= low < high <= 15.0
    start = (low + high) / 2                        # some pixels below the window, some in it
    backend.update(min_disparity=start)
    got = backend.compute(left, right).disparity
    np.testing.assert_array_equal(np.isnan(got), ungated < start)
    np.testing.assert_array_equal(got[~np.isnan(got)], ungated[ungated >= start])
    assert np.isnan(got).any() and not np.isnan(got).all()
    with pytest.raises(ValueError, match="min_disparity must be in"):
        backend.update(min_disparity=16)
    with pytest.raises(ValueError, match="cannot change while running"):
        backend.update(max_disparity=32)
