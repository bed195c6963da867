"""The calibration-drift alarm: core.rectification_check run every N seconds, off the frame path.

`RectificationMonitor.offer(left, right, calibration, rectify)` is called by the node's worker
with every pair it processed. It costs a clock read unless a check is due (period elapsed and no
check running): then it keeps a grey copy of the two images (never the caller's arrays or
messages; one pair at most) and wakes its own thread, which rectifies the copy as the pipeline
does (its own remap tables, built once per calibration), measures it and keeps the result. The
level is that of the median of the last `WINDOW` measured errors (a single odd frame raises no
alarm; a static misalignment is reported from the first measurement; a new calibration starts
a new window); a check that found too few features reports "not enough features" and leaves the
level as it was.
"""

from __future__ import annotations

import logging
import statistics
import threading
import time
from collections import deque
from collections.abc import Callable

import numpy as np

from stereo_depth_ros.core.camera import StereoRig
from stereo_depth_ros.core.rectification_check import (RectificationMeasurement,
                                                       measure_rectification, to_gray)
from stereo_depth_ros.core.rectify import Rectifier, StereoCalibration

LOG = logging.getLogger(__name__)

# Levels as in diagnostic_msgs/DiagnosticStatus.
OK, WARN, ERROR = 0, 1, 2
WINDOW = 3


def _grey_copy(image: np.ndarray) -> np.ndarray:
    grey = to_gray(image)
    return grey.copy() if np.shares_memory(grey, image) else grey


class RectificationMonitor:
    """Periodic rectification check with its own thread (see the module docstring).

    period_s: seconds between checks; 0 = off. warn_px, error_px: thresholds on the median of the
    last WINDOW errors. clock: monotonic seconds (injectable for tests). measure: the check.
    """

    def __init__(self, period_s: float, warn_px: float, error_px: float, *,
                 clock: Callable[[], float] = time.monotonic,
                 measure: Callable[..., RectificationMeasurement] = measure_rectification
                 ) -> None:
        self._clock = clock
        self._measure = measure
        self._lock = threading.Condition()
        self._pending: tuple | None = None
        self._busy = False
        self._next_due = 0.0
        self._stop = False
        self._thread: threading.Thread | None = None
        self._rectifier: tuple[StereoCalibration, Rectifier] | None = None
        self._errors: deque[float] = deque(maxlen=WINDOW)
        self._calibration = None          # the calibration the errors in the window belong to
        self.last: RectificationMeasurement | None = None
        self.evaluations = 0
        self.configure(period_s, warn_px, error_px)

    def configure(self, period_s: float, warn_px: float, error_px: float) -> None:
        if period_s < 0 or not 0 < warn_px < error_px:
            raise ValueError(f"need period_s >= 0 and 0 < warn_px < error_px, got {period_s}, "
                             f"{warn_px}, {error_px}")
        with self._lock:
            self.period_s, self.warn_px, self.error_px = float(period_s), warn_px, error_px

    # -- the frame side ------------------------------------------------------------------------

    def offer(self, left: np.ndarray, right: np.ndarray,
              calibration: StereoCalibration | StereoRig | None, rectify: str = "auto") -> bool:
        """Take a grey copy of this pair for a check if one is due; True when taken."""
        with self._lock:
            now = self._clock()
            if (self.period_s <= 0 or self._busy or self._pending is not None
                    or now < self._next_due or calibration is None):
                return False
            self._next_due = now + self.period_s
            self._pending = (_grey_copy(left), _grey_copy(right), calibration, rectify)
            self._lock.notify()
            return True

    # -- the check -----------------------------------------------------------------------------

    def _rectified(self, left, right, calibration, rectify):
        if not isinstance(calibration, StereoCalibration) or rectify == "false" or (
                rectify != "true" and calibration.already_rectified):
            return left, right
        if self._rectifier is None or self._rectifier[0] is not calibration:
            self._rectifier = (calibration, Rectifier(calibration.left, calibration.right,
                                                      calibration.width, calibration.height))
        return self._rectifier[1].rectify(left, right)

    def evaluate(self, left: np.ndarray, right: np.ndarray,
                 calibration: StereoCalibration | StereoRig,
                 rectify: str = "auto") -> RectificationMeasurement:
        """Run one check now (in the caller's thread) and record it."""
        rig = calibration.rig if isinstance(calibration, StereoCalibration) else calibration
        left, right = self._rectified(left, right, calibration, rectify)
        result = self._measure(left, right, cx=rig.cx_left, cy=rig.cy)
        with self._lock:
            if calibration is not self._calibration:
                self._errors.clear()
                self._calibration = calibration
            self.last = result
            self.evaluations += 1
            if result.measured:
                self._errors.append(result.error_px)
        return result

    def _run(self) -> None:
        while True:
            with self._lock:
                while self._pending is None and not self._stop:
                    self._lock.wait()
                if self._stop:
                    return
                item, self._pending = self._pending, None
                self._busy = True
            try:
                self.evaluate(*item)
            except Exception as error:  # noqa: BLE001  (a bad pair must not end the checks)
                LOG.warning("rectification check failed: %s: %s", type(error).__name__, error)
            finally:
                del item
                with self._lock:
                    self._busy = False
                    self._lock.notify_all()

    def start(self) -> None:
        with self._lock:
            if self._thread is not None:
                return
            self._stop = False
            self._thread = threading.Thread(target=self._run, name="rectification_check",
                                            daemon=True)
            self._thread.start()

    def stop(self, timeout_s: float = 5.0) -> None:
        with self._lock:
            self._stop = True
            self._pending = None
            self._lock.notify_all()
            thread, self._thread = self._thread, None
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout_s)

    def wait_idle(self, timeout_s: float) -> bool:
        """Wait until no check is pending or running (tests, shutdown); False on timeout."""
        deadline = time.monotonic() + timeout_s
        with self._lock:
            while self._pending is not None or self._busy:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._lock.wait(left)
            return True

    # -- the report ----------------------------------------------------------------------------

    def level(self) -> tuple[int, str]:
        """(level, message): OK/WARN/ERROR from the median of the last WINDOW errors."""
        with self._lock:
            errors, last = list(self._errors), self.last
            warn_px, error_px = self.warn_px, self.error_px
        if not errors:
            if last is not None and not last.measured:
                return OK, f"rectification check: {last.reason}"
            return OK, ""
        error = statistics.median(errors)
        if error >= error_px:
            return ERROR, (f"rectification error {error:.2f} px >= {error_px:g} px: the stereo "
                           "calibration no longer fits the cameras (bumped rig?); recalibrate")
        if error >= warn_px:
            return WARN, (f"rectification error {error:.2f} px >= {warn_px:g} px: the "
                          "calibration may have drifted; depth is degraded")
        return OK, ""

    def key_values(self) -> dict[str, str]:
        """Diagnostic key/values (empty when off and never run)."""
        with self._lock:
            errors, last, period = list(self._errors), self.last, self.period_s
            evaluations = self.evaluations
        if period <= 0 and last is None:
            return {"rectification_check": "off"}
        values = {"rectification_check.evaluations": str(evaluations),
                  "rectification_check.period_s": f"{period:g}"}
        if errors:
            values["rectification_error_px"] = f"{statistics.median(errors):.3f}"
        if last is None:
            values["rectification_check"] = "waiting for the first check"
            return values
        values["rectification_check.matches"] = str(last.matches)
        if not last.measured:
            values["rectification_check"] = last.reason
            return values
        values["rectification_check"] = "measured"
        values["rectification_check.last_error_px"] = f"{last.error_px:.3f}"
        values["rectification_check.offset_px"] = f"{last.offset_px:.3f}"
        values["rectification_check.roll_deg"] = f"{last.roll_deg:.4f}"
        values["rectification_check.median_abs_dy_px"] = f"{last.median_abs_dy_px:.3f}"
        return values
