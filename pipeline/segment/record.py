"""Moved to ``fcnseg.pipeline.output.record`` (issue 23); kept for importers of the old path."""

from fcnseg.pipeline.output.record import *  # noqa: F401,F403
