"""What this CPU can do fast: the instruction-set features that decide the fused engine's
arithmetic (read from the CPU, never assumed from a machine name).

- bf16 native: AVX512_BF16 or AMX-BF16 (oneDNN's bf16 convolutions run at ~2x float32);
- int8: AVX512-VNNI or AVX-VNNI (oneDNN's u8s8 convolutions without 16-bit saturation; on plain
  AVX2 oneDNN's int8 path saturates and loses accuracy, so it is not used there);
- AVX-512: the float32 kernels' width.

`STEREO_DEPTH_CPU_FEATURES` switches features off for a process, e.g. "-avx512_bf16,-amx_bf16"
simulates a CPU without native bf16 (tests, comparisons).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from functools import lru_cache

import torch

ENV_OVERRIDE = "STEREO_DEPTH_CPU_FEATURES"
BF16_FLAGS = ("avx512_bf16", "amx_bf16")
VNNI_FLAGS = ("avx512_vnni", "avx_vnni")


@dataclass(frozen=True)
class CpuFeatures:
    """The CPU flags that matter here (lower-case /proc/cpuinfo names) and torch's kernels."""

    flags: frozenset[str]
    onednn_bf16: bool                      # torch's oneDNN runs bf16 convolutions here
    onednn_int8: bool                      # torch has oneDNN's quantized convolution ops

    @property
    def bf16_native(self) -> bool:
        """bf16 dot products in hardware (not emulated) and oneDNN able to use them."""
        return self.onednn_bf16 and any(flag in self.flags for flag in BF16_FLAGS)

    @property
    def int8_vnni(self) -> bool:
        return self.onednn_int8 and any(flag in self.flags for flag in VNNI_FLAGS)

    @property
    def avx512(self) -> bool:
        return "avx512f" in self.flags

    def describe(self) -> str:
        """e.g. "AVX-512, VNNI, native bf16 (avx512_bf16, amx_bf16)"."""
        parts = ["AVX-512" if self.avx512 else ("AVX2" if "avx2" in self.flags else "no AVX2")]
        if self.int8_vnni:
            parts.append("VNNI")
        bf16 = [flag for flag in BF16_FLAGS if flag in self.flags]
        if self.bf16_native:
            parts.append(f"native bf16 ({', '.join(bf16)})")
        elif self.onednn_bf16:
            parts.append("bf16 emulated")
        return ", ".join(parts)


def _cpuinfo_flags() -> set[str]:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as handle:
            for line in handle:
                if line.startswith(("flags", "Features")):
                    return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    # No /proc/cpuinfo (macOS, Windows): what torch's dispatcher reports.
    capability = torch.backends.cpu.get_cpu_capability().lower()
    return {"avx2"} | ({"avx512f"} if "avx512" in capability else set())


def _int8_ops() -> bool:
    try:
        return (hasattr(torch.ops.onednn, "qconv_pointwise")
                and hasattr(torch.ops.onednn, "qconv_prepack")
                and torch.backends.mkldnn.is_available())
    except (AttributeError, RuntimeError):
        return False


def _bf16_ops() -> bool:
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def apply_override(features: CpuFeatures, spec: str) -> CpuFeatures:
    """Switch flags off ("-flag") or on ("+flag"), comma separated; "-onednn_bf16" and
    "-onednn_int8" switch torch's kernels off."""
    flags = set(features.flags)
    bf16, int8 = features.onednn_bf16, features.onednn_int8
    for item in (part.strip().lower() for part in spec.split(",") if part.strip()):
        sign, name = item[0], item[1:]
        if sign not in "+-" or not name:
            raise ValueError(f"{ENV_OVERRIDE}: expected +flag or -flag, got {item!r}")
        if name == "onednn_bf16":
            bf16 = sign == "+" and bf16
        elif name == "onednn_int8":
            int8 = sign == "+" and int8
        elif sign == "-":
            flags.discard(name)
        else:
            flags.add(name)
    return CpuFeatures(frozenset(flags), bf16, int8)


@lru_cache(maxsize=1)
def detect() -> CpuFeatures:
    """This process's CPU features (with the STEREO_DEPTH_CPU_FEATURES override applied)."""
    features = CpuFeatures(frozenset(_cpuinfo_flags()), _bf16_ops(), _int8_ops())
    override = os.environ.get(ENV_OVERRIDE, "")
    return apply_override(features, override) if override else features
