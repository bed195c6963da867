"""Is anything coming out, and if not, why: the level and message of the node's /diagnostics.

ROS-free (a clock and counters in, a level and a message out), so every rule is tested on a fake
clock. The node feeds it, at each diagnostics tick, the messages received per input topic and its
`PipelineStats` snapshot. A rule holds while its cause does and clears once output flows again.

Rules, first match wins (each WARN names its cause):
1. a QoS incompatibility was reported on an input since the last processed pair;
2. no input at all for the window, or some inputs arrive and others are silent: camera_info
   without images (transport raw vs compressed, QoS, large images lost without the large-image
   Fast DDS profile), images without camera_info, or one side only (silent topics named);
3. every pair of the last window was dropped (the top reason and its last detail);
4. nothing came out for the window while inputs arrive (pairs not forming, or a stalled worker);
5. disparity only: the calibration gives no metric depth.
A topic is silent when nothing arrived on it for the window (default 5 s) and for 2.5 periods of
the slowest arriving input, whichever is longer: so a 0.5 Hz camera is judged after 3 frames.
"""

from __future__ import annotations

import time
from collections import deque
from dataclasses import dataclass, field

from stereo_depth_ros.drop_reasons import DEPTH_UNAVAILABLE

OK, WARN, ERROR = 0, 1, 2
WINDOW_S = 5.0
PERIODS_BEFORE_SILENT = 2.5
_HISTORY_S = 30.0


@dataclass
class _Topic:
    name: str
    count: int = 0
    last_arrival: float | None = None
    arrivals: deque = field(default_factory=lambda: deque(maxlen=64))   # (time, count)

    def period_s(self) -> float | None:
        """Mean spacing of recent messages, from the counts seen at each tick."""
        if len(self.arrivals) < 2:
            return None
        (t0, c0), (t1, c1) = self.arrivals[0], self.arrivals[-1]
        return (t1 - t0) / (c1 - c0) if c1 > c0 else None


class InputHealth:
    """Tracks arrivals and outcomes between ticks; `update` gives (level, message).

    topics: the four resolved input names (left image, right image, left info, right info).
    transport: the node's image_transport ('raw' or 'compressed'), for the hints.
    """

    def __init__(self, topics: list[str], transport: str = "raw", window_s: float = WINDOW_S,
                 clock=time.monotonic) -> None:
        self._clock = clock
        self.window_s = window_s
        self.transport = transport
        self._topics = [_Topic(name) for name in topics]
        self._started = clock()
        self._outcomes: deque = deque()        # (time, pairs_processed, dropped dict)
        self._last_output: float | None = None
        self._processed = 0
        self._qos_seen: dict[str, int] = {}
        self._qos_problem: str = ""
        self._depth_seen: dict[str, int] = {}
        self._depth_problem: tuple[float, str] | None = None   # (when last counted, keys)
        self._in_flight_s: float | None = None
        self._frame_s = 0.0

    # ------------------------------------------------------------------ bookkeeping
    def _note_arrivals(self, now: float, received: list[int]) -> None:
        for topic, count in zip(self._topics, received):
            if count > topic.count:
                topic.last_arrival = now
                topic.arrivals.append((now, count))
            topic.count = count

    def _note_outcomes(self, now: float, snapshot: dict) -> None:
        processed = int(snapshot.get("pairs_processed", 0))
        if processed > self._processed:
            self._last_output = now
            self._qos_problem = ""              # output flows again
        self._processed = processed
        self._in_flight_s = snapshot.get("in_flight_s")
        self._frame_s = snapshot.get("latency_ms", {}).get("total", {}).get("mean", 0.0) / 1e3
        self._outcomes.append((now, processed, dict(snapshot.get("dropped", {}))))
        while self._outcomes and now - self._outcomes[0][0] > _HISTORY_S:
            self._outcomes.popleft()
        for key, count in snapshot.get("counters", {}).items():
            if key.startswith("qos_incompatible."):
                topic = key[len("qos_incompatible."):]
                if count > self._qos_seen.get(topic, 0) and topic in self.names:
                    self._qos_problem = (
                        f"{topic}: a publisher's QoS is incompatible with this node's "
                        f"subscription: nothing flows from it (see qos_overrides.{topic}."
                        "subscription.* in the README)")
                self._qos_seen[topic] = count
            elif key.startswith(DEPTH_UNAVAILABLE + "."):
                if count > self._depth_seen.get(key, 0):
                    self._depth_problem = (now, key)
                self._depth_seen[key] = count

    @property
    def names(self) -> list[str]:
        return [topic.name for topic in self._topics]

    def _silence_limit(self) -> float:
        periods = [t.period_s() for t in self._topics]
        slowest = max((p for p in periods if p is not None), default=0.0)
        return max(self.window_s, PERIODS_BEFORE_SILENT * slowest)

    def _silent(self, now: float) -> list[bool]:
        limit = self._silence_limit()
        return [now - (t.last_arrival if t.last_arrival is not None else self._started) >= limit
                for t in self._topics]

    # ------------------------------------------------------------------ rules
    def update(self, received: list[int], snapshot: dict) -> tuple[int, str]:
        now = self._clock()
        self._note_arrivals(now, received)
        self._note_outcomes(now, snapshot)
        if self._qos_problem:
            return WARN, self._qos_problem
        for rule in (self._missing_inputs, self._all_dropped, self._stalled):
            verdict = rule(now)
            if verdict is not None:
                return verdict
        if self._depth_problem and now - self._depth_problem[0] < self.window_s:
            return WARN, (f"publishing disparity only: the calibration gives no metric depth "
                          f"({self._depth_problem[1]}; the log names the fields)")
        if not any(t.count for t in self._topics):
            return OK, "waiting for input on " + ", ".join(self.names)
        return OK, "ok"

    def _missing_inputs(self, now: float) -> tuple[int, str] | None:
        silent = self._silent(now)
        arriving = [t.count > 0 and not s for t, s in zip(self._topics, silent)]
        if all(silent):
            return WARN, (f"no input on any of {', '.join(self.names)} "
                          f"{self._quiet_text(now, self._topics)}: is the camera running, and "
                          "are its topics remapped to these names?")
        if not any(arriving) or all(arriving):
            return None
        quiet = [t for t, s in zip(self._topics, silent) if s]
        if not quiet:
            return None
        names = ", ".join(t.name for t in quiet)
        for_how_long = self._quiet_text(now, quiet)
        left_image, right_image, left_info, right_info = arriving
        images_quiet = [silent[0], silent[1]]
        infos_quiet = [silent[2], silent[3]]
        if left_image == left_info and right_image == right_info and left_image != right_image:
            side = "right" if left_image else "left"
            return WARN, (f"only one side arrives: nothing on the {side} camera ({names}) "
                          f"{for_how_long}; check that camera's driver, topics and remapping")
        if any(images_quiet) and (left_info or right_info):
            return WARN, (f"camera_info arrives but no images on {names} {for_how_long}: "
                          + self._no_image_causes())
        if any(infos_quiet) and (left_image or right_image):
            return WARN, (f"images arrive but no camera_info on {names} {for_how_long}: is the "
                          "camera calibrated and publishing camera_info beside its images?")
        return WARN, f"no messages on {names} {for_how_long} while the other inputs arrive"

    def _quiet_text(self, now: float, quiet: list[_Topic]) -> str:
        never = [t for t in quiet if t.last_arrival is None]
        if len(never) == len(quiet):
            return f"(none since the node subscribed {now - self._started:.0f} s ago)"
        last = max(t.last_arrival for t in quiet if t.last_arrival is not None)
        return f"(none for {now - last:.0f} s)"

    def _no_image_causes(self) -> str:
        other = "compressed" if self.transport == "raw" else "raw"
        return (f"likely causes: (1) transport: this node subscribes to {self.transport} images; "
                f"a camera publishing only {other} ones needs image_transport:={other}; "
                "(2) QoS: the image publisher's QoS does not match this node's subscription "
                "(see qos_overrides in the README); (3) large images lost in transport: a "
                "publisher started without the large-image Fast DDS profile drops best-effort "
                "images over 512 KiB (see 'Connecting a real camera' in the README)")

    def _window_delta(self, now: float) -> tuple[int, dict[str, int]] | None:
        """(pairs processed, drops by reason) over the last window; None before a window."""
        start = None
        for entry in self._outcomes:
            if now - entry[0] < self.window_s:
                break
            start = entry
        if start is None:
            return None
        _, processed, dropped = self._outcomes[-1]
        delta = {reason: count - start[2].get(reason, 0) for reason, count in dropped.items()}
        return processed - start[1], {r: c for r, c in delta.items() if c > 0}

    def _all_dropped(self, now: float) -> tuple[int, str] | None:
        window = self._window_delta(now)
        if window is None:
            return None
        processed, drops = window
        if processed or not drops:
            return None
        top = max(drops, key=drops.get)
        total = sum(drops.values())
        return WARN, (f"every pair of the last {self.window_s:g} s was dropped ({total}): top "
                      f"reason {top} ({drops[top]}; see dropped.{top} and last_problem)")

    def _stalled(self, now: float) -> tuple[int, str] | None:
        if not all(t.count for t in self._topics) or any(self._silent(now)):
            return None
        since = self._last_output if self._last_output is not None else self._started
        if now - since < self._silence_limit():
            return None
        if self._in_flight_s is not None:
            # A pair is being matched: slow (a large PSMNet frame on a CPU), not stuck, until it
            # takes far longer than the frames before it (or a minute for the first one).
            patience = 3.0 * self._frame_s if self._frame_s else 60.0
            if self._in_flight_s < max(self._silence_limit(), patience):
                return None
            return WARN, (f"the worker has been on one pair for {self._in_flight_s:.0f} s "
                          f"(frames took {self._frame_s:.1f} s before): stuck?")
        return WARN, (f"nothing published for {now - since:.0f} s while all inputs arrive: "
                      "no complete pair forms (stamps of the four inputs differ? see "
                      "approximate_sync and queue_size)")
