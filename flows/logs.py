"""What a flow run's logs hold: fcnseg's own lines, not Dask's routine ones.

fcnseg's lines (tiles planned, progress every 10 %, files written) go to the run's logs on the
Prefect server as well as the worker's terminal: what ``PREFECT_LOGGING_EXTRA_LOGGERS`` does, for
every way a flow is started. Dask's INFO lines stay out (``quiet_dask_logs``): in a served
worker's log they were more than half of all lines.
"""

from __future__ import annotations

import logging

from prefect.context import FlowRunContext, TaskRunContext
from prefect.logging.handlers import APILogHandler

from fcnseg.pipeline.dask_logs import quiet_dask_logs


class InRunOnly(logging.Filter):
    """Pass a record to the API only from inside a flow or task run. A Dask worker thread in the
    flow's own process (the in-process cluster) logs outside any run; Prefect's handler would drop
    the line with a UserWarning ("attempted to send logs to the API without a flow run id") that
    reads like a fault. The terminal still shows the line."""

    def filter(self, record: logging.LogRecord) -> bool:
        if getattr(record, "flow_run_id", None):
            return True
        return FlowRunContext.get() is not None or TaskRunContext.get() is not None


def route_library_logs() -> None:
    """fcnseg's log lines into the run's logs on the Prefect server (at INFO at least); Dask's off."""
    quiet_dask_logs()
    library = logging.getLogger("fcnseg")
    if not any(isinstance(h, APILogHandler) for h in library.handlers):
        handler = APILogHandler()
        handler.addFilter(InRunOnly())
        library.addHandler(handler)
    if library.getEffectiveLevel() > logging.INFO:
        library.setLevel(logging.INFO)
