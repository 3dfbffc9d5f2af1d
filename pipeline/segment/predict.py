"""Moved to ``fcnseg.pipeline.engine.predict`` (issue 23); kept for importers of the old path."""

from fcnseg.pipeline.engine.predict import *  # noqa: F401,F403
