"""The guard of an output folder: one run at a time, nothing of the user's touched, and a rerun
that continues the run it finds there only when that run is the same one.

* ``output_lock``: an advisory lock (``flock`` on ``OUT/.fcnseg.lock``) held for the whole run and
  naming its holder (host, pid). The kernel drops it when the holder dies, even by kill -9.
* ``held_output``: the same for an object-store OUT, whose run works in a local staging folder.
* ``prepare_output``: OUT's run state against this run's parameters: the same run resumes; the
  same options on a changed input start again (the old chunks are stale); other options, or
  files fcnseg did not write, are refused unless ``--overwrite``.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import socket
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any

from fcnseg.atomic import remove_path, stale_partials
from fcnseg.errors import InputError, OutputBusy, OutputConflict  # one refusal for every output, folder or file
from fcnseg.pipeline.output.object_store import ObjectStoreOutput, is_object_store, staging_folder
from fcnseg.pipeline.output.layout import LOCK_FILE, OUTPUT_FILES, PARAMETERS_JSON, STATE_DIR, STORE_NAME, ledger_folder

log = logging.getLogger(__name__)

#: The parameter that names the input's content: when only it changed, the run starts again.
FINGERPRINT = "input_fingerprint"


def check_output_folder(out: Path) -> None:
    """OUT must be a folder or not exist yet."""
    if out.exists() and not out.is_dir():
        raise InputError(f"{out}: exists and is not a folder; --out must name a folder")


@contextmanager
def output_lock(out: str | Path) -> Iterator[None]:
    """Hold OUT for this process; a second run on it fails at once with one line naming the holder.

    The lock file is removed on release (and an OUT this run created, if nothing else is in it), so
    a refused run leaves no trace. A process that opened the file just before its removal finds,
    once it holds the lock, that the path no longer names its file, and tries again.
    """
    out = Path(out)
    check_output_folder(out)
    created = not out.exists()
    out.mkdir(parents=True, exist_ok=True)
    path = out / LOCK_FILE
    fd = _acquire(path, out)
    try:
        os.pwrite(fd, f"host {socket.gethostname()}, pid {os.getpid()}\n".encode(), 0)
        yield
    finally:
        path.unlink(missing_ok=True)  # still holding the lock: nobody can take the file meanwhile
        os.close(fd)
        if created and not any(out.iterdir()):
            out.rmdir()


@contextmanager
def held_output(out: str | Path) -> Iterator[tuple[Path, str | None]]:
    """OUT held for one run (``output_lock``): the folder the run writes, and the object-store
    URI its output is uploaded to when OUT is one (``s3://...``; the folder is then its local
    staging folder, see ``object_store``), else None."""
    if not is_object_store(out):
        with output_lock(out):
            yield Path(out), None
        return
    destination = ObjectStoreOutput(str(out))
    destination.check_reachable()
    staging = staging_folder(destination.uri)
    with output_lock(staging), destination.lease():
        yield staging, destination.uri
    with suppress(OSError):
        staging.rmdir()  # emptied by a finished upload


def _acquire(path: Path, out: Path) -> int:
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 200, 0).decode(errors="replace").strip() or "holder unknown"
            os.close(fd)
            raise OutputBusy(f"{out}: in use by another fcnseg run ({holder}); one run per output folder at a time") from None
        try:
            if os.fstat(fd).st_ino == os.stat(path).st_ino:
                os.ftruncate(fd, 0)
                return fd
        except FileNotFoundError:
            pass
        os.close(fd)  # the file was removed by its last holder after we opened it: take the new one


def prepare_output(out: Path, parameters: dict[str, Any], overwrite: bool) -> bool:
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


def judge_previous(out: str | Path, previous: dict[str, Any] | None, foreign: list[str], parameters: dict[str, Any],
                   overwrite: bool) -> bool:
    """What OUT holds against this run: True for the same run (its chunks may be reused); False
    when it may be replaced (nothing there, only the input changed, or ``overwrite``); otherwise
    ``OutputConflict``. ``previous``: OUT's run record; ``foreign``: output files without one."""
    if previous is not None:
        if previous == parameters:
            return True
        changed = sorted(k for k in parameters if previous.get(k) != parameters[k])
        if changed == [FINGERPRINT]:
            log.warning("%s changed since the run in %s began (size, time or content): its chunks are stale, "
                        "segmenting it again", parameters["input"], out)
        elif not overwrite:
            raise OutputConflict(f"{out}: holds a run with other {', '.join(changed)}; use --overwrite (flow: overwrite=true) to replace it")
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
