"""Moved to ``fcnseg.pipeline.output.layout`` (issue 23); kept for importers of the old path."""

from fcnseg.pipeline.output.layout import *  # noqa: F401,F403
