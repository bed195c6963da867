"""The write-up of `stereo_depth_eval --live` (the node's depth against LiDAR scans): the
running table, the summary table, and the result files (depth_error_frames.csv,
depth_error_summary.json, depth_error_vs_range.csv and .png); the checking itself is
`core.lidar_eval.LiveEvaluation`."""

from __future__ import annotations

import csv
import json
import logging
import math
from pathlib import Path

from stereo_depth_ros.core.depth_error import ALL, METRICS, RANGE_BANDS_M
from stereo_depth_ros.core.json_values import json_safe
from stereo_depth_ros.core.lidar_eval import EXPIRED, NO_TRANSFORM, FrameReport, LiveEvaluation
from stereo_depth_ros.core.stamp_matching import NO_REFERENCE, OVERFLOW
from stereo_depth_ros.core.stamps import ns_to_seconds_text

LOG = logging.getLogger(__name__)
OUTCOME_TEXT = {NO_REFERENCE: "without a depth frame within the tolerance",
                NO_TRANSFORM: "without a transform", EXPIRED: "whose depth frame had expired",
                OVERFLOW: "pushed out of the pending queue"}


# ------------------------------------------------------------------------------ printing

_COLUMNS = (("scan stamp (s)", 20), ("dt (ms)", 8), ("points", 7), ("in img", 7),
            ("compared", 8), ("MAE (m)", 8), ("RMSE (m)", 8), ("rel (%)", 7), (">1m (%)", 8),
            (">5% (%)", 8))


def table_header() -> str:
    return "  ".join(name.rjust(width) for name, width in _COLUMNS)


def _number(value: float, digits: int) -> str:
    return "nan" if not math.isfinite(value) else f"{value:.{digits}f}"


def table_row(report: FrameReport, tolerance_s: float) -> str:
    """One line of the running table for a scan."""
    stamp = ns_to_seconds_text(report.scan_stamp_ns).rjust(_COLUMNS[0][1])
    if report.errors is None:
        why = report.outcome.replace("_", " ")
        if report.depth_stamp_ns is None:
            why += f" ({tolerance_s:g} s)"
        return f"{stamp}  not compared: {why}" + (f": {report.detail}" if report.detail else "")
    values = report.errors.summary()[ALL]
    cells = [stamp, f"{report.offset_s * 1e3:.1f}", str(report.points), str(report.in_image),
             str(report.compared), _number(values["mae_m"], 3), _number(values["rmse_m"], 3),
             _number(100 * values["rel_err"], 2), _number(values["over_1m_pct"], 2),
             _number(values["over_5pct_pct"], 2)]
    return "  ".join(cell.rjust(width) for cell, (_, width) in zip(cells, _COLUMNS))


def summary_table(summary: dict) -> str:
    """Per range band over all scans, then the counts."""
    lines = [f"{'band':>8}  {'n':>7}  {'MAE (m)':>8}  {'RMSE (m)':>8}  {'rel (%)':>7}  "
             f"{'>1m (%)':>8}  {'>5% (%)':>8}"]
    for label, values in summary["errors"].items():
        lines.append(f"{label:>8}  {values['n']:>7}  {_number(values['mae_m'], 3):>8}  "
                     f"{_number(values['rmse_m'], 3):>8}  "
                     f"{_number(100 * values['rel_err'], 2):>7}  "
                     f"{_number(values['over_1m_pct'], 2):>8}  "
                     f"{_number(values['over_5pct_pct'], 2):>8}")
    counts = summary["counts"]
    unmatched = ", ".join(f"{counts['scans_' + outcome]} {text}"
                          for outcome, text in OUTCOME_TEXT.items()
                          if counts.get("scans_" + outcome))
    lines.append(f"scans: {counts['scans_received']} received, {counts['scans_evaluated']} "
                 f"compared, {counts['scans_unmatched']} not compared"
                 + (f" ({unmatched})" if unmatched else "")
                 + f"; depth frames: {counts['depth_frames_received']} received, "
                 f"{counts['depth_frames_unmatched']} without a scan")
    return "\n".join(lines)


# ------------------------------------------------------------------------------ results

def make_summary(evaluation: LiveEvaluation, settings: dict) -> dict:
    return {**settings, "counts": evaluation.counts(), "errors": evaluation.totals.summary(),
            "problems": dict(evaluation.problems)}


def frame_rows(reports: list[FrameReport]) -> list[dict]:
    """CSV rows: one per scan and group (all + bands); one row without metrics when the scan
    was not compared."""
    rows = []
    for report in reports:
        base = {"scan_stamp_ns": report.scan_stamp_ns, "depth_stamp_ns": report.depth_stamp_ns,
                "offset_s": report.offset_s, "outcome": report.outcome, "points": report.points,
                "in_image": report.in_image, "compared": report.compared,
                "no_depth": report.no_depth, "behind": report.behind, "outside": report.outside}
        if report.errors is None:
            rows.append({**base, "group": ""})
            continue
        for label, values in report.errors.summary().items():
            rows.append({**base, "group": label, **values})
    return rows


def write_outputs(out_dir: Path, evaluation: LiveEvaluation, summary: dict) -> list[Path]:
    """The result files (see the module docstring); returns their paths."""
    out_dir.mkdir(parents=True, exist_ok=True)
    frames_csv = out_dir / "depth_error_frames.csv"
    columns = ["scan_stamp_ns", "depth_stamp_ns", "offset_s", "outcome", "points", "in_image",
               "compared", "no_depth", "behind", "outside", "group", *METRICS]
    with frames_csv.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns)
        writer.writeheader()
        for row in frame_rows(evaluation.reports):
            writer.writerow({k: ("" if v is None else f"{v:.6g}" if isinstance(v, float) else v)
                             for k, v in row.items()})
    summary_json = out_dir / "depth_error_summary.json"
    summary_json.write_text(json.dumps(json_safe(summary), indent=2) + "\n")
    profile = evaluation.profile.rows()
    range_csv = out_dir / "depth_error_vs_range.csv"
    with range_csv.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=["range_m", "n", "mae_m", "rmse_m"])
        writer.writeheader()
        writer.writerows(profile)
    written = [frames_csv, summary_json, range_csv]
    plot = plot_error_vs_range(profile, out_dir / "depth_error_vs_range.png")
    if plot is not None:
        written.append(plot)
    return written


def plot_error_vs_range(profile: list[dict], path: Path) -> Path | None:
    """MAE and RMSE per metre of LiDAR range as a PNG; None when matplotlib is not installed
    or there is nothing to plot."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        LOG.info("matplotlib not installed: no %s (the numbers are in the .csv)", path.name)
        return None
    if not profile:
        return None
    ranges = [row["range_m"] for row in profile]
    figure, axis = plt.subplots(figsize=(7, 4))
    axis.plot(ranges, [row["mae_m"] for row in profile], "o-", label="MAE")
    axis.plot(ranges, [row["rmse_m"] for row in profile], "s--", label="RMSE")
    for low, _ in RANGE_BANDS_M[1:]:
        axis.axvline(low, color="0.85", linewidth=0.8)
    axis.set_xlabel("LiDAR depth (m)")
    axis.set_ylabel("|depth error| (m)")
    axis.set_title("stereo depth vs LiDAR, per metre of range")
    axis.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)
    return path
