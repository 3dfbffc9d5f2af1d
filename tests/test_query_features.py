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
    over = runner.invoke(app, ["query", str(store), "--aoi", str(utm), "--by", "parcel", "--output",
                               str(utm.with_suffix(".geojson"))])
    assert over.exit_code == 1 and "--output must end in .csv, .parquet (GeoParquet) or .gpkg" in over.output
    assert over.output.count("\n") == 1


def test_library_query_by_gives_the_rows(scene):
    import fcnseg

    _, store, utm, _ = scene
    assert fcnseg.query(store, aoi=utm, by="parcel") == query_features(store, utm, "parcel")
    with pytest.raises(ValueError, match="by applies to aoi"):
        fcnseg.query(store, by="parcel")


def wide_rows(path: Path) -> dict[str, tuple[int, dict[int, int]]]:
    """parcel -> (valid pixels, class -> pixels), as the GeoPackage's one row per feature says."""
    import pyogrio

    table = pyogrio.read_dataframe(path, layer="class_areas")
    return {p: (int(row["valid_pixels"]), {i: int(row[f"{n}_pixels"]) for i, n in enumerate(NAMES)})
            for p, (_, row) in zip(table["parcel"], table.iterrows(), strict=True)}


@pytest.mark.parametrize("batch", [2, 1000])
def test_three_formats_hold_the_independent_counts(scene, tmp_path, monkeypatch, batch):
    """CSV and GeoParquet long, GeoPackage wide: the same counts, read back by pandas, geopandas,
    pyogrio and SQLite; batch 2 streams the six features in three batches (row groups)."""
    import sqlite3

    import pyarrow.parquet as pq

    from fcnseg.pipeline.analysis import features

    monkeypatch.setattr(features, "BATCH", batch)
    labels, store, utm, _ = scene
    want = independent(labels, utm)
    runner = CliRunner()
    for name in ("rows.csv", "rows.parquet", "rows.gpkg"):
        out = tmp_path / name
        done = runner.invoke(app, ["query", str(store), "--aoi", str(utm), "--by", "parcel", "--output", str(out)])
        assert done.exit_code == 0, done.output
        if name.endswith(".gpkg"):
            assert "6 features, 6 rows (one row per feature" in done.output
            assert wide_rows(out) == want
            with sqlite3.connect(out) as db:  # GeoPackage's own tables, read without GDAL
                assert db.execute("select table_name, data_type from gpkg_contents").fetchall() == [
                    ("class_areas", "features")]
                assert db.execute("select count(*) from class_areas").fetchone() == (6,)
                srs = db.execute("select organization_coordsys_id from gpkg_spatial_ref_sys join gpkg_geometry_columns"
                                 " using (srs_id) where table_name = 'class_areas'").fetchone()
                assert srs == (32633,)
            table = geopandas.read_file(out, layer="class_areas")
            assert list(table.columns[:4]) == ["parcel", "owner", "valid_pixels", "nodata_pixels"]
            assert [c for c in table.columns if c.startswith("forest")] == ["forest_pixels", "forest_m2", "forest_share"]
            assert list(table["forest_m2"]) == [v[1][1] * PIXEL_AREA for v in want.values()]
        else:
            table = pandas.read_csv(out) if name.endswith(".csv") else geopandas.read_parquet(out)
            assert by_feature(table.rename(columns={"parcel": "feature"}).itertuples()) == want
            assert "6 features, 18 rows (one row per feature and class" in done.output
        given = geopandas.read_file(utm).geometry
        geometries = (geopandas.GeoSeries.from_wkt(table["geometry"].fillna("")) if name.endswith(".csv")
                      else table.geometry)
        first = geometries.iloc[0] if not name.endswith(".gpkg") else table.geometry.iloc[0]
        assert first.equals(given.iloc[0])  # the feature's own geometry, in its own CRS
        if name.endswith(".parquet"):
            assert pq.ParquetFile(out).num_row_groups == (3 if batch == 2 else 1)
    said = runner.invoke(app, ["query", str(store), "--aoi", str(utm), "--by", "parcel", "--output",
                               str(tmp_path / "said.gpkg"), "--json"])
    assert json.loads(said.output) == {"output": str(tmp_path / "said.gpkg"), "format": "gpkg", "features": 6,
                                       "rows": 6, "classes": NAMES}


def test_output_into_a_missing_folder_or_onto_a_folder_is_one_line(scene, tmp_path):
    _, store, utm, _ = scene
    runner = CliRunner()
    for target, words in ((tmp_path / "no" / "such" / "rows.gpkg", "no such folder"),
                          (tmp_path / "folder.csv", "is a folder")):
        if words == "is a folder":
            target.mkdir()
        done = runner.invoke(app, ["query", str(store), "--aoi", str(utm), "--by", "parcel", "--output", str(target)])
        assert done.exit_code == 1 and words in done.output and done.output.count("\n") == 1, done.output
    assert sorted(p.name for p in tmp_path.iterdir()) == ["folder.csv"]  # nothing made, the folder untouched
    assert list((tmp_path / "folder.csv").iterdir()) == []


@pytest.fixture(scope="module")
def odd_parcels(scene, tmp_path_factory) -> Path:
    """A bow-tie, an empty polygon, a null geometry, a point, a line and a good parcel."""
    folder = tmp_path_factory.mktemp("odd")
    bowtie = shapely.Polygon([world(20, 20), world(120, 120), world(120, 20), world(20, 120)])
    assert not bowtie.is_valid
    geoms = [bowtie, shapely.Polygon(), None, shapely.Point(world(50, 50)),
             shapely.LineString([world(10, 10), world(100, 100)]), parcel(10, 20, 110, 120)]
    frame = geopandas.GeoDataFrame({"parcel": ["bowtie", "empty", "null", "point", "line", "good"]},
                                   geometry=geoms, crs=UTM)
    frame.to_file(folder / "odd.gpkg")
    return folder / "odd.gpkg"


def test_invalid_and_non_polygon_geometries(scene, odd_parcels, tmp_path, caplog):
    """The bow-tie is counted repaired (its two triangles), the rest are zero rows; each is named in a warning."""
    labels, store, _, _ = scene
    with caplog.at_level("WARNING", logger="fcnseg"):
        rows = by_feature(query_features(store, odd_parcels, "parcel"))
    assert list(rows) == ["bowtie", "empty", "null", "point", "line", "good"]
    repaired = shapely.make_valid(geopandas.read_file(odd_parcels).geometry.iloc[0])
    inside = rasterize([repaired], out_shape=labels.shape, transform=TRANSFORM, all_touched=False).astype(bool)
    values = labels[inside & (labels != 255)]
    assert rows["bowtie"] == (values.size, dict(enumerate(np.bincount(values, minlength=3).tolist())))
    assert values.size > 2000  # both triangles, not one
    for name in ("empty", "null", "point", "line"):
        assert rows[name] == (0, {0: 0, 1: 0, 2: 0})
    assert rows["good"][0] > 0
    warned = " ".join(r.getMessage() for r in caplog.records if r.levelname == "WARNING")
    for name, words in (("bowtie", "repaired with make_valid"), ("empty", "empty geometry"), ("null", "no geometry"),
                        ("point", "a Point, not a polygon"), ("line", "a LineString, not a polygon")):
        assert f"parcel='{name}': " in warned and words in warned
    assert "'good'" not in warned
    out = tmp_path / "odd.gpkg"
    done = CliRunner().invoke(app, ["query", str(store), "--aoi", str(odd_parcels), "--by", "parcel",
                                    "--output", str(out)])
    assert done.exit_code == 0, done.output
    written = geopandas.read_file(out, layer="class_areas")
    assert list(written["parcel"]) == list(rows) and list(written["valid_pixels"]) == [v[0] for v in rows.values()]
    assert not written.geometry.iloc[0].is_valid  # written as given, counted repaired


def test_against_exactextract(tmp_path):
    """exactextract (coverage fractions) against the centre rule, on a stripped int16 GeoTIFF in
    EPSG:4326 with -9999 and a stair-stepped nodata collar: on parcels along pixel edges every
    pixel is covered 0 or 1 and both count the same; on rotated parcels the centre rule lies
    between the pixels covered wholly and those covered at all."""
    import rasterio
    from affine import Affine
    from exactextract import exact_extract

    size = 1 / 1024  # degrees: pixel edges exact in binary
    transform = Affine(size, 0, 15.0, 0, -size, 49.0)
    rng = np.random.default_rng(11)
    labels = np.kron(rng.integers(0, 4, (12, 16)), np.ones((10, 10), dtype=np.int16))  # 120 x 160
    rows, cols = np.indices(labels.shape)
    labels[cols < 40 - rows // 6 * 2] = -9999  # a stair-stepped collar, as a rotated footprint leaves
    labels[rng.random(labels.shape) < 0.03] = -9999
    raster = tmp_path / "labels.tif"
    with rasterio.open(raster, "w", driver="GTiff", width=160, height=120, count=1, dtype="int16",
                       crs="EPSG:4326", transform=transform, nodata=-9999) as dst:  # stripped: no TILED
        dst.write(labels, 1)
    with rasterio.open(raster) as src:
        assert src.block_shapes[0][1] == 160  # strips
    edge = lambda c, r: transform @ (c, r)  # noqa: E731
    aligned = [shapely.box(*edge(c0, r1), *edge(c1, r0)) for c0, r0, c1, r1 in
               ((0, 0, 50, 40), (30, 20, 110, 90), (100, 60, 160, 120), (5, 100, 30, 118))]
    aligned.append(shapely.Polygon([edge(60, 0), edge(90, 0), edge(90, 30), edge(75, 30), edge(75, 15), edge(60, 15)]))
    rotated = [shapely.affinity.rotate(shapely.box(*edge(c, r + 25), *edge(c + 30, r)), 27, use_radians=False)
               for c, r in ((20, 20), (70, 40), (110, 70))]
    frame = geopandas.GeoDataFrame({"parcel": [f"p{i}" for i in range(len(aligned) + len(rotated))]},
                                   geometry=aligned + rotated, crs="EPSG:4326")
    aoi = tmp_path / "parcels.gpkg"
    frame.to_file(aoi)
    ours = by_feature(query_features(raster, aoi, "parcel"))
    with rasterio.open(raster) as src:
        theirs = exact_extract(src, frame, ["values", "coverage"], include_cols=["parcel"], output="pandas")
    assert list(theirs["parcel"]) == list(ours)
    assert ours["p0"][0] < 50 * 40 // 2  # most of p0 is in the collar
    for name, values, coverage in zip(theirs["parcel"], theirs["values"], theirs["coverage"], strict=True):
        values, coverage = np.asarray(values, dtype=np.int64), np.asarray(coverage)
        full = np.bincount(values[coverage == 1], minlength=4)
        touched = np.bincount(values[coverage > 0], minlength=4)
        counted = np.array([ours[name][1].get(i, 0) for i in range(4)])
        if int(name[1:]) < len(aligned):
            assert set(np.unique(coverage)) <= {0.0, 1.0}
            assert counted.tolist() == full.tolist() and ours[name][0] == int(full.sum()), name
        else:
            assert (full <= counted).all() and (counted <= touched).all() and (full < touched).any(), name


def test_a_file_without_features_is_one_line(scene, tmp_path):
    _, store, _, _ = scene
    empty = tmp_path / "none.gpkg"
    geopandas.GeoDataFrame({"parcel": pandas.Series([], dtype=str)}, geometry=[], crs=UTM).to_file(empty)
    done = CliRunner().invoke(app, ["query", str(store), "--aoi", str(empty), "--by", "parcel", "--output",
                                    str(tmp_path / "rows.gpkg")])
    assert done.exit_code == 1 and "holds no features" in done.output and done.output.count("\n") == 1, done.output
    assert not (tmp_path / "rows.gpkg").exists()


def test_a_confidence_band_gives_each_feature_and_class_its_mean_confidence(scene, tmp_path):
    """A store with ``segment --confidence``'s band: the rows, --json and the files carry each
    feature's classes' mean confidence (their codes summed over their pixels / 254, counted here by numpy)."""
    import zarr

    from fcnseg.pipeline.store import CONFIDENCE

    labels, _, utm, _ = scene
    store = store_from_array(tmp_path / "labels.zarr", labels, chunk=64, class_names=NAMES,
                             class_colors=[(0, 0, 255), (0, 128, 0), (128, 128, 128)])
    codes = np.random.default_rng(5).integers(0, 255, labels.shape).astype(np.uint8)
    codes[labels == 255] = 255
    zarr.open_group(store, mode="a").create_array(CONFIDENCE, shape=labels.shape, dtype="uint8", chunks=(64, 64),
                                                  fill_value=255)[:] = codes
    frame = geopandas.read_file(utm)
    want = {}
    for name, geom in zip(frame["parcel"], frame.geometry, strict=True):
        inside = np.zeros(labels.shape, bool) if geom is None or geom.is_empty else rasterize(
            [geom], out_shape=labels.shape, transform=TRANSFORM, all_touched=False).astype(bool)
        for c in range(3):
            picked = inside & (labels == c)
            want[name, c] = float(codes[picked].astype(np.int64).sum()) / (254 * picked.sum()) if picked.any() else None
    rows = query_features(store, utm, "parcel")
    assert {(r.feature, r.class_id): r.mean_confidence for r in rows} == want
    assert "mean_confidence" in rows[0].to_json() and "mean_confidence" not in query_features(
        scene[1], utm, "parcel")[0].to_json()  # only where the store has the band, as a ClassArea's
    runner = CliRunner()
    for name in ("c.parquet", "c.gpkg"):
        done = runner.invoke(app, ["query", str(store), "--aoi", str(utm), "--by", "parcel", "--output",
                                   str(tmp_path / name)])
        assert done.exit_code == 0, done.output
    long = geopandas.read_parquet(tmp_path / "c.parquet")
    assert {(p, c): (None if v != v else v) for p, c, v in zip(long["parcel"], long["class_id"],
                                                                long["mean_confidence"], strict=True)} == want
    wide = geopandas.read_file(tmp_path / "c.gpkg", layer="class_areas")
    assert {(p, c): (None if row[f"{n}_confidence"] != row[f"{n}_confidence"] else row[f"{n}_confidence"])
            for p, (_, row) in zip(wide["parcel"], wide.iterrows(), strict=True)
            for c, n in enumerate(NAMES)} == want
