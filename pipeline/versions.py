"""The software a run used, by name and version, and what identifies fcnseg's own code and the
command that ran: recorded in run.json (and the versions in the STAC item), so two outputs that
differ can be told apart by what made them. Informational only: none of it is the run's identity
(``output/run_identity.py``), so a rerun from another commit still reuses a finished output."""

from __future__ import annotations

import logging
import platform
import re
import subprocess
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from functools import cache
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

#: The packages whose versions shape an output (the model's arithmetic, GDAL's writers, the store).
PACKAGES = ("fcnseg", "torch", "numpy", "rasterio", "zarr", "dask", "distributed", "shapely", "pyogrio", "pyarrow")

#: The checkout this module runs from when fcnseg is installed from one (``pip install -e``): the
#: folder above ``pipeline/``. Only this one folder is looked at, never its parents: an installed
#: fcnseg inside some other repository's virtual environment must not report that repository's commit.
CHECKOUT = Path(__file__).resolve().parents[1]

#: ``git rev-parse`` is asked only when the files do not say (a reftable repository, say), and not for long.
GIT_TIMEOUT_S = 2.0

_SHA = re.compile(r"^[0-9a-f]{40}([0-9a-f]{24})?$")


@cache
def software_versions() -> dict[str, str]:
    """``{"fcnseg": "0.1.0", "python": "3.11.2", "gdal": "3.10.3", "torch": ...}`` for this process."""
    import rasterio

    found = {"python": platform.python_version(), "gdal": rasterio.__gdal_version__}
    for name in PACKAGES:
        try:
            found[name] = version(name)
        except PackageNotFoundError:
            continue
    return dict(sorted(found.items()))


def fcnseg_version() -> str:
    """The installed package's version (``0.1.0``); ``unknown`` when run from an uninstalled tree."""
    try:
        return version("fcnseg")
    except PackageNotFoundError:
        return "unknown"


@cache
def code_commit(checkout: Path = CHECKOUT) -> str | None:
    """The commit of the checkout fcnseg runs from, None when it is not a git checkout (a wheel, an
    sdist) or the commit cannot be read: "0.1.0" alone is every build between two releases.

    Read from ``.git/HEAD`` and its ref (loose or packed) without running git; ``git rev-parse`` with
    a short timeout only where the files do not say. Never raises: a missing git is no error."""
    git_dir = _git_dir(checkout)
    if git_dir is None:
        return None
    try:
        return _commit_from_files(git_dir) or _commit_from_git(checkout)
    except (OSError, UnicodeDecodeError):
        return _commit_from_git(checkout)


def code_identity() -> dict[str, str | None]:
    """``{"version": "0.1.0", "commit": "4d280bd..."}``: what run.json and ``--version`` say of the code."""
    return {"version": fcnseg_version(), "commit": code_commit()}


def _git_dir(checkout: Path) -> Path | None:
    """``checkout/.git``, or where a ``.git`` file (a worktree, a submodule) points."""
    dot_git = checkout / ".git"
    if dot_git.is_dir():
        return dot_git
    if dot_git.is_file():
        try:
            text = dot_git.read_text().strip()
        except OSError:
            return None
        if text.startswith("gitdir:"):
            target = Path(text.removeprefix("gitdir:").strip())
            return target if target.is_absolute() else (checkout / target).resolve()
    return None


def _commit_from_files(git_dir: Path) -> str | None:
    """HEAD's commit: a detached HEAD's hash, else its branch's loose ref or packed-refs line."""
    head = (git_dir / "HEAD").read_text().strip()
    if _SHA.match(head):
        return head
    if not head.startswith("ref:"):
        return None
    ref = head.removeprefix("ref:").strip()
    for base in _ref_dirs(git_dir):
        loose = base / ref
        if loose.is_file():
            value = loose.read_text().strip()
            return value if _SHA.match(value) else None
        packed = base / "packed-refs"
        if packed.is_file():
            for line in packed.read_text().splitlines():
                sha, _, name = line.partition(" ")
                if name.strip() == ref and _SHA.match(sha):
                    return sha
    return None


def _ref_dirs(git_dir: Path) -> list[Path]:
    """The git dir, and a worktree's common dir (where its branches live)."""
    common = git_dir / "commondir"
    if common.is_file():
        target = Path(common.read_text().strip())
        return [git_dir, target if target.is_absolute() else (git_dir / target).resolve()]
    return [git_dir]


def _commit_from_git(checkout: Path) -> str | None:
    """``git rev-parse HEAD`` in the checkout, or None (no git, a timeout, not a repository)."""
    try:
        done = subprocess.run(["git", "-C", str(checkout), "rev-parse", "HEAD"], capture_output=True, text=True,
                              timeout=GIT_TIMEOUT_S, check=False)
    except (OSError, subprocess.SubprocessError):
        log.debug("git rev-parse failed in %s", checkout, exc_info=True)
        return None
    value = done.stdout.strip()
    return value if done.returncode == 0 and _SHA.match(value) else None


# --- the command that ran --------------------------------------------------------------------------

_COMMAND_LINE: ContextVar[tuple[str, ...] | None] = ContextVar("fcnseg_command_line", default=None)


@contextmanager
def command_line(argv: Sequence[str]) -> Iterator[None]:
    """``with command_line(["fcnseg", "segment", ...]):`` the command line is what runs in here: the
    CLI says so around a command, and the records it makes carry it instead of a library call."""
    token = _COMMAND_LINE.set(tuple(str(a) for a in argv))
    try:
        yield
    finally:
        _COMMAND_LINE.reset(token)


def invocation(call: str, arguments: Mapping[str, Any]) -> dict[str, Any]:
    """How a run was started, for its record: ``{"argv": [...]}`` under the command line, else
    ``{"call": "segment", "arguments": {...}}`` (the library call's name and options)."""
    argv = _COMMAND_LINE.get()
    if argv is not None:
        return {"argv": list(argv)}
    return {"call": call, "arguments": dict(arguments)}
