"""Moved to ``fcnseg.pipeline.output.object_store`` (issue 23; its lease to ``output.hold``); kept
for importers of the old path."""

from fcnseg.errors import PrefixBusy  # noqa: F401
from fcnseg.pipeline.output.layout import LEASE_KEY, PARAMETERS_KEY  # noqa: F401
from fcnseg.pipeline.output.object_store import *  # noqa: F401,F403
