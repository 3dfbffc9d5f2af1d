"""``fcnseg verify OUT``: is a finished output still what its run wrote?

A complete output can be damaged afterwards (a chunk file deleted, a disk error, a copy cut
short, a file edited) and nothing in it says so: ``query`` would count a lost chunk as nodata.
The run left what it wrote on record, and this re-reads everything against it:

* every chunk of ``labels.zarr`` against its ledger marker: a chunk marked computed must be in the
  store with the sha256 its worker recorded (``ledger.labels_sha256``); a chunk marked nodata
  was never written, and must hold no labels; every chunk must have a marker;
* every file that ``item.json`` lists with ``file:size`` and ``file:checksum`` (a sha2-256
  multihash, ``output.file_fields``, as ``products.stac`` writes it) against its size and sha256; the checkpoint, which
  lives outside OUT, is checked where its path still holds a file (a copied folder may not have it);
* every file ``run.json`` lists exists, and the store is marked complete.

One chunk and one file block are in memory at a time. Markers from before chunk hashes were
recorded cannot be compared: they are counted as unverified, not as problems.

It reads the output folder and its records alone, so it lives with them in ``output/``: no model,
no cluster, no products (``fcnseg verify`` imports neither torch nor Dask's distributed).
"""

from __future__ import annotations

import json
import logging
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

from fcnseg.pipeline.io import InputError
from fcnseg.pipeline.output.file_fields import file_fields
from fcnseg.pipeline.output.layout import ITEM_JSON, RUN_JSON, STORE_NAME, ledger_folder
from fcnseg.pipeline.output.ledger import ChunkLedger, labels_sha256
from fcnseg.pipeline.output.object_store import is_object_store
from fcnseg.pipeline.store import COMPLETE, LABELS, NODATA, label_chunk_file, open_store
from fcnseg.pipeline.tiles import Tile, iter_tiles

log = logging.getLogger(__name__)


@dataclass(frozen=True, kw_only=True)
class VerifiedChunks:
    """What became of the store's chunks under ``verify``: ``total``, of which ``verified`` by their
    sha256, ``nodata`` (marked so, holding no labels) and ``unverified`` (a marker from before chunk
    hashes were recorded); a chunk with a problem is in ``total`` alone."""

    total: int = 0
    verified: int = 0
    nodata: int = 0
    unverified: int = 0

    def to_json(self) -> dict[str, int]:
        """The counts as ``verify --json`` writes them (``chunks``)."""
        return asdict(self)


@dataclass
class VerifiedFiles:
    """What became of item.json's files under ``verify``: ``verified`` by size and sha256, and
    ``not_found_outside`` (an asset outside OUT, such as the model, absent on this machine)."""

    verified: int = 0
    not_found_outside: int = 0


@dataclass
class VerifyReport:
    """What ``verify_output`` found: one line per problem, and what was checked."""

    out: str
    problems: list[str] = field(default_factory=list)
    chunks: VerifiedChunks = field(default_factory=VerifiedChunks)
    files: VerifiedFiles = field(default_factory=VerifiedFiles)
    notes: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    def to_dict(self) -> dict[str, Any]:
        """The report as JSON-ready values (``verify --json``)."""
        return {**asdict(self), "ok": self.ok}

    def summary(self) -> str:
        """One line: what was checked and found as the run wrote it."""
        c, f = self.chunks, self.files
        unverified = f", {c.unverified} without a recorded hash" if c.unverified else ""
        text = (f"{self.out}: as written: {c.total} chunks ({c.verified} by their sha256, "
                f"{c.nodata} nodata{unverified}), {f.verified} files by size and sha256")
        return text + "".join(f"; {note}" for note in self.notes)


def verify_output(out: str | Path) -> VerifyReport:
    """Check the output folder ``out`` against its run's records (see the module's docstring).
    An OUT without run.json (not a finished fcnseg output) is an ``InputError``."""
    if is_object_store(out):
        raise InputError(f"{out}: verify reads an output folder; download the prefix and verify the copy")
    out = Path(out)
    run_json = out / RUN_JSON
    if not run_json.is_file():
        raise InputError(f"{out}: no {RUN_JSON}; not a finished fcnseg output, nothing to verify")
    try:
        record = json.loads(run_json.read_text())
    except json.JSONDecodeError as exc:
        raise InputError(f"{run_json}: not valid JSON ({exc})") from None
    report = VerifyReport(str(out))
    report.problems += [f"{out / name}: listed in {RUN_JSON} but missing"
                        for name in record.get("files", []) if not (out / name).exists()]
    if (out / STORE_NAME).is_dir():
        verify_chunks(out / STORE_NAME, ChunkLedger(str(ledger_folder(out))), report)
    if (out / ITEM_JSON).is_file():
        verify_assets(out, report)
    return report


def verify_chunks(store_path: Path, ledger: ChunkLedger, report: VerifyReport) -> None:
    """Every chunk of the store's labels against its marker (``VerifyReport.chunks`` counts them)."""
    group = open_store(store_path, mode="r")
    if group.attrs.get(COMPLETE) is False:
        report.problems.append(f"{store_path}: marked incomplete (its run did not finish)")
    labels = group[LABELS]
    height, width = labels.shape
    found: Counter[str] = Counter()
    for tile in iter_tiles(height, width, labels.chunks[0], 0):
        found["total"] += 1
        kind, problem = chunk_check(store_path, group, ledger, tile)
        found[kind] += 1
        if problem:
            report.problems.append(f"{store_path}: chunk {tile.row},{tile.col} {problem}")
    report.chunks = VerifiedChunks(total=found["total"], verified=found["verified"], nodata=found["nodata"],
                                   unverified=found["unverified"])


def chunk_check(store_path: Path, group: Any, ledger: ChunkLedger, tile: Tile) -> tuple[str, str | None]:
    """How one chunk counts (``verified``, ``nodata``, ``unverified``, or ``problem``) and, for a
    problem, what is wrong with it."""
    marker = ledger.result(tile)
    if marker is None:
        return "problem", "has no ledger marker (the ledger does not say it was finished)"
    written = label_chunk_file(store_path, group, tile.row, tile.col).exists()
    rows, cols = tile.core.toslices()
    if marker.status == "nodata":
        if written and (group[LABELS][rows, cols] != NODATA).any():
            return "problem", "holds labels where the ledger says nodata"
        return "nodata", None
    if not written:
        return "problem", "is missing (the ledger marks it computed); rerun the segment command to recompute it"
    if marker.sha256 is None:
        return "unverified", None
    if labels_sha256(group[LABELS][rows, cols]) != marker.sha256:
        return "problem", "differs from what its run wrote (sha256 unlike the ledger's)"
    return "verified", None


def verify_assets(out: Path, report: VerifyReport) -> None:
    """Every asset of item.json with ``file:checksum``: size and sha256 as recorded."""
    item_path = out / ITEM_JSON
    try:
        assets = json.loads(item_path.read_text()).get("assets", {})
    except json.JSONDecodeError as exc:
        report.problems.append(f"{item_path}: not valid JSON ({exc})")
        return
    for key, asset in assets.items():
        if "file:checksum" not in asset:
            continue  # the store (a folder, checked chunk by chunk) and run.json (written after the item)
        path, inside = asset_path(out, asset.get("href", ""))
        if path is None:
            report.notes.append(f"asset {key} ({asset.get('href')}) not checked: not a local file")
        elif not path.is_file():
            if inside:
                report.problems.append(f"{path}: listed in {ITEM_JSON} but missing")
            else:
                report.files.not_found_outside += 1
                report.notes.append(f"{path} (asset {key}) not found here, not checked")
        else:
            problem = file_problem(path, asset)
            if problem:
                report.problems.append(f"{path}: {problem}")
            else:
                report.files.verified += 1


def asset_path(out: Path, href: str) -> tuple[Path | None, bool]:
    """The local file an asset's href names, and whether it lies in OUT (a relative href); None
    for a URL this machine cannot read as a file."""
    parts = urlsplit(href)
    if parts.scheme == "file":
        return Path(unquote(parts.path)), False
    if parts.scheme:
        return None, False
    return out / href, True


def file_problem(path: Path, asset: dict[str, Any]) -> str | None:
    """How a file differs from its asset's ``file:size`` and ``file:checksum`` (None: it does not)."""
    found = file_fields(path)
    if "file:size" in asset and found["file:size"] != asset["file:size"]:
        return f"{found['file:size']} bytes, {ITEM_JSON} says {asset['file:size']}"
    if found["file:checksum"] != asset["file:checksum"]:
        return f"sha256 unlike {ITEM_JSON}'s file:checksum (the file changed since it was written)"
    return None
