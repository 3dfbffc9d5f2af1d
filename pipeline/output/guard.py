"""The guard of an output folder: one run at a time, nothing of the user's touched, and a rerun
that continues the run it finds there only when that run is the same one.

The run itself is held by ``hold.held_output`` (one run per output); within it:

* ``prepare_output``: OUT's run state against this run's parameters: the same run resumes; the
  same options on a changed input start again (the old chunks are stale); other options, or
  files fcnseg did not write, are refused unless ``--overwrite``.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from fcnseg.atomic import remove_path, stale_partials
from fcnseg.errors import OutputConflict  # one refusal for every output, folder or file
from fcnseg.pipeline.output.layout import OUTPUT_FILES, PARAMETERS_JSON, STATE_DIR, STORE_NAME, ledger_folder
from fcnseg.pipeline.output.run_identity import FINGERPRINT, RunIdentity

log = logging.getLogger(__name__)


def prepare_output(out: Path, parameters: RunIdentity, overwrite: bool) -> bool:
    """Check the run state in OUT against ``parameters``; True when its chunks may be reused.
    Otherwise clear OUT's fcnseg files and start an empty ledger (the caller then records the
    parameters and creates the store)."""
    state = out / STATE_DIR
    params_file = state / PARAMETERS_JSON
    previous = json.loads(params_file.read_text()) if params_file.exists() else None
    foreign = [] if previous is not None else [name for name in OUTPUT_FILES if (out / name).exists()]
    if judge_previous(out, previous, foreign, parameters, overwrite):
        return True
    forget_run(out)
    ledger_folder(out).mkdir(parents=True)
    return False


def forget_run(out: Path) -> None:
    """OUT without any run: its files and its run state (a run with other parameters starts so;
    a staging folder is left so once its output is uploaded)."""
    remove_outputs(out, keep_store=False)
    remove_path(out / STATE_DIR)


def judge_previous(out: str | Path, previous: dict[str, Any] | None, foreign: list[str], parameters: RunIdentity,
                   overwrite: bool) -> bool:
    """What OUT holds against this run: True for the same run (its chunks may be reused); False
    when it may be replaced (nothing there, only the input changed, or ``overwrite``); otherwise
    ``OutputConflict``. ``previous``: OUT's run record; ``foreign``: output files without one."""
    if previous is not None:
        if previous == parameters.to_json():
            return True
        if parameters.changed(previous) == [FINGERPRINT]:
            log.warning("%s changed since the run in %s began (size, time or content): its chunks are stale, "
                        "segmenting it again", parameters.input, out)
        elif not overwrite:
            raise OutputConflict(f"{out}: holds a run with other parameters ({parameters.differences(previous)}); "
                                 "use --overwrite (flow: overwrite=true) to replace it")
    elif foreign and not overwrite:
        raise OutputConflict(f"{out}: holds {', '.join(foreign)}, which fcnseg did not write (no run record); "
                             "use --overwrite (flow: overwrite=true) to replace them, or another --out")
    return False


def remove_outputs(out: Path, *, keep_store: bool) -> None:
    """Every file a run leaves in OUT, and what killed writers left of them (run.json first: the
    folder stops looking complete at once)."""
    for name in OUTPUT_FILES:
        if not (keep_store and name == STORE_NAME):
            remove_path(out / name)
        for leftover in stale_partials(out / name):
            remove_path(leftover)
