"""Checkpoints: safetensors + JSON card, round trip, never pickle, one clear error on bad files."""

from __future__ import annotations

import json
import pickle
import struct

import pytest
import torch

from fcnseg.models.checkpoint import (
    CheckpointError,
    ClassInfo,
    ModelCard,
    Normalization,
    file_sha256,
    load_checkpoint,
    read_card,
    save_checkpoint,
)
from fcnseg.models.card import TrainingProvenance
from fcnseg.models.fcn import build_model


def make_card(arch: str = "fcn8s", bands: int = 4) -> ModelCard:
    return ModelCard(
        arch=arch, width=0.125, bands=bands,
        classes=[ClassInfo("water", (0, 0, 255)), ClassInfo("land", (0, 255, 0)), ClassInfo("road", (9, 9, 9))],
        normalization=Normalization(mean=[1.0] * bands, std=[2.0] * bands),
        band_names=[f"b{i}" for i in range(bands)],
        training=TrainingProvenance.of(steps=3, seed=1),
        metrics={"mean_iou": 0.5},
    )


@pytest.fixture()
def saved(tmp_path):
    torch.manual_seed(0)
    model = build_model("fcn8s", 4, 3, 0.125)
    for p in model.parameters():
        torch.nn.init.normal_(p, std=0.1)
    path = save_checkpoint(tmp_path / "m.safetensors", model, make_card())
    return path, model


def test_round_trip_gives_the_same_model_and_card(saved):
    path, model = saved
    loaded, card = load_checkpoint(path)
    assert card == make_card()
    assert card.class_names == ["water", "land", "road"] and card.num_classes == 3
    x = torch.randn(1, 4, 70, 90)
    with torch.no_grad():
        assert torch.equal(loaded(x), model.eval()(x))
    assert read_card(path) == card
    assert len(file_sha256(path)) == 64


def test_a_checkpoint_is_as_readable_as_any_file_its_user_writes(tmp_path):
    """safetensors creates its files 0600: Dask workers under another account, or a colleague,
    could not load a model trained here."""
    import os
    import stat

    model = build_model("fcn32s", 4, 3, 0.0625)
    previous = os.umask(0o027)
    try:
        path = save_checkpoint(tmp_path / "group.safetensors", model, make_card())
    finally:
        os.umask(previous)
    assert stat.S_IMODE(path.stat().st_mode) == 0o640
    path = save_checkpoint(tmp_path / "default.safetensors", model, make_card())
    assert stat.S_IMODE(path.stat().st_mode) == 0o666 & ~previous


def test_card_is_plain_json_in_the_safetensors_header(saved):
    path, _ = saved
    raw = path.read_bytes()
    (header_len,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8 : 8 + header_len])
    card = json.loads(header["__metadata__"]["fcnseg"])
    assert card["arch"] == "fcn8s" and card["normalization"]["std"] == [2.0] * 4
    assert len(header["__metadata__"]["content_sha256"]) == 64


def test_loading_never_unpickles(saved, monkeypatch):
    path, _ = saved

    def forbidden(*args, **kwargs):
        raise AssertionError("pickle used while loading a checkpoint")

    monkeypatch.setattr(pickle, "Unpickler", forbidden)
    monkeypatch.setattr(pickle, "loads", forbidden)
    monkeypatch.setattr(torch, "load", forbidden)
    load_checkpoint(path)


def test_truncated_file_is_refused(saved, tmp_path):
    path, _ = saved
    cut = tmp_path / "cut.safetensors"
    cut.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(CheckpointError, match=r"cut\.safetensors: "):
        load_checkpoint(cut)


def test_damaged_bytes_are_refused_by_the_content_hash(saved, tmp_path):
    path, _ = saved
    data = bytearray(path.read_bytes())
    data[-100] ^= 0xFF
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="content hash mismatch"):
        load_checkpoint(bad)


def test_foreign_and_garbage_files_are_refused(tmp_path):
    from safetensors.torch import save_file

    foreign = tmp_path / "foreign.safetensors"
    save_file({"w": torch.zeros(3)}, str(foreign))
    with pytest.raises(CheckpointError, match="not an fcnseg checkpoint"):
        load_checkpoint(foreign)
    garbage = tmp_path / "garbage.safetensors"
    garbage.write_bytes(b"\x80\x04 this is a pickle, or anything else" * 10)
    with pytest.raises(CheckpointError, match="not a safetensors checkpoint"):
        load_checkpoint(garbage)
    with pytest.raises(CheckpointError, match="no such checkpoint"):
        load_checkpoint(tmp_path / "missing.safetensors")


def test_weights_that_do_not_fit_the_card_are_refused(tmp_path):
    model = build_model("fcn16s", 4, 3, 0.125)
    path = save_checkpoint(tmp_path / "m.safetensors", model, make_card())  # card says fcn8s
    with pytest.raises(CheckpointError, match="do not match fcn8s"):
        load_checkpoint(path)


def test_invalid_card_is_not_written(tmp_path):
    card = make_card()
    card.normalization.std = [1.0]
    with pytest.raises(ValueError, match="normalisation"):
        save_checkpoint(tmp_path / "m.safetensors", build_model("fcn8s", 4, 3, 0.125), card)
    assert not list(tmp_path.iterdir())
