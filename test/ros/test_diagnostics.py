"""PipelineStats values, hand-computed: rates on an injected clock, latency and input-age
summaries (mean, p50, p95, max over the window), drop accounting, and the DiagnosticArray form."""

from __future__ import annotations

import pytest

from stereo_depth_ros.ros.diagnostics import (OK, WARN, PipelineStats, snapshot_to_key_values,
                                              to_diagnostic_array)


class FakeClock:
    """A monotonic clock the test moves by hand (seconds)."""

    def __init__(self, now: float = 100.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def stages(total_s: float) -> dict[str, float]:
    return {"convert": total_s / 4, "infer": total_s / 2, "total": total_s}


def test_rates_are_counts_over_the_time_between_snapshots():
    clock = FakeClock(100.0)
    stats = PipelineStats(clock=clock)
    for _ in range(5):
        stats.pair_in()
    for _ in range(4):
        stats.processed(stages(0.01), published=True, input_age_s=0.05)
    clock.now = 102.0
    first = stats.snapshot()
    assert (first["rate_in_hz"], first["rate_out_hz"]) == (2.5, 2.0)   # 5 and 4 pairs in 2 s
    for _ in range(3):
        stats.pair_in()
    stats.processed(stages(0.01), published=False, input_age_s=None)  # processed, not published
    clock.now = 106.0
    second = stats.snapshot()
    assert (second["rate_in_hz"], second["rate_out_hz"]) == (0.75, 0.0)  # only the new window
    again = stats.snapshot()                       # no time passed: the last rates stand
    assert (again["rate_in_hz"], again["rate_out_hz"]) == (0.75, 0.0)
    assert (again["pairs_in"], again["pairs_processed"], again["pairs_published"]) == (8, 5, 4)


def test_latency_percentiles_are_exact():
    stats = PipelineStats(clock=FakeClock())
    # 1..19 ms and one 200 ms outlier: mean, median, p95 and max all differ.
    totals_ms = [7, 200, 3, 12, 1, 19, 5, 16, 9, 2, 14, 18, 4, 11, 6, 17, 8, 13, 10, 15]
    for total_ms in totals_ms:
        stats.processed(stages(total_ms / 1000.0), published=True, input_age_s=None)
    total = stats.snapshot()["latency_ms"]["total"]
    # numpy's linear percentile: p50 at rank 9.5 (10 and 11), p95 at rank 18.05 (19 and 200).
    assert total == pytest.approx({"mean": 19.5, "p50": 10.5, "p95": 19 + 0.05 * 181,
                                   "max": 200.0}, rel=1e-9)
    infer = stats.snapshot()["latency_ms"]["infer"]
    assert infer == pytest.approx({"mean": 9.75, "p50": 5.25, "p95": 14.025, "max": 100.0},
                                  rel=1e-9)
    assert stats.snapshot()["latency_ms"]["rectify"] == {}      # never reported: no numbers
    values = dict(snapshot_to_key_values(stats.snapshot()))
    assert [values[f"latency_ms.total.{stat}"] for stat in ("mean", "p50", "p95", "max")] == \
        ["19.500", "10.500", "28.050", "200.000"]
    assert not any(key.startswith("latency_ms.rectify") for key in values)


def test_summaries_cover_only_the_last_window_of_pairs():
    stats = PipelineStats(window=4, clock=FakeClock())
    for total_ms in (90, 20, 30, 40, 50):          # the 90 ms pair has left the window
        stats.processed(stages(total_ms / 1000.0), published=True,
                        input_age_s=total_ms / 100.0)
    snapshot = stats.snapshot()
    assert snapshot["latency_ms"]["total"] == pytest.approx(
        {"mean": 35.0, "p50": 35.0, "p95": 48.5, "max": 50.0}, rel=1e-9)
    assert snapshot["input_age_ms"] == pytest.approx(
        {"mean": 350.0, "p50": 350.0, "p95": 485.0, "max": 500.0}, rel=1e-9)


def test_input_age_counts_published_pairs_only():
    stats = PipelineStats(clock=FakeClock())
    stats.processed(stages(0.01), published=True, input_age_s=2.0)
    stats.processed(stages(0.01), published=False, input_age_s=9.0)   # nothing went out
    stats.processed(stages(0.01), published=True, input_age_s=None)    # no stamp to age
    stats.processed(stages(0.01), published=True, input_age_s=4.0)
    assert stats.snapshot()["input_age_ms"] == pytest.approx(
        {"mean": 3000.0, "p50": 3000.0, "p95": 3900.0, "max": 4000.0}, rel=1e-9)


def test_drops_counters_and_pending_are_accounted():
    stats = PipelineStats(clock=FakeClock())
    stats.drop("busy")
    stats.drop("stamp_skew", "stamps too far apart")
    stats.drop("busy", count=2)
    stats.drop("busy")                              # no detail: the last problem stays
    stats.count("depth_clamped_pixels", 7)
    stats.count("depth_clamped_pixels", 5)
    stats.set_pending(1)
    stats.set_pending(0)
    snapshot = stats.snapshot()
    assert snapshot["dropped"] == {"busy": 4, "stamp_skew": 1}
    assert snapshot["dropped_total"] == 5
    assert snapshot["last_problem"] == "stamp_skew: stamps too far apart"
    assert (snapshot["pending_pairs"], snapshot["pending_pairs_max"]) == (0, 1)
    values = dict(snapshot_to_key_values(snapshot))
    assert values["dropped.busy"] == "4" and values["dropped_total"] == "5"
    assert values["depth_clamped_pixels"] == "12"
    assert values["last_problem"] == "stamp_skew: stamps too far apart"


def test_diagnostic_array_carries_level_message_stamp_and_every_value():
    pytest.importorskip("diagnostic_msgs")
    from builtin_interfaces.msg import Time
    clock = FakeClock(10.0)
    stats = PipelineStats(clock=clock)
    stats.pair_in()
    stats.processed(stages(0.004), published=True, input_age_s=0.25)
    clock.now = 12.0
    snapshot = stats.snapshot()
    msg = to_diagnostic_array(snapshot, "node: stereo depth", Time(sec=5, nanosec=7), WARN,
                              "waiting", {"sync": "in_package", "backend": "sgbm"})
    assert (msg.header.stamp.sec, msg.header.stamp.nanosec) == (5, 7)
    [status] = msg.status
    assert status.level == bytes([WARN])
    assert (status.name, status.message) == ("node: stereo depth", "waiting")
    pairs = [(kv.key, kv.value) for kv in status.values]
    extras = [("backend", "sgbm"), ("sync", "in_package")]           # sorted, after the stats
    assert pairs == snapshot_to_key_values(snapshot) + extras
    values = dict(pairs)
    assert (values["rate_in_hz"], values["rate_out_hz"]) == ("0.500", "0.500")
    assert values["input_age_ms.p95"] == "250.000" and values["latency_ms.total.max"] == "4.000"
    assert to_diagnostic_array(snapshot, "n", Time()).status[0].level == bytes([OK])
