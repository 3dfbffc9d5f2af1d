"""Moved to ``fcnseg.pipeline.output`` (issue 23): the lock to ``output.hold``, the judgment of
what OUT holds to ``output.guard``; kept for importers of the old path."""

from fcnseg.pipeline.output.guard import *  # noqa: F401,F403
from fcnseg.pipeline.output.hold import *  # noqa: F401,F403
from fcnseg.errors import OutputBusy, OutputConflict  # noqa: F401
