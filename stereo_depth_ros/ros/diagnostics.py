"""Pipeline statistics (counters, rates, per-stage latency) and their diagnostic_msgs form.

`PipelineStats` is thread-safe and ROS-free apart from `to_diagnostic_array`, which turns a
snapshot into one diagnostic_msgs/DiagnosticStatus per node on /diagnostics. Key names (values
are strings, as DiagnosticStatus requires):

- `pairs_in`, `pairs_processed`, `pairs_published`, `rate_in_hz`, `rate_out_hz`
- `messages_in.<topic>` per input topic
- `dropped_total`, `dropped.<reason>`: busy (replaced by a newer pair before the worker took it),
  stamp_skew, unmatched (partner lost), images_lost_in_transport (camera_info came, the image did
  not), missing_camera_info, missing_image, size_mismatch, bad_compressed_data,
  camera_info_size_mismatch, unsupported_encoding, bad_image_data, uncalibrated_camera_info,
  nan_in_calibration, invalid_calibration, image_too_small, processing_error
- `latency_ms.<stage>.{mean,p50,p95,max}` for convert, rectify, infer, postprocess, publish, total
  (over the last 200 pairs)
- `input_age_ms.{mean,p50,p95,max}`: node clock at the end of publishing minus the pair's stamp
- `pending_pairs`, `pending_pairs_max`: pairs waiting for the worker (never more than 1)
- counters: `depth_clamped_pixels` (16UC1 depth beyond 65.535 m), `depth_unavailable.<problem>`
  (pairs published with disparity only: the calibration gives no metric depth)
- the node adds `backend`, `sync`, `input_scale`, `subscribers.<output topic>` (outputs are built
  only for topics with subscribers), `worker_in_flight_s` (while a pair is being processed),
  `input_time_jumps` (stamps went back: the synchroniser started over) and `last_problem`
- `input_scale_in_use` (the rate governor's scale), `rate_governor.*` when `target_rate_hz` > 0,
  `rectification_error_px` and `rectification_check.*` (pipeline.trust and
  pipeline.rectification_monitor)
"""

from __future__ import annotations

import threading
import time
from collections import deque

import numpy as np

STAGES = ("convert", "rectify", "infer", "postprocess", "publish", "total")

# Levels as in diagnostic_msgs/DiagnosticStatus (kept here so the stats stay ROS-free).
OK, WARN, ERROR = 0, 1, 2


class PipelineStats:
    """Counters and latency windows shared by the sync callback, the worker and the timer."""

    def __init__(self, window: int = 200, clock=time.monotonic) -> None:
        self._lock = threading.Lock()
        self._clock = clock
        self._window = window
        self.messages_in: dict[str, int] = {}
        self.pairs_in = 0
        self.pairs_processed = 0
        self.pairs_published = 0
        self.dropped: dict[str, int] = {}
        self.latency_s = {stage: deque(maxlen=window) for stage in STAGES}
        self.input_age_s: deque[float] = deque(maxlen=window)
        self.pending_pairs = 0
        self.pending_pairs_max = 0
        self.counters: dict[str, int] = {}
        self.last_problem: str = ""
        self._rate_mark = (clock(), 0, 0)
        self._rates = (0.0, 0.0)

    def pair_in(self) -> None:
        with self._lock:
            self.pairs_in += 1

    def drop(self, reason: str, detail: str = "", count: int = 1) -> None:
        with self._lock:
            self.dropped[reason] = self.dropped.get(reason, 0) + count
            if detail:
                self.last_problem = f"{reason}: {detail}"

    def count(self, name: str, amount: int = 1) -> None:
        """Add to a named counter (e.g. depth_clamped_pixels); reported as `<name>`."""
        with self._lock:
            self.counters[name] = self.counters.get(name, 0) + int(amount)

    def set_pending(self, pending: int) -> None:
        with self._lock:
            self.pending_pairs = pending
            self.pending_pairs_max = max(self.pending_pairs_max, pending)

    def processed(self, stage_seconds: dict[str, float], published: bool,
                  input_age_s: float | None) -> None:
        with self._lock:
            self.pairs_processed += 1
            for stage, seconds in stage_seconds.items():
                if stage in self.latency_s:
                    self.latency_s[stage].append(float(seconds))
            if published:
                self.pairs_published += 1
                if input_age_s is not None:
                    self.input_age_s.append(float(input_age_s))

    @staticmethod
    def _summary_ms(values) -> dict[str, float]:
        if not values:
            return {}
        array = np.asarray(values, dtype=np.float64) * 1000.0
        return {"mean": float(array.mean()), "p50": float(np.percentile(array, 50)),
                "p95": float(np.percentile(array, 95)), "max": float(array.max())}

    def snapshot(self) -> dict[str, object]:
        """Plain dict of everything, with rates over the time since the previous snapshot."""
        with self._lock:
            now = self._clock()
            mark_time, mark_in, mark_out = self._rate_mark
            elapsed = now - mark_time
            if elapsed > 0:
                self._rates = ((self.pairs_in - mark_in) / elapsed,
                               (self.pairs_published - mark_out) / elapsed)
                self._rate_mark = (now, self.pairs_in, self.pairs_published)
            return {
                "pairs_in": self.pairs_in,
                "pairs_processed": self.pairs_processed,
                "pairs_published": self.pairs_published,
                "rate_in_hz": self._rates[0],
                "rate_out_hz": self._rates[1],
                "messages_in": dict(self.messages_in),
                "dropped": dict(self.dropped),
                "dropped_total": sum(self.dropped.values()),
                "latency_ms": {stage: self._summary_ms(values)
                               for stage, values in self.latency_s.items()},
                "input_age_ms": self._summary_ms(self.input_age_s),
                "pending_pairs": self.pending_pairs,
                "pending_pairs_max": self.pending_pairs_max,
                "last_problem": self.last_problem,
                "counters": dict(self.counters),
            }


def snapshot_to_key_values(snapshot: dict[str, object]) -> list[tuple[str, str]]:
    """Flatten a snapshot into (key, value-string) pairs in a stable order."""
    items: list[tuple[str, str]] = []
    for key in ("pairs_in", "pairs_processed", "pairs_published"):
        items.append((key, str(snapshot[key])))
    items.append(("rate_in_hz", f"{snapshot['rate_in_hz']:.3f}"))
    items.append(("rate_out_hz", f"{snapshot['rate_out_hz']:.3f}"))
    for topic, count in sorted(snapshot["messages_in"].items()):
        items.append((f"messages_in.{topic}", str(count)))
    items.append(("dropped_total", str(snapshot["dropped_total"])))
    for reason, count in sorted(snapshot["dropped"].items()):
        items.append((f"dropped.{reason}", str(count)))
    for stage, summary in snapshot["latency_ms"].items():
        for stat, value in summary.items():
            items.append((f"latency_ms.{stage}.{stat}", f"{value:.3f}"))
    for stat, value in snapshot["input_age_ms"].items():
        items.append((f"input_age_ms.{stat}", f"{value:.3f}"))
    for name, count in sorted(snapshot.get("counters", {}).items()):
        items.append((name, str(count)))
    items.append(("pending_pairs", str(snapshot["pending_pairs"])))
    items.append(("pending_pairs_max", str(snapshot["pending_pairs_max"])))
    if snapshot.get("last_problem"):
        items.append(("last_problem", str(snapshot["last_problem"])))
    return items


def to_diagnostic_array(snapshot: dict[str, object], name: str, stamp, level: int = OK,
                        message: str = "", extra: dict[str, str] | None = None):
    """diagnostic_msgs/DiagnosticArray with one status `name` holding the snapshot's key/values."""
    from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue  # noqa: PLC0415

    status = DiagnosticStatus()
    status.level = bytes([level])
    status.name = name
    status.message = message
    status.hardware_id = ""
    values = snapshot_to_key_values(snapshot) + sorted((extra or {}).items())
    status.values = [KeyValue(key=key, value=value) for key, value in values]
    array_msg = DiagnosticArray()
    array_msg.header.stamp = stamp
    array_msg.status = [status]
    return array_msg


def key_values_to_dict(status) -> dict[str, str]:
    """{key: value} of a DiagnosticStatus (handy in tests and tools)."""
    return {kv.key: kv.value for kv in status.values}
