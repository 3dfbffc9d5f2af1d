"""The mechanisms every stage shares: the atomic write, the chunk ledger, the class-table reader."""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path

import numpy as np
import pytest
import rasterio
from affine import Affine
from rasterio.windows import Window

from fcnseg.atomic import atomic_write, atomic_write_text, stale_partials
from fcnseg.pipeline.analysis.histogram import ClassHistogram
from fcnseg.pipeline.classes import ClassTable, raster_classes, store_classes
from fcnseg.pipeline.output.ledger import ChunkLedger
from fcnseg.pipeline.tiles import Tile


def test_atomic_write_appears_complete_or_not_at_all(tmp_path: Path):
    target = tmp_path / "run.json"
    target.write_text("old")
    with pytest.raises(RuntimeError), atomic_write(target) as tmp:
        tmp.write_text("half")
        assert tmp.parent == tmp_path and tmp.name.startswith(".run.json.") and tmp.suffix == ".json"
        raise RuntimeError("killed")
    assert target.read_text() == "old"
    assert list(tmp_path.iterdir()) == [target]  # the partial file is gone

    atomic_write_text(target, "new", durable=True)
    assert target.read_text() == "new"
    assert list(tmp_path.iterdir()) == [target]


def test_atomic_write_names_are_unique_and_stale_ones_are_found(tmp_path: Path):
    target = tmp_path / "labels.tif"
    with atomic_write(target) as first, atomic_write(target) as second:
        assert first != second  # two writers (processes, hosts) never share a temporary name
        first.write_bytes(b"a")
        second.write_bytes(b"b")
        assert stale_partials(target) == sorted([first, second])
    assert target.read_bytes() == b"a"  # the outer one finished last
    assert stale_partials(target) == []


def test_atomic_write_of_a_folder(tmp_path: Path):
    target = tmp_path / "store.zarr"
    with atomic_write(target) as tmp:
        tmp.mkdir()
        (tmp / "zarr.json").write_text("{}")
    assert (target / "zarr.json").read_text() == "{}"
    with pytest.raises(ValueError), atomic_write(tmp_path / "other.zarr") as tmp:
        tmp.mkdir()
        raise ValueError
    assert sorted(p.name for p in tmp_path.iterdir()) == ["store.zarr"]


def test_ledger_records_chunks_as_finished(tmp_path: Path):
    ledger = ChunkLedger(str(tmp_path))
    tiles = [Tile(r, c, Window(c * 64, r * 64, 64, 64), Window(0, 0, 128, 128)) for r in range(2) for c in range(2)]
    assert ledger.finished(tiles) == set()
    block = np.repeat(np.arange(64, dtype=np.uint8)[None, :] % 2, 64, axis=0)
    result = ledger.record(tiles[1], "computed", 4096, ClassHistogram([4000, 96]), labels=block)
    ledger.record(tiles[2], "nodata", 0)
    assert ledger.finished(tiles) == {(0, 1), (1, 0)}
    assert json.loads(ledger.marker(tiles[1]).read_text()) == {"row": 0, "col": 1, "status": "computed",
                                                               "valid_pixels": 4096, "class_pixels": [4000, 96],
                                                               "class_area_m2": None,
                                                               "sha256": hashlib.sha256(block.tobytes()).hexdigest()}
    assert json.loads(ledger.marker(tiles[2]).read_text())["sha256"] is None  # nothing written, nothing hashed
    assert (result.row, result.col, result.status) == (0, 1, "computed")
    assert ledger.result(tiles[1]) == result and ledger.result(tiles[2]).class_pixels is None
    assert ledger.result(tiles[0]) is None
    assert sorted(p.name for p in tmp_path.iterdir()) == ["0_1.json", "1_0.json"]  # no temporary left


def write_label_tif(path: Path, *, tags: dict[str, str], band_tags: dict[str, str] | None = None,
                    colormap: dict[int, tuple[int, int, int, int]] | None = None) -> Path:
    with rasterio.open(path, "w", driver="GTiff", width=8, height=8, count=1, dtype="uint8", nodata=255,
                       crs="EPSG:32633", transform=Affine(1, 0, 0, 0, -1, 8)) as dst:
        dst.write(np.zeros((1, 8, 8), np.uint8))
        dst.update_tags(**tags)
        if band_tags:
            dst.update_tags(1, **band_tags)
        if colormap:
            dst.write_colormap(1, colormap)
    return path


def test_class_table_from_fcnseg_tags(tmp_path: Path):
    path = write_label_tif(tmp_path / "a.tif", tags={"class_names": '["water", "forest"]',
                                                    "class_colors": "[[0, 0, 255], [0, 128, 0]]"})
    with rasterio.open(path) as src:
        assert raster_classes(src) == ClassTable(["water", "forest"], [(0, 0, 255), (0, 128, 0)])


def test_class_table_from_band_tags_and_colour_table(tmp_path: Path):
    path = write_label_tif(tmp_path / "b.tif", tags={}, band_tags={"CLASS_0": "water", "CLASS_2": "road"},
                           colormap={0: (0, 0, 255, 255), 1: (1, 2, 3, 255), 2: (9, 9, 9, 255)})
    with rasterio.open(path) as src:
        table = raster_classes(src)
    assert table.names == ["water", "class_1", "road"]
    assert table.colors == [(0, 0, 255), (1, 2, 3), (9, 9, 9)]
    assert table.name(2) == "road" and table.name(7) == "class_7"


def test_class_table_of_a_bare_raster_and_a_broken_tag(tmp_path: Path, caplog):
    bare = write_label_tif(tmp_path / "c.tif", tags={})
    broken = write_label_tif(tmp_path / "d.tif", tags={"class_names": "water,forest"})
    with rasterio.open(bare) as src:
        assert raster_classes(src) == ClassTable([], None)
    with caplog.at_level(logging.WARNING), rasterio.open(broken) as src:
        assert raster_classes(src).names == []
    assert "class_names tag is not a JSON list" in caplog.text


def test_class_table_of_a_store():
    attrs = {"class_names": ["water", "forest"], "class_colors": [[0, 0, 255], [0, 128, 0]]}
    assert store_classes(attrs) == ClassTable(["water", "forest"], [(0, 0, 255), (0, 128, 0)])
    assert store_classes({}) == ClassTable([], None)
