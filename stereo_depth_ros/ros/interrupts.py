"""Ctrl-C under `ros2 launch` reaches every process twice: once from the terminal (the whole
foreground process group) and once more from the launch service, which forwards SIGINT to its
children. The first one starts the clean shutdown; the second must not break it."""

from __future__ import annotations

import signal
import threading


def ignore_further_interrupts() -> None:
    """Ignore SIGINT from now on (main thread only; SIGTERM still ends the process)."""
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGINT, signal.SIG_IGN)


def interrupt_once(signum, frame) -> None:  # noqa: ARG001  (signal handler signature)
    """SIGINT handler: KeyboardInterrupt the first time, ignored afterwards."""
    ignore_further_interrupts()
    raise KeyboardInterrupt


class Interrupted(Exception):
    """SIGTERM while a tool plays or evaluates: raised by the handler `tools._cli.ros_session`
    installs (its `interrupt`), so the tool's cleanup runs as on Ctrl-C."""
