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

import dataclasses
import difflib
from typing import Any, Callable

from rcl_interfaces.msg import (FloatingPointRange, IntegerRange, ParameterDescriptor,
                                SetParametersResult)
from rclpy.exceptions import (InvalidParameterTypeException, InvalidParameterValueException,
                              ParameterException)

from stereo_depth_ros.config import (PARAMS, SIP_ALIAS_BY_NAME, SIP_ALIASES, SPECS, NodeConfig,
                                     ParamSpec, alias_value, resolve_sip_aliases)


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


def _declare(node, spec: ParamSpec, desc: ParameterDescriptor, ignore_override: bool = False,
             value: Any = None):
    """declare_parameter (with `value` instead of the default when given); ParameterError naming
    the parameter, the problem and the limits."""
    try:
        return node.declare_parameter(spec.name, spec.default if value is None else value, desc,
                                      ignore_override)
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
    given = given_parameters(node)
    try:
        forced, warnings = resolve_sip_aliases(given)
    except ValueError as error:
        raise ParameterError(str(error)) from None
    values = {spec.name: _declare(node, spec, descriptor(spec), spec.name in forced,
                                  forced.get(spec.name)).value for spec in PARAMS}
    config = config_from_values(values)
    declare_sip_aliases(node, config)
    for text in warnings:
        node.get_logger().warning(text)
    return config


def declare_managed_parameters(node) -> dict[str, str]:
    """Declare every parameter for the lifecycle node; never raises for a bad value.

    A value the declaration refuses (wrong type, out of range) is replaced by the default and
    returned as {name: the ParameterError text declare_parameters would have raised}: configure
    fails with that text until the parameter is set.
    """
    errors: dict[str, str] = {}
    try:
        forced, warnings = resolve_sip_aliases(given_parameters(node))
    except ValueError as error:
        forced, warnings = {}, []
        errors["stereo_image_proc parameters"] = str(error)
    values = {}
    for spec in PARAMS:
        desc = descriptor(spec, managed=True)
        try:
            values[spec.name] = _declare(node, spec, desc, spec.name in forced,
                                         forced.get(spec.name)).value
        except ParameterError as error:
            errors[spec.name] = str(error)
            values[spec.name] = _declare(node, spec, desc, ignore_override=True).value
    for alias in SIP_ALIASES:            # stereo_image_proc's names, mirrored
        mirrored = alias_value(alias, values)
        spec = alias.spec if mirrored is None else dataclasses.replace(alias.spec,
                                                                       default=mirrored)
        desc = descriptor(spec, managed=True)
        try:
            _declare(node, spec, desc)
        except ParameterError as error:
            errors[spec.name] = str(error)
            _declare(node, spec, desc, ignore_override=True)
    for text in warnings:
        node.get_logger().warning(text)
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
        aliases = {p.name: p.value for p in parameters if p.name in SIP_ALIAS_BY_NAME}
        if not changes and not aliases:
            return SetParametersResult(successful=True)
        # rclpy itself rejects read-only parameters and values outside the descriptor's range
        # before this runs; here come choices and the cross-parameter rules.
        current = self._get_config()
        try:
            if aliases:      # stereo_image_proc's names: their counterparts' values
                forced, _ = resolve_sip_aliases({**changes, **aliases},
                                                current.as_params() if current else None)
                changes.update(forced)
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


# ---------------------------------------------------------------- stereo_image_proc's names
def given_parameters(node) -> dict[str, Any]:
    """{name: value} of every parameter given to the node (params files, -p, launch,
    parameter_overrides). rclpy keeps them in Node._parameter_overrides (Humble to Rolling)."""
    overrides = getattr(node, "_parameter_overrides", None) or {}
    return {name: parameter.value for name, parameter in overrides.items()}


def alias_descriptor(alias, backend: str) -> ParameterDescriptor:
    """A stereo_image_proc name's descriptor; read-only where its counterpart is (disparity_range
    with psmnet: max_disparity needs a model reload)."""
    read_only = alias.spec.read_only or (alias.kind == "range" and backend == "psmnet")
    return descriptor(dataclasses.replace(alias.spec, read_only=read_only))


def declare_sip_aliases(node, config: NodeConfig) -> None:
    """Declare stereo_image_proc's names holding their counterparts' values (a given value is
    kept as given: it is what the counterpart was resolved from)."""
    values = config.as_params()
    for alias in SIP_ALIASES:
        if node.has_parameter(alias.spec.name):
            continue
        mirrored = alias_value(alias, values)
        spec = alias.spec
        if mirrored is not None:
            spec = dataclasses.replace(spec, default=mirrored)
        _declare(node, spec, alias_descriptor(alias, config.backend))


class SipAliasSync:
    """add_pre_set_parameters_callback: a change of a stereo_image_proc name also sets its
    counterpart and the other way round, so both always read back the same value (the
    ParameterGuard then validates and applies the counterpart)."""

    def __init__(self, get_config: Callable[[], NodeConfig | None]) -> None:
        self._get_config = get_config

    def __call__(self, parameters: list) -> list:
        from rclpy.parameter import Parameter

        config = self._get_config()
        if config is None:
            return parameters
        names = {p.name for p in parameters}
        given = {p.name: p.value for p in parameters}
        try:
            forced, _ = resolve_sip_aliases(given, config.as_params())
        except ValueError:
            return parameters                    # ParameterGuard rejects it with the reason
        extra = [Parameter(name, value=value) for name, value in forced.items()
                 if name not in names]
        values = {**config.as_params(), **{k: v for k, v in given.items() if k in SPECS},
                  **forced}
        for alias in SIP_ALIASES:
            if alias.spec.name in names:
                continue
            mirrored = alias_value(alias, values)
            if mirrored is not None and mirrored != alias_value(alias, config.as_params()):
                extra.append(Parameter(alias.spec.name, value=mirrored))
        return list(parameters) + extra


def adopt_unremapped_qos_overrides(node, topics: list[str]) -> set[str]:
    """qos_overrides written with a topic's name before remapping apply to the remapped topic.

    rclpy reads qos_overrides.<resolved topic>.*; for each of `topics` (relative names as the
    node uses them) that a remapping moves, a qos_overrides.<expanded, unremapped name>.* key is
    copied to the remapped name (a key given for the remapped name wins; a different value there
    is warned about). Call before creating the publishers and subscriptions. Returns the keys
    adopted (they count as used for `unknown_parameter_warnings`).
    """
    overrides = getattr(node, "_parameter_overrides", None)
    if overrides is None:
        return set()
    from rclpy.parameter import Parameter

    adopted = set()
    for topic in topics:
        expanded = node.resolve_topic_name(topic, only_expand=True)
        remapped = node.resolve_topic_name(topic)
        if expanded == remapped:
            continue
        prefix = f"qos_overrides.{expanded}."
        for key in [k for k in overrides if k.startswith(prefix)]:
            target = f"qos_overrides.{remapped}." + key[len(prefix):]
            adopted.add(key)
            value = overrides[key].value
            if target in overrides:
                if overrides[target].value != value:
                    node.get_logger().warning(
                        f"{key}={value!r} and {target}={overrides[target].value!r} name the same "
                        f"subscription or publisher ({topic} is remapped to {remapped}): the "
                        "remapped name wins")
                continue
            overrides[target] = Parameter(target, value=value)
    return adopted


def unknown_parameter_warnings(node, used: set[str] = frozenset()) -> list[str]:
    """One line for every parameter given to the node that it does not declare, with the
    closest declared name ("did you mean input_scale?"); qos_overrides keys of topics the node
    does not use included. `used`: keys consumed otherwise (adopt_unremapped_qos_overrides)."""
    declared = sorted(node._parameters) if hasattr(node, "_parameters") else []
    lines = []
    for name in sorted(given_parameters(node)):
        if name in used or node.has_parameter(name):
            continue
        pool = [d for d in declared if d.startswith("qos_overrides.") ==
                name.startswith("qos_overrides.")]
        close = difflib.get_close_matches(name, pool, n=1, cutoff=0.6)
        hint = f"; did you mean {close[0]}?" if close else ""
        if name.startswith("qos_overrides."):
            what = ("names a topic (or policy) this node does not subscribe or publish, so it "
                    "changes nothing")
        else:
            what = "is not a parameter of this node and is ignored"
        lines.append(f"parameter {name} {what}{hint}")
    return lines


# ---------------------------------------------------------------- nodes with a few of the specs
def declare_named_parameters(node, specs) -> dict[str, Any]:
    """Declare `specs` (config.ParamSpec, e.g. config.point_cloud_specs()) on `node` with their
    descriptors; returns {name: checked value}. ParameterError names the parameter for a wrong
    type, an out-of-range value or a value outside its choices."""
    values = {}
    for spec in specs:
        value = _declare(node, spec, descriptor(spec)).value
        try:
            values[spec.name] = spec.check(value)
        except ValueError as error:
            raise ParameterError(str(error)) from None
    return values


class SpecGuard:
    """add_on_set_parameters_callback of a `declare_named_parameters` node: a live change of one
    of `specs` is checked (choices, ranges) and handed to apply({name: value}); a bad value is
    refused with the reason."""

    def __init__(self, specs, apply: Callable[[dict[str, Any]], None]) -> None:
        self._specs = {spec.name: spec for spec in specs}
        self._apply = apply

    def __call__(self, parameters) -> SetParametersResult:
        try:
            changes = {p.name: self._specs[p.name].check(p.value) for p in parameters
                       if p.name in self._specs}
        except ValueError as error:
            return SetParametersResult(successful=False, reason=str(error))
        if changes:
            self._apply(changes)
        return SetParametersResult(successful=True)
