"""Matching a stream of stamped queries (LiDAR scans) to the nearest stamped reference (depth
frames) within a tolerance, live, with every outcome counted. Pure (stdlib only).

References are expected in increasing stamp order, as a node publishes its outputs. A query is
decided as soon as a reference stamped at or after it has arrived (no nearer one can follow) or
when `flush()` is called at the end; then it is matched to the nearest reference within the
tolerance (the earlier one on a tie) or reported unmatched. Nothing is dropped silently: queries
pushed out of a full pending queue, and references no query matched, are counted too.
"""

from __future__ import annotations

import bisect
from collections import Counter
from dataclasses import dataclass, field

MATCHED = "matched"
NO_REFERENCE = "no_depth_frame_within_tolerance"
OVERFLOW = "pending_queue_full"


@dataclass(frozen=True)
class Decision:
    """What happened to one query: reference_stamp_ns is None unless outcome == MATCHED."""

    query_stamp_ns: int
    payload: object
    outcome: str
    reference_stamp_ns: int | None = None

    @property
    def offset_ns(self) -> int | None:
        """query - reference stamp (ns), when matched."""
        if self.reference_stamp_ns is None:
            return None
        return self.query_stamp_ns - self.reference_stamp_ns


@dataclass
class NearestStampMatcher:
    """tolerance_ns: largest |query - reference| accepted. max_pending: queries waiting for a
    decision at most (the oldest is then decided with what has arrived). keep_references: how
    many reference stamps are remembered."""

    tolerance_ns: int
    max_pending: int = 50
    keep_references: int = 200
    outcomes: Counter = field(default_factory=Counter)
    references_seen: int = 0
    references_unmatched: int = 0
    _references: list[int] = field(default_factory=list)
    _matched_references: set[int] = field(default_factory=set)
    _pending: list[tuple[int, object]] = field(default_factory=list)

    def __post_init__(self) -> None:
        if self.tolerance_ns < 0:
            raise ValueError(f"tolerance must be >= 0, got {self.tolerance_ns} ns")
        if self.max_pending < 1 or self.keep_references < 1:
            raise ValueError("max_pending and keep_references must be >= 1")

    @property
    def pending(self) -> int:
        return len(self._pending)

    def add_reference(self, stamp_ns: int) -> list[Decision]:
        """A depth frame arrived; returns the queries this decides."""
        stamp_ns = int(stamp_ns)
        index = bisect.bisect_left(self._references, stamp_ns)
        if index < len(self._references) and self._references[index] == stamp_ns:
            return []                                   # already known
        self._references.insert(index, stamp_ns)
        self.references_seen += 1
        decided = self._decide(final=False)
        while len(self._references) > self.keep_references:
            old = self._references.pop(0)
            if old not in self._matched_references:
                self.references_unmatched += 1
            self._matched_references.discard(old)
        return decided

    def add_query(self, stamp_ns: int, payload: object = None) -> list[Decision]:
        """A scan arrived; returns the queries decided now (this one, if it can be)."""
        self._pending.append((int(stamp_ns), payload))
        self._pending.sort(key=lambda item: item[0])
        decided = self._decide(final=False)
        while len(self._pending) > self.max_pending:
            stamp, old_payload = self._pending.pop(0)
            decided.append(self._resolve(stamp, old_payload, overflow=True))
        return decided

    def flush(self) -> list[Decision]:
        """Decide every pending query with the references seen; count references never
        matched."""
        decided = self._decide(final=True)
        self.references_unmatched += sum(1 for r in self._references
                                         if r not in self._matched_references)
        self._references.clear()
        self._matched_references.clear()
        return decided

    def _decide(self, final: bool) -> list[Decision]:
        latest = self._references[-1] if self._references else None
        decided, waiting = [], []
        for stamp, payload in self._pending:
            if final or (latest is not None and latest >= stamp):
                decided.append(self._resolve(stamp, payload))
            else:
                waiting.append((stamp, payload))
        self._pending = waiting
        return decided

    def _resolve(self, stamp: int, payload: object, overflow: bool = False) -> Decision:
        index = bisect.bisect_left(self._references, stamp)
        candidates = [self._references[i] for i in (index - 1, index)
                      if 0 <= i < len(self._references)]
        best = min(candidates, key=lambda r: (abs(r - stamp), r), default=None)
        if best is None or abs(best - stamp) > self.tolerance_ns:
            outcome = OVERFLOW if overflow else NO_REFERENCE
            self.outcomes[outcome] += 1
            return Decision(stamp, payload, outcome)
        self._matched_references.add(best)
        self.outcomes[MATCHED] += 1
        return Decision(stamp, payload, MATCHED, best)
