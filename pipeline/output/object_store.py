"""OUT on an object store (``s3://bucket/prefix``): staged in a local folder, uploaded when complete.

Why staged rather than written in place: every stage relies on a POSIX folder (the folder lock,
the chunk ledger's markers, atomic renames, GDAL's COG writer, the GeoPackage's SQLite), and an
object store has no rename and no lock. So the run works in a staging folder on this machine
(``FCNSEG_STAGING``, default ``~/.cache/fcnseg/staging``), one per URI, where an interrupted run
resumes as in any OUT, and ``publish`` uploads the finished folder. The store on the bucket is
the same labels.zarr, one object per file, so ``xr.open_zarr("s3://...")`` opens it.

The upload never leaves a prefix that looks complete and is not: the remote run.json goes
first, the run record (``.fcnseg-run/parameters.json``, which tells a later run that the prefix
is fcnseg's) comes next, then the files, and run.json last. The staging folder is emptied once
the upload is through.

Two machines on one prefix are kept apart by a lease under it (``hold.prefix_lease``).
Reaching the store is fsspec's (s3fs for ``s3://``): credentials and the
endpoint come from the usual AWS variables (``AWS_PROFILE``, ``AWS_ENDPOINT_URL`` ...).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from pathlib import Path
from typing import Any

from fcnseg.errors import InputError
from fcnseg.pipeline.faults import crash_point
from fcnseg.pipeline.output.layout import OUTPUT_FILES, PARAMETERS_JSON, PARAMETERS_KEY, RUN_JSON, STORE_NAME, state_folder

log = logging.getLogger(__name__)


def is_object_store(out: str | Path) -> bool:
    """``s3://bucket/prefix`` and the like; a local path or ``file://`` is a folder."""
    text = str(out)
    return "://" in text and not text.startswith("file://")


def staging_folder(uri: str) -> Path:
    """The local folder a run on ``uri`` works in: the same for every run on that URI, so an
    interrupted one resumes; its name says which URI it is for."""
    root = Path(os.environ.get("FCNSEG_STAGING") or Path.home() / ".cache" / "fcnseg" / "staging")
    name = uri.rstrip("/").rsplit("/", 1)[-1] or "out"
    return root / f"{name}-{hashlib.sha1(uri.rstrip('/').encode()).hexdigest()[:12]}"


class ObjectStoreOutput:
    """One OUT prefix on an object store: what it holds, and the upload of a finished output."""

    def __init__(self, uri: str) -> None:
        self.uri = uri.rstrip("/")
        try:
            import fsspec

            self.fs, self.path = fsspec.url_to_fs(self.uri)
            self.fs.invalidate_cache()  # another process (an earlier run) may have changed the prefix
        except ImportError as exc:
            raise InputError(f"{uri}: writing to an object store needs {exc.name} (pip install 'fcnseg[s3]')") from None
        except ValueError as exc:
            raise InputError(f"{uri}: {exc}") from None

    def key(self, name: str) -> str:
        return f"{self.path}/{name}"

    def check_reachable(self) -> None:
        """The bucket exists and these credentials may list it: one line now, not after inference."""
        bucket = self.path.split("/", 1)[0]
        try:
            self.fs.ls(bucket, detail=False)
        except FileNotFoundError:
            raise InputError(f"{self.uri}: bucket {bucket} does not exist") from None
        except (OSError, PermissionError) as exc:
            raise InputError(f"{self.uri}: cannot list bucket {bucket} ({exc})") from None

    def read_json(self, name: str) -> dict[str, Any] | None:
        """A JSON file of OUT on the bucket; None when it is missing or unreadable."""
        try:
            return json.loads(self.fs.cat_file(self.key(name)))
        except (FileNotFoundError, json.JSONDecodeError):
            return None

    def exists(self, name: str) -> bool:
        """An output file (or, for the store, its root metadata) on the bucket."""
        return self.fs.exists(self.key(f"{name}/zarr.json" if name == STORE_NAME else name))

    def previous(self) -> tuple[dict[str, Any] | None, list[str]]:
        """The run record on the bucket, and the output files there (``guard.judge_previous``)."""
        return self.read_json(PARAMETERS_KEY), [name for name in OUTPUT_FILES if self.exists(name)]

    def upload(self, local: Path, files: list[str]) -> None:
        """``files`` of the finished folder ``local`` to the prefix, in an order that never lets
        an incomplete prefix look complete; what earlier runs left there is removed first."""
        self.remove(RUN_JSON)
        self.fs.put_file(str(state_folder(local) / PARAMETERS_JSON), self.key(PARAMETERS_KEY))
        for name in OUTPUT_FILES:
            if name != RUN_JSON:
                self.remove(name)
        for name in files:
            if name == RUN_JSON:
                continue
            source = local / name
            if source.is_dir():
                self.fs.put(f"{source}/", self.key(name) + "/", recursive=True)
            else:
                self.fs.put_file(str(source), self.key(name))
        crash_point("upload")
        self.fs.put_file(str(local / RUN_JSON), self.key(RUN_JSON))  # last: the prefix is complete
        log.info("%s: uploaded %d files", self.uri, len(files) + 1)

    def remove(self, name: str) -> None:
        """``name`` (a file, or a folder and everything in it) gone from the prefix, if there."""
        if self.fs.exists(self.key(name)):
            self.fs.rm(self.key(name), recursive=True)
