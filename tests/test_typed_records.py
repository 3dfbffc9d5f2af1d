"""The records a run passes on and writes down are typed, frozen values whose JSON is what the
files held when they were string-keyed dicts: a run's class areas and chunk counts (run.json, read
back by ``read_run_report``), a model card's training provenance, a worker's execution check."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest

from fcnseg.models import DEMO_MODEL
from fcnseg.pipeline.analysis.query import ClassArea, query_classes
from fcnseg.pipeline.output.record import ChunkCounts
from fcnseg.pipeline.orchestrator import RunReport, SegmentOptions, read_run_report, segment
from fcnseg.pipeline.synth import write_scene

OPTIONS = SegmentOptions(tile=128, cog=False, polygons=False, quicklook=False, stac=False)


@pytest.fixture(scope="module")
def run(tmp_path_factory, cluster) -> tuple[Path, RunReport]:
    """One small real run (a 192 px scene, 4 chunks on the module's Dask workers): its folder and report."""
    folder = tmp_path_factory.mktemp("typed")
    image, _ = write_scene(folder, 192, seed=3)
    out = folder / "out"
    return out, segment(image, DEMO_MODEL, out, OPTIONS, scheduler=cluster, progress=False)


def test_a_runs_class_areas_are_frozen_records_and_run_json_keeps_their_keys(run):
    out, report = run
    assert report.class_areas and all(isinstance(c, ClassArea) for c in report.class_areas)
    assert isinstance(report.class_areas, tuple)
    with pytest.raises(dataclasses.FrozenInstanceError):
        report.class_areas[0].pixels = 0
    with pytest.raises(TypeError):  # keyword-only: a row cannot be built with its fields out of order
        ClassArea(0, "water", 1, 1.0, 1.0)
    recorded = json.loads((out / "run.json").read_text())["class_areas"]
    assert recorded == query_classes(out / "labels.zarr").to_dict()["classes"]  # the keys and values of before
    assert [list(c) for c in recorded] == [["class_id", "class_name", "pixels", "area_m2", "share"]] * len(recorded)
    assert report.to_dict()["class_areas"] == recorded


def test_a_runs_chunk_counts_are_a_frozen_record_and_run_json_keeps_their_keys(run):
    out, report = run
    assert report.chunks == ChunkCounts(total=4, computed=4, skipped_nodata=0, reused=0)
    assert json.loads((out / "run.json").read_text())["chunks"] == {"total": 4, "computed": 4, "skipped_nodata": 0,
                                                                    "reused": 0}
    assert report.to_dict()["chunks"] == report.chunks.to_json()
    with pytest.raises(dataclasses.FrozenInstanceError):
        report.chunks.computed = 0


def test_run_json_read_back_gives_the_same_records(run):
    out, report = run
    again = read_run_report(out)
    assert again == report  # every field: class areas, chunk counts, identity, seconds ...
    assert all(isinstance(c, ClassArea) for c in again.class_areas) and isinstance(again.chunks, ChunkCounts)
    with pytest.raises(TypeError):  # the report is built by keyword only
        RunReport(out, report.chunks, {}, 0.0, 0.0)


@pytest.mark.parametrize("module", ["fcnseg.pipeline.output.record", "fcnseg.pipeline.output.guard"])
def test_the_output_folders_records_import_on_their_own(module):
    """They imported the run identity from segment/, whose package imports finish.py, which imports
    the run record: imported first, the record met itself half made (ImportError, a cycle)."""
    import subprocess
    import sys

    subprocess.run([sys.executable, "-c", f"import {module}"], check=True)


def card_text(path: Path) -> str:
    """The model card exactly as the checkpoint's header holds it (``save_checkpoint``'s JSON)."""
    from safetensors import safe_open

    from fcnseg.models.checkpoint import METADATA_KEY

    with safe_open(str(path), framework="pt") as f:
        return f.metadata()[METADATA_KEY]


def card_json(path: Path) -> dict:
    return json.loads(card_text(path))


def test_the_shipped_demo_cards_training_is_a_record_whose_json_is_the_cards():
    from fcnseg.models.card import TrainingProvenance
    from fcnseg.models.checkpoint import load_checkpoint, read_card

    shipped = card_json(DEMO_MODEL)
    _, card = load_checkpoint(DEMO_MODEL)  # every byte checked against its content hash: loads unchanged
    assert isinstance(card.training, TrainingProvenance) and card.training == read_card(DEMO_MODEL).training
    assert card.training.to_json() == shipped["training"]
    assert json.dumps(card.to_json(), sort_keys=True) == card_text(DEMO_MODEL)  # saved again: the same bytes
    assert card.training.steps == shipped["training"]["steps"] and card.training.extra == {}
    assert TrainingProvenance.from_json(card.training.to_json()) == card.training
    with pytest.raises(dataclasses.FrozenInstanceError):
        card.training.steps = 0


@pytest.mark.parametrize("training", [
    {},  # a card without provenance
    {"init": "random", "seed": 0, "vgg16_weights": None},  # init-model's: a null stays a null
    {"steps": 3, "image": "a.tif", "history": [{"step": 1, "loss": 0.5}], "class_pixels": [1, 2]},  # an older card
    {"steps": 3, "tiles_per_second": 4.5},  # a key of another version: kept as it is
])
def test_training_provenance_gives_back_the_json_it_was_read_from(training):
    from fcnseg.models.card import TrainingProvenance

    record = TrainingProvenance.from_json(training)
    assert record.to_json() == training
    assert TrainingProvenance.from_json(record.to_json()) == record
    assert record.recorded("vgg16_weights") == ("vgg16_weights" in training)


def test_init_model_records_three_fields(tmp_path):
    from fcnseg.models.checkpoint import read_card
    from typer.testing import CliRunner

    from fcnseg.cli import app

    out = tmp_path / "m.safetensors"
    result = CliRunner().invoke(app, ["init-model", str(out), "--bands", "3", "--classes", "2", "--width", "0.125"])
    assert result.exit_code == 0, result.output
    assert card_json(out)["training"] == {"init": "random", "seed": 0, "vgg16_weights": None}
    assert read_card(out).training.to_json() == card_json(out)["training"]


@pytest.mark.parametrize(("recorded", "described"), [
    ({}, {}),  # no provenance: nothing said about pretraining
    ({"init": "random", "seed": 0, "vgg16_weights": None}, {"mlm:pretrained": False, "mlm:pretrained_source": None}),
    ({"init": None, "vgg16_weights": "/w/vgg16.pth"},
     {"mlm:pretrained": True, "mlm:pretrained_source": "ImageNet VGG16 backbone (vgg16.pth)"}),
    ({"init": {"path": "/m/s32.safetensors", "sha256": "ab12"}, "vgg16_weights": "/w/vgg16.pth"},
     {"mlm:pretrained": True, "mlm:pretrained_source": "fine-tuned from checkpoint s32.safetensors (sha256 ab12)"}),
])
def test_the_stac_model_describes_pretraining_from_the_record(recorded, described):
    from fcnseg.models.card import TrainingProvenance
    from fcnseg.models.checkpoint import read_card
    from fcnseg.pipeline.products.stac_model import _pretraining

    card = dataclasses.replace(read_card(DEMO_MODEL), training=TrainingProvenance.from_json(recorded))
    assert _pretraining(card) == described


def test_a_worker_answers_its_execution_check_with_a_record():
    import pickle

    import torch

    from fcnseg.pipeline.segment.identity import WorkerExecution, worker_execution

    assert worker_execution("cpu") == WorkerExecution(execution="cpu fp32")
    answer = worker_execution("cuda")
    assert pickle.loads(pickle.dumps(answer)) == answer  # it travels back from a Dask worker
    if not torch.cuda.is_available():
        assert answer == WorkerExecution(refusal="--device cuda: CUDA is not available on this machine")


def test_a_workers_refusal_reaches_the_user_in_the_same_one_line(tmp_path, cluster):
    import re

    import torch

    from fcnseg.errors import InputError

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA: its workers compute with --device cuda")
    image, _ = write_scene(tmp_path, 128, seed=3)
    with pytest.raises(InputError) as refused:  # a scheduler: the workers, not this process, are asked
        options = SegmentOptions(tile=128, cog=False, polygons=False, quicklook=False, stac=False, device="cuda")
        segment(image, DEMO_MODEL, tmp_path / "out", options, scheduler=cluster, progress=False)
    assert re.fullmatch(r"--device cuda: CUDA is not available on this machine \(worker tcp://[\d.]+:\d+\)",
                        str(refused.value)), refused.value
