"""What stereo_depth_bench can measure: the configurations and the run's settings."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

CONFIGS: dict[str, dict] = {
    "reference": {"kind": "psmnet", "engine": "reference", "precision": "fp32",
                  "devices": ("cpu", "cuda")},
    "exact": {"kind": "psmnet", "engine": "exact", "precision": "fp32",
              "devices": ("cpu", "cuda")},
    "fast": {"kind": "psmnet", "engine": "fast", "precision": "fp32", "devices": ("cpu", "cuda")},
    "fast-fp32": {"kind": "psmnet", "engine": "fast", "precision": "fp32", "arithmetic": "fp32",
                  "devices": ("cpu",)},
    "fast-int8": {"kind": "psmnet", "engine": "fast", "precision": "fp32", "arithmetic": "int8",
                  "devices": ("cpu",)},
    "fast-bf16": {"kind": "psmnet", "engine": "fast", "precision": "bf16",
                  "devices": ("cpu", "cuda")},
    "fast-eager": {"kind": "psmnet", "engine": "fast", "precision": "fp32", "graphs": False,
                   "devices": ("cuda",)},
    "fast-compile": {"kind": "psmnet", "engine": "fast", "precision": "fp32", "compile": True,
                     "devices": ("cuda",)},
    "bf16": {"kind": "psmnet", "engine": "reference", "precision": "bf16",
             "devices": ("cuda",)},
    "sgbm": {"kind": "sgbm", "engine": "opencv", "precision": "-", "devices": ("cpu",)},
    "exact-sigma": {"kind": "psmnet", "engine": "exact", "precision": "fp32", "uncertainty": True,
                    "devices": ("cpu", "cuda")},
    "fast-sigma": {"kind": "psmnet", "engine": "fast", "precision": "fp32", "uncertainty": True,
                   "devices": ("cpu", "cuda")},
}
DEFAULT_CONFIGS = {"cpu": ("reference", "exact", "fast", "sgbm"),
                   "cuda": ("reference", "exact", "fast", "fast-eager")}
DEFAULT_SIZES = ((384, 1248), (256, 512))
PSMNET_STAGES = ("preprocess", "features", "cost_volume", "cnn3d", "regression", "postprocess")
RESULT_PREFIX = "STEREO_DEPTH_BENCH_RESULT "
"""How a worker process marks its JSON record on stdout."""


class BenchError(Exception):
    """A problem with the arguments or a failed configuration; printed without a traceback."""


@dataclass
class BenchSettings:
    """One benchmark run (stereo_depth_bench's options).

    device: where the PSMNet configurations run, "cpu" or "cuda". sizes: (height, width) inputs.
    configs: names from CONFIGS. runs, warmup: timed and untimed matcher runs per configuration;
    frame_runs: timed runs of the whole frame path (0 = skip). rounds: every configuration this
    many times, alternating. threads: torch/OpenCV threads (None = torch's default). weights:
    PSMNet checkpoint (None = random weights). malloc: "default" or "reuse". limits: also count
    FLOPs and time one 3-D convolution. in_process: no worker processes. quiet: no progress
    lines. command: the command line recorded in the report.
    """

    device: str = "cpu"
    sizes: list[tuple[int, int]] = field(default_factory=lambda: list(DEFAULT_SIZES))
    configs: list[str] = field(default_factory=list)
    runs: int = 5
    warmup: int = 1
    frame_runs: int = 5
    rounds: int = 1
    threads: int | None = None
    weights: Path | None = None
    malloc: str = "default"
    limits: bool = False
    in_process: bool = False
    quiet: bool = False
    command: list[str] = field(default_factory=lambda: ["stereo_depth_bench"])
