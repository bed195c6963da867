"""The benchmark's report: rounds merged, ratios to the reference, the text table."""

from __future__ import annotations

import os
import platform
import statistics
from pathlib import Path

from stereo_depth_ros.benchmark.worker import stat


def merge_stats(records: list[dict]) -> dict:
    """The first record with every record's runs pooled (`stat`) and median stage times."""
    runs = [t for r in records for t in r["runs_s"]]
    merged = {**records[0], **stat(runs), "runs_s": runs}
    if "stages_s" in records[0]:
        merged["stages_s"] = {name: statistics.median(r["stages_s"][name] for r in records)
                              for name in records[0]["stages_s"]}
    return merged


def merge(records: list[dict]) -> dict:
    """One record from the rounds of a configuration: all runs pooled, peaks = max."""
    merged = merge_stats(records)
    merged["rounds"] = len(records)
    merged["peak_rss_mb"] = max(r["peak_rss_mb"] for r in records)
    for part in ("network", "frame"):
        if part in records[0]:
            merged[part] = merge_stats([r[part] for r in records])
            merged[part]["fps"] = 1.0 / merged[part]["median_s"]
            for peak in ("peak_gpu_mb",):
                if peak in records[0][part]:
                    merged[part][peak] = max(r[part][peak] for r in records)
    return merged


def accuracy(output: Path, reference: Path) -> dict | None:
    """Mean/max |difference| (px) and % beyond 3 px of two saved disparities (.npy), or None."""
    import numpy as np
    if not (output.is_file() and reference.is_file()):
        return None
    got, ref = np.load(output), np.load(reference)
    valid = np.isfinite(got) & np.isfinite(ref)
    diff = np.abs(got - ref)[valid]
    if diff.size == 0:
        return None
    return {"mean_abs_px": float(diff.mean()), "max_abs_px": float(diff.max()),
            "bad3_pct": float(100.0 * (diff > 3.0).mean())}


def ratios(record: dict, reference: dict) -> None:
    """Add the reference's median (and min) over the record's: its speed-ups, in place."""
    record["speedup_vs_reference"] = reference["median_s"] / record["median_s"]
    record["speedup_vs_reference_min"] = reference["min_s"] / record["min_s"]
    for part in ("network", "frame"):
        if part in record and part in reference:
            record[part]["speedup_vs_reference"] = (reference[part]["median_s"]
                                                    / record[part]["median_s"])


def machine(device: str, load_before: tuple[float, float, float]) -> dict:
    """What ran the benchmark: platform, CPU, torch (and the GPU on CUDA), load averages."""
    import torch
    info = {"platform": platform.platform(), "processor": cpu_model(),
            "cpus": os.cpu_count(), "torch": torch.__version__,
            "loadavg_before": load_before, "loadavg_after": os.getloadavg()}
    if device == "cuda":
        info.update(gpu=torch.cuda.get_device_name(), cuda=torch.version.cuda,
                    cudnn=torch.backends.cudnn.version())
    return info


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as handle:
            for line in handle:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


def _ms(seconds: float | None) -> str:
    return "-" if seconds is None else f"{1000 * seconds:.1f}"


def format_table(report: dict) -> str:
    """Plain-text summary of a report."""
    lines = [f"{'size':>9} {'config':>10} {'device':>6} {'matcher ms':>10} {'x ref':>6} "
             f"{'network ms':>10} {'x ref':>6} {'frame ms':>9} {'fps':>6} {'peak MB':>8}  "
             "accuracy vs reference"]
    for r in report["results"]:
        if "error" in r:
            lines.append(f"{r['size']:>9} {r['config']:>10} failed: {r['error']}")
            continue
        accuracy = r.get("accuracy_vs_reference")
        acc_text = "" if not accuracy else (
            f"mean {accuracy['mean_abs_px']:.3f} px, max {accuracy['max_abs_px']:.2f} px, "
            f">3 px {accuracy['bad3_pct']:.2f} %")
        network = r.get("network") or {}
        frame = r.get("frame") or {}
        peak = network.get("peak_gpu_mb", r["peak_rss_mb"])
        lines.append(
            f"{r['size']:>9} {r['config']:>10} {r.get('device', 'cpu'):>6} "
            f"{_ms(r['median_s']):>10} {r.get('speedup_vs_reference', float('nan')):6.2f} "
            f"{_ms(network.get('median_s')):>10} "
            f"{network.get('speedup_vs_reference', float('nan')):6.2f} "
            f"{_ms(frame.get('median_s')):>9} {frame.get('fps', float('nan')):6.1f} "
            f"{peak:8.0f}  {acc_text}")
    for r in report["results"]:
        if r.get("stages_s") and r.get("kind") == "psmnet" and "error" not in r:
            text = ", ".join(f"{k} {1000 * v:.0f}" for k, v in r["stages_s"].items())
            lines.append(f"matcher stages (ms) {r['size']} {r['config']}: {text}"
                         + (f" [{r['engine_detail']}]" if r.get("engine_detail") else ""))
    for limit in report.get("limits") or []:
        if "error" in limit:
            lines.append(f"limits at {limit['size']}: failed: {limit['error']}")
            continue
        flops = limit["flops"]
        conv = ", ".join(f"{name} {v['gflops']:.0f} GFLOP/s" for name, v in
                         limit["conv3d"]["arithmetic"].items())
        lines.append(f"limits at {limit['size']} ({limit['threads']} threads, "
                     f"{limit['conv3d']['cpu']}): network {flops['total_reference'] / 1e12:.3f}"
                     f" TFLOP (reference), {flops['total_fused'] / 1e12:.3f} TFLOP (fused: "
                     f"features {flops['features'] / 1e12:.3f}, cost conv "
                     f"{flops['cost_conv_fused'] / 1e12:.4f}, 3-D "
                     f"{flops['cnn3d_after_cost_conv'] / 1e12:.3f}); one 32->32 3-D conv "
                     f"({limit['conv3d']['gflop']:.1f} GFLOP): {conv}")
    stages = [r for r in report["results"] if r.get("frame")]
    for r in stages:
        text = ", ".join(f"{k} {1000 * v:.1f}" for k, v in r["frame"]["stages_s"].items())
        lines.append(f"frame stages (ms) {r['size']} {r['config']}: {text} "
                     f"(ROS messages: {r['frame']['ros_messages']})")
    lines.append("peak MB: GPU memory (max allocated) on CUDA, process RSS on the CPU")
    return "\n".join(lines)
