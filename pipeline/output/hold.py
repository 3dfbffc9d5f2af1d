"""One run per output, folder or prefix, behind one context manager: ``held_output(out)``.

* A folder: an advisory lock (``flock`` on ``OUT/.fcnseg.lock``) held for the whole run and
  naming its holder (host, pid). The kernel drops it when the holder dies, even by kill -9.
* An object-store prefix (``s3://...``): the run works in a local staging folder
  (``object_store``), held by the same lock against runs on this machine, and holds the prefix
  against other machines with a lease, ``.fcnseg-run/lease.json``, created with S3's conditional
  PUT (only if absent) and removed when the run ends. A second run finds it and fails in one line
  naming the holder; a lease left by a killed run on this machine (its process gone) is taken
  over, so the rerun resumes; one left by another machine is removed by hand (the message says
  which object), since this machine cannot tell whether that run is still going.
"""

from __future__ import annotations

import datetime as dt
import fcntl
import json
import logging
import os
import secrets
import socket
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any

from fcnseg.errors import InputError, OutputBusy, PrefixBusy
from fcnseg.pipeline.output.layout import LEASE_KEY, LOCK_FILE
from fcnseg.pipeline.output.object_store import ObjectStoreOutput, is_object_store, staging_folder

log = logging.getLogger(__name__)


@contextmanager
def held_output(out: str | Path) -> Iterator[tuple[Path, str | None]]:
    """OUT held for one run: the folder the run writes, and the object-store URI its output is
    uploaded to when OUT is one (``s3://...``; the folder is then its local staging folder), else None."""
    if not is_object_store(out):
        with output_lock(out):
            yield Path(out), None
        return
    destination = ObjectStoreOutput(str(out))
    destination.check_reachable()
    staging = staging_folder(destination.uri)
    with output_lock(staging), prefix_lease(destination):
        yield staging, destination.uri
    with suppress(OSError):
        staging.rmdir()  # emptied by a finished upload


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


@contextmanager
def prefix_lease(prefix: ObjectStoreOutput) -> Iterator[None]:
    """The prefix held by this run across machines, for as long as the context lasts."""
    mine = {"host": socket.gethostname(), "pid": os.getpid(), "token": secrets.token_hex(8),
            "since": dt.datetime.now(dt.UTC).isoformat(timespec="seconds")}
    taken = _take_lease(prefix, mine)
    try:
        yield
    finally:
        if taken and (prefix.read_json(LEASE_KEY) or {}).get("token") == mine["token"]:
            prefix.remove(LEASE_KEY)


def _take_lease(prefix: ObjectStoreOutput, mine: dict[str, Any]) -> bool:
    """True once the lease is ours; False where the store has no conditional PUT (warned)."""
    for _ in range(2):
        try:
            prefix.fs.pipe_file(prefix.key(LEASE_KEY), json.dumps(mine).encode(), mode="create")
            return True
        except FileExistsError:
            holder = prefix.read_json(LEASE_KEY) or {}
        except PermissionError as exc:
            raise InputError(f"{prefix.uri}: cannot write there ({exc})") from None
        except (NotImplementedError, OSError) as exc:
            log.warning("%s: the store refuses conditional writes (%s); a second machine writing this prefix"
                        " is not stopped", prefix.uri, " ".join(str(exc).split()))
            return False
        if holder.get("host") == mine["host"] and not _process_alive(int(holder.get("pid", 0))):
            log.warning("%s: taking over the lease of run pid %s on this machine (it is gone)", prefix.uri,
                        holder.get("pid"))
            prefix.remove(LEASE_KEY)
            continue
        raise PrefixBusy(
            f"{prefix.uri}: in use by another fcnseg run (host {holder.get('host', '?')}, pid {holder.get('pid', '?')},"
            f" since {holder.get('since', '?')}); one run per output at a time — if that run is gone, remove"
            f" {prefix.uri}/{LEASE_KEY}")
    raise PrefixBusy(f"{prefix.uri}: another fcnseg run took the lease at the same moment; one run per output at a time")


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
