"""Fault injection for the kill -9 tests: ``FCNSEG_CRASH_AT=<point>`` kills the process at that point.

The points sit where a crash is hardest on resume (between a stage's writes); the tests run the
real command with the variable set, then the same command without it, and compare with a clean
run. Unset (always, outside those tests), a point costs one dictionary lookup.
"""

from __future__ import annotations

import os
import signal

VARIABLE = "FCNSEG_CRASH_AT"


def crash_point(name: str) -> None:
    """SIGKILL this process if ``FCNSEG_CRASH_AT`` names this point."""
    if os.environ.get(VARIABLE) == name:
        os.kill(os.getpid(), signal.SIGKILL)
