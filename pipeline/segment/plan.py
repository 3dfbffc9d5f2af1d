"""The plan stage: options, the run's identity and tiles, and the guard of the output folder.

Everything is decided here before any chunk is computed, and bad input fails here, before any
output exists: a damaged checkpoint, an unreadable raster, bands the model cannot take, or an OUT
that holds another run. A run's identity is its ``parameters`` (input, model hash, tile geometry,
stitching, bands): a rerun with the same ones resumes from the chunk ledger, any other is refused
unless ``--overwrite``.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any, Literal

from fcnseg.atomic import remove_path, stale_partials
from fcnseg.models.checkpoint import ModelCard, file_sha256, verify_checkpoint
from fcnseg.pipeline.io import InputError, atomic_write_text, open_raster, select_bands
from fcnseg.pipeline.outputs import OUTPUT_FILES, RUN_JSON, STATE_DIR, STORE_NAME
from fcnseg.pipeline.segment.ledger import ChunkLedger
from fcnseg.pipeline.store import create_store
from fcnseg.pipeline.tiles import Tile, default_halo, iter_tiles

log = logging.getLogger(__name__)

PARAMETERS_JSON = "parameters.json"


@dataclass(frozen=True)
class SegmentOptions:
    tile: int = 1024
    halo: int | None = None
    stitch: Literal["crop", "blend"] = "crop"
    batch_size: int = 4
    device: str = "auto"
    probabilities: bool = False
    bands: tuple[int, ...] | None = None
    # what is made from the finished store (changing these never recomputes a chunk)
    cog: bool = True  # labels.tif (and probabilities.tif)
    polygons: bool = True  # polygons.parquet and polygons.gpkg
    simplify: float = 0.0  # polygon simplification tolerance, CRS units; 0 = exact pixel edges
    min_area: float = 0.0  # drop polygons smaller than this (m²)
    quicklook: bool = True  # quicklook.png
    stac: bool = True  # item.json

    def outputs(self) -> dict[str, Any]:
        """The options that shape the files made from the store, as recorded in run.json."""
        return {"cog": self.cog, "polygons": self.polygons, "simplify": self.simplify, "min_area": self.min_area,
                "quicklook": self.quicklook, "stac": self.stac}


@dataclass
class RunPlan:
    """Everything decided before any chunk is computed (the validate and plan stages)."""

    input: str
    model_path: str
    model_sha256: str
    out: Path
    options: SegmentOptions
    halo: int
    bands: list[int]
    tiles: list[Tile]
    reused: set[tuple[int, int]]
    parameters: dict[str, Any]
    num_classes: int
    height: int
    width: int
    complete: bool = False  # run.json says this exact output is already there

    @property
    def store_path(self) -> Path:
        return self.out / STORE_NAME

    @property
    def state(self) -> Path:
        return self.out / STATE_DIR

    @property
    def ledger(self) -> ChunkLedger:
        return ChunkLedger(str(self.state / "done"))

    @property
    def todo(self) -> list[Tile]:
        return [t for t in self.tiles if (t.row, t.col) not in self.reused]


class OutputConflict(InputError):
    """The output folder holds a run with another model or other parameters."""


def run_parameters(input_path: str, model_sha256: str, options: SegmentOptions, halo: int, bands: list[int]) -> dict[str, Any]:
    """What makes two runs produce the same chunks: a rerun must match these to reuse them."""
    return {
        "input": input_path, "model_sha256": model_sha256, "tile": options.tile, "halo": halo,
        "stitch": options.stitch, "bands": bands, "probabilities": options.probabilities,
    }


def plan_run(
    input_path: str | Path, model_path: str | Path, out: str | Path, options: SegmentOptions = SegmentOptions(),
    *, overwrite: bool = False,
) -> RunPlan:
    """Validate the input and model, plan the tiles and prepare OUT (the store, resume state)."""
    if options.stitch not in ("crop", "blend"):
        raise ValueError(f"--stitch must be crop or blend, not {options.stitch!r}")
    if options.simplify < 0 or options.min_area < 0:
        raise ValueError("--simplify and --min-area must not be negative")
    out = Path(out)
    input_name = str(Path(input_path).resolve()) if Path(input_path).exists() else str(input_path)
    card, model_sha = checked_model(model_path)  # a damaged file fails here, not on a worker mid-run
    with open_raster(input_name) as src:
        bands = select_bands(src, card, options.bands)
        halo = default_halo(card.arch) if options.halo is None else options.halo
        tiles = list(iter_tiles(src.height, src.width, options.tile, halo))
        parameters = run_parameters(input_name, model_sha, options, halo, bands)
        plan = RunPlan(input_name, str(model_path), model_sha, out, options, halo, bands, tiles, set(), parameters,
                       card.num_classes, src.height, src.width)
        if is_complete(plan):
            plan.complete = True
            return plan
        out.mkdir(parents=True, exist_ok=True)
        reuse = prepare_output(out, parameters, overwrite)
        if not reuse or not plan.store_path.exists():
            create_store(
                plan.store_path, height=src.height, width=src.width, crs=src.crs, transform=src.transform,
                chunk=options.tile, class_names=card.class_names, class_colors=[c.color for c in card.classes],
                attrs={"fcnseg_complete": False, "model_sha256": model_sha, "parameters": parameters,
                       "source": input_name},
                probabilities=options.probabilities,
            )
            atomic_write_text(plan.state / PARAMETERS_JSON, json.dumps(parameters, indent=2), durable=True)
    plan.reused = plan.ledger.finished(tiles)
    log.info("%s: %dx%d px, %d chunks (%d done before), tile %d, halo %d", input_name, plan.width, plan.height,
             len(tiles), len(plan.reused), options.tile, halo)
    return plan


def checked_model(model_path: str | Path) -> tuple[ModelCard, str]:
    """The card and file sha256 of a checkpoint whose every byte was verified.

    Verified once per process and file version: a flow plans many scenes with one model, and a
    full-width checkpoint is half a gigabyte to read.
    """
    try:
        stat = os.stat(model_path)
    except OSError:
        verify_checkpoint(model_path)  # raises the checkpoint's own clear error for a missing file
        raise
    return _checked_model(str(model_path), stat.st_mtime_ns, stat.st_size)


@lru_cache(maxsize=8)
def _checked_model(model_path: str, mtime_ns: int, size: int) -> tuple[ModelCard, str]:
    return verify_checkpoint(model_path), file_sha256(model_path)


def is_complete(plan: RunPlan) -> bool:
    """OUT already holds this exact output: run.json records the same parameters and outputs,
    every chunk is marked done and every file it lists exists."""
    run_json = plan.out / RUN_JSON
    if not run_json.exists():
        return False
    try:
        record = json.loads(run_json.read_text())
    except json.JSONDecodeError:
        return False
    return (
        record.get("parameters") == plan.parameters
        and record.get("outputs") == plan.options.outputs()
        and all((plan.out / name).exists() for name in record.get("files", []))
        and len(plan.ledger.finished(plan.tiles)) == len(plan.tiles)
    )


# --- the guard of OUT ------------------------------------------------------------------------


def prepare_output(out: Path, parameters: dict[str, Any], overwrite: bool) -> bool:
    """Check a previous run in OUT; True when its chunks may be reused. Otherwise (nothing there,
    or ``overwrite``) clear OUT's fcnseg files and start an empty ledger."""
    state = out / STATE_DIR
    params_file = state / PARAMETERS_JSON
    if params_file.exists():
        previous = json.loads(params_file.read_text())
        if previous == parameters:
            return True
        if not overwrite:
            changed = sorted(k for k in parameters if previous.get(k) != parameters[k])
            raise OutputConflict(f"{out}: holds a run with other {', '.join(changed)}; use --overwrite to replace it")
    elif (out / STORE_NAME).exists() and not overwrite:
        raise OutputConflict(f"{out}: holds a {STORE_NAME} that fcnseg did not record; use --overwrite to replace it")
    remove_outputs(out, keep_store=False)
    remove_path(state)
    (state / "done").mkdir(parents=True)
    return False


def remove_outputs(out: Path, *, keep_store: bool) -> None:
    """Every file a run leaves in OUT, and what killed writers left of them (run.json first: the
    folder stops looking complete at once)."""
    for name in OUTPUT_FILES:
        if not (keep_store and name == STORE_NAME):
            remove_path(out / name)
        for leftover in stale_partials(out / name):
            remove_path(leftover)
