"""ROS parameters of the node, generated from `stereo_depth_ros.config.PARAMS`.

`declare_parameters(node)` declares every parameter with a ParameterDescriptor (description with
the unit, integer/floating-point range, choices in additional_constraints, read_only) and returns
the validated `NodeConfig`. `ParameterGuard` is the add_on_set_parameters_callback: it validates a
change against the whole configuration (ranges, choices, cross-parameter rules, and whatever the
`apply` hook rejects) and answers SetParametersResult(successful=False, reason=...) on a bad value.
"""

from __future__ import annotations

from typing import Any, Callable

from rcl_interfaces.msg import (FloatingPointRange, IntegerRange, ParameterDescriptor,
                                SetParametersResult)
from rclpy.exceptions import (InvalidParameterTypeException, InvalidParameterValueException,
                              ParameterException)

from stereo_depth_ros.config import PARAMS, SPECS, NodeConfig, ParamSpec


class ParameterError(ValueError):
    """A parameter value the node cannot start with (message names parameter, value, limits)."""


def descriptor(spec: ParamSpec) -> ParameterDescriptor:
    """The ParameterDescriptor of one spec."""
    desc = ParameterDescriptor()
    desc.name = spec.name
    desc.description = spec.description
    desc.read_only = spec.read_only
    desc.dynamic_typing = spec.dynamic_typing
    constraints = []
    if spec.choices:
        constraints.append("one of: " + ", ".join(spec.choices))
    if spec.constraints:
        constraints.append(spec.constraints)
    desc.additional_constraints = "; ".join(constraints)
    if spec.min_value is not None and spec.max_value is not None:
        if spec.type is int:
            desc.integer_range = [IntegerRange(from_value=int(spec.min_value),
                                               to_value=int(spec.max_value),
                                               step=int(spec.step))]
        elif spec.type is float:
            desc.floating_point_range = [FloatingPointRange(from_value=float(spec.min_value),
                                                            to_value=float(spec.max_value),
                                                            step=0.0)]
    return desc


def declare_parameters(node) -> NodeConfig:
    """Declare every parameter on `node` and return the validated configuration.

    Raises ParameterError naming the parameter for a wrong type, an out-of-range value or a value
    that breaks a cross-parameter rule (e.g. from the params file).
    """
    values: dict[str, Any] = {}
    for spec in PARAMS:
        try:
            parameter = node.declare_parameter(spec.name, spec.default, descriptor(spec))
        except InvalidParameterTypeException as error:
            raise ParameterError(f"parameter {spec.name} has the wrong type: {error} "
                                 f"(expected {spec.type.__name__}, e.g. {spec.default!r})") \
                from None
        except (InvalidParameterValueException, ParameterException) as error:
            raise ParameterError(f"parameter {spec.name}: {error} ({spec.help_line()})") from None
        values[spec.name] = parameter.value
    try:
        return NodeConfig.from_params(values)
    except ValueError as error:
        raise ParameterError(str(error)) from None


class ParameterGuard:
    """add_on_set_parameters_callback: validate a change, then hand the new config to `apply`.

    get_config() returns the current NodeConfig; apply(new_config, changed_names) may raise
    ValueError to reject the change (the reason goes back to the caller) and otherwise makes the
    change take effect.
    """

    def __init__(self, get_config: Callable[[], NodeConfig],
                 apply: Callable[[NodeConfig, set[str]], None]) -> None:
        self._get_config = get_config
        self._apply = apply

    def __call__(self, parameters) -> SetParametersResult:
        changes = {p.name: p.value for p in parameters if p.name in SPECS}
        if not changes:
            return SetParametersResult(successful=True)
        # rclpy itself rejects read-only parameters and values outside the descriptor's range
        # before this runs; here come choices and the cross-parameter rules.
        try:
            new_config = self._get_config().replace(changes)
            self._apply(new_config, set(changes))
        except ValueError as error:
            return SetParametersResult(successful=False, reason=str(error))
        return SetParametersResult(successful=True)
