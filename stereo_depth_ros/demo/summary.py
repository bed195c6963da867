"""The demo's summary: numbers from the bag, the player and the dumper (with the node's
/diagnostics) for demo_summary.json, and the console text."""

from __future__ import annotations

from pathlib import Path

STAGES = ("convert", "rectify", "infer", "postprocess", "publish", "total")


def source_label(source: str) -> str:
    """'/a/b/calib.txt [P2/P3]' -> 'calib.txt [P2/P3]'."""
    path, sep, keys = source.partition(" [")
    return Path(path).name + (f" [{keys}" if sep else "")


def _float(values: dict, key: str) -> float | None:
    try:
        return float(values[key])
    except (KeyError, ValueError):
        return None


def build_summary(bag_summary: dict, replay_stats: dict, dump_summary: dict,
                  settings: dict, wall_s: float) -> dict:
    """Numbers for the console and demo_summary.json."""
    diag = {}
    for name, values in dump_summary.get("diagnostics", {}).items():
        if "stereo depth" in name:
            diag = values
    frames_in = len(replay_stats.get("frames", []))
    written = dump_summary.get("frames", [])
    latency = {stage: {stat: _float(diag, f"latency_ms.{stage}.{stat}")
                       for stat in ("mean", "p50", "max")} for stage in STAGES}
    end_to_end = [f["latency_s"] for f in replay_stats.get("frames", [])
                  if f.get("latency_s") is not None]
    drops = {key[len("dropped."):]: int(value) for key, value in diag.items()
             if key.startswith("dropped.")}
    per_frame = []
    for entry in written:
        per_frame.append({key: entry.get(key) for key in (
            "index", "stamp_ns", "valid_fraction", "depth_p5_m", "depth_median_m", "depth_p95_m",
            "disparity_min_px", "disparity_max_px")} | {"montage": entry["files"]["montage_png"]})
    return {
        "settings": settings,
        "bag": {"path": bag_summary["bag"], "frames": bag_summary["frames"],
                "calibrations": bag_summary["calibrations"]},
        "frames_in": frames_in,
        "frames_out": len(written),
        "frames_without_output": frames_in - len(written),
        "node": {"pairs_in": diag.get("pairs_in"), "pairs_published": diag.get("pairs_published"),
                 "dropped_total": diag.get("dropped_total"), "dropped": drops},
        "latency_ms": latency,
        "end_to_end_s": end_to_end,
        "frames": per_frame,
        "wall_s": wall_s,
    }


def format_summary(summary: dict, out_dir: Path) -> str:
    lines = ["", "=== stereo_depth_ros demo summary ==="]
    settings = summary["settings"]
    lines.append(f"backend {settings['backend']}, input_scale {settings['input_scale']}, "
                 f"device {settings['device']}; bag {summary['bag']['path']}")
    for calib in summary["bag"]["calibrations"]:
        lines.append(f"  camera {calib['width']}x{calib['height']}: fx {calib['fx']:.1f} px, "
                     f"baseline {calib['baseline_m']:.4f} m  ({source_label(calib['source'])})")
    node = summary["node"]
    lines.append(f"frames in {summary['frames_in']}, frames out {summary['frames_out']}, "
                 f"without output {summary['frames_without_output']}; node: pairs in "
                 f"{node['pairs_in']}, published {node['pairs_published']}, dropped "
                 f"{node['dropped_total']} {node['dropped'] or ''}".rstrip())
    stage_text = []
    for stage in STAGES:
        mean = summary["latency_ms"][stage]["mean"]
        if mean is not None:
            stage_text.append(f"{stage} {mean:.0f}")
    if stage_text:
        lines.append("node latency per stage, mean ms: " + ", ".join(stage_text))
    if summary["end_to_end_s"]:
        values = summary["end_to_end_s"]
        lines.append(f"end-to-end (replay publish -> disparity received): mean "
                     f"{sum(values) / len(values):.2f} s, max {max(values):.2f} s")
    lines.append("frame  valid  depth p5 / median / p95 (m)   montage")
    for frame in summary["frames"]:
        if frame.get("depth_median_m") is None:
            depth = "no valid depth"
        else:
            depth = (f"{frame['depth_p5_m']:6.1f} / {frame['depth_median_m']:6.1f} / "
                     f"{frame['depth_p95_m']:6.1f}")
        lines.append(f"{frame['index']:5d}  {frame['valid_fraction']:5.0%}  {depth:27s}  "
                     f"{out_dir / 'frames' / frame['montage']}")
    lines.append(f"total wall time {summary['wall_s']:.1f} s; everything is in {out_dir}")
    return "\n".join(lines)
