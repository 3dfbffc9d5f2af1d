"""How a long stage shows its progress: a bar on a terminal; elsewhere (a log file, CI, a Prefect
run) a log line every few percent, since tqdm would write thousands of bar lines; and, for an
orchestrator, a callback with the count done (the flow's progress artifact)."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from tqdm import tqdm

log = logging.getLogger(__name__)

#: ``(done, total)`` after each step; called at most once per whole percent.
ProgressCallback = Callable[[int, int], None]
#: Without a bar, one log line each time this many percent more are done.
LOG_EVERY_PERCENT = 10


@contextmanager
def stage_progress(total: int, what: str, unit: str, *, bar: bool, on_update: ProgressCallback | None = None
             ) -> Iterator[Callable[[int], None]]:
    """``advance(n)`` for a stage of ``total`` steps: a tqdm bar when ``bar``, else log lines."""
    done = 0
    logged = reported = -1

    def advance(steps: int = 1) -> None:
        nonlocal done, logged, reported
        done += steps
        percent = 100 * done // max(total, 1)
        if bar_:
            bar_.update(steps)
        elif percent // LOG_EVERY_PERCENT > logged:
            logged = percent // LOG_EVERY_PERCENT
            log.info("%s: %d of %d %ss (%d %%)", what, done, total, unit, percent)
        if on_update is not None and percent > reported:
            reported = percent
            on_update(done, total)

    bar_ = tqdm(total=total, desc=what, unit=unit) if bar else None
    try:
        yield advance
    finally:
        if bar_ is not None:
            bar_.close()
