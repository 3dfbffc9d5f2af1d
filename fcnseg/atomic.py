"""One way for every file fcnseg writes to appear: complete, under its final name, or not at all.

The data goes to a hidden temporary name beside the target (unique per call, so two processes or
two hosts writing the same target never share one) and is renamed onto the target when complete.
A file that records completion (a chunk marker, run.json, a checkpoint) is written ``durable``: its
bytes are flushed to disk before the rename, and the rename itself after it, so a power cut cannot
leave a record of work whose data is lost.

Part of the foundation, with ``fcnseg/errors.py``: standard library only, and nothing else of
fcnseg imported, so that the model layer (checkpoints) and the pipeline can both stand on it. It
lives in the ``fcnseg`` package beside the command line, but below it: the package's
``__init__.py`` imports nothing, so importing ``fcnseg.atomic`` never brings in the CLI
(``tests/test_layers.py`` checks both; the layers are listed in ``fcnseg/errors.py``).
"""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

PARTIAL = ".partial"


def partial_path(path: Path) -> Path:
    """A fresh hidden name beside ``path`` (keeps its suffix: GDAL and others choose formats by it)."""
    return path.with_name(f".{path.name}.{uuid.uuid4().hex[:12]}{PARTIAL}{path.suffix}")


def stale_partials(path: str | Path) -> list[Path]:
    """Temporary files of ``path`` that a killed writer left behind."""
    path = Path(path)
    return sorted(path.parent.glob(f".{path.name}.*{PARTIAL}{path.suffix}"))


@contextmanager
def atomic_write(path: str | Path, *, durable: bool = False) -> Iterator[Path]:
    """``with atomic_write(target) as tmp:`` write ``tmp`` (a file or a folder); on success it
    becomes ``target``, on error it is removed and ``target`` is left as it was."""
    path = Path(path)
    tmp = partial_path(path)
    try:
        yield tmp
        if durable:
            _fsync(tmp)
        os.replace(tmp, path)
        if durable:
            _fsync(path.parent)
    finally:
        remove_path(tmp)


def process_umask() -> int:
    """This process's umask, read without changing it (``os.umask`` can only be read by setting
    it, which would race with other threads creating files); 0o022 where /proc does not say."""
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    return 0o022


def as_created(path: Path) -> None:
    """Give ``path`` the permissions a file created by ``open`` would have (0o666 less the umask):
    some writers (safetensors) create theirs readable by the owner only."""
    os.chmod(path, 0o666 & ~process_umask())


def atomic_write_text(path: str | Path, text: str, *, durable: bool = False) -> Path:
    """Write ``text`` to ``path`` atomically (see :func:`atomic_write`)."""
    with atomic_write(path, durable=durable) as tmp:
        tmp.write_text(text)
    return Path(path)


def remove_path(path: Path) -> None:
    """Remove a file or a folder tree, if there."""
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    else:
        path.unlink(missing_ok=True)


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
