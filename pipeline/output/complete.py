"""Is this exact output already there? One answer for a folder and an object-store prefix alike.

run.json is written last, once every file it lists exists (``record``), and on a bucket it is
uploaded last (``object_store``): so an output is complete when its run.json records this run's
parameters and output options and every file it lists is there. A folder the run is resumed in
has one more witness, its chunk ledger, which the caller passes as ``chunks_whole``.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fcnseg.pipeline.output.layout import RUN_JSON
from fcnseg.pipeline.output.object_store import ObjectStoreOutput, is_object_store


@dataclass(frozen=True)
class FolderOutput:
    """A local OUT read as an ``ObjectStoreOutput`` is: a JSON file of it, and whether a file is there."""

    folder: Path

    def read_json(self, name: str) -> dict[str, Any] | None:
        """A JSON file of OUT; None when it is missing or unreadable (a run.json cut short is no record)."""
        try:
            return json.loads((self.folder / name).read_text())
        except (FileNotFoundError, json.JSONDecodeError):
            return None

    def exists(self, name: str) -> bool:
        return (self.folder / name).exists()


def is_complete(out: str | Path, parameters: dict[str, Any], outputs: dict[str, Any], *,
                chunks_whole: Callable[[], bool] | None = None) -> bool:
    """OUT (a folder or an object-store URI) holds this exact output: its run.json records these
    ``parameters`` and ``outputs``, every file it lists is there, and ``chunks_whole()`` (where
    given: the ledger's word on the store's chunks) is true."""
    room = ObjectStoreOutput(str(out)) if is_object_store(out) else FolderOutput(Path(out))
    record = room.read_json(RUN_JSON)
    return (
        record is not None and record.get("parameters") == parameters and record.get("outputs") == outputs
        and all(room.exists(name) for name in record.get("files", []))
        and (chunks_whole is None or chunks_whole())
    )
