"""The demo's child processes: each in its own process group, logged to a file, stopped with
SIGINT, SIGTERM, SIGKILL in turn."""

from __future__ import annotations

import logging
import os
import re
import signal
import subprocess
import time
from pathlib import Path

from stereo_depth_ros.demo import DemoError

LOG = logging.getLogger("stereo_depth_demo")


def _die_with_parent() -> None:
    """preexec_fn: ask Linux to SIGTERM the child if the demo dies (best effort)."""
    try:
        import ctypes
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except Exception:  # noqa: BLE001  (not Linux / no libc: the finally clause still stops us)
        pass


class Child:
    """A subprocess in its own process group (working directory `cwd`), output to a log
    file; `stop` ends the group."""

    def __init__(self, name: str, argv: list[str], log_path: Path, env: dict,
                 cwd: Path | None = None) -> None:
        self.name = name
        self.argv = argv
        self.log_path = log_path
        self._log = log_path.open("w")
        LOG.debug("starting %s: %s", name, " ".join(argv))
        self.process = subprocess.Popen(argv, stdout=self._log, stderr=subprocess.STDOUT,
                                        env=env, cwd=cwd, start_new_session=True,
                                        preexec_fn=_die_with_parent)
        with (log_path.parent / "pids.txt").open("a") as pids:
            pids.write(f"{self.process.pid} {name}\n")

    def running(self) -> bool:
        return self.process.poll() is None

    def output(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def wait_for_line(self, pattern: str, timeout_s: float) -> None:
        """Poll the log for a line matching pattern; DemoError if the process exits first."""
        regex = re.compile(pattern)
        deadline = time.monotonic() + timeout_s
        while True:
            if regex.search(self.output()):
                return
            if not self.running():
                raise DemoError(f"{self.name} exited with code {self.process.returncode} "
                                f"(log {self.log_path}):\n{self._tail()}")
            if time.monotonic() > deadline:
                raise DemoError(f"{self.name} not ready after {timeout_s:.0f} s "
                                f"(log {self.log_path}):\n{self._tail()}")
            time.sleep(0.2)

    def wait(self, timeout_s: float) -> int | None:
        try:
            return self.process.wait(timeout_s)
        except subprocess.TimeoutExpired:
            return None

    def _tail(self, lines: int = 15) -> str:
        return "\n".join(self.output().splitlines()[-lines:])

    def stop(self) -> int | None:
        """SIGINT, then SIGTERM, then SIGKILL to the process group; returns the exit code."""
        for sig, wait_s in ((signal.SIGINT, 10.0), (signal.SIGTERM, 5.0), (signal.SIGKILL, 5.0)):
            if self.process.poll() is not None:
                break
            try:
                os.killpg(self.process.pid, sig)
            except (ProcessLookupError, PermissionError):
                break
            try:
                self.process.wait(wait_s)
            except subprocess.TimeoutExpired:
                continue
        self._log.close()
        return self.process.returncode
