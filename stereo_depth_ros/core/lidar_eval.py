"""A live depth-vs-LiDAR evaluation session, without ROS: depth frames and scans go in as they
arrive, one `FrameReport` per scan comes out, totals accumulate.

* A depth frame is a depth image (m, NaN invalid) with its stamp and frame id, paired by stamp
  with its camera_info (intrinsics K = P[:, :3] and size). Images wait for their camera_info
  (at most `max_waiting_images`); one still without it is then paired with the latest camera_info
  of the same size, or counted in `depth_frames_without_camera_info`.
* Each scan is matched to the depth frame with the nearest stamp within `tolerance_ns`
  (`core.stamp_matching`); a scan with none is reported (outcome `no_depth_frame_within_tolerance`)
  and counted, as is a scan whose transform cannot be found (`no_transform`).
* The transform comes from `transform(target_frame, source_frame) -> T_target_source`, e.g. a
  `core.transforms.TransformTree.lookup` or a fixed calibration; it may raise LookupError or
  ValueError while the transforms are not known yet.

Motion within a scan is ignored (see `core.lidar`).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from stereo_depth_ros.core.depth_error import RANGE_BANDS_M, BandedErrors, RangeProfile
from stereo_depth_ros.core.lidar import DEFAULT_MIN_DEPTH_M, compare_scan
from stereo_depth_ros.core.stamp_matching import MATCHED, NearestStampMatcher

NO_TRANSFORM = "no_transform"
EXPIRED = "depth_frame_expired"


@dataclass(frozen=True)
class DepthFrame:
    """depth_m: (H, W) float32/float64 metres, NaN (or <= 0) invalid; k: (3, 3) intrinsics."""

    stamp_ns: int
    depth_m: np.ndarray
    frame_id: str
    k: np.ndarray


@dataclass(frozen=True)
class Scan:
    """points: (N, 3+) metres in `frame_id`."""

    stamp_ns: int
    points: np.ndarray
    frame_id: str


@dataclass
class FrameReport:
    """What one scan gave. errors is None unless outcome == "matched"."""

    scan_stamp_ns: int
    outcome: str
    depth_stamp_ns: int | None = None
    points: int = 0
    in_image: int = 0
    compared: int = 0
    no_depth: int = 0
    behind: int = 0
    outside: int = 0
    errors: BandedErrors | None = None
    detail: str = ""

    @property
    def offset_s(self) -> float | None:
        """Scan stamp minus depth frame stamp, in seconds."""
        if self.depth_stamp_ns is None:
            return None
        return (self.scan_stamp_ns - self.depth_stamp_ns) / 1e9


TransformFn = Callable[[str, str], np.ndarray]


@dataclass
class LiveEvaluation:
    """Feed with `add_camera_info`, `add_depth_image`, `add_scan`; call `finish()` at the end.
    Every call returns the FrameReports decided by it (also kept in `reports`)."""

    transform: TransformFn
    tolerance_ns: int = 50_000_000
    bands: tuple[tuple[float, float], ...] = RANGE_BANDS_M
    min_depth_m: float = DEFAULT_MIN_DEPTH_M
    max_waiting_images: int = 5
    keep_frames: int = 50
    max_pending_scans: int = 30
    reports: list[FrameReport] = field(default_factory=list)
    depth_frames_without_camera_info: int = 0
    scans_received: int = 0
    problems: Counter = field(default_factory=Counter)

    def __post_init__(self) -> None:
        self.matcher = NearestStampMatcher(self.tolerance_ns, max_pending=self.max_pending_scans,
                                           keep_references=self.keep_frames)
        self.totals = BandedErrors(bands=self.bands)
        self.profile = RangeProfile(max_range_m=max(b[1] for b in self.bands))
        self._infos: dict[int, tuple[np.ndarray, int, int]] = {}
        self._latest_info: dict[tuple[int, int], np.ndarray] = {}
        self._waiting: dict[int, tuple[np.ndarray, str]] = {}
        self._frames: dict[int, DepthFrame] = {}

    # ----------------------------------------------------------------------------- inputs
    def add_camera_info(self, stamp_ns: int, k: np.ndarray, width: int,
                        height: int) -> list[FrameReport]:
        k = np.asarray(k, dtype=np.float64).reshape(3, 3)
        if not (k[0, 0] > 0 and k[1, 1] > 0):
            raise ValueError(f"depth camera_info at {stamp_ns} ns: focal lengths must be "
                             f"positive (fx={k[0, 0]}, fy={k[1, 1]})")
        self._infos[int(stamp_ns)] = (k, int(width), int(height))
        self._latest_info[(int(width), int(height))] = k
        while len(self._infos) > self.keep_frames:
            self._infos.pop(min(self._infos))
        if int(stamp_ns) in self._waiting:
            depth_m, frame_id = self._waiting.pop(int(stamp_ns))
            return self._add_frame(int(stamp_ns), depth_m, frame_id)
        return []

    def add_depth_image(self, stamp_ns: int, depth_m: np.ndarray,
                        frame_id: str) -> list[FrameReport]:
        depth_m = np.asarray(depth_m)
        if depth_m.ndim != 2:
            raise ValueError(f"depth image at {stamp_ns} ns must be (H, W), got {depth_m.shape}")
        stamp_ns = int(stamp_ns)
        if stamp_ns in self._infos:
            return self._add_frame(stamp_ns, depth_m, frame_id)
        self._waiting[stamp_ns] = (depth_m, frame_id)
        decided = []
        while len(self._waiting) > self.max_waiting_images:
            decided += self._release_waiting(min(self._waiting))
        return decided

    def add_scan(self, stamp_ns: int, points: np.ndarray, frame_id: str) -> list[FrameReport]:
        self.scans_received += 1
        scan = Scan(int(stamp_ns), np.asarray(points), frame_id)
        return self._evaluate(self.matcher.add_query(scan.stamp_ns, scan))

    def finish(self) -> list[FrameReport]:
        """End of input: images still waiting for camera_info take the latest one of their
        size; pending scans are decided with the depth frames seen."""
        decided = []
        for stamp in sorted(self._waiting):
            decided += self._release_waiting(stamp)
        return decided + self._evaluate(self.matcher.flush())

    # ----------------------------------------------------------------------------- internals
    def _release_waiting(self, stamp_ns: int) -> list[FrameReport]:
        """A waiting image leaves the queue with the latest camera_info of its size, or is
        counted in depth_frames_without_camera_info when none of that size came."""
        image, frame_id = self._waiting.pop(stamp_ns)
        size = (image.shape[1], image.shape[0])
        if size not in self._latest_info:
            self.depth_frames_without_camera_info += 1
            return []
        self._infos[stamp_ns] = (self._latest_info[size], *size)
        return self._add_frame(stamp_ns, image, frame_id)

    def _store(self, stamp_ns: int, depth_m: np.ndarray, frame_id: str) -> None:
        k, _, _ = self._infos[stamp_ns]
        self._frames[stamp_ns] = DepthFrame(stamp_ns, depth_m, frame_id, k)
        while len(self._frames) > self.keep_frames:
            self._frames.pop(min(self._frames))

    def _add_frame(self, stamp_ns: int, depth_m: np.ndarray, frame_id: str) -> list[FrameReport]:
        k, width, height = self._infos[stamp_ns]
        if depth_m.shape != (height, width):
            self.problems["depth image size differs from its camera_info"] += 1
            return []
        self._store(stamp_ns, depth_m, frame_id)
        return self._evaluate(self.matcher.add_reference(stamp_ns))

    def _evaluate(self, decisions) -> list[FrameReport]:
        reports = []
        for decision in decisions:
            scan: Scan = decision.payload
            report = FrameReport(scan.stamp_ns, decision.outcome, decision.reference_stamp_ns,
                                 points=len(scan.points))
            if decision.outcome == MATCHED:
                self._compare(scan, report)
            reports.append(report)
        self.reports.extend(reports)
        return reports

    def _compare(self, scan: Scan, report: FrameReport) -> None:
        frame = self._frames.get(report.depth_stamp_ns)
        if frame is None:
            report.outcome = EXPIRED
            return
        try:
            transform = self.transform(frame.frame_id, scan.frame_id)
        except (LookupError, ValueError) as exc:
            report.outcome, report.detail = NO_TRANSFORM, str(exc)
            return
        comparison = compare_scan(scan.points, frame.depth_m, frame.k, transform,
                                  min_depth_m=self.min_depth_m)
        projection = comparison.projection
        report.in_image, report.compared = projection.in_image, comparison.compared
        report.no_depth, report.behind = comparison.no_depth, projection.behind
        report.outside = projection.outside
        report.errors = BandedErrors(bands=self.bands)
        report.errors.add(comparison.truth_m, comparison.estimate_m)
        self.totals += report.errors
        self.profile.add(comparison.truth_m, comparison.estimate_m)

    # ----------------------------------------------------------------------------- results
    def counts(self) -> dict[str, int]:
        """Scans by outcome, depth frames seen / not matched by any scan / without camera_info."""
        outcomes = Counter(report.outcome for report in self.reports)
        return {"scans_received": self.scans_received,
                "scans_evaluated": outcomes.get(MATCHED, 0),
                "scans_unmatched": sum(n for o, n in outcomes.items() if o != MATCHED),
                **{f"scans_{outcome}": n for outcome, n in sorted(outcomes.items())
                   if outcome != MATCHED},
                "scans_pending": self.matcher.pending,
                "depth_frames_received": self.matcher.references_seen,
                "depth_frames_unmatched": self.matcher.references_unmatched,
                "depth_frames_without_camera_info": self.depth_frames_without_camera_info}
