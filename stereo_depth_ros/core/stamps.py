"""Timestamps: ROS `sec`/`nanosec` pairs <-> integer nanoseconds, defined once.

Works on anything with `sec` and `nanosec` attributes (builtin_interfaces/Time from rclpy or from
`rosbags`), so the conversions stay ROS-free.
"""

from __future__ import annotations

from decimal import ROUND_HALF_EVEN, Decimal

NS_PER_S = 1_000_000_000


def stamp_to_ns(stamp) -> int:
    """builtin_interfaces/Time (sec, nanosec) -> integer nanoseconds."""
    return int(stamp.sec) * NS_PER_S + int(stamp.nanosec)


def ns_to_sec_nanosec(ns: int) -> tuple[int, int]:
    """Integer nanoseconds -> (sec, nanosec) with 0 <= nanosec < 1e9 (also for negative ns)."""
    sec, nanosec = divmod(int(ns), NS_PER_S)
    return sec, nanosec


def set_stamp(stamp, ns: int) -> None:
    """Write integer nanoseconds into a (mutable) Time message in place."""
    stamp.sec, stamp.nanosec = ns_to_sec_nanosec(ns)


def seconds_to_ns(seconds: float) -> int:
    """Seconds (float) -> integer nanoseconds, rounded to the nearest, from the number's shortest
    decimal form: 1700000000.05 s is 1700000000050000000 ns (float arithmetic at epoch scale
    would give ...049999872)."""
    return int((Decimal(repr(float(seconds))) * NS_PER_S).to_integral_value(ROUND_HALF_EVEN))


def ns_to_seconds_text(ns: int) -> str:
    """Nanoseconds as seconds with 6 decimals, for messages ("1700000000.050000")."""
    return f"{ns / NS_PER_S:.6f}"
