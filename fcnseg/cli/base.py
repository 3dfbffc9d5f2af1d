"""The ``fcnseg`` Typer app every command module registers on, its logging, and the option
helpers the commands share (help texts, comma-separated values)."""

from __future__ import annotations

import logging
import sys
from typing import Annotated

import typer
from rich.logging import RichHandler

from fcnseg.cli.errors import (
    TERMINATED_LINE, TERMINATED_STATUS, _terminated, error_line, is_usage_error, sigterm_as_interrupt, usage_failure,
)
from fcnseg.pipeline.dask_logs import quiet_dask_logs
from fcnseg.pipeline.option_texts import CHECKPOINT_OVERWRITE_HELP, LAYER_HELP, OUTSIDE_HELP, SEGMENT_HELP
from fcnseg.pipeline.versions import code_identity, command_line
from fcnseg.tables import console


class FcnsegApp(typer.Typer):
    """The ``fcnseg`` command, as the console script and ``python -m fcnseg`` call it: usage errors
    (``--tile abc``, an unknown option) in fcnseg's one line (status 2) instead of click's boxed
    usage message, and SIGTERM (a service manager, a batch queue stopping the job) treated as Ctrl-C
    is: the same clean-up, one line, status 143."""

    def __call__(self, *args, **kwargs) -> None:
        kwargs["standalone_mode"] = False  # click's errors come here, not to its own printer
        given = kwargs.get("args", args[0] if args else None)
        argv = ["fcnseg", *(sys.argv[1:] if given is None else given)]
        with sigterm_as_interrupt(), command_line(argv):  # the records a command makes carry its command line
            try:
                status = super().__call__(*args, **kwargs)
            except typer.Abort:
                status = error_line("aborted", 1)
            except Exception as exc:
                if not is_usage_error(exc):
                    raise
                status = usage_failure(exc)
        if _terminated.is_set() and status != TERMINATED_STATUS:  # a SIGTERM before clear_errors held it
            status = error_line(TERMINATED_LINE, TERMINATED_STATUS)
        sys.exit(status if isinstance(status, int) else 0)


app = FcnsegApp(
    name="fcnseg",
    help="Segment arbitrarily large geospatial rasters with an FCN-8s.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
log = logging.getLogger("fcnseg")

# The option texts that several commands share, from the one place the option models take them.
TILE_HELP = SEGMENT_HELP["tile"]
BATCH_HELP = SEGMENT_HELP["batch_size"]
OVERWRITE_HELP = CHECKPOINT_OVERWRITE_HELP


def setup_logging(verbose: bool = False) -> None:
    """fcnseg's own messages on stderr through rich; the libraries' routine chatter kept out."""
    logging.basicConfig(
        level=logging.INFO, format="%(message)s", handlers=[RichHandler(console=console, show_path=False)]
    )
    logging.getLogger("fcnseg").setLevel(logging.DEBUG if verbose else logging.INFO)
    # GDAL's errors reach us as exceptions; Dask's cluster start/stop messages are noise here, and
    # a task's error reaches the command as its exception (one line), so the workers' own "Compute
    # Failed" tracebacks are noise too: all of them back with --verbose.
    quiet_dask_logs(verbose)
    for name in ("rasterio", "tornado", "pyogrio", "botocore", "aiobotocore", "s3fs"):
        logging.getLogger(name).setLevel(logging.INFO if verbose else logging.WARNING)


def version_line() -> str:
    """``fcnseg 0.1.0 (commit 4d280bd...)``; the commit only when run from a git checkout."""
    code = code_identity()
    return f"fcnseg {code['version']}" + (f" (commit {code['commit']})" if code["commit"] else "")


def print_version(value: bool) -> None:
    """``--version``: the version line on stdout (a script reads it), then exit 0 before any command."""
    if value:
        typer.echo(version_line())
        raise typer.Exit(0)


@app.callback()
def main(
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Debug logging.")] = False,
    show_version: Annotated[bool, typer.Option("--version", is_eager=True, callback=print_version,
                                               help="Print fcnseg's version (and commit, from a checkout) and exit.")] = False,
) -> None:
    setup_logging(verbose)


def csv_list(value: str | None) -> list[str] | None:
    return [v.strip() for v in value.split(",") if v.strip()] if value else None


def csv_ints(value: str | None, option: str = "--bands") -> list[int] | None:
    items = csv_list(value)
    if not items:
        return None
    try:
        return [int(v) for v in items]
    except ValueError:
        raise ValueError(f"{option} takes comma-separated whole numbers, got {value!r}") from None
