"""What a command may write over: one rule for every file fcnseg writes in place of another.

The same idea as ``segment``'s guard of its output folder (``pipeline/output/guard.py``), for the single
files of ``train``, ``init-model`` and ``synth``: fcnseg replaces what it recognises as its own
earlier output, and nothing else unless told to.

* **An input of the same command is never written over**, not even with ``--overwrite``: compared
  by resolved path and by ``samefile``, so a symlink or a hard link to the input counts as the
  input (``train --labels S/labels.tif --out S/labels.tif`` would otherwise replace the labels it
  trains on with a checkpoint, and exit 0).
* **A folder** where a file is to be written is refused (no option turns a folder into a file),
  as is a path under something that is not a folder.
* **An earlier output of the same kind** (a checkpoint with fcnseg's model card; an image.tif or
  labels.tif carrying synth's tag) is replaced without asking: a nightly retraining writes the
  same ``--out`` each time.
* **Anything else** -- a file fcnseg did not write, or a read-only file (``chmod a-w`` is how a
  file is protected) -- is replaced only with ``--overwrite``.

Every check runs before any work (a training of hours does not end in a refusal) and again just
before the file is renamed into place; each refusal is one line naming the file.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Callable, Mapping
from pathlib import Path

from fcnseg.errors import OutputConflict

#: How the flows and the command line say "replace it" (the segment-scene and train-fcn flows: overwrite=true).
OVERWRITE = "--overwrite (flow: overwrite=true)"


def check_target(
    path: str | Path,
    *,
    option: str,
    kind: str,
    is_own: Callable[[Path], bool],
    inputs: Mapping[str, str | Path | None] | None = None,
    overwrite: bool = False,
    override: str = "--overwrite",
) -> None:
    """Refuse to write ``path`` (given as ``option``) where that would replace one of ``inputs``
    (option -> path), a folder, or (without ``overwrite``) anything but an earlier output that
    ``is_own`` recognises as ``kind``; ``override`` is how the caller's user says --overwrite."""
    path = Path(path)
    for name, given in (inputs or {}).items():
        if given is not None and same_file(path, Path(given)):
            raise OutputConflict(f"{path}: {option} is {name} {given}, an input of this command; it is never written "
                                 f"over (not even with --overwrite): choose another {option}")
    check_parent(path, option)
    if not os.path.lexists(path):
        return
    if path.is_dir():
        raise OutputConflict(f"{path}: is a folder; {option} must name a file")
    if overwrite:
        return
    if not is_own(path):
        raise OutputConflict(f"{path}: exists and is not {kind}; use {override} to replace it, or another {option}")
    if read_only(path):
        raise OutputConflict(f"{path}: is read-only; use {override} to replace it, or another {option}")


def check_checkpoint_out(path: str | Path, *, option: str = "--out", inputs: Mapping[str, str | Path | None] | None = None,
                         overwrite: bool = False, override: str = "--overwrite") -> None:
    """``check_target`` for a checkpoint (``train``, ``init-model``): an fcnseg checkpoint there is
    replaced, so a retraining loop writes the same ``--out`` every night."""
    from fcnseg.models.checkpoint import is_checkpoint  # torch: not imported by synth, which never writes one

    check_target(path, option=option, kind="an fcnseg checkpoint (a safetensors file with fcnseg's model card)",
                 is_own=is_checkpoint, inputs=inputs, overwrite=overwrite, override=override)


def same_file(a: Path, b: Path) -> bool:
    """True when ``a`` and ``b`` name one file: the same resolved path (symlinks followed), or the
    same inode (a hard link)."""
    if a.resolve() == b.resolve():
        return True
    try:
        return os.path.samefile(a, b)
    except OSError:  # one of them does not exist (yet), or is a URI GDAL reads
        return False


def check_parent(path: Path, option: str) -> None:
    """The folder ``path`` goes in must be a folder (or creatable under one) that can be written."""
    parent = path.absolute().parent
    while not os.path.lexists(parent) and parent != parent.parent:
        parent = parent.parent
    if not parent.is_dir():
        raise OutputConflict(f"{parent}: is not a folder; {option} {path} cannot be written under it")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise OutputConflict(f"{parent}: folder not writable; {option} {path} cannot be written there")


def read_only(path: Path) -> bool:
    """No write permission for this user, or none for anyone (which root would ignore)."""
    return not os.access(path, os.W_OK) or not stat.S_IMODE(os.stat(path).st_mode) & 0o222
