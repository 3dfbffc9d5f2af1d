"""Moved to ``fcnseg.pipeline.output.run_identity`` (issue 23); kept for importers of the old path."""

from fcnseg.pipeline.output.run_identity import *  # noqa: F401,F403
