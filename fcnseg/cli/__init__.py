"""The ``fcnseg`` command line: thin wrappers over the library, one clear error line on bad input.

``fcnseg.cli:app`` is the console script (pyproject.toml) and ``python -m fcnseg``; the commands live
in this package's modules, registered on the one app in ``base.py`` in the order ``--help`` lists
them; ``errors.py`` turns every failure into one line."""

from __future__ import annotations

from fcnseg.cli.base import app, csv_ints, csv_list, setup_logging
from fcnseg.cli.errors import (
    TERMINATED_LINE, TERMINATED_STATUS, Terminated, clear_errors, error_line, fail, os_error_line,
    sigterm_as_interrupt, usage_line,
)

# Imported for their commands' registration on ``app``, in --help's order.
from fcnseg.cli import synth as _synth  # noqa: E402,F401  isort: skip
from fcnseg.cli import train as _train  # noqa: E402,F401  isort: skip
from fcnseg.cli import segment as _segment  # noqa: E402,F401  isort: skip
from fcnseg.cli import bench as _bench  # noqa: E402,F401  isort: skip
from fcnseg.cli import inspect as _inspect  # noqa: E402,F401  isort: skip
from fcnseg.cli import info as _info  # noqa: E402,F401  isort: skip
from fcnseg.cli import export as _export  # noqa: E402,F401  isort: skip
from fcnseg.cli.train import check_model_shape

__all__ = [
    "TERMINATED_LINE", "TERMINATED_STATUS", "Terminated", "app", "check_model_shape", "clear_errors", "csv_ints",
    "csv_list", "error_line", "fail", "os_error_line", "setup_logging", "sigterm_as_interrupt", "usage_line",
]
