"""Driving a node from a test: StereoDepthNode in this process (the `make_node` fixture,
`InProcessNode` with its own executor thread), its set_parameters service (`set_parameters`) and
the managed node's lifecycle services (`LifecycleClient`)."""

from __future__ import annotations

import pytest

from helpers.ros import DISCOVERY_TIMEOUT_S, _SpunNode, wait_for


@pytest.fixture
def make_node():
    """StereoDepthNode factory in its own rclpy context; everything is torn down afterwards."""
    import rclpy
    from rclpy.context import Context
    from rclpy.parameter import Parameter

    from stereo_depth_ros.ros.stereo_depth_node import StereoDepthNode

    made = []

    def factory(**overrides):
        context = Context()
        rclpy.init(context=context)
        made.append((context, None))
        params = [Parameter(name, value=value) for name, value in overrides.items()]
        node = StereoDepthNode(context=context, parameter_overrides=params)
        made[-1] = (context, node)
        return node

    yield factory
    for context, node in made:
        if node is not None:
            node.destroy_node()
        rclpy.try_shutdown(context=context)


def set_parameters(peer_node, node_fqn: str, values: dict, timeout: float = 20.0) -> list:
    """Set parameters of a running node through its set_parameters service, in the given order
    (rclpy applies them one by one); returns the SetParametersResult of each."""
    from rcl_interfaces.srv import SetParameters
    from rclpy.parameter import Parameter
    client = peer_node.create_client(SetParameters, f"{node_fqn}/set_parameters")
    try:
        if not client.wait_for_service(timeout_sec=timeout):
            raise AssertionError(f"{node_fqn}/set_parameters not available after {timeout} s")
        request = SetParameters.Request(parameters=[
            Parameter(name, value=value).to_parameter_msg() for name, value in values.items()])
        future = client.call_async(request)
        wait_for(future.done, timeout, what=f"setting {', '.join(values)}")
        return list(future.result().results)
    finally:
        peer_node.destroy_client(client)


class InProcessNode(_SpunNode):
    """StereoDepthNode in this process (its own rclpy context, executor thread and worker), for
    tests that put a test double behind it (a backend that raises) or watch what it builds."""

    def __init__(self, namespace: str, parameters: dict, node_class=None) -> None:
        """`node_class`: StereoDepthNode unless given (another of the package's nodes)."""
        import rclpy
        from rclpy.context import Context
        from rclpy.parameter import Parameter
        from stereo_depth_ros.ros.stereo_depth_node import StereoDepthNode

        self.context = Context()
        rclpy.init(context=self.context)
        self.node = None
        try:
            self.node = (node_class or StereoDepthNode)(
                context=self.context, namespace=namespace,
                parameter_overrides=[Parameter(k, value=v) for k, v in parameters.items()])
        except BaseException:
            rclpy.try_shutdown(context=self.context)
            raise
        self._start_spinning()


# ---------------------------------------------------------------------------- lifecycle
LIFECYCLE_MODULE = "stereo_depth_ros.ros.stereo_depth_lifecycle_node"


class LifecycleClient:
    """Drives a managed node through its lifecycle services (what `ros2 lifecycle set` and
    Nav2's lifecycle manager call): change_state by transition label, get_state."""

    def __init__(self, peer_node, node_fqn: str, timeout: float = DISCOVERY_TIMEOUT_S) -> None:
        from lifecycle_msgs.srv import ChangeState, GetState
        self._node = peer_node
        self.timeout = timeout
        self._change = peer_node.create_client(ChangeState, f"{node_fqn}/change_state")
        self._get = peer_node.create_client(GetState, f"{node_fqn}/get_state")
        for client in (self._change, self._get):
            if not client.wait_for_service(timeout_sec=timeout):
                raise AssertionError(f"{client.srv_name} not available after {timeout} s")

    def _call(self, client, request, what: str, timeout: float | None):
        future = client.call_async(request)
        wait_for(future.done, timeout or self.timeout, what=what)
        return future.result()

    def change(self, transition: str, timeout: float | None = None) -> bool:
        """Trigger a transition by label (configure, activate, deactivate, cleanup, shutdown);
        True when the node reports success."""
        from lifecycle_msgs.srv import ChangeState
        request = ChangeState.Request()
        request.transition.label = transition
        return self._call(self._change, request, f"the {transition} transition",
                          timeout).success

    def state(self) -> str:
        from lifecycle_msgs.srv import GetState
        return self._call(self._get, GetState.Request(), "get_state", None).current_state.label

    def close(self) -> None:
        self._node.destroy_client(self._change)
        self._node.destroy_client(self._get)
