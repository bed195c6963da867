"""stereo_depth_lifecycle_node: the stereo depth node as a managed (lifecycle) node.

The same node as `stereo_depth_node` (same parameters, topics, per-frame path and diagnostics:
`StereoDepthCore`), with its parts built and dropped by lifecycle transitions, as robot bring-up
(Nav2's lifecycle manager, launch_ros lifecycle events, `ros2 lifecycle set`) expects:

- configure: read and validate the parameters, load the backend (weights), warm it up at
  `warmup_size`, create the (lifecycle) output publishers and start the worker. A failure (missing
  weights, CUDA absent, a bad parameter) returns FAILURE and logs the reason the plain node gives
  at start; the node stays unconfigured, so the parameter can be fixed and configure tried again.
- activate: subscribe to the inputs, enable the publishers.
- deactivate: unsubscribe (no bandwidth, no compute) and disable the publishers; the backend
  stays loaded, so activate resumes at once.
- cleanup: stop the worker, drop the publishers and release the backend (GPU memory back).
- shutdown: from any state; tear everything down and end the process (exit status 0).

Parameters that need a model reload (read-only on the plain node) can be set while unconfigured.
/diagnostics is a plain publisher: it reports in every state (key `lifecycle_state`; level OK
"unconfigured" / "inactive", ERROR after a failed configure, the plain node's health when active).

Run: python -m stereo_depth_ros.ros.stereo_depth_lifecycle_node --ros-args --params-file
config/stereo_depth.yaml (or `ros2 run stereo_depth_ros stereo_depth_lifecycle_node`), then
`ros2 lifecycle set /stereo_depth_node configure` and `... activate`.
"""

from __future__ import annotations

import sys

from rclpy.lifecycle import LifecycleNode, LifecycleState, TransitionCallbackReturn

from stereo_depth_ros.ros import diagnostics
from stereo_depth_ros import topics
from stereo_depth_ros.ros.command_line import node_main
from stereo_depth_ros.ros.params import (ParameterGuard, SipAliasSync,
                                         adopt_unremapped_qos_overrides,
                                         declare_managed_parameters, read_parameters,
                                         unknown_parameter_warnings)
from stereo_depth_ros.ros.stereo_depth_core import (NODE_NAME, StartupError, StereoDepthCore,
                                                    run)

SUCCESS = TransitionCallbackReturn.SUCCESS
FAILURE = TransitionCallbackReturn.FAILURE


class StereoDepthLifecycleNode(StereoDepthCore, LifecycleNode):
    """The managed stereo depth node; see the module docstring. Starts unconfigured."""

    def __init__(self, node_name: str = NODE_NAME, **kwargs) -> None:
        self._init_core()
        super().__init__(node_name, **kwargs)
        self._accepting = False
        self._configure_error = ""
        # Bad values from the params file: configure fails with the reason until they are set.
        self._parameter_errors = declare_managed_parameters(self)
        self.add_on_set_parameters_callback(ParameterGuard(
            lambda: self._config, self._apply_config, on_unloaded_change=self._parameters_set))
        if hasattr(self, "add_pre_set_parameters_callback"):         # Iron and newer
            self.add_pre_set_parameters_callback(SipAliasSync(lambda: self._config))
        self.adopted_qos_overrides: set[str] | None = None   # at the first configure
        self._start_diagnostics(self.get_parameter("diagnostics_period_seconds").value)
        self.get_logger().info(f"unconfigured: waiting for configure (ros2 lifecycle set "
                               f"{self.get_fully_qualified_name()} configure)")

    def _create_output_publisher(self, msg_type, topic: str, qos, **options):
        return self.create_lifecycle_publisher(msg_type, topic, qos, **options)

    def _destroy_output_publisher(self, publisher) -> None:
        self.destroy_lifecycle_publisher(publisher)

    def _parameters_set(self, names: set[str]) -> None:
        for name in names:
            self._parameter_errors.pop(name, None)

    def _read_config(self):
        """The parameters as configure sees them; the first pending bad value, if any."""
        if self._parameter_errors:
            raise ValueError(next(iter(self._parameter_errors.values())))
        return read_parameters(self)

    # ------------------------------------------------------------------ transitions
    def on_configure(self, state: LifecycleState) -> TransitionCallbackReturn:
        try:
            config = self._startup_config(self._read_config)
            self._load(config)
        except StartupError as error:
            self._release_backend()
            self._configure_error = str(error)
            self.get_logger().error(f"configure failed (staying unconfigured): {error}")
            return FAILURE
        self._configure_error = ""
        self._config = config
        if self.adopted_qos_overrides is None:
            self.adopted_qos_overrides = adopt_unremapped_qos_overrides(
                self, list(topics.inputs(config.image_transport)) + list(topics.OUTPUTS))
        self._create_outputs()
        self._start_diagnostics(config.diagnostics_period_seconds)
        self._start_worker()
        self.get_logger().info("configured: " + self._summary())
        return super().on_configure(state)

    def on_activate(self, state: LifecycleState) -> TransitionCallbackReturn:
        result = super().on_activate(state)        # enables the lifecycle publishers
        try:
            self._subscribe(self._config)
        except StartupError as error:
            super().on_deactivate(state)
            self.get_logger().error(f"activate failed (staying inactive): {error}")
            return FAILURE
        self._accepting = True
        self.get_logger().info(f"active: subscribed to {', '.join(self._topics)} "
                               f"(sync={self._sync.implementation})")
        if not getattr(self, "_unknown_parameters_reported", False):   # every name is declared
            self._unknown_parameters_reported = True
            for line in unknown_parameter_warnings(self, self.adopted_qos_overrides or set()):
                self.get_logger().warning(line)
        return result

    def on_deactivate(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._unsubscribe()
        self._pause()
        self.get_logger().info(f"inactive: unsubscribed from the inputs; the "
                               f"{self._config.backend} backend stays loaded")
        return super().on_deactivate(state)

    def on_cleanup(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._teardown()
        self.get_logger().info("cleaned up: backend released, publishers destroyed")
        return super().on_cleanup(state)

    def on_shutdown(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._teardown()
        self.get_logger().info(f"shut down from {state.label}")
        if not self.finished.done():
            self.finished.set_result(state.label)       # ends run(): the process exits
        return super().on_shutdown(state)

    def on_error(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._teardown()
        self.get_logger().error(f"error in a transition from {state.label}: torn down, "
                                "back to unconfigured")
        return SUCCESS

    def _teardown(self) -> None:
        """Everything configure and activate built, in reverse order (any state)."""
        self._unsubscribe()
        self._accepting = False
        self._stop_worker()
        self._destroy_outputs()
        self._release_backend()
        self._config = None

    # ------------------------------------------------------------------ diagnostics
    def lifecycle_state(self) -> str:
        # rclpy has no public getter; the label is what the get_state service answers.
        return self._state_machine.current_state[1]

    def _idle_health(self) -> tuple[int, str]:
        state = self.lifecycle_state()
        if state == "unconfigured" and self._configure_error:
            return diagnostics.ERROR, f"unconfigured: configure failed: {self._configure_error}"
        return diagnostics.OK, state


def main(args: list[str] | None = None) -> int:
    """Entry point (console script and `python -m`): 0 after shutdown or Ctrl-C."""
    return node_main(lambda argv: run(StereoDepthLifecycleNode, argv), args,
                     prog="stereo_depth_lifecycle_node", description=__doc__)


if __name__ == "__main__":
    sys.exit(main())
