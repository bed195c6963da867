"""core.stamps: the one place where stamps are converted."""

from __future__ import annotations

import types

from stereo_depth_ros.core.stamps import (ns_to_sec_nanosec, ns_to_seconds_text, seconds_to_ns,
                                          set_stamp, stamp_to_ns)


def test_seconds_to_ns_is_exact_at_epoch_scale():
    # float(1700000000.05) * 1e9 is 1700000000049999872 in binary floating point
    assert seconds_to_ns(1700000000.05) == 1_700_000_000_050_000_000
    assert seconds_to_ns(0.01) == 10_000_000
    assert seconds_to_ns(-0.5) == -500_000_000
    assert seconds_to_ns(2.5e-9) == 2          # halves round to even
    assert seconds_to_ns(3.5e-9) == 4


def test_negative_ns_keep_nanosec_in_range_and_round_trip():
    assert ns_to_sec_nanosec(-1) == (-1, 999_999_999)
    stamp = types.SimpleNamespace(sec=0, nanosec=0)
    for ns in (-1, 0, 1_317_042_145_964_389_445):
        set_stamp(stamp, ns)
        assert 0 <= stamp.nanosec < 1_000_000_000 and stamp_to_ns(stamp) == ns
    assert ns_to_seconds_text(1_700_000_000_050_000_000) == "1700000000.050000"
