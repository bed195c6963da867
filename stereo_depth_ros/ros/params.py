"""ROS parameters of the node, generated from `stereo_depth_ros.config.PARAMS`.

`declare_parameters(node)` declares every parameter with a ParameterDescriptor (description with
the unit, integer/floating-point range, choices in additional_constraints, read_only) and returns
the validated `NodeConfig`. `ParameterGuard` is the add_on_set_parameters_callback: it validates a
change against the whole configuration (ranges, choices, cross-parameter rules, and whatever the
`apply` hook rejects) and answers SetParametersResult(successful=False, reason=...) on a bad value.

The managed (lifecycle) node declares the same parameters with `declare_managed_parameters`: the
ones that need a model reload are not read-only there but may only change while the node is
unconfigured (ParameterGuard rejects them once a backend is loaded), a bad value from the params
file does not stop the node (it is kept as the error `configure` fails with until the parameter is
set), and `read_parameters` builds the configuration at configure time.
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


UNCONFIGURED_ONLY = "changeable only while unconfigured (the model is reloaded at configure)"


def descriptor(spec: ParamSpec, managed: bool = False) -> ParameterDescriptor:
    """The ParameterDescriptor of one spec; `managed`: for the lifecycle node, where read-only
    parameters can change while it is unconfigured."""
    desc = ParameterDescriptor()
    desc.name = spec.name
    desc.description = spec.description
    desc.read_only = spec.read_only and not managed
    desc.dynamic_typing = spec.dynamic_typing
    constraints = []
    if spec.choices:
        constraints.append("one of: " + ", ".join(spec.choices))
    if spec.constraints:
        constraints.append(spec.constraints)
    if spec.read_only and managed:
        constraints.append(UNCONFIGURED_ONLY)
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


def _declare(node, spec: ParamSpec, desc: ParameterDescriptor, ignore_override: bool = False):
    """declare_parameter; ParameterError naming the parameter, the problem and the limits."""
    try:
        return node.declare_parameter(spec.name, spec.default, desc, ignore_override)
    except InvalidParameterTypeException as error:
        raise ParameterError(f"parameter {spec.name} has the wrong type: {error} "
                             f"(expected {spec.type.__name__}, e.g. {spec.default!r})") from None
    except (InvalidParameterValueException, ParameterException) as error:
        raise ParameterError(f"parameter {spec.name}: {error} ({spec.help_line()})") from None


def config_from_values(values: dict[str, Any]) -> NodeConfig:
    """The validated NodeConfig of {parameter name: value}; ParameterError if a rule is broken."""
    try:
        return NodeConfig.from_params(values)
    except ValueError as error:
        raise ParameterError(str(error)) from None


def declare_parameters(node) -> NodeConfig:
    """Declare every parameter on `node` and return the validated configuration.

    Raises ParameterError naming the parameter for a wrong type, an out-of-range value or a value
    that breaks a cross-parameter rule (e.g. from the params file).
    """
    values = {spec.name: _declare(node, spec, descriptor(spec)).value for spec in PARAMS}
    return config_from_values(values)


def declare_managed_parameters(node) -> dict[str, str]:
    """Declare every parameter for the lifecycle node; never raises for a bad value.

    A value the declaration refuses (wrong type, out of range) is replaced by the default and
    returned as {name: the ParameterError text declare_parameters would have raised}: configure
    fails with that text until the parameter is set.
    """
    errors: dict[str, str] = {}
    for spec in PARAMS:
        desc = descriptor(spec, managed=True)
        try:
            _declare(node, spec, desc)
        except ParameterError as error:
            errors[spec.name] = str(error)
            _declare(node, spec, desc, ignore_override=True)
    return errors


def read_parameters(node) -> NodeConfig:
    """The validated configuration of the node's current parameter values (ParameterError)."""
    return config_from_values({spec.name: node.get_parameter(spec.name).value for spec in PARAMS})


class ParameterGuard:
    """add_on_set_parameters_callback: validate a change, then hand the new config to `apply`.

    get_config() returns the current NodeConfig; apply(new_config, changed_names) may raise
    ValueError to reject the change (the reason goes back to the caller) and otherwise makes the
    change take effect.

    get_config() returning None means nothing is loaded (a managed node while unconfigured): each
    value is then only checked on its own (the whole set is validated at configure, as at a plain
    node's start) and on_unloaded_change(changed_names) is told. Once something is loaded,
    parameters that need a model reload (read-only in config.py) are refused with the way to
    change them; on the plain node rclpy refuses them itself before this runs.
    """

    def __init__(self, get_config: Callable[[], NodeConfig | None],
                 apply: Callable[[NodeConfig, set[str]], None],
                 on_unloaded_change: Callable[[set[str]], None] | None = None) -> None:
        self._get_config = get_config
        self._apply = apply
        self._on_unloaded_change = on_unloaded_change

    def __call__(self, parameters) -> SetParametersResult:
        changes = {p.name: p.value for p in parameters if p.name in SPECS}
        if not changes:
            return SetParametersResult(successful=True)
        # rclpy itself rejects read-only parameters and values outside the descriptor's range
        # before this runs; here come choices and the cross-parameter rules.
        current = self._get_config()
        try:
            if current is None:
                for name, value in changes.items():
                    SPECS[name].check(value)
                if self._on_unloaded_change is not None:
                    self._on_unloaded_change(set(changes))
                return SetParametersResult(successful=True)
            frozen = sorted(name for name in changes if SPECS[name].read_only)
            if frozen:
                raise ValueError(f"{', '.join(frozen)}: {UNCONFIGURED_ONLY}; deactivate, clean "
                                 "up, set it, then configure again")
            new_config = current.replace(changes)
            self._apply(new_config, set(changes))
        except ValueError as error:
            return SetParametersResult(successful=False, reason=str(error))
        return SetParametersResult(successful=True)
