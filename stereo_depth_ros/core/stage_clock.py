"""Seconds per processing stage: the one timer of the engines, the backends and the pipeline.

No torch import unless the stages run on a CUDA device.
"""

from __future__ import annotations

import time


class StageClock:
    """Adds each stage's seconds (since the previous mark, or since the clock was made) to
    `timings` at `mark(stage)`.

    timings: the dict the seconds are added to; None = off: `mark` does nothing (the engines'
        `timings=None`).
    device: the torch device the stages run on; None or a CPU device: host time.
    synchronize: on CUDA, True waits for the device at each mark (host time of finished work,
        for callers that read `timings` right after, like the engines); False records a CUDA
        event per mark and `finish` waits once, for the last one (no stall between stages, as
        the pipeline wants).
    total: `finish` also adds "total", the host seconds since the clock was made.
    """

    def __init__(self, timings: dict[str, float] | None, device=None, *,
                 synchronize: bool = True, total: bool = False) -> None:
        self.timings = timings
        self._device = device
        self._cuda = getattr(device, "type", None) == "cuda"
        self._events = self._cuda and not synchronize
        self._total = total
        self._pending: list[tuple[str, object]] = []
        self._start = time.perf_counter()
        self._last = self._event() if self._events else self._start

    def _event(self):
        import torch

        event = torch.cuda.Event(enable_timing=True)
        event.record()
        return event

    def mark(self, stage: str) -> None:
        """Close `stage`: its seconds since the previous mark are added to `timings`."""
        if self.timings is None:
            return
        if self._events:
            self._pending.append((stage, self._event()))
            return
        if self._cuda:
            import torch
            torch.cuda.synchronize(self._device)
        now = time.perf_counter()
        self.timings[stage] = self.timings.get(stage, 0.0) + now - self._last
        self._last = now

    def finish(self) -> dict[str, float] | None:
        """`timings` with every stage in (event mode: after waiting for the last CUDA event),
        and "total" when the clock was made with `total`."""
        if self.timings is None:
            return None
        if self._pending:
            self._pending[-1][1].synchronize()
        for stage, event in self._pending:
            self.timings[stage] = (self.timings.get(stage, 0.0)
                                   + self._last.elapsed_time(event) / 1000.0)
            self._last = event
        self._pending.clear()
        if self._total:
            self.timings["total"] = time.perf_counter() - self._start
        return self.timings
