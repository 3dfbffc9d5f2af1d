"""Moved to ``fcnseg.pipeline.engine.staging`` (issue 23); kept for importers of the old path."""

from fcnseg.pipeline.engine.staging import *  # noqa: F401,F403
