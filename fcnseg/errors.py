"""fcnseg's expected failures, one family: every failure a user can cause or meet (bad input, a busy
or foreign output, a cluster without workers, a diverged training) is an ``FcnsegError`` whose
message names the file or option and the problem. The command line (``fcnseg.cli.clear_errors``)
prints any of them as the one line ``fcnseg: error: MESSAGE`` with status 1; anything else is a
bug, printed as "unexpected ..." with the traceback behind ``--verbose``.

Each class keeps the standard base its callers catch it by: ``InputError`` and ``CheckpointError``
are ValueErrors (code that checks a value raises and catches ValueError), ``WorkerLost`` is an
OSError (the flows retry it as the transient failure it usually is), ``IncompleteRun`` and
``ScenesFailed`` are RuntimeErrors. The modules that raise them re-export them under their old
names (``fcnseg.pipeline.io.InputError``, ``fcnseg.models.checkpoint.CheckpointError`` ...).

Layers (bottom to top; a module imports only from its own layer or the ones below it, and
``tests/test_layers.py`` checks it by parsing every module):

* **the foundation**: ``fcnseg/errors.py`` (this module) and ``fcnseg/atomic.py`` (the one atomic
  write), with the package's ``fcnseg/__init__.py``. Standard library only; they import nothing
  else of fcnseg, so ``models/`` and ``pipeline/`` can both stand on them. They share the
  ``fcnseg`` folder with the command line, which is the top layer: the rule names them by file.
* ``models/`` (``fcnseg.models``): torch, numpy, safetensors; never ``pipeline/``, ``flows/`` or
  prefect. ``models/card.py`` (the model card) imports neither torch nor safetensors.
* ``pipeline/`` (``fcnseg.pipeline``): never ``flows/`` or prefect.
* ``flows/`` (``fcnseg.flows``): prefect, over ``pipeline/`` and ``models/``.
* the command line and its helpers (``fcnseg/cli/``, ``tables.py``, ``demo.py``, ``bench.py``): on top.

Check by hand: ``grep -rn "import" fcnseg/errors.py fcnseg/atomic.py`` names no ``fcnseg``;
``grep -rn "fcnseg.pipeline\\|fcnseg.flows\\|prefect" models/`` and
``grep -rn "fcnseg.flows\\|prefect" pipeline/`` find no import.
"""

from __future__ import annotations

__all__ = [
    "CheckpointError", "DeviceMemoryError", "ExecutionMismatch", "FcnsegError", "IncompleteRun", "InputError",
    "NoWorkers", "OutputBusy", "OutputConflict", "PrefixBusy", "ScenesFailed", "TrainingDiverged", "WorkerLost",
]


class FcnsegError(Exception):
    """An expected failure: its message names the file or option and the problem, and is all a user
    needs to act (the command line prints it as one line, without a traceback)."""


# --- inputs and outputs ---------------------------------------------------------------------------


class InputError(FcnsegError, ValueError):
    """Input that cannot be segmented; the message names the file and the problem."""


class OutputConflict(InputError):
    """An output that may not be written where it would go: over an input of the command, a folder, a
    file fcnseg did not write, or (``segment``'s folder) a run with another model or other parameters."""


class OutputBusy(InputError):
    """Another fcnseg run holds the output folder."""


class PrefixBusy(InputError):
    """Another fcnseg run, on this machine or another, holds the object-store OUT."""


# --- models ---------------------------------------------------------------------------------------


class CheckpointError(FcnsegError, ValueError):
    """A checkpoint file that cannot be used; the message names the file and the problem."""


class TrainingDiverged(FcnsegError, ValueError):
    """The loss or the weights became NaN or infinite: no checkpoint can come of this training."""


# --- running on a cluster -------------------------------------------------------------------------


class ExecutionMismatch(InputError):
    """A worker would compute with another device or precision than the run's."""


class DeviceMemoryError(InputError):
    """One tile is more than the device's memory holds: the tile size must come down."""


class NoWorkers(InputError):
    """The cluster has had no worker for ``no_worker_timeout()`` seconds while tasks waited."""


class WorkerLost(FcnsegError, OSError):
    """A worker died while the run asked the workers something; an OSError, so that a flow
    retries it as the transient failure it usually is."""


class IncompleteRun(FcnsegError, RuntimeError):
    """Some planned chunks never reported back; the store is not marked complete (a rerun finishes it)."""


class ScenesFailed(FcnsegError, RuntimeError):
    """Some scenes of a flow run failed; the others were processed."""
