"""The record of a run: the report ``segment`` returns, and run.json, which says OUT is complete.

run.json is written (durably, atomically) only once every output file exists, and lists them
with the parameters: a rerun that finds it, its files and every chunk marked is a no-op.
"""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from fcnseg.pipeline.analysis.query import ClassArea
from fcnseg.pipeline.io import atomic_write_text
from fcnseg.pipeline.output.object_store import ObjectStoreOutput, is_object_store
from fcnseg.pipeline.output.layout import RUN_JSON
from fcnseg.pipeline.output.ledger import ChunkResult
from fcnseg.pipeline.output.run_identity import RunIdentity
from fcnseg.pipeline.options import OptionModel
from fcnseg.pipeline.versions import code_identity, invocation, software_versions


@dataclass(kw_only=True)
class ChunkRun:
    """What the infer stage did: the chunks' results, each worker's peak memory (MB), seconds.
    Built by keyword only: three lists and a dict in a row are easy to pass in the wrong order."""

    results: list[ChunkResult]
    worker_peaks_mb: list[float]
    seconds: dict[str, float]
    execution: str | None = None  # how the chunks were computed (``cpu fp32`` ...)
    devices: list[str] = field(default_factory=list)  # the workers' devices (``cpu``, ``cuda:0 NVIDIA H200``)
    workers: int = 0  # Dask workers that computed chunks (0: every chunk was done before)
    cluster: str | None = None  # where it computed: in-process, local, client, scheduler, cluster-spec, none


@dataclass(frozen=True, kw_only=True)
class ChunkCounts:
    """What became of a run's planned chunks: computed now, skipped without data (never run
    through the model) or reused from an earlier run of the same identity."""

    total: int
    computed: int
    skipped_nodata: int
    reused: int

    def to_json(self) -> dict[str, int]:
        """The counts as run.json's ``chunks`` and ``segment --json`` write them."""
        return asdict(self)

    @classmethod
    def from_json(cls, data: Mapping[str, int]) -> ChunkCounts:
        return cls(**{f.name: data[f.name] for f in fields(cls)})


@dataclass(kw_only=True)
class RunReport:
    """What a run did and made: returned by ``segment()``, written as run.json, read back from it."""

    out: Path | str  # the folder, or the object-store URI the output was uploaded to
    chunks: ChunkCounts
    seconds: dict[str, float]
    megapixels_per_second: float
    peak_memory_mb: float
    parameters: RunIdentity | None = None
    files: list[str] = field(default_factory=list)
    class_areas: tuple[ClassArea, ...] = ()
    polygons: int | None = None
    simplify_area_error: float | None = None  # --simplify: area moved between polygons, a share (vectorize report)
    execution: str | None = None
    skipped: bool = False  # the folder already held this exact output: nothing was done
    started: str | None = None  # ISO 8601, UTC
    finished: str | None = None
    devices: list[str] = field(default_factory=list)
    workers: int = 0
    cluster: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """The report as JSON-ready values (``segment --json``)."""
        parameters = {} if self.parameters is None else self.parameters.to_json()
        return {**asdict(self), "out": str(self.out), "parameters": parameters, "chunks": self.chunks.to_json(),
                "class_areas": self.class_areas_json()}

    def class_areas_json(self) -> list[dict[str, Any]]:
        """The class areas as run.json and ``segment --json`` write them."""
        return [area.to_json() for area in self.class_areas]

    def location(self, name: str) -> str:
        """Where one of its files is: a path, or a URI under an object-store OUT."""
        return f"{self.out}/{name}" if isinstance(self.out, str) else str(self.out / name)


class Stopwatch:
    """``with timed("stage"):`` adds the stage's seconds to a dict."""

    def __init__(self, seconds: dict[str, float]) -> None:
        self.seconds = seconds

    @contextmanager
    def __call__(self, stage: str) -> Iterator[None]:
        started = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[stage] = self.seconds.get(stage, 0.0) + time.perf_counter() - started


def iso_utc(moment: datetime) -> str:
    """A moment as the record writes it: ISO 8601 in UTC, to the second (``2026-12-03T17:40:00Z``)."""
    return moment.astimezone(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def write_run_json(out: Path, report: RunReport, *, input_path: str, model_path: str, model_sha256: str,
                   outputs: Mapping[str, Any], options: OptionModel | None = None) -> None:
    """run.json in the folder ``out``, written once every output file exists: it records what the
    folder holds (the run's identity is ``report.parameters``; ``outputs``: the options that made files).

    ``options`` (the run's, tile and batch size as sized) give the batch size and, for a library
    call, the call's options; with ``code`` (version and commit) and ``command`` they say how the
    output was made, for a reader only: none is in the identity a rerun must match."""
    identity = report.parameters.to_json()
    chosen = {} if options is None else options.model_dump(mode="json")
    record = {
        "input": input_path,
        "input_fingerprint": identity["input_fingerprint"],
        "model": model_path,
        "model_sha256": model_sha256,
        "parameters": identity,
        "started": report.started,
        "finished": report.finished,
        "execution": report.execution,
        "devices": report.devices,
        "workers": report.workers,
        "cluster": report.cluster,
        "batch_size": chosen.get("batch_size"),
        "command": invocation("segment", {"input": input_path, "model": model_path, **chosen}),
        "code": code_identity(),
        "versions": software_versions(),
        "outputs": dict(outputs),
        "files": report.files,
        "chunks": report.chunks.to_json(),
        "seconds": report.seconds,
        "megapixels_per_second": report.megapixels_per_second,
        "peak_memory_mb": report.peak_memory_mb,
        "polygons": report.polygons,
        "simplify_area_error": report.simplify_area_error,
        "class_areas": report.class_areas_json(),
    }
    atomic_write_text(out / RUN_JSON, json.dumps(record, indent=2), durable=True)


def read_run_report(out: str | Path, *, skipped: bool = False) -> RunReport:
    """The report of the complete output in ``out`` (a folder or an object-store URI), from its run.json."""
    if is_object_store(out):
        record = ObjectStoreOutput(str(out)).read_json(RUN_JSON)
        if record is None:
            raise FileNotFoundError(f"{out}/{RUN_JSON}")
        out = str(out)
    else:
        out = Path(out)
        record = json.loads((out / RUN_JSON).read_text())
    return RunReport(
        out=out, chunks=ChunkCounts.from_json(record["chunks"]), seconds=record["seconds"],
        megapixels_per_second=record["megapixels_per_second"], peak_memory_mb=record["peak_memory_mb"],
        parameters=RunIdentity.from_json(record["parameters"]), files=record["files"],
        class_areas=tuple(ClassArea.from_json(c) for c in record["class_areas"]),
        polygons=record.get("polygons"), simplify_area_error=record.get("simplify_area_error"), execution=record.get("execution"), skipped=skipped,
        started=record.get("started"), finished=record.get("finished"), devices=record.get("devices", []),
        workers=record.get("workers", 0), cluster=record.get("cluster"),
    )
