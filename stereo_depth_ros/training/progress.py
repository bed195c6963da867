"""Terminal progress of a training run: loss, learning rate, throughput and time left."""

from __future__ import annotations

import time


def format_duration(seconds: float) -> str:
    """Seconds as H:MM:SS, with a day count beyond 24 h ("?" when unknown)."""
    if seconds != seconds or seconds < 0 or seconds == float("inf"):
        return "?"
    whole = int(round(seconds))
    days, rest = divmod(whole, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    text = f"{hours}:{minutes:02d}:{secs:02d}"
    return f"{days}d {text}" if days else text


class ProgressReporter:
    """Writes `epoch E iter I/N loss L lr R | P pairs/s | eta epoch T, run T` lines.

    stream: where to write (stderr). total_steps: optimiser steps this run will take in all
    (for the run's ETA; validation time is not included). A line is written for the first and
    last step of an epoch and at most every `interval_s` seconds in between.
    """

    def __init__(self, stream, *, total_steps: int, quiet: bool = False,
                 interval_s: float = 5.0, clock=time.perf_counter):
        self.stream = stream
        self.total_steps = total_steps
        self.quiet = quiet
        self.interval_s = interval_s
        self.clock = clock
        self.done = 0
        self.busy_s = 0.0
        self.pairs = 0
        self.epoch = 0
        self.lr = 0.0
        self.last_report = -float("inf")

    def start_epoch(self, epoch: int, lr: float) -> None:
        """Label the following steps with `epoch` and `lr`."""
        self.epoch, self.lr = epoch, lr

    def seconds_per_step(self) -> float:
        """Mean wall time of the steps so far (NaN before the first)."""
        return self.busy_s / self.done if self.done else float("nan")

    def step(self, iteration: int, count: int, record) -> None:
        """Account one optimiser step (a loop.StepRecord) and maybe write a line."""
        self.done += 1
        self.busy_s += record.seconds
        self.pairs += record.pairs
        now = self.clock()
        if self.quiet or (now - self.last_report < self.interval_s
                          and iteration not in (1, count)):
            return
        self.last_report = now
        per_step = self.seconds_per_step()
        rate = self.pairs / self.busy_s if self.busy_s > 0 else float("nan")
        epoch_left = format_duration((count - iteration) * per_step)
        run_left = format_duration((self.total_steps - self.done) * per_step)
        self.stream.write(f"epoch {self.epoch} iter {iteration}/{count} loss {record.loss:.4f} "
                          f"lr {self.lr:g} | {rate:.2f} pairs/s | eta epoch {epoch_left}, "
                          f"run {run_left}\n")
        self.stream.flush()
