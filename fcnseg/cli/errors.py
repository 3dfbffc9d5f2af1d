"""The command line's one way to fail: every error as one line ``fcnseg: error: ...`` on stderr and a
non-zero exit (1 for errors, 2 for usage, 130 for Ctrl-C, 143 for SIGTERM), never a traceback. Kept
apart from the commands so that each command module and ``FcnsegApp`` use the same words."""

from __future__ import annotations

import contextlib
import errno
import logging
import signal
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import typer
from rich.markup import escape

from fcnseg.errors import FcnsegError
from fcnseg.tables import console

log = logging.getLogger("fcnseg")


@contextlib.contextmanager
def clear_errors(out: str | Path | None = None) -> Iterator[None]:
    """Turn every failure into one line on stderr and a non-zero exit: 1 for errors, 130 for Ctrl-C,
    143 for SIGTERM.

    The library's errors (``FcnsegError``, and the ValueErrors of a value checked) name the file or
    option and the problem; operating-system errors (a full disk, a read-only folder) are put in
    those words here, naming ``out`` (the command's output) where the error names no file. Anything
    else is a bug: one line still, and the traceback with ``--verbose``.
    """
    try:
        yield
    except typer.Exit:
        raise
    except Terminated:
        fail(TERMINATED_LINE, status=TERMINATED_STATUS)
    except KeyboardInterrupt:
        fail("interrupted; run the same command again to resume", status=130)
    except (FcnsegError, FileNotFoundError, ValueError) as exc:
        fail(str(exc))
    except OSError as exc:
        fail(os_error_line(exc, out))
    except Exception as exc:  # noqa: BLE001 - the last line of defence against a traceback
        line = cluster_error_line(exc)
        if line is None:
            log.debug("unexpected error", exc_info=True)
            line = f"unexpected {type(exc).__name__}: {exc} (run with --verbose for the traceback)"
        fail(line)


def fail(message: str, status: int = 1) -> None:
    raise typer.Exit(error_line(message, status))


def error_line(message: str, status: int) -> int:
    """Print ``fcnseg: error: MESSAGE`` as one line on stderr; ``status``, for the caller to exit with."""
    first = " ".join(message.split())  # one line, whatever the library put in it
    # escaped: a path or an extra's name in brackets ("scene[red].tif", "fcnseg[onnx]") is text, not markup
    console.print(f"[red]fcnseg: error:[/red] {escape(first)}", highlight=False, soft_wrap=True)
    return status


#: A full disk or quota: the error rarely names the file (zarr, GDAL); the output is where it was written.
DISK_FULL = (errno.ENOSPC, errno.EDQUOT)


def os_error_line(exc: OSError, out: str | Path | None = None) -> str:
    """An OSError as ``FILE: what happened`` (and what to do about a full disk, naming ``out``
    when the error names no file)."""
    if exc.errno in DISK_FULL:
        where = f"{exc.filename or out}: " if exc.filename or out else ""
        return f"{where}no space left on the device; free some and run the same command again: it resumes"
    where = f"{exc.filename}: " if exc.filename else ""
    return f"{where}{exc.strerror or exc}"


def cluster_error_line(exc: Exception) -> str | None:
    """Dask's errors for workers that died or never came (a stage after inference), in one line."""
    if "distributed" not in sys.modules:  # no cluster ran: not one of its errors (and no import for it)
        return None
    from fcnseg.pipeline.cluster import lost_worker_line

    return lost_worker_line(exc)


# --- SIGTERM -------------------------------------------------------------------------------------

TERMINATED_LINE = "terminated; run the same command again to resume"
TERMINATED_STATUS = 128 + signal.SIGTERM
_terminated = threading.Event()


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised where the main thread is, as Ctrl-C's KeyboardInterrupt is: everything
    unwinds the same way (the cluster stopped, OUT's lock released, nothing complete-looking left)."""


def _raise_terminated(signum: int, frame: object) -> None:
    signal.signal(signal.SIGTERM, signal.SIG_DFL)  # a second SIGTERM during the clean-up ends it at once
    _terminated.set()
    raise Terminated()


@contextlib.contextmanager
def sigterm_as_interrupt() -> Iterator[None]:
    """SIGTERM raises Terminated in the main thread in here (elsewhere signals cannot be set)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGTERM, _raise_terminated)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


# --- usage errors ----------------------------------------------------------------------------------

#: What a value failed to be, by pydantic's error type (typer checks values with pydantic).
EXPECTED = {"int_parsing": "a valid integer", "int_from_float": "a whole number", "float_parsing": "a valid number",
            "bool_parsing": "true or false", "enum": "one of the choices", "literal_error": "one of the choices"}


def is_usage_error(exc: BaseException) -> bool:
    """A click (typer) error about the command line itself: an unknown option, a bad value."""
    return hasattr(exc, "format_message") and hasattr(exc, "exit_code") and "ClickException" in _class_names(exc)


def _class_names(exc: BaseException) -> set[str]:
    return {cls.__name__ for cls in type(exc).__mro__}


def usage_failure(exc: Exception) -> int:
    """Print a usage error as fcnseg's one line; its exit status (2). ``fcnseg`` alone prints the help."""
    if "NoArgsIsHelpError" in _class_names(exc):
        message = exc.format_message()
        if message.strip():
            console.print(message, highlight=False)
        return exc.exit_code
    return error_line(usage_line(exc), exc.exit_code)


def usage_line(exc: Exception) -> str:
    """``--tile: 'abc' is not a valid integer``, ``-x.tif: no such option ...``: the option or
    argument first, as every fcnseg error names what it is about."""
    names = _class_names(exc)
    context = getattr(exc, "ctx", None)
    help_hint = f" (see {context.command_path} --help)" if context is not None else ""
    if "NoSuchOption" in names:
        return no_such_option_line(exc.option_name, getattr(exc, "possibilities", None), help_hint)
    param = getattr(exc, "param", None)
    if param is None or "MissingParameter" in names:
        return exc.format_message().rstrip(".") + help_hint
    name = param.opts[0] if getattr(param, "param_type_name", "") == "option" and param.opts else param.name.upper()
    errors = getattr(exc.__cause__, "errors", None)
    if callable(errors) and errors():
        first = errors()[0]
        expected = EXPECTED.get(first.get("type", ""))
        value = first.get("input")
        if expected:
            return f"{name}: {value!r} is not {expected}"
        return f"{name}: {value!r}: {first.get('msg', exc.message)}"
    return f"{name}: {exc.message}"


def no_such_option_line(option: str, possibilities: list[str] | None, help_hint: str) -> str:
    """An unknown option; the word as given (``-x.tif``, where click saw ``-x``), and what was meant."""
    given = next((a for a in sys.argv[1:] if a == option), None) or next(
        (a for a in sys.argv[1:] if a.startswith(option)), option)
    if possibilities:
        return f"{given}: no such option (did you mean {', '.join(sorted(possibilities))}?)"
    if given != option or "." in given or "/" in given:
        return f"{given}: no such option; a file whose name starts with '-' is given as ./{given}"
    return f"{given}: no such option{help_hint}"
