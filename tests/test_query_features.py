"""fcnseg query --aoi FILE --by FIELD: one answer per feature, checked against an independent count
(rasterio.features.rasterize of each feature on the whole grid, all_touched=False, then numpy)."""

from __future__ import annotations

import json
from pathlib import Path

import geopandas
import numpy as np
import pandas
import pytest
import shapely
from rasterio.crs import CRS
from rasterio.features import rasterize
from stores import TRANSFORM, UTM, store_from_array
from typer.testing import CliRunner

from fcnseg.cli import app
from fcnseg.pipeline.analysis.features import query_features
from fcnseg.pipeline.io import InputError

WGS84 = CRS.from_epsg(4326)
NAMES = ["water", "forest", "road"]
HEIGHT, WIDTH = 300, 260
PIXEL_AREA = 0.25


def world(col: float, row: float) -> tuple[float, float]:
    return TRANSFORM @ (col, row)


def parcel(c0: float, r0: float, c1: float, r1: float) -> shapely.Polygon:
    """A box from pixel (c0, r0) to (c1, r1) in UTM, densified (so it survives reprojection)."""
    (x0, y0), (x1, y1) = world(c0, r0), world(c1, r1)
    return shapely.segmentize(shapely.box(min(x0, x1), min(y0, y1), max(x0, x1), max(y0, y1)), 1.0)


@pytest.fixture(scope="module")
def scene(tmp_path_factory) -> tuple[np.ndarray, Path, Path, Path]:
    """(labels, labels.zarr, parcels.gpkg in UTM, the same parcels in EPSG:4326)."""
    folder = tmp_path_factory.mktemp("features")
    rng = np.random.default_rng(3)
    labels = np.kron(rng.integers(0, 3, (HEIGHT // 20, WIDTH // 20 + 1)), np.ones((20, 20), dtype=np.int64))
    labels = labels[:HEIGHT, :WIDTH].astype(np.uint8)
    labels[rng.random(labels.shape) < 0.05] = 255
    labels[:, 200:] = 255  # a nodata band: parcel "C" lies over nodata only
    store = store_from_array(folder / "labels.zarr", labels, chunk=64, class_names=NAMES,
                             class_colors=[(0, 0, 255), (0, 128, 0), (128, 128, 128)])
    # A and B overlap (rows 80..120 x cols 60..110); a triangle; C over nodata; D outside; E empty
    triangle = shapely.Polygon([world(10, 290), world(150, 290), world(10, 150.3)])
    geoms = [parcel(10, 20, 110, 120), parcel(60, 80, 190, 250), triangle, parcel(205, 10, 250, 60),
             parcel(400, 400, 450, 450), shapely.Polygon()]
    frame = geopandas.GeoDataFrame({"parcel": ["A", "B", "T", "C", "D", "E"], "owner": [1, 2, 3, 4, 5, 6]},
                                   geometry=geoms, crs=UTM)
    frame.to_file(folder / "parcels.gpkg")
    frame.to_crs(WGS84).to_file(folder / "parcels_4326.gpkg")
    return labels, store, folder / "parcels.gpkg", folder / "parcels_4326.gpkg"


def independent(labels: np.ndarray, aoi: Path) -> dict[str, tuple[int, dict[int, int]]]:
    """parcel -> (valid pixels, class -> pixels), each feature rasterised alone on the store's grid."""
    frame = geopandas.read_file(aoi).to_crs(UTM)
    out = {}
    for name, geom in zip(frame["parcel"], frame.geometry, strict=True):
        inside = np.zeros(labels.shape, bool) if geom is None or geom.is_empty else rasterize(
            [geom], out_shape=labels.shape, transform=TRANSFORM, all_touched=False, dtype=np.uint8).astype(bool)
        values = labels[inside & (labels != 255)]
        out[name] = (values.size, {i: int(n) for i, n in enumerate(np.bincount(values, minlength=3))})
    return out


def by_feature(rows) -> dict[str, tuple[int, dict[int, int]]]:
    out: dict[str, tuple[int, dict[int, int]]] = {}
    for r in rows:
        out.setdefault(r.feature, (r.valid_pixels, {}))[1][r.class_id] = r.pixels
    return out


@pytest.mark.parametrize("which", ["utm", "wgs84"])
def test_each_feature_equals_an_independent_count(scene, which):
    labels, store, utm, wgs = scene
    aoi = utm if which == "utm" else wgs
    rows = query_features(store, aoi, "parcel")
    assert by_feature(rows) == independent(labels, aoi)
    assert [r.feature for r in rows] == [p for p in "ABTCDE" for _ in NAMES]  # every feature, every class
    for r in rows:
        assert r.area_m2 == r.pixels * PIXEL_AREA
        assert r.share == (r.pixels / r.valid_pixels if r.valid_pixels else 0.0)
    a, b = by_feature(rows)["A"], by_feature(rows)["B"]
    assert a[0] > 0 and b[0] > 0  # the overlap is counted in both
    assert by_feature(rows)["C"][0] == 0 and by_feature(rows)["D"][0] == 0 and by_feature(rows)["E"][0] == 0


def test_nodata_pixels_per_feature(scene):
    labels, store, utm, _ = scene
    c = [r for r in query_features(store, utm, "parcel") if r.feature == "C"][0]
    assert c.nodata_pixels == 45 * 50  # rows 10..60 x cols 205..250, all nodata
    a = [r for r in query_features(store, utm, "parcel") if r.feature == "A"][0]
    assert a.nodata_pixels == int(np.count_nonzero(labels[20:120, 10:110] == 255))


def test_unknown_field_is_one_error(scene):
    _, store, utm, _ = scene
    with pytest.raises(InputError, match="no field 'plot'"):
        query_features(store, utm, "plot")


def test_cli_json_csv_and_geoparquet(scene, tmp_path):
    labels, store, utm, _ = scene
    runner = CliRunner()
    printed = runner.invoke(app, ["query", str(store), "--aoi", str(utm), "--by", "parcel", "--json"])
    assert printed.exit_code == 0, printed.output
    rows = json.loads(printed.output)["features"]
    assert [(r["feature"], r["class_id"]) for r in rows[:3]] == [("A", 0), ("A", 1), ("A", 2)]
    want = independent(labels, utm)
    assert {r["feature"]: r["valid_pixels"] for r in rows} == {k: v[0] for k, v in want.items()}
    for name in ("rows.csv", "rows.parquet"):
        out = tmp_path / name
        done = runner.invoke(app, ["query", str(store), "--aoi", str(utm), "--by", "parcel", "--output", str(out)])
        assert done.exit_code == 0, done.output
        table = pandas.read_csv(out) if name.endswith(".csv") else geopandas.read_parquet(out)
        assert list(table["parcel"]) == [p for p in "ABTCDE" for _ in NAMES]
        assert list(table["owner"]) == [o for o in range(1, 7) for _ in NAMES]
        assert list(table["pixels"]) == [r["pixels"] for r in rows]
        if name.endswith(".parquet"):
            assert table.crs == UTM and table.geometry.iloc[0].equals(geopandas.read_file(utm).geometry.iloc[0])
        again = runner.invoke(app, ["query", str(store), "--aoi", str(utm), "--by", "parcel", "--output", str(out)])
        assert again.exit_code == 1 and "--overwrite" in again.output  # never over a file without it
        forced = runner.invoke(app, ["query", str(store), "--aoi", str(utm), "--by", "parcel", "--output", str(out),
                                     "--overwrite"])
        assert forced.exit_code == 0, forced.output


def test_cli_refuses_by_without_aoi_and_another_output_format(scene):
    _, store, utm, _ = scene
    runner = CliRunner()
    alone = runner.invoke(app, ["query", str(store), "--by", "parcel"])
    assert alone.exit_code != 0 and "--by applies to --aoi" in alone.output
    over = runner.invoke(app, ["query", str(store), "--aoi", str(utm), "--by", "parcel", "--output", str(utm)])
    assert over.exit_code == 1 and "--output must end in .csv or .parquet" in over.output
    assert over.output.count("\n") == 1


def test_library_query_by_gives_the_rows(scene):
    import fcnseg

    _, store, utm, _ = scene
    assert fcnseg.query(store, aoi=utm, by="parcel") == query_features(store, utm, "parcel")
    with pytest.raises(ValueError, match="by applies to aoi"):
        fcnseg.query(store, by="parcel")
