"""Moved to ``fcnseg.pipeline.engine.tile_source`` (issue 23); kept for importers of the old path."""

from fcnseg.pipeline.engine.tile_source import *  # noqa: F401,F403
