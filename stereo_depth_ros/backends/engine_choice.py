"""What `engine: auto` runs on a CPU: the fastest engine the CPU runs natively whose measured
accuracy stays within the limits below of `exact`. The measurements are recorded here, once.

Accuracy and speed of the fused CPU engine's arithmetics, from the committed benchmark
`docs/measurements/bench_cpu_xeon_sapphire_rapids_2threads.json` (stereo_depth_bench, the released
KITTI 2015 weights on the real KITTI 2015 pair 000046 at 384x1248, an Intel Xeon Sapphire Rapids
with AVX-512 + VNNI + AMX, 2 threads): disparity difference from the float32 reference (which
`exact` equals within 4e-4 px), and the matcher's median seconds per frame.
"""

from __future__ import annotations

from dataclasses import dataclass

from stereo_depth_ros.models.fused.cpu_features import CpuFeatures

MAX_MEAN_PX = 0.05
"""Largest mean |disparity - exact| (px) that `auto` accepts."""
MAX_BEYOND_3PX_PCT = 0.5
"""Largest share (%) of pixels more than 3 px from exact that `auto` accepts."""

MEASUREMENT = "bench_cpu_xeon_sapphire_rapids_2threads.json (real KITTI 2015 pair, 384x1248)"


@dataclass(frozen=True)
class MeasuredArithmetic:
    """One arithmetic of the fused CPU engine as measured (see the module docstring)."""

    engine: str               # the PsmnetBackend engine that runs it
    arithmetic: str           # FastPSMNet arithmetic ("fp32" = the exact plan)
    seconds_per_frame: float  # matcher median, s
    mean_px: float            # mean |d - exact|, px
    beyond_3px_pct: float     # % of pixels with |d - exact| > 3 px

    def native_on(self, cpu: CpuFeatures) -> bool:
        """The CPU runs this arithmetic in hardware (emulated bf16 or saturating int8 do not
        count)."""
        return {"fp32": True, "bf16": cpu.bf16_native, "int8": cpu.int8_vnni}[self.arithmetic]

    @property
    def within_limits(self) -> bool:
        return self.mean_px <= MAX_MEAN_PX and self.beyond_3px_pct <= MAX_BEYOND_3PX_PCT


MEASURED: tuple[MeasuredArithmetic, ...] = (
    MeasuredArithmetic("exact", "fp32", 7.63, 3.0e-6, 0.0),
    MeasuredArithmetic("fast", "bf16", 3.01, 0.0407, 0.257),
    MeasuredArithmetic("fast", "int8", 3.79, 0.0416, 0.196),
)


@dataclass(frozen=True)
class EngineChoice:
    """The engine (and fused arithmetic) `auto` picked, and why, in one log line."""

    engine: str
    arithmetic: str
    reason: str


def choose_cpu_engine(cpu: CpuFeatures, measured: tuple[MeasuredArithmetic, ...] = MEASURED
                      ) -> EngineChoice:
    """The fastest measured arithmetic that `cpu` runs natively and that is within the limits.

    `exact` (float32) always qualifies, so there is always a choice.
    """
    usable = [m for m in measured if m.native_on(cpu) and m.within_limits]
    best = min(usable, key=lambda m: m.seconds_per_frame)
    exact = next(m for m in measured if m.engine == "exact")
    rejected = [f"{m.arithmetic} (" + ("not native here" if not m.native_on(cpu)
                                       else "too far from exact") + ")"
                for m in measured if m not in usable]
    if best.engine == "exact":
        why = "no faster engine is both native and within the accuracy limits"
    else:
        why = (f"{exact.seconds_per_frame / best.seconds_per_frame:.1f}x faster than exact, "
               f"measured mean {best.mean_px:.3f} px and {best.beyond_3px_pct:.2f} % of pixels "
               f"beyond 3 px of exact")
    reason = (f"engine auto on this CPU ({cpu.describe()}): {best.engine} ({best.arithmetic}): "
              f"{why} (limits {MAX_MEAN_PX} px mean, {MAX_BEYOND_3PX_PCT} % beyond 3 px; "
              f"{MEASUREMENT})" + (f"; not used: {', '.join(rejected)}" if rejected else ""))
    return EngineChoice(best.engine, best.arithmetic, reason)
