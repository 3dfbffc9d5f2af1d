"""The plan stage: options, the run's identity and tiles, and OUT made ready for them.

Everything is decided here before any chunk is computed, and bad input fails here, before any
output exists: an invalid option, a damaged checkpoint, an unreadable raster, bands the model
cannot take, or an OUT that holds another run (``guard``). A run's identity is its
``parameters``: the input and its content's fingerprint, the model's hash, the device, the tile
geometry, stitching, bands. A rerun with the same ones resumes from the chunk ledger.

What the plan decides is what every worker and every product uses, never a second look at a path:
the input, OUT (its store and ledger) and the model are resolved here into absolute paths (or
URIs), which mean the same on every worker whatever its working directory; the model's card,
hash, size and parameter count are read once here (``planned_model``) and the products describe
that model; the store is created with a random run token (``store.RUN_TOKEN``) that every task
carries, so a task never writes into a store its run did not create.
"""

from __future__ import annotations

import json
import logging
import os
import secrets
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

from fcnseg.errors import CheckpointError
from fcnseg.models.card import ModelCard, Normalization
from fcnseg.models.card_file import ModelSource, file_sha256, read_card_file
from fcnseg.atomic import remove_path
from fcnseg.pipeline.band_statistics import scene_normalization
from fcnseg.pipeline.io import atomic_write, atomic_write_text, check_north_up, open_raster, select_bands
from fcnseg.pipeline.output.layout import CHUNK_STATE, PARAMETERS_JSON, RUN_JSON, STATE_DIR, STORE_NAME, ledger_folder
from fcnseg.pipeline.faults import crash_point
from fcnseg.pipeline.output.object_store import ObjectStoreOutput
from fcnseg.pipeline.output.complete import is_complete
from fcnseg.pipeline.output.guard import judge_previous, prepare_output
from fcnseg.pipeline.segment.identity import input_fingerprint
from fcnseg.pipeline.output.ledger import ChunkLedger
from fcnseg.pipeline.output.run_identity import RunIdentity
from fcnseg.pipeline.store import COMPLETE, RUN_TOKEN, create_store, label_chunk_file, open_store
from fcnseg.pipeline.segment_options import SegmentOptions
from fcnseg.pipeline.tiles import Tile, default_halo, iter_tiles

log = logging.getLogger(__name__)

@dataclass
class RunPlan:
    """Everything decided before any chunk is computed (the validate and plan stages)."""

    input: str
    model_path: str
    model_sha256: str
    model_content_sha256: str  # what workers check the checkpoint they load against
    out: Path
    options: SegmentOptions
    halo: int
    bands: list[int]
    tiles: list[Tile]
    reused: set[tuple[int, int]]
    parameters: RunIdentity
    num_classes: int
    height: int
    width: int
    georeferenced: bool = True  # False: a raster without CRS, segmented in pixel coordinates
    overwrite: bool = False  # --overwrite: replace what OUT holds
    complete: bool = False  # run.json says this exact output is already there
    destination: str | None = None  # the object-store URI OUT is uploaded to (OUT: its staging folder)
    run_token: str | None = None  # the store's RUN_TOKEN, carried by every task (None: a store from before tokens)
    model: ModelSource | None = None  # the checkpoint as planned: what the products describe

    @property
    def target(self) -> str | Path:
        """Where the output lands: the object-store URI, else OUT."""
        return self.destination or self.out

    @property
    def store_path(self) -> Path:
        return self.out / STORE_NAME

    @property
    def state(self) -> Path:
        return self.out / STATE_DIR

    @property
    def ledger(self) -> ChunkLedger:
        return ChunkLedger(str(ledger_folder(self.out)))

    @property
    def normalization(self) -> tuple[tuple[float, ...], tuple[float, ...]] | None:
        """The per-band (mean, std) that replace the card's (``--normalize scene``); None: the card's."""
        values = self.parameters.normalization
        return None if values is None else (tuple(values["mean"]), tuple(values["std"]))

    @property
    def todo(self) -> list[Tile]:
        return [t for t in self.tiles if (t.row, t.col) not in self.reused]


def run_parameters(
    input_path: str, fingerprint: dict[str, Any], model_sha256: str, options: SegmentOptions, halo: int, bands: list[int],
    normalization: Normalization | None = None,
) -> RunIdentity:
    """What makes two runs produce the same chunks: a rerun must match it to reuse them.
    ``normalization``: the one ``--normalize scene`` computed for the input (its values are part of it)."""
    return RunIdentity(
        input=input_path, input_fingerprint=fingerprint, model_sha256=model_sha256, device=options.device,
        tile=options.tile, halo=halo, stitch=options.stitch, bands=tuple(bands), probabilities=options.probabilities,
        tta=options.tta, confidence=options.confidence, normalize=options.normalize,
        normalization=None if normalization is None else {"mean": normalization.mean, "std": normalization.std},
    )


def plan_run(
    input_path: str | Path, model_path: str | Path, out: str | Path, options: SegmentOptions = SegmentOptions(),
    *, overwrite: bool = False, local: bool = True, destination: str | None = None,
) -> RunPlan:
    """Validate the options, model and input, plan the tiles and prepare OUT (the run state and
    the store). Call it holding ``guard.held_output`` (or ``output_lock(out)``). ``local``: the
    workers run on this machine, so ``--device cuda`` is checked here (remote workers are checked
    when reached). ``destination``: the object-store URI OUT is staged for; what it holds is
    judged as a local OUT's would be."""
    options.validate()
    out = Path(os.path.abspath(out))  # checked to be a folder by ``output_lock``; the same path on every worker
    if local and options.device.startswith("cuda"):
        from fcnseg.models.inference import resolve_device

        resolve_device(options.device)  # --device cuda without CUDA: one line now, not a worker traceback
    input_name = str(Path(input_path).resolve()) if Path(input_path).exists() else str(input_path)
    model, content_sha = planned_model(model_path)  # a damaged file fails here, not on a worker mid-run
    card, model_sha = model.card, model.sha256
    with open_raster(input_name) as src:
        check_north_up(src, input_path)  # before OUT is touched: the store could not place its pixels
        bands = select_bands(src, card, options.bands)
        halo = default_halo(card.arch) if options.halo is None else options.halo
        options = options.sized(card.width, halo)
        tiles = list(iter_tiles(src.height, src.width, options.tile, halo))
        # --normalize scene: the input's statistics, once per run on the driver (every tile gets the same)
        normalization = scene_normalization(src, bands, card, model.path) if options.normalize == "scene" else None
        parameters = run_parameters(input_name, input_fingerprint(input_name), model_sha, options, halo, bands,
                                    normalization)
        plan = RunPlan(input_name, model.path, model_sha, content_sha, out, options, halo, bands,
                       tiles, set(), parameters, card.num_classes, src.height, src.width,
                       georeferenced=src.crs is not None, overwrite=overwrite, destination=destination, model=model)
        if already_complete(plan):
            plan.complete = True
            return plan
        if destination:
            judge_previous(destination, *ObjectStoreOutput(destination).previous(), parameters, overwrite)
        out.mkdir(parents=True, exist_ok=True)
        reuse = prepare_output(out, parameters, overwrite)
        if not reuse:  # the run is recorded before its store exists: a crash in between resumes
            atomic_write_text(plan.state / PARAMETERS_JSON, json.dumps(parameters.to_json(), indent=2), durable=True)
            crash_point("plan")
        if reuse and plan.store_path.exists():
            plan.run_token = open_store(plan.store_path, mode="r").attrs.get(RUN_TOKEN)
            reopen_lost_chunks(plan)
        else:
            if reuse and plan.ledger.finished(tiles):
                log.warning("%s: missing; every chunk is computed again", plan.store_path)
            if reuse:
                restart_chunks(plan)  # markers (and blend scratch) of a store that is gone
            plan.run_token = secrets.token_hex(16)
            with atomic_write(plan.store_path) as partial:  # a store is whole or absent
                create_store(
                    partial, height=src.height, width=src.width, crs=src.crs, transform=src.transform,
                    chunk=options.tile, class_names=card.class_names, class_colors=[c.color for c in card.classes],
                    attrs={COMPLETE: False, RUN_TOKEN: plan.run_token, "model_sha256": model_sha,
                           "parameters": parameters.to_json(), "source": input_name},
                    probabilities=options.probabilities, confidence=options.confidence,
                )
    plan.reused = plan.ledger.finished(tiles)
    log.info("%s: %dx%d px, %d chunks (%d done before), tile %d, halo %d, batch %d", input_name, plan.width,
             plan.height, len(tiles), len(plan.reused), options.tile, halo, options.batch_size)
    return plan


def lost_chunks(plan: RunPlan) -> list[Tile]:
    """The chunks the ledger marks computed whose labels are not in the store (a file deleted or
    lost since): cheap, a stat per finished chunk and a marker read only where the file is absent
    (a nodata chunk is never written, so its marker is read to tell the two apart)."""
    group = open_store(plan.store_path, mode="r")
    lost = []
    for tile in plan.tiles:
        if not plan.ledger.is_finished(tile) or label_chunk_file(plan.store_path, group, tile.row, tile.col).exists():
            continue
        marker = plan.ledger.result(tile)
        if marker is not None and marker.status == "computed":
            lost.append(tile)
    return lost


def reopen_lost_chunks(plan: RunPlan) -> None:
    """Unmark the chunks whose data is lost, so this run computes them again, and say so; the
    output stops looking complete at once (run.json removed, the store marked incomplete)."""
    lost = lost_chunks(plan)
    if not lost:
        return
    names = ", ".join(f"chunk {t.row},{t.col}" for t in lost[:5]) + (" ..." if len(lost) > 5 else "")
    log.warning("%s: %d chunk(s) marked computed have no data in the store (%s); recomputing them",
                plan.store_path, len(lost), names)
    remove_path(plan.out / RUN_JSON)
    open_store(plan.store_path).attrs[COMPLETE] = False
    for tile in lost:
        plan.ledger.forget(tile)


def restart_chunks(plan: RunPlan) -> None:
    """Forget every finished chunk (and blend scratch): the store's chunks are all written again."""
    for name in CHUNK_STATE:
        remove_path(plan.state / name)
    ledger_folder(plan.out).mkdir(parents=True)
    plan.reused = set()


def checked_model(model_path: str | Path) -> tuple[ModelCard, str]:
    """The card and file sha256 of a checkpoint whose every byte was verified (``planned_model``)."""
    model, _ = planned_model(model_path)
    return model.card, model.sha256


def planned_model(model_path: str | Path) -> tuple[ModelSource, str]:
    """The checkpoint as a run plans with it: its absolute path, its card (every byte verified
    against the content hash, no tensor NaN or infinite), file sha256, size and parameter count
    (``ModelSource``), and its content hash (what workers check the file they load against). Read
    once: the products describe this model, whatever the path holds later.

    Read from the file's safetensors header and bytes without torch (``models.card_file``): a plan,
    and a rerun of a complete output that computes nothing, imports no torch. Verified once per
    process and file version: a flow plans many scenes with one model, and a full-width
    checkpoint is half a gigabyte to read.
    """
    path = os.path.abspath(model_path)
    try:
        stat = os.stat(path)
    except OSError:
        read_card_file(path)  # raises the checkpoint's own clear error for a missing file
        raise
    return _checked_model(path, stat.st_ino, stat.st_mtime_ns, stat.st_size)


@lru_cache(maxsize=8)
def _checked_model(model_path: str, inode: int, mtime_ns: int, size: int) -> tuple[ModelSource, str]:
    checked, sha = read_card_file(model_path, verify=True, finite=True), file_sha256(model_path)
    stat = os.stat(model_path)
    if (stat.st_ino, stat.st_mtime_ns, stat.st_size) != (inode, mtime_ns, size):  # card and hashes of one file
        raise CheckpointError(f"{model_path}: changed while it was being checked; run the command again")
    source = ModelSource(model_path, checked.card, sha, size=size, parameters=checked.parameters)
    return source, str(checked.content_sha256)


def already_complete(plan: RunPlan) -> bool:
    """OUT, or the prefix it is staged for, already holds this exact output (``output.complete``);
    in a local OUT also every chunk is marked done and has its data in the store (``chunks_whole``)."""
    ledger = None if plan.destination else (lambda: chunks_whole(plan))
    return is_complete(plan.target, plan.parameters.to_json(), plan.options.outputs(), chunks_whole=ledger)


def chunks_whole(plan: RunPlan) -> bool:
    """Every chunk is marked done and every chunk marked computed has its data in the store (``lost_chunks``)."""
    return len(plan.ledger.finished(plan.tiles)) == len(plan.tiles) and not lost_chunks(plan)
