"""The managed node (stereo_depth_lifecycle_node): lifecycle transitions, real rclpy / Fast DDS.

Subprocess tests drive the node through its lifecycle services with rclpy clients, as
`ros2 lifecycle set` and Nav2's lifecycle manager do, and check values (depth of a synthetic pair,
the graph, /diagnostics, the log). In-process tests cover the configure failures (each with the
message the plain node stops with), the warm-up size and the release of the model at cleanup.

"Weights not reloaded" is checked three ways: /diagnostics `backend_loads` stays 1 across
deactivate/activate (and becomes 2 after cleanup + configure, so it does count loads), the
"backend loaded" log line appears once, and in process the backend object is the same one.
"""

from __future__ import annotations

import gc
import time
import weakref

import pytest

rclpy = pytest.importorskip("rclpy")

from rclpy.context import Context  # noqa: E402
from rclpy.lifecycle import TransitionCallbackReturn  # noqa: E402
from rclpy.parameter import Parameter  # noqa: E402
from helpers.launching import assert_scene_depth, launch_scene  # noqa: E402
from helpers.process import assert_clean_exit  # noqa: E402
from helpers.ros import FRAME, OUTPUTS, Harness, NodeProcess, wait_for  # noqa: E402
from helpers.ros_messages import statuses_of, stereo_infos  # noqa: E402
from helpers.ros_nodes import LIFECYCLE_MODULE, LifecycleClient, set_parameters  # noqa: E402

from stereo_depth_ros.ros import diagnostics  # noqa: E402
from stereo_depth_ros.ros import stereo_depth_core as core_module  # noqa: E402
from stereo_depth_ros.ros.stereo_depth_lifecycle_node import \
    StereoDepthLifecycleNode  # noqa: E402
from stereo_depth_ros.ros.stereo_depth_node import StartupError, StereoDepthNode  # noqa: E402

pytestmark = [pytest.mark.ros]

SUCCESS, FAILURE = TransitionCallbackReturn.SUCCESS, TransitionCallbackReturn.FAILURE
FQN = "/stereo_depth_node"
NAMES = ["disparity", "depth/image_rect"]
SGBM_ARGS = ["-p", "backend:=sgbm", "-p", "sgbm.num_disparities:=32",
             "-p", "diagnostics_period_seconds:=0.25", "-p", "queue_size:=5"]


@pytest.fixture(scope="module")
def scene():
    return launch_scene()


def send_pair(harness: Harness, scene):
    when = harness.next_stamp()
    left_info, right_info = stereo_infos(scene.rig, when, FRAME)
    harness.send(scene.left, scene.right, "rgb8", left_info, right_info, when)
    return when


def status_since(harness: Harness, since_ns: int, predicate=lambda status: True,
                 timeout: float = 30.0) -> dict:
    """The first /diagnostics status of the node stamped at or after since_ns (wall clock, the
    node's clock) that satisfies predicate; with `_level` and `_message`."""
    def find():
        for array in harness.diagnostics.snapshot():
            for status in array.status:
                if status.hardware_id != FQN or \
                        array.header.stamp.sec * 10**9 + array.header.stamp.nanosec < since_ns:
                    continue
                values = diagnostics.key_values_to_dict(status)
                values.update(_message=status.message, _level=status.level[0])
                if predicate(values):
                    return values
        return None
    return wait_for(find, timeout, what="a matching /diagnostics status")


def node_subscriptions(harness: Harness, topic: str) -> list:
    """The stereo depth node's subscriptions on `topic`, from the ROS graph."""
    return [info for info in harness.ctx.node.get_subscriptions_info_by_topic(topic)
            if info.node_name == "stereo_depth_node"]


# ------------------------------------------------------------------------------ subprocess
def test_configure_activate_deactivate_cleanup_shutdown(scene):
    with NodeProcess(SGBM_ARGS, module=LIFECYCLE_MODULE) as node:
        harness = Harness(node, {name: OUTPUTS[name] for name in NAMES})
        lifecycle = None
        try:
            lifecycle = LifecycleClient(harness.ctx.node, FQN)
            assert lifecycle.state() == "unconfigured"
            status = harness.wait_status(lambda s: True)
            assert (status["lifecycle_state"], status["_level"], status["backend"]) == \
                ("unconfigured", diagnostics.OK, "none")

            assert lifecycle.change("configure")
            assert lifecycle.state() == "inactive"
            # /diagnostics goes on while inactive: level OK, "inactive", period after period.
            configured = time.time_ns()
            inactive = status_since(harness, configured)
            assert (inactive["lifecycle_state"], inactive["_level"], inactive["_message"]) == \
                ("inactive", diagnostics.OK, "inactive")
            assert (inactive["backend"], inactive["backend_loads"]) == ("sgbm", "1")
            wait_for(lambda: len({stamp for stamp, s in statuses_of(harness.diagnostics, FQN)
                                  if stamp >= configured}) >= 3, 10.0,
                     what="periodic diagnostics while inactive")
            assert {s["lifecycle_state"] for stamp, s in statuses_of(harness.diagnostics, FQN)
                    if stamp >= configured} == {"inactive"}
            assert node_subscriptions(harness, "/left/image_raw") == []

            assert lifecycle.change("activate")
            harness.wait_until_connected()
            assert len(node_subscriptions(harness, "/left/image_raw")) == 1
            first = send_pair(harness, scene)
            assert_scene_depth(harness.outputs_for(first, NAMES)["depth/image_rect"])

            assert lifecycle.change("deactivate")
            deactivated = time.time_ns()
            for pub in harness.pubs:      # the graph: no subscription left on any input
                wait_for(lambda: pub.get_subscription_count() == 0, 10.0,
                         what=f"the node leaving {pub.topic_name}")
                assert node_subscriptions(harness, pub.topic_name) == []
            while_inactive = send_pair(harness, scene)
            status = status_since(harness, deactivated)
            assert (status["lifecycle_state"], status["_level"], status["_message"]) == \
                ("inactive", diagnostics.OK, "inactive")
            assert (status["backend"], status["backend_loads"]) == ("sgbm", "1")

            assert lifecycle.change("activate")
            harness.wait_until_connected()
            resumed = send_pair(harness, scene)
            assert_scene_depth(harness.outputs_for(resumed, NAMES)["depth/image_rect"])
            # Outputs of one publisher arrive in order: the pair sent while inactive never
            # produced any, and the weights were not loaded again.
            for name in NAMES:
                stamps = [msg.header.stamp for msg in harness.out[name].snapshot()]
                assert while_inactive not in stamps and stamps.count(resumed) == 1, name
            status = harness.wait_status(lambda s: s["lifecycle_state"] == "active"
                                         and s["pairs_published"] == "2")
            assert status["backend_loads"] == "1" and status["pairs_in"] == "2"
            assert node.output().count("backend loaded: sgbm") == 1

            assert lifecycle.change("deactivate") and lifecycle.change("cleanup")
            assert lifecycle.state() == "unconfigured"
            status = status_since(harness, time.time_ns())
            assert status["lifecycle_state"] == "unconfigured"
            assert (status["backend"], status["_level"]) == ("none", diagnostics.OK)
            assert "subscribers./disparity" not in status          # publishers are gone
            node.wait_for_output(r"cleaned up: backend released")

            assert lifecycle.change("configure")                   # a real load: counted
            status = status_since(harness, time.time_ns())
            assert (status["lifecycle_state"], status["backend_loads"]) == ("inactive", "2")
            assert lifecycle.change("shutdown")
            code = node.wait_exit(30.0)
        finally:
            if lifecycle is not None:
                lifecycle.close()
            harness.close()
    assert_clean_exit(node.output(), code)
    assert node.output().count("backend loaded: sgbm") == 2


def test_missing_weights_fail_configure_until_weights_path_is_fixed(kitti_weights):
    missing = "/nowhere/missing_weights.tar"
    params = {"backend": "psmnet", "weights_path": missing, "device": "cpu"}
    context = Context()
    rclpy.init(context=context)
    try:
        with pytest.raises(StartupError) as plain_error:
            StereoDepthNode(context=context, parameter_overrides=[
                Parameter(name, value=value) for name, value in params.items()])
    finally:
        rclpy.try_shutdown(context=context)
    expected = str(plain_error.value)
    assert missing in expected

    args = [arg for name, value in params.items() for arg in ("-p", f"{name}:={value}")]
    with NodeProcess(args + ["-p", "diagnostics_period_seconds:=0.25"],
                     module=LIFECYCLE_MODULE) as node:
        harness = Harness(node, {})
        lifecycle = None
        try:
            lifecycle = LifecycleClient(harness.ctx.node, FQN)
            assert not lifecycle.change("configure")
            assert lifecycle.state() == "unconfigured" and node.process.poll() is None
            node.wait_for_output(r"configure failed \(staying unconfigured\): ")
            assert f"configure failed (staying unconfigured): {expected}" in node.output()
            status = harness.wait_status(lambda s: s["_level"] == diagnostics.ERROR)
            assert status["_message"] == f"unconfigured: configure failed: {expected}"

            # Unconfigured: reload parameters can change; a bad value still has its reason.
            bad, = set_parameters(harness.ctx.node, FQN, {"backend": "nonsense"})
            assert not bad.successful and "expected one of psmnet, sgbm" in bad.reason
            fixed, = set_parameters(harness.ctx.node, FQN, {"weights_path": str(kitti_weights)})
            assert fixed.successful, fixed.reason
            assert lifecycle.change("configure", timeout=120.0)
            assert lifecycle.state() == "inactive"
            status = status_since(harness, time.time_ns())
            assert (status["lifecycle_state"], status["backend"], status["_level"]) == \
                ("inactive", "psmnet", diagnostics.OK)
            node.wait_for_output(rf"backend loaded: psmnet from '{kitti_weights}'")

            # Loaded: the weights can only change after cleanup.
            refused, = set_parameters(harness.ctx.node, FQN, {"weights_path": missing})
            assert not refused.successful and "only while unconfigured" in refused.reason
            for transition in ("activate", "deactivate", "activate"):
                assert lifecycle.change(transition), transition
            status = status_since(harness, time.time_ns())
            assert (status["lifecycle_state"], status["backend_loads"]) == ("active", "1")
            assert node.output().count("backend loaded: psmnet") == 1
            assert lifecycle.change("shutdown")                    # from active
            code = node.wait_exit(30.0)
        finally:
            if lifecycle is not None:
                lifecycle.close()
            harness.close()
    assert_clean_exit(node.output(), code)


# ------------------------------------------------------------------------------ in process
@pytest.fixture
def make_node():
    """Node factory (plain or managed) in its own rclpy context; torn down afterwards."""
    made = []

    def factory(node_class, **params):
        context = Context()
        rclpy.init(context=context)
        made.append((context, None))
        overrides = [Parameter(name, value=value) for name, value in params.items()]
        made[-1] = (context, node_class(context=context, parameter_overrides=overrides))
        return made[-1][1]

    yield factory
    for context, node in made:
        if node is not None:
            node.destroy_node()
        rclpy.try_shutdown(context=context)


@pytest.mark.parametrize("bad, fix", [
    ({"sgbm.block_size": 4}, {"sgbm.block_size": 7}),                 # refused at declaration
    ({"backend": "nonsense"}, {"backend": "sgbm"}),                   # choice
    ({"min_depth_m": 5.0, "max_depth_m": 2.0}, {"max_depth_m": 9.0}),  # cross-parameter rule
    ({"backend": "psmnet", "weights_path": ""}, {"backend": "sgbm"}),  # start-up rule
    ({"warmup_size": "8x8"}, {"warmup_size": "64x48"}),               # too small for SGBM
    ({"backend": "psmnet", "weights_path": "{weights}", "device": "cuda"},
     {"backend": "sgbm"}),                                            # CUDA absent
], ids=["range", "choice", "cross", "startup", "warmup", "cuda"])
def test_bad_parameters_fail_configure_with_the_plain_nodes_message(make_node, bad, fix,
                                                                    request):
    if bad.get("device") == "cuda":
        torch = pytest.importorskip("torch")
        if torch.cuda.is_available():
            pytest.skip("CUDA is available here: asking for it does not fail")
        bad = dict(bad, weights_path=str(request.getfixturevalue("kitti_weights")))
    params = {"backend": "sgbm", "sgbm.num_disparities": 32, **bad}
    with pytest.raises(StartupError) as plain_error:
        make_node(StereoDepthNode, **params)
    managed = make_node(StereoDepthLifecycleNode, **params)
    assert managed.trigger_configure() == FAILURE
    assert managed.lifecycle_state() == "unconfigured" and managed.backend is None
    assert managed._idle_health() == (diagnostics.ERROR,
                                      f"unconfigured: configure failed: {plain_error.value}")
    results = managed.set_parameters([Parameter(n, value=v) for n, v in fix.items()])
    assert all(result.successful for result in results), results
    assert managed.trigger_configure() == SUCCESS
    assert {name: managed.config.get(name) for name in fix} == fix
    assert managed._idle_health() == (diagnostics.OK, "inactive")
    assert managed.trigger_shutdown() == SUCCESS and managed.finished.done()


def test_warm_up_runs_the_pipeline_at_the_expected_size(make_node, monkeypatch):
    """warmup_size is the camera size: the matcher sees it after input_scale, in both nodes."""
    shapes = []

    def recording_backend(config):
        backend = create(config)
        compute = backend.compute
        backend.compute = lambda left, right: (shapes.append(left.shape), compute(left, right))[1]
        return backend

    create = core_module.create_backend
    monkeypatch.setattr(core_module, "create_backend", recording_backend)
    params = {"backend": "sgbm", "sgbm.num_disparities": 32, "warmup_size": "160x120",
              "input_scale": 0.5}
    make_node(StereoDepthNode, **params)
    assert shapes == [(60, 80, 3)]
    managed = make_node(StereoDepthLifecycleNode, **params)
    assert shapes == [(60, 80, 3)]                 # nothing loaded before configure
    assert managed.trigger_configure() == SUCCESS
    assert shapes == [(60, 80, 3)] * 2
    assert managed.trigger_activate() == SUCCESS
    assert managed.trigger_deactivate() == SUCCESS and managed.trigger_activate() == SUCCESS
    assert shapes == [(60, 80, 3)] * 2             # no reload, no second warm-up


def test_cleanup_releases_the_model_and_activate_reuses_it(make_node, kitti_weights):
    managed = make_node(StereoDepthLifecycleNode, backend="psmnet",
                        weights_path=str(kitti_weights), device="cpu")
    assert managed.trigger_configure() == SUCCESS
    backend = managed.backend
    assert backend.model is not None
    for transition in ("activate", "deactivate", "activate", "deactivate"):
        assert getattr(managed, f"trigger_{transition}")() == SUCCESS, transition
        assert managed.backend is backend, transition
    assert managed._backend_loads == 1
    backend_ref, model_ref = weakref.ref(backend), weakref.ref(backend.model)
    del backend
    assert managed.trigger_cleanup() == SUCCESS
    gc.collect()
    # Nothing holds the backend or the network any more: its memory (GPU memory on CUDA) is free.
    assert backend_ref() is None and model_ref() is None
    assert managed.backend is None and managed.config is None
    assert managed.trigger_shutdown() == SUCCESS
