"""One error family: every expected failure is an ``FcnsegError``, and the command line prints it as
one line (``fcnseg: error: ...``, status 1), never as "unexpected ... run with --verbose"."""

from __future__ import annotations

import importlib
import pickle

import pytest
import typer

from fcnseg import errors
from fcnseg.cli import clear_errors
from fcnseg.errors import FcnsegError
from fcnseg.pipeline.segment.run import IncompleteRun

LINE = "OUT: 1 of 4 planned chunks did not report back; run the same command again to compute them"
FAMILY = [getattr(errors, name) for name in errors.__all__ if name != "FcnsegError"]

#: Where each error was defined before it joined the family: importers of those names keep working.
OLD_HOMES = {
    "InputError": "fcnseg.pipeline.io", "OutputConflict": "fcnseg.pipeline.overwrite",
    "OutputBusy": "fcnseg.pipeline.output.hold", "PrefixBusy": "fcnseg.pipeline.output.hold",
    "CheckpointError": "fcnseg.models.checkpoint", "TrainingDiverged": "fcnseg.models.train",
    "ExecutionMismatch": "fcnseg.pipeline.segment.worker", "DeviceMemoryError": "fcnseg.pipeline.engine.predict",
    "NoWorkers": "fcnseg.pipeline.cluster", "WorkerLost": "fcnseg.pipeline.cluster",
    "IncompleteRun": "fcnseg.pipeline.segment.run", "ScenesFailed": "fcnseg.flows.segment_scene",
}

#: The standard bases callers catch them by (``except ValueError``, a flow's retry of an OSError).
STANDARD_BASES = {
    "InputError": ValueError, "CheckpointError": ValueError, "TrainingDiverged": ValueError,
    "WorkerLost": OSError, "IncompleteRun": RuntimeError, "ScenesFailed": RuntimeError,
}


def printed_by_the_cli(exc: BaseException, capsys) -> tuple[int, str]:
    """The exit status and stderr of a command whose work raised ``exc``."""
    with pytest.raises(typer.Exit) as exit_info, clear_errors():
        raise exc
    return exit_info.value.exit_code, capsys.readouterr().err


def test_an_incomplete_run_is_one_expected_line(capsys):
    """Issue 23: IncompleteRun derived from RuntimeError and printed as an unexpected error."""
    assert printed_by_the_cli(IncompleteRun(LINE), capsys) == (1, f"fcnseg: error: {LINE}\n")


@pytest.mark.parametrize("error", FAMILY, ids=lambda cls: cls.__name__)
def test_every_expected_failure_is_one_line(error, capsys):
    assert issubclass(error, FcnsegError)
    assert printed_by_the_cli(error("x.tif: the problem"), capsys) == (1, "fcnseg: error: x.tif: the problem\n")


@pytest.mark.parametrize("error", FAMILY, ids=lambda cls: cls.__name__)
def test_an_error_travels_from_a_worker_unchanged(error):
    """Raised in a Dask worker, an error reaches the driver pickled."""
    back = pickle.loads(pickle.dumps(error("x.tif: the problem")))
    assert type(back) is error and str(back) == "x.tif: the problem"


def test_the_family_is_every_error_and_the_old_names_still_import():
    assert sorted(cls.__name__ for cls in FAMILY) == sorted(OLD_HOMES)
    for name, module in OLD_HOMES.items():
        assert getattr(importlib.import_module(module), name) is getattr(errors, name), (module, name)


def test_each_error_keeps_the_standard_base_it_is_caught_by():
    for name, base in STANDARD_BASES.items():
        assert issubclass(getattr(errors, name), base), name
    input_errors = {"OutputConflict", "OutputBusy", "PrefixBusy", "ExecutionMismatch", "DeviceMemoryError", "NoWorkers"}
    assert {cls.__name__ for cls in FAMILY if issubclass(cls, errors.InputError)} - {"InputError"} == input_errors


def test_brackets_in_a_message_are_printed_as_they_are(capsys):
    """The error line went through rich's markup: "scene[red].tif" was printed as "scene.tif", a
    file that is not the one named, and "fcnseg[onnx]" lost its extra's name."""
    with pytest.raises(typer.Exit), clear_errors():
        raise FcnsegError("/data/scene[red].tif: cannot open as a raster; pip install 'fcnseg[onnx]'")
    assert capsys.readouterr().err.strip() == (
        "fcnseg: error: /data/scene[red].tif: cannot open as a raster; pip install 'fcnseg[onnx]'")
