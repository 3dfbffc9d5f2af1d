"""Dask's own log lines (``distributed.*``): off but for a crash by default, on with ``--verbose``.

Its routine INFO lines (a worker started, a client connected, "Lost all workers" and "Closing
scheduler. Reason: unknown" at a normal close, a jupyter-server-proxy hint) outnumbered fcnseg's
own in a run's log; a task's error reaches the run as its exception, not through these loggers.
A light module: the command line sets the level before it knows whether Dask will be needed.
"""

from __future__ import annotations

import logging
import os
import sys

#: Dask's level by default, and with ``--verbose``.
QUIET, VERBOSE = "critical", "info"


def quiet_dask_logs(verbose: bool = False) -> None:
    """Set Dask's log level in this process (an in-process cluster's scheduler and worker log here)
    and in worker processes started after the call. ``distributed`` sets its loggers' levels when
    first imported, from Dask's config, which reads the environment when ``dask`` is imported: so
    the environment (for what is imported or spawned later), the config (when dask is imported
    already) and the loggers themselves are all set."""
    level = VERBOSE if verbose else QUIET
    os.environ["DASK_LOGGING__DISTRIBUTED"] = level
    if "dask" in sys.modules:
        import dask

        dask.config.set({"logging.distributed": level})
    logging.getLogger("distributed").setLevel(level.upper())
