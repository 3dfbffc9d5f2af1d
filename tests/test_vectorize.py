"""Polygons: valid, exact areas, one polygon per region across chunks, chunk-size independent, no nodata."""

from __future__ import annotations

import json
import sqlite3
from xml.etree import ElementTree

import geopandas as gpd
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds
import pyarrow.parquet as pq
import pyogrio
import pytest
import rasterio
import shapely
from affine import Affine
from peak_memory import step_extra_mb
from rasterio.crs import CRS
from rasterio.features import rasterize
from stores import TRANSFORM, store_from_array

from fcnseg.pipeline.analysis.areas import row_pixel_areas_m2
from fcnseg.pipeline.io import InputError
from fcnseg.pipeline.products import polygon_writer
from fcnseg.pipeline.products.vectorize import VectorizeOptions, vectorize_store
from fcnseg.pipeline.store import NODATA

NAMES = ["water", "forest", "cropland", "grassland", "road", "building"]
COLORS = [(30, 100, 200), (20, 110, 40), (220, 200, 80), (140, 200, 90), (120, 120, 120), (200, 60, 50)]


@pytest.fixture(scope="module")
def scene_labels(tmp_path_factory) -> np.ndarray:
    """Synthetic classes (regions span many 64-px chunks) with a nodata collar and a nodata hole."""
    from fcnseg.pipeline.synth import write_scene

    _, labels_tif = write_scene(tmp_path_factory.mktemp("vec"), 300, seed=5, collar=12)
    with rasterio.open(labels_tif) as src:
        labels = src.read(1)
    labels[140:150, 100:180] = NODATA  # a nodata strip crossing chunk borders inside the scene
    return labels


def vectorize(tmp_path, labels, chunk, options=VectorizeOptions(), client=None, **store_kwargs) -> gpd.GeoDataFrame:
    store = store_from_array(tmp_path / f"labels-{chunk}.zarr", labels, chunk=chunk, class_names=NAMES,
                             class_colors=COLORS, **store_kwargs)
    parquet, gpkg = tmp_path / f"p-{chunk}-{options.cell}.parquet", tmp_path / f"p-{chunk}-{options.cell}.gpkg"
    vectorize_store(store, parquet, gpkg, options, client=client)
    frame = gpd.read_parquet(parquet)
    from_gpkg = pyogrio.read_dataframe(gpkg, layer="polygons")
    assert len(from_gpkg) == len(frame) and from_gpkg.crs == frame.crs
    assert sorted(from_gpkg["area"].round(6)) == sorted(frame["area"].round(6))
    return frame


def test_polygons_are_valid_exact_and_merged_across_chunks(tmp_path, scene_labels):
    frame = vectorize(tmp_path, scene_labels, 64)
    assert frame.crs == CRS.from_epsg(32633)
    assert list(frame.columns) == ["class_id", "class_name", "region_id", "pixels", "area", "area_m2", "geometry"]
    assert shapely.is_valid(frame.geometry.values).all()
    assert (frame.geom_type == "Polygon").all()
    pixel_area = abs(TRANSFORM.a * TRANSFORM.e)
    for class_id, name in enumerate(NAMES):
        rows = frame[frame.class_id == class_id]
        count = int((scene_labels == class_id).sum())
        assert (rows.class_name == name).all()
        assert rows.pixels.sum() == count
        assert abs(rows.area.sum() - count * pixel_area) <= 1e-6 * count * pixel_area
        assert abs(rows.area_m2.sum() - count * pixel_area) <= 1e-6 * count * pixel_area
    # one polygon per region: polygons of one class never share an edge (a point is allowed: 4-connectivity)
    index = shapely.STRtree(frame.geometry.values)
    left, right = index.query(frame.geometry.values, predicate="intersects")
    pairs = [(a, b) for a, b in zip(left, right) if a < b and frame.class_id.iat[a] == frame.class_id.iat[b]]
    for a, b in pairs:
        shared = frame.geometry.iat[a].intersection(frame.geometry.iat[b])
        assert shared.length == 0 and shared.area == 0, (a, b, shared)
    # regions that span many chunks exist (so merging was exercised)
    assert (frame.geometry.bounds.eval("maxx - minx") > 64 * 0.5 * 3).any()


def test_polygons_never_cover_nodata_and_keep_holes(tmp_path, scene_labels):
    frame = vectorize(tmp_path, scene_labels, 64)
    covered = rasterize(((g, 1) for g in frame.geometry), out_shape=scene_labels.shape, transform=TRANSFORM, fill=0, dtype="uint8")
    assert not covered[scene_labels == NODATA].any()
    assert covered[scene_labels != NODATA].all()
    assert any(len(g.interiors) for g in frame.geometry)  # holes are kept


def test_same_polygons_for_any_chunk_size(tmp_path, scene_labels):
    small = canonical(vectorize(tmp_path, scene_labels, 64))
    assert canonical(vectorize(tmp_path, scene_labels, 100)) == small  # chunks not on a power of two
    assert canonical(vectorize(tmp_path, scene_labels, 512)) == small  # one chunk: nothing to merge


def test_region_spanning_every_chunk_is_one_polygon_with_its_holes(tmp_path):
    labels = np.ones((200, 200), np.uint8)  # one forest over 16 chunks of 50 px
    labels[45:55, 45:155] = 0  # a lake across chunk borders: one hole
    labels[120:130, 120:130] = NODATA
    frame = vectorize(tmp_path, labels, 50)
    forest = frame[frame.class_id == 1]
    assert len(forest) == 1 and len(forest.geometry.iat[0].interiors) == 2
    assert forest.pixels.iat[0] == (labels == 1).sum()


def test_geographic_store_gets_true_square_metres(tmp_path):
    labels = np.zeros((120, 90), np.uint8)
    labels[:, 45:] = 1
    transform = Affine(0.001, 0, 10.0, 0, -0.001, 60.0)
    frame = vectorize(tmp_path, labels, 32, crs=CRS.from_epsg(4326), transform=transform)
    per_row = row_pixel_areas_m2(CRS.from_epsg(4326), transform, 0, 120)
    for class_id in (0, 1):
        expected = (labels == class_id).sum(axis=1) @ per_row
        assert frame[frame.class_id == class_id].area_m2.sum() == pytest.approx(expected, rel=1e-6)


def test_simplify_and_min_area(tmp_path, scene_labels):
    for name in ("exact", "s"):
        (tmp_path / name).mkdir()
    exact = vectorize(tmp_path / "exact", scene_labels, 64)
    simple = vectorize(tmp_path / "s", scene_labels, 64, VectorizeOptions(simplify=1.0, min_area=20.0))
    assert simple.area_m2.min() >= 20.0 and len(simple) < len(exact)
    assert shapely.is_valid(simple.geometry.values).all()
    assert shapely.get_num_coordinates(simple.geometry.values).sum() < shapely.get_num_coordinates(exact.geometry.values).sum()
    covered = rasterize(((g, 1) for g in simple.geometry), out_shape=scene_labels.shape, transform=TRANSFORM, fill=0, dtype="uint8")
    assert not covered[scene_labels == NODATA].any()  # simplified edges stay out of nodata


def test_empty_map_writes_empty_files(tmp_path):
    frame = vectorize(tmp_path, np.full((64, 64), NODATA, np.uint8), 32)
    assert len(frame) == 0 and frame.crs == CRS.from_epsg(32633)


def test_vectorize_memory_stays_flat_where_a_class_percolates(tmp_path):
    small = step_extra_mb(tmp_path / "small", 2048, "vectorize", "percolating")
    large = step_extra_mb(tmp_path / "large", 8192, "vectorize", "percolating")
    # 16x the pixels, one region through the whole map with 16x the holes (held whole, as before
    # cells, it took +58 MB at 1024² and +293 MB at 4096²). Measured: 60 -> 83 MB
    assert large < small + 32, (small, large)


def canonical(frame) -> list[tuple[int, bytes]]:
    """(class, geometry) of each polygon, sorted: the same map whatever order and vertex count."""
    geometries = shapely.normalize(shapely.simplify(frame.geometry.values, 0))
    return sorted(zip(frame.class_id, shapely.to_wkb(geometries)))


def rows(frame) -> list[tuple]:
    """Every row as written, in order."""
    return list(zip(frame.class_id, frame.region_id, frame.pixels, shapely.to_wkb(frame.geometry.values)))


def test_regions_cut_at_cells_dissolve_into_the_whole_regions(tmp_path, scene_labels):
    whole = vectorize(tmp_path, scene_labels, 64)  # one cell: every region is one polygon
    cut = vectorize(tmp_path, scene_labels, 64, VectorizeOptions(cell=70))
    assert len(cut) > len(whole) and cut.region_id.nunique() == len(whole) == whole.region_id.nunique()
    dissolved = cut.dissolve(by="region_id", aggfunc={"class_id": "first", "pixels": "sum"})
    assert canonical(dissolved) == canonical(whole)
    assert sorted(dissolved.pixels) == sorted(whole.pixels)
    for geometry in cut.geometry:  # no polygon is larger than its cell of 70 x 70 pixels (0.5 m)
        minx, miny, maxx, maxy = geometry.bounds
        col, row = (minx - TRANSFORM.c) / 0.5, (TRANSFORM.f - maxy) / 0.5
        assert (maxx - minx) / 0.5 <= 70 - col % 70 and (maxy - miny) / 0.5 <= 70 - row % 70


def test_same_rows_for_any_chunk_size_and_in_parallel(tmp_path, scene_labels, cluster):
    from distributed import Client

    cells = VectorizeOptions(cell=70)
    serial = rows(vectorize(tmp_path, scene_labels, 64, cells))
    assert rows(vectorize(tmp_path, scene_labels, 100, cells)) == serial
    (tmp_path / "s").mkdir()
    coverage = VectorizeOptions(cell=70, simplify=1.0, min_area=20.0)  # a coverage, sieved: the same too
    simplified = rows(vectorize(tmp_path / "s", scene_labels, 64, coverage))
    with Client(cluster) as client:  # real worker processes (the session's two)
        assert rows(vectorize(tmp_path, scene_labels, 48, cells, client=client)) == serial
        assert rows(vectorize(tmp_path / "s", scene_labels, 48, coverage, client=client)) == simplified


def test_min_area_judges_whole_regions_across_cells(tmp_path):
    labels = np.zeros((200, 200), np.uint8)  # 0.5 m pixels: 0.25 m² each
    labels[35:65, 35:65] = 1  # 900 px = 225 m², in four cells of 50 px (four parts of 56 m²)
    labels[110:120, 110:120] = 2  # 100 px = 25 m², inside one cell
    labels[46:54, 146:154] = 3  # 64 px = 16 m², across two cells
    store = store_from_array(tmp_path / "labels.zarr", labels, chunk=64, class_names=NAMES, class_colors=COLORS)
    report = vectorize_store(store, tmp_path / "p.parquet", None, VectorizeOptions(min_area=100.0, cell=50))
    frame = gpd.read_parquet(tmp_path / "p.parquet")
    assert sorted(frame.class_id.unique()) == [0, 1]
    kept = frame[frame.class_id == 1]
    assert len(kept) == 4 and kept.region_id.nunique() == 1 and kept.pixels.sum() == 900
    assert report.dropped == 2 and report.regions == 2


def test_an_incomplete_store_makes_no_polygons(tmp_path):
    """Polygons of an interrupted run would look complete: refused, and no file is left behind."""
    labels = np.random.default_rng(4).integers(0, 3, (64, 64), dtype=np.uint8)
    store = store_from_array(tmp_path / "labels.zarr", labels, chunk=32, class_names=NAMES, class_colors=COLORS,
                             complete=False)
    with pytest.raises(InputError, match=r"labels.zarr: the label store is incomplete .*--partial"):
        vectorize_store(store, tmp_path / "polygons.parquet", tmp_path / "polygons.gpkg")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["labels.zarr"]


# GeoParquet 1.1 bbox covering: 300 px scene in cells of 70 px (5 rows of cells), 0.5 m pixels

BBOX_NAMES = ["xmin", "ymin", "xmax", "ymax"]
STRIP_M = 70 * 0.5  # height of a row of cells in metres


@pytest.fixture(scope="module")
def covered(tmp_path_factory, scene_labels):
    """polygons.parquet and polygons.gpkg of the scene in 70 px cells, and the GeoParquet read whole."""
    folder = tmp_path_factory.mktemp("covering")
    store = store_from_array(folder / "labels.zarr", scene_labels, chunk=64, class_names=NAMES, class_colors=COLORS)
    vectorize_store(store, folder / "p.parquet", folder / "p.gpkg", VectorizeOptions(cell=70))
    return folder / "p.parquet", folder / "p.gpkg", gpd.read_parquet(folder / "p.parquet")


def queries(frame) -> list[tuple[float, float, float, float]]:
    """Boxes to read by: a polygon's own bounds (its neighbours touch them), a box inside one row of
    cells, one across rows, one half outside the scene, one beside it."""
    bounds = frame.geometry.bounds.to_numpy()
    middle = bounds[np.argsort(bounds[:, 0] + bounds[:, 1])[len(bounds) // 2]]
    x0, y_top = TRANSFORM.c, TRANSFORM.f
    return [tuple(middle), (x0 + 40, y_top - 2 * STRIP_M - 20, x0 + 60, y_top - 2 * STRIP_M - 10),
            (x0 + 70, y_top - 100, x0 + 90, y_top - 30), (x0 - 50, y_top - 60, x0 + 20, y_top + 50),
            (x0 + 200, y_top - 60, x0 + 250, y_top)]


def bbox_hits(frame, box) -> np.ndarray:
    """Rows whose bounds intersect ``box`` (edges touching count), from the geometries themselves."""
    minx, miny, maxx, maxy = shapely.bounds(frame.geometry.values).T
    return ~((minx > box[2]) | (miny > box[3]) | (maxx < box[0]) | (maxy < box[1]))


def test_geoparquet_declares_the_bbox_covering(covered):
    parquet, _, frame = covered
    schema = pq.read_schema(parquet)
    geo = json.loads(schema.metadata[b"geo"])
    assert geo["version"] == "1.1.0"
    assert geo["columns"]["geometry"]["covering"] == {"bbox": {k: ["bbox", k] for k in BBOX_NAMES}}
    assert schema.field("bbox").type == pa.struct([(k, pa.float64()) for k in BBOX_NAMES])
    # every row's bbox is its geometry's bounds, to the bit
    table = pq.read_table(parquet)
    bbox = np.column_stack([pc.struct_field(table["bbox"], k).to_numpy() for k in BBOX_NAMES])
    assert np.array_equal(bbox, shapely.bounds(shapely.from_wkb(table["geometry"].to_numpy(zero_copy_only=False))))
    assert table.num_rows == len(frame) and "bbox" not in frame.columns  # geopandas leaves it out by default


def test_a_bbox_read_returns_exactly_the_rows_whose_bbox_intersects(covered):
    parquet, _, frame = covered
    sizes = []
    for box in queries(frame):
        expected = frame[bbox_hits(frame, box)]
        assert rows(gpd.read_parquet(parquet, bbox=box)) == rows(expected), box
        sizes.append(len(expected))
    assert 0 < min(sizes[:4]) and max(sizes) < len(frame) and sizes[4] == 0  # real selections, and an empty one


def row_group_bboxes(parquet) -> list[dict[str, tuple[float, float]]]:
    """(min, max) statistics of each bbox column, per row group, as the file's footer has them."""
    meta = pq.ParquetFile(parquet).metadata
    out = []
    for i in range(meta.num_row_groups):
        group = meta.row_group(i)
        columns = {group.column(j).path_in_schema: group.column(j).statistics for j in range(group.num_columns)}
        out.append({k: (stats.min, stats.max) for k in BBOX_NAMES
                    if (stats := columns[f"bbox.{k}"]) is not None and stats.has_min_max})
    return out


def test_row_groups_are_rows_of_cells_with_bbox_statistics_readers_skip_by(covered):
    parquet, _, _ = covered
    stats = row_group_bboxes(parquet)
    assert len(stats) == 5  # one per row of cells (each far below ROW_GROUP_BYTES)
    file = pq.ParquetFile(parquet)
    for i, group in enumerate(stats):
        bbox = file.read_row_group(i, columns=["bbox"])["bbox"]
        assert group == {k: (pc.min(pc.struct_field(bbox, k)).as_py(), pc.max(pc.struct_field(bbox, k)).as_py())
                         for k in BBOX_NAMES}
        top = TRANSFORM.f - i * STRIP_M
        assert top - STRIP_M <= group["ymin"][0] and group["ymax"][1] <= top  # within its row of cells
    # a box inside the third row of cells: pyarrow (geopandas' reader) reads that row group alone
    x0, y = TRANSFORM.c, TRANSFORM.f - 2.5 * STRIP_M
    box = (x0 + 40, y - 5, x0 + 60, y + 5)
    overlaps = ~((pc.field("bbox", "xmin") > box[2]) | (pc.field("bbox", "ymin") > box[3])
                 | (pc.field("bbox", "xmax") < box[0]) | (pc.field("bbox", "ymax") < box[1]))
    fragment = next(ds.dataset(parquet).get_fragments())
    assert [group.id for group in fragment.subset(filter=overlaps).row_groups] == [2]


def test_row_groups_end_at_the_byte_budget_between_cells(tmp_path, scene_labels, monkeypatch):
    options = VectorizeOptions(cell=70)
    whole = rows(vectorize(tmp_path, scene_labels, 64, options))
    monkeypatch.setattr(polygon_writer, "ROW_GROUP_BYTES", 1)  # every cell is over it: one row group per cell
    (tmp_path / "small").mkdir()
    frame = vectorize(tmp_path / "small", scene_labels, 64, options)
    assert rows(frame) == whole  # the same rows, in the same order
    groups = row_group_bboxes(tmp_path / "small" / "p-64-70.parquet")
    cells = [cell_of(group["xmin"][0], group["ymax"][1]) for group in groups]
    for (row, col), group in zip(cells, groups):  # each row group lies within one cell
        assert group["xmax"][1] <= TRANSFORM.c + (col + 1) * STRIP_M and group["ymin"][0] >= TRANSFORM.f - (row + 1) * STRIP_M
    bounds = frame.geometry.bounds
    assert cells == sorted(set(map(cell_of, bounds.minx, bounds.maxy)))  # one per cell with polygons, in order


def cell_of(xmin: float, ymax: float) -> tuple[int, int]:
    """(row, col) of the 70 px cell whose top left corner is nearest above left of (xmin, ymax)."""
    return int((TRANSFORM.f - ymax) // STRIP_M), int((xmin - TRANSFORM.c) // STRIP_M)


def test_geopackage_has_no_bbox_column_and_its_rtree_filters(covered):
    _, gpkg, frame = covered
    info = pyogrio.read_info(gpkg, layer="polygons")
    assert list(info["fields"]) == ["class_id", "class_name", "region_id", "pixels", "area", "area_m2"]
    assert info["capabilities"]["fast_spatial_filter"]
    with sqlite3.connect(gpkg) as db:
        assert db.execute(f"SELECT count(*) FROM rtree_polygons_{info['geometry_name']}").fetchone()[0] == len(frame)
    for box in queries(frame):  # GDAL with GEOS keeps the geometries that intersect the box
        expected = frame[shapely.intersects(frame.geometry.values, shapely.box(*box))]
        assert sorted(rows(pyogrio.read_dataframe(gpkg, layer="polygons", bbox=box))) == sorted(rows(expected)), box


@pytest.mark.skipif("Parquet" not in pyogrio.list_drivers(), reason="pyogrio's GDAL has no Parquet driver")
def test_gdal_reads_the_geoparquet_by_bbox(covered):
    parquet, _, frame = covered
    assert len(pyogrio.read_dataframe(parquet)) == len(frame)
    for box in queries(frame):  # GDAL with GEOS keeps the geometries that intersect the box
        expected = frame[shapely.intersects(frame.geometry.values, shapely.box(*box))]
        assert sorted(rows(pyogrio.read_dataframe(parquet, bbox=box))) == sorted(rows(expected)), box


def test_geopackage_carries_its_default_style_by_class_and_reads_in_older_gdal(covered):
    """The style QGIS applies on open (tests/test_qgis.py checks QGIS itself): one QML and SLD row,
    default for the layer, a category per class in the class colour; GeoPackage 1.2 for GDAL 3.6."""
    _, gpkg, frame = covered
    with sqlite3.connect(gpkg) as db:
        styles = db.execute("SELECT f_table_name, f_geometry_column, useAsDefault, styleQML, styleSLD FROM layer_styles").fetchall()
        registered = db.execute("SELECT data_type FROM gpkg_contents WHERE table_name = 'layer_styles'").fetchall()
        version = db.execute("PRAGMA user_version").fetchone()[0]
    assert version == 10200 and registered == [("attributes",)]
    geometry = pyogrio.read_info(gpkg, layer="polygons")["geometry_name"]
    [(table, column, default, qml, sld)] = styles
    assert (table, column, default) == ("polygons", geometry, 1)
    qml_categories = [(c.get("value"), c.get("label")) for c in ElementTree.fromstring(qml).iter("category")]
    assert qml_categories == [(n, n) for n in NAMES]
    fills = [o.get("value") for o in ElementTree.fromstring(qml).iter("Option") if o.get("name") == "color"]
    assert fills == ["{},{},{},255".format(*c) for c in COLORS]
    assert all(f"<ogc:Literal>{n}</ogc:Literal>" in sld for n in NAMES)
    assert len(pyogrio.read_dataframe(gpkg, layer="polygons")) == len(frame)
