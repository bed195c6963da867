"""The node's per-stream watchers, ROS-free: calibration-drift alarm and rate governor together.

`TrustFeatures(config)` is built from a `config.NodeConfig` (or anything with its attribute names)
and lives beside the pipeline in the node: before a frame `scale()` says the input scale to run
it at (the governor's, or `input_scale` when `target_rate_hz` is 0); after it `frame_done(...)`
feeds the frame time to the governor and offers the pair to the rectification monitor. `health`
folds the drift alarm's level into the node's diagnostic level, and `key_values` gives the extra
diagnostic keys (`input_scale_in_use`, `rate_governor.*`, `rectification_*`).
"""

from __future__ import annotations

import threading

from stereo_depth_ros.pipeline.rate_governor import RateGovernor
from stereo_depth_ros.pipeline.rectification_monitor import RectificationMonitor

GOVERNOR_PARAMETERS = ("target_rate_hz", "min_input_scale", "input_scale")


def _governor(config) -> RateGovernor:
    return RateGovernor(config.target_rate_hz, config.input_scale, config.min_input_scale)


class TrustFeatures:
    """Rate governor + rectification monitor of one node (see the module docstring)."""

    def __init__(self, config, *, monitor: RectificationMonitor | None = None) -> None:
        self._lock = threading.Lock()
        self._governor = _governor(config)
        self.monitor = monitor or RectificationMonitor(
            config.rectification_check_period_seconds, config.rectification_check_warn_px,
            config.rectification_check_error_px)
        self._scale_in_use: float | None = None

    def configure(self, config) -> None:
        """Apply changed live parameters (a governor setting restarts the governor)."""
        self.monitor.configure(config.rectification_check_period_seconds,
                               config.rectification_check_warn_px,
                               config.rectification_check_error_px)
        governor = self._governor
        if (governor.target_rate_hz, governor.steps[0], governor.steps[-1]) != (
                config.target_rate_hz, config.input_scale,
                min(config.min_input_scale, config.input_scale)):
            with self._lock:
                self._governor = _governor(config)

    def start(self) -> None:
        self.monitor.start()

    def stop(self, timeout_s: float = 5.0) -> None:
        self.monitor.stop(timeout_s)

    @property
    def governor(self) -> RateGovernor:
        return self._governor

    def scale(self) -> float:
        """The input scale to run the next frame at."""
        with self._lock:
            return self._governor.scale

    def frame_done(self, scale: float, frame_time_s: float, left, right, calibration,
                   rectify: str) -> None:
        """A frame ran at `scale` in frame_time_s; left/right: the pair as the pipeline got it."""
        with self._lock:
            self._scale_in_use = scale
            self._governor.observe(scale, frame_time_s)
        self.monitor.offer(left, right, calibration, rectify)

    def health(self, level: int, message: str) -> tuple[int, str]:
        """The node's (level, message) with the drift alarm folded in: the worse level wins and
        a WARN/ERROR drift message is appended to (or replaces an "ok") node message. An OK
        check (or "not enough features") changes nothing: it is in the key/values."""
        drift_level, drift_message = self.monitor.level()
        if drift_level == 0:
            return level, message
        if message in ("", "ok"):
            return max(level, drift_level), drift_message
        return max(level, drift_level), f"{message}; {drift_message}"

    def key_values(self) -> dict[str, str]:
        with self._lock:
            state, scale = self._governor.state(), self._scale_in_use
        values = {"input_scale_in_use": f"{scale if scale is not None else state.scale:.4g}"}
        if state.budget_s is not None:
            values["rate_governor.target_rate_hz"] = f"{1.0 / state.budget_s:g}"
            values["rate_governor.scale_changes"] = str(state.changes)
            if state.frame_time_s is not None:
                values["rate_governor.frame_time_ms"] = f"{state.frame_time_s * 1000.0:.1f}"
        values.update(self.monitor.key_values())
        return values
