"""Functions the worker-process tests run in spawned workers (importable by name, as workers need)."""

from __future__ import annotations

import os
import signal
import time


def die_at_3(x: int) -> int:
    """``x``, except that the worker handed 3 dies as the out-of-memory killer ends a process."""
    if x == 3:
        os.kill(os.getpid(), signal.SIGKILL)
    time.sleep(0.05)
    return x


def pid_then_sleep(x: int) -> int:
    """The worker's pid at once for the first two items, then a long sleep: work still in hand."""
    if x >= 2:
        time.sleep(2.0)
    return os.getpid()


def nap(x: int) -> int:
    """``x`` after a fifth of a second."""
    time.sleep(0.2)
    return x
