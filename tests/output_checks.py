"""Every invariant of a finished ``fcnseg segment`` output folder, checked against its input raster.

``check_outputs(input_path, out_dir, polygon_cell=...)`` asserts, exactly, what a complete output
guarantees (README, "What a finished run guarantees" and "The outputs, for analysts"), with
references computed here, independently of the pipeline's own code where that is possible:

* run.json: complete (the store says so too), the chunk counts add up, the files it lists are
  the files in the folder, its output options are the ones asked for;
* labels.zarr: the input's grid (CRS, transform, shape); label 255 exactly where the input is
  nodata by GDAL's dataset-mask convention (GDAL's own per-band masks of the selected bands, a
  pixel nodata when every band's mask says so; a per-dataset mask or alpha decides alone; a
  non-finite float is never data); every class id below the class count; each overview level the
  *mode* of its blocks (levels written with the chunks: of full resolution; the coarser ones: of
  the coarsest of those), recomputed here with plain numpy, and listed in the multiscales layout;
* labels.tif: a valid COG (rio-cogeo), uint8, nodata 255, the store's grid, labels equal to the
  store's, overviews at the store's factors each equal to the store's level (copied as they are),
  the class names and colours in its tags and colour table, its two sidecars;
* polygons.parquet and polygons.gpkg: the same rows; valid Polygons in the input's CRS; rasterised
  (pixel centres, GDAL) they cover every valid pixel once and no nodata pixel; each polygon is one
  4-connected component of one class within one ``polygon_cell`` cell (its ``pixels`` that
  component's size, its ``class_id``/``class_name`` the class under it); grouped by ``region_id``
  they are exactly the 4-connected regions of the label map (scipy.ndimage.label, per class), and
  ``dissolve(by="region_id")`` gives one Polygon per region, of the region's area; ``area`` is
  pixels x pixel area (CRS units², degrees² for a geographic CRS), ``area_m2`` the true area
  (row by row on a geographic CRS, ``row_pixel_areas_m2``; null without a CRS), per polygon and
  summed per class;
* run.json's class areas, and ``query_classes`` on labels.tif and on labels.zarr: the label counts,
  their m² and shares;
* item.json (only with a CRS): its geometry, taken back into the raster's CRS, lies in the raster
  and holds every labelled pixel's centre; a scene without nodata keeps its rectangle; on a rotated
  or clipped footprint at most ``max_footprint_nodata`` of it is nodata (when given); bbox, grid
  and classes; every file asset exists with its size and sha256;
* quicklook.png: opens, RGBA, the long side min(2048, the raster's).

With ``--simplify`` the polygons are no longer exact pixel edges: only validity, nodata never
covered and parquet == gpkg are checked for them. With ``--min-area`` the dropped regions are gaps:
each gap is a whole region under the bound, each kept region at least the bound.

Rasters are read whole: this is for test-sized scenes (a 512² scene checks in about a second).
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import geopandas as gpd
import numpy as np
import pyogrio
import rasterio
import shapely
import rioxarray  # noqa: F401 (the .rio accessor)
import xarray as xr
from affine import Affine
from PIL import Image
from rasterio.crs import CRS
from rasterio.enums import MaskFlags, MergeAlg
from rasterio.features import rasterize
from rasterio.warp import transform_geom
from rio_cogeo.cogeo import cog_validate
from scipy import ndimage

from fcnseg.pipeline.analysis.areas import row_pixel_areas_m2
from fcnseg.pipeline.analysis.query import query_classes
from fcnseg.pipeline.pyramid import overview_factors

NODATA = 255
POLYGON_COLUMNS = ["class_id", "class_name", "region_id", "pixels", "area", "area_m2", "geometry"]
#: Every file a default run writes (labels.zarr is a folder), by the output option that makes it.
FILES_BY_OPTION = {
    "cog": ["labels.tif", "labels.tif.aux.xml", "labels.qml"],
    "quicklook": ["quicklook.png"],
    "polygons": ["polygons.parquet", "polygons.gpkg"],
    "stac": ["item.json"],
}
QUICKLOOK_MAX = 2048


@dataclass(frozen=True)
class Input:
    """The input as GDAL sees it: its grid and where it holds data (selected bands)."""

    crs: CRS | None
    transform: Affine
    valid: np.ndarray  # bool (h, w)

    @property
    def shape(self) -> tuple[int, int]:
        return self.valid.shape


def check_outputs(input_path: str | Path, out_dir: str | Path, *, polygon_cell: int,
                  max_footprint_nodata: float | None = None, area_m2_rtol: float = 1e-9) -> dict[str, Any]:
    """Assert every invariant of the finished output ``out_dir`` of ``fcnseg segment input_path``.

    ``polygon_cell``: the run's ``--polygon-cell`` (checked against run.json; polygons never cross
    a cell). ``max_footprint_nodata``: the largest share of item.json's footprint that may be nodata
    (for rotated or clipped footprints; None: not checked). ``area_m2_rtol``: how close each polygon's
    ``area_m2`` must be to the true area of its pixels (row by row on a geographic CRS).
    Returns what was found (counts, polygons, regions, levels ...).
    """
    out = Path(out_dir)
    record = check_run_record(out, polygon_cell)
    options = record["outputs"]
    source = read_input(input_path, record["parameters"]["bands"])
    labels, names, colors, levels = check_store(out, source)
    check_nodata(labels, source)
    counts = np.bincount(labels[source.valid], minlength=len(names))[: len(names)]
    row_m2 = None if source.crs is None else row_pixel_areas_m2(source.crs, source.transform, 0, labels.shape[0])
    class_m2 = None if row_m2 is None else class_areas_m2(labels, row_m2, len(names))
    check_class_areas(record["class_areas"], counts, class_m2, names)
    summary: dict[str, Any] = {
        "shape": labels.shape, "valid": int(source.valid.sum()), "nodata": int((~source.valid).sum()),
        "class_pixels": counts.tolist(), "levels": sorted(levels), "chunks": record["chunks"],
    }
    if options["cog"]:
        check_cog(out / "labels.tif", labels, levels, names, colors, source)
    if options["polygons"]:
        summary.update(check_polygons(out, labels, names, source, row_m2, polygon_cell, options, area_m2_rtol))
    if options["quicklook"]:
        summary["quicklook"] = check_quicklook(out / "quicklook.png", labels.shape)
    if options["stac"] and source.crs is not None:
        summary["footprint_nodata"] = check_item(out / "item.json", labels, names, source, max_footprint_nodata)
    check_queries(out, labels, counts, class_m2, names, source, options)
    return summary


# --------------------------------------------------------------------------- run.json


def check_run_record(out: Path, polygon_cell: int) -> dict[str, Any]:
    """run.json: present (the output is complete), its chunk counts, options and file list."""
    record = json.loads((out / "run.json").read_text())
    chunks = record["chunks"]
    assert chunks["computed"] + chunks["skipped_nodata"] + chunks["reused"] == chunks["total"] > 0, chunks
    options = record["outputs"]
    assert options["polygon_cell"] == polygon_cell, options
    expected = ["labels.zarr"] + [name for option, names in FILES_BY_OPTION.items() if options[option] for name in names]
    if record["parameters"].get("probabilities") and options["cog"]:
        expected.append("probabilities.tif")
    if record["parameters"].get("confidence"):
        expected += (["confidence.tif"] if options["cog"] else []) + (["confidence.png"] if options["quicklook"] else [])
    listed = record["files"]
    assert len(listed) == len(set(listed)), listed
    missing_item = options["stac"] and "item.json" not in listed  # no STAC item without a CRS
    if missing_item:
        expected.remove("item.json")
    assert sorted(listed) == sorted(expected), (listed, expected)
    present = sorted(p.name for p in out.iterdir() if not p.name.startswith("."))
    assert present == sorted([*listed, "run.json"]), (present, listed)
    return record


# --------------------------------------------------------------------------- the input


def read_input(input_path: str | Path, bands: list[int]) -> Input:
    """The input's grid and its data mask by GDAL's dataset-mask convention, from GDAL's own masks."""
    with rasterio.open(input_path) as src:
        flags = [src.mask_flag_enums[b - 1] for b in bands]
        if any(MaskFlags.per_dataset in f for f in flags):  # a .msk, an internal mask or alpha: it decides
            valid = src.read_masks(bands[0]) > 0
        else:  # a pixel is nodata when every selected band's mask says so (nodata value, NaN ...)
            valid = np.zeros((src.height, src.width), dtype=bool)
            for band in bands:
                valid |= src.read_masks(band) > 0
        if np.dtype(src.dtypes[bands[0] - 1]).kind in "fc":  # the model cannot take a non-finite pixel
            valid &= np.isfinite(src.read(bands)).all(axis=0)
        return Input(src.crs, src.transform, valid)


# --------------------------------------------------------------------------- labels.zarr


def check_store(out: Path, source: Input) -> tuple[np.ndarray, list[str], list[list[int]], dict[int, np.ndarray]]:
    """The store on the input's grid, complete, its overview levels the modes of their blocks."""
    store = out / "labels.zarr"
    root = xr.open_zarr(store, consolidated=False)
    assert root.attrs["fcnseg_complete"] is True
    da = root.labels
    labels = np.asarray(da.values)
    assert labels.dtype == np.uint8 and labels.shape == source.shape, (labels.dtype, labels.shape)
    assert da.rio.transform() == source.transform, (da.rio.transform(), source.transform)
    assert (da.rio.crs is None) == (source.crs is None) and (source.crs is None or da.rio.crs == source.crs)
    names, colors = list(da.attrs["class_names"]), [list(c) for c in da.attrs["class_colors"]]
    assert len(names) == len(colors) > 0 and da.attrs["nodata"] == NODATA
    assert labels[labels != NODATA].max(initial=0) < len(names), "a label beyond the class count"
    layout = root.attrs["multiscales"]["layout"]
    assert layout[0]["asset"] == "labels" and layout[0]["spatial:shape"] == list(labels.shape)
    factors = overview_factors(*labels.shape)
    assert len(layout) == len(factors) + 1, (len(layout), factors)
    levels: dict[int, np.ndarray] = {}
    by_asset = {"labels": (1, labels)}
    for entry, factor in zip(layout[1:], factors, strict=True):
        name = str(factor.bit_length() - 1)  # the level's index: factor 2**index
        assert entry["asset"] == f"{name}/labels" and entry["resampling_method"] == "mode", entry
        level = xr.open_zarr(store, group=name, consolidated=False).labels
        values = np.asarray(level.values)
        assert values.shape == (-(-labels.shape[0] // factor), -(-labels.shape[1] // factor)), (factor, values.shape)
        assert entry["spatial:shape"] == list(values.shape)
        assert level.rio.transform() == source.transform @ Affine.scale(factor), (factor, level.rio.transform())
        # made from full resolution (with the chunks), or from the coarsest level made with them
        base_factor, base = by_asset[entry["derived_from"]]
        assert entry["transform"]["scale"] == [factor / base_factor] * 2, entry
        assert np.array_equal(values, block_mode(base, factor // base_factor)), \
            f"level {factor}: not the mode of the {base_factor}x level's blocks"
        by_asset[entry["asset"]] = (factor, values)
        levels[factor] = values
    return labels, names, colors, levels


def block_mode(labels: np.ndarray, factor: int) -> np.ndarray:
    """The most frequent class of each factor x factor block (ties: the smallest id; 255 never
    counts; a block is 255 only when all its pixels are; blocks cut by the edge: what is inside)."""
    h, w = labels.shape
    rows, cols = -(-h // factor), -(-w // factor)
    padded = np.full((rows * factor, cols * factor), NODATA, np.uint8)
    padded[:h, :w] = labels
    blocks = padded.reshape(rows, factor, cols, factor)
    classes = np.unique(labels[labels != NODATA])
    if not classes.size:
        return np.full((rows, cols), NODATA, np.uint8)
    counts = np.stack([(blocks == c).sum(axis=(1, 3)) for c in classes])
    modes = classes[np.argmax(counts, axis=0)].astype(np.uint8)  # argmax: the first (smallest id) of ties
    modes[counts.max(axis=0) == 0] = NODATA
    return modes


def level_reference(labels: np.ndarray, level, source) -> np.ndarray:
    """What a pyramid level must hold, from the full-resolution map: a level written with the chunks,
    the mode of its full-resolution blocks; a later one, the mode of ``source`` level's modes."""
    if level.per_chunk:
        return block_mode(labels, level.factor)
    coarse = labels if source.factor == 1 else block_mode(labels, source.factor)
    return block_mode(coarse, level.factor // source.factor)


def check_nodata(labels: np.ndarray, source: Input) -> None:
    """Label 255 exactly where the input holds no data."""
    wrong = (labels == NODATA) != ~source.valid
    assert not wrong.any(), (f"{int(wrong.sum())} pixels where label 255 and input nodata disagree, first at "
                             f"(row, col) {tuple(int(v) for v in np.argwhere(wrong)[0])}")


# --------------------------------------------------------------------------- class areas


def class_areas_m2(labels: np.ndarray, row_m2: np.ndarray, num_classes: int) -> np.ndarray:
    """True m² of each class: its pixels on each row times that row's pixel area."""
    return np.array([np.count_nonzero(labels == c, axis=1) @ row_m2 for c in range(num_classes)])


def check_class_areas(areas: list[dict[str, Any]], counts: np.ndarray, class_m2: np.ndarray | None,
                      names: list[str]) -> None:
    """run.json's class table: every class, its pixels, m² and share of the valid pixels."""
    valid = int(counts.sum())
    assert [a["class_id"] for a in areas] == list(range(len(names))), areas
    for a, pixels, name in zip(areas, counts, names, strict=True):
        assert a["class_name"] == name and a["pixels"] == pixels, (a, int(pixels))
        assert math.isclose(a["share"], pixels / valid if valid else 0.0, rel_tol=1e-12), (a, valid)
        if class_m2 is None:
            assert a["area_m2"] is None, a
        else:
            assert math.isclose(a["area_m2"], class_m2[a["class_id"]], rel_tol=1e-9, abs_tol=1e-6), (a, class_m2)


# --------------------------------------------------------------------------- labels.tif


def check_cog(path: Path, labels: np.ndarray, levels: dict[int, np.ndarray], names: list[str],
              colors: list[list[int]], source: Input) -> None:
    """labels.tif: a COG equal to the store, overviews = the store's levels, classes described."""
    valid, errors, _ = cog_validate(str(path), quiet=True)
    assert valid, errors
    with rasterio.open(path) as src:
        assert (src.count, src.dtypes[0], src.nodata) == (1, "uint8", NODATA)
        assert src.transform == source.transform and src.crs == source.crs, (src.transform, src.crs)
        assert src.compression is not None and src.compression.name.lower() == "deflate"
        assert np.array_equal(src.read(1), labels), "labels.tif differs from labels.zarr"
        assert src.overviews(1) == sorted(levels), (src.overviews(1), sorted(levels))
        assert json.loads(src.tags()["class_names"]) == names
        assert src.tags(1) == {f"CLASS_{i}": n for i, n in enumerate(names)}
        colormap = src.colormap(1)
        assert all(colormap[i] == (*c, 255) for i, c in enumerate(colors)) and colormap[NODATA][3] == 0
    for index, factor in enumerate(sorted(levels)):
        with rasterio.open(path, overview_level=index) as ovr:
            assert np.array_equal(ovr.read(1), levels[factor]), f"labels.tif overview {factor}x != store level"
    for sidecar in (Path(f"{path}.aux.xml"), path.with_suffix(".qml")):
        text = sidecar.read_text()
        assert all(n in text for n in names), sidecar


# --------------------------------------------------------------------------- polygons


def check_polygons(out: Path, labels: np.ndarray, names: list[str], source: Input, row_m2: np.ndarray | None,
                   cell: int, options: dict[str, Any], area_m2_rtol: float = 1e-9) -> dict[str, int]:
    """polygons.parquet and .gpkg against the label map (see the module's docstring)."""
    frame = gpd.read_parquet(out / "polygons.parquet")
    from_gpkg = pyogrio.read_dataframe(out / "polygons.gpkg", layer="polygons")
    assert list(frame.columns) == POLYGON_COLUMNS and list(from_gpkg.columns) == POLYGON_COLUMNS
    assert frame.crs == source.crs and from_gpkg.crs == source.crs, (frame.crs, from_gpkg.crs)
    assert rows(frame) == rows(from_gpkg), "polygons.parquet and polygons.gpkg hold different rows"
    geometries = frame.geometry.values
    assert shapely.is_valid(geometries).all(), shapely.is_valid_reason(geometries[~shapely.is_valid(geometries)])[:3]
    assert (frame.geom_type == "Polygon").all()
    assert (frame.class_name == [names[i] for i in frame.class_id]).all()
    covered = coverage(frame, labels.shape, source.transform)
    assert not covered[~source.valid].any(), f"{int(covered[~source.valid].astype(bool).sum())} nodata pixels covered"
    if options["simplify"]:  # simplified outlines no longer follow pixel edges: nothing more is exact
        return {"polygons": len(frame), "regions": int(frame.region_id.nunique())}
    assert covered.max(initial=0) <= 1, "polygons overlap"
    kept = covered.astype(bool)
    if not options["min_area"]:
        assert kept[source.valid].all(), f"{int((~kept[source.valid]).sum())} valid pixels not covered"
    if not len(frame):  # empty files: nothing valid, or every region under --min-area
        if options["min_area"]:
            check_min_area(components(labels, None)[0], kept, row_m2, options["min_area"])
        return {"polygons": 0, "regions": 0}
    part = rasterize(((g, i + 1) for i, g in enumerate(geometries)), out_shape=labels.shape,
                     transform=source.transform, fill=0, dtype="int32")  # polygon number + 1 under each pixel
    found = np.bincount(part[kept] - 1, minlength=len(frame))
    assert np.array_equal(found, frame.pixels.to_numpy()), "a polygon's pixels column != its pixels"
    assert np.array_equal(frame.class_id.to_numpy()[part[kept] - 1], labels[kept]), "a polygon's class != the labels under it"
    # each polygon: one 4-connected component of its class within one cell
    cells, _ = components(labels, cell)
    assert same_partition(part, cells, kept), "polygons are not the 4-connected parts of the regions within cells"
    # grouped by region_id: the 4-connected regions of the label map
    regions, count = components(labels, None)
    region_of_pixel = frame.region_id.to_numpy()[part - 1]
    assert same_partition(region_of_pixel, regions, kept), "region_id does not group the polygons into the regions"
    if options["min_area"]:
        check_min_area(regions, kept, row_m2, options["min_area"])
    else:
        assert frame.region_id.nunique() == count, (frame.region_id.nunique(), count)
    check_polygon_areas(frame, part, kept, row_m2, source, area_m2_rtol)
    sizes = frame.groupby("region_id").pixels.sum().sort_values().to_numpy()
    assert np.array_equal(sizes, np.sort(np.bincount(regions[kept])[np.unique(regions[kept])])), "region sizes"
    dissolved = frame.dissolve(by="region_id", aggfunc={"pixels": "sum"})
    assert (dissolved.geom_type == "Polygon").all(), "a dissolved region is not one Polygon"
    pixel_area = abs(source.transform.determinant)
    assert np.allclose(shapely.area(dissolved.geometry.values), dissolved.pixels * pixel_area, rtol=1e-9, atol=0), "dissolved areas"
    return {"polygons": len(frame), "regions": len(dissolved)}


def rows(frame: gpd.GeoDataFrame) -> list[tuple]:
    """Every row, geometry normalised, sorted: the same polygons whatever order a format keeps."""
    wkb = shapely.to_wkb(shapely.normalize(frame.geometry.values))
    area_m2 = [None if v is None or (isinstance(v, float) and math.isnan(v)) else float(v)
               for v in frame.area_m2.astype(object)]
    return sorted(zip(frame.class_id.astype(int), frame.class_name, frame.region_id.astype(int),
                      frame.pixels.astype(int), frame["area"].astype(float), area_m2, wkb),
                  key=lambda r: (r[2], r[6]))


def coverage(frame: gpd.GeoDataFrame, shape: tuple[int, int], transform: Affine) -> np.ndarray:
    """How many polygons hold each pixel's centre."""
    if not len(frame):
        return np.zeros(shape, np.int32)
    return rasterize(((g, 1) for g in frame.geometry.values), out_shape=shape, transform=transform, fill=0,
                     dtype="int32", merge_alg=MergeAlg.add)


def components(labels: np.ndarray, cell: int | None) -> tuple[np.ndarray, int]:
    """4-connected components of each class (ids 1.., 0 on nodata); with ``cell``, cut at the
    borders of cells of that many pixels (a row and a column of background slipped in between)."""
    h, w = labels.shape
    rows = np.arange(h) + (np.arange(h) // cell if cell else 0)
    cols = np.arange(w) + (np.arange(w) // cell if cell else 0)
    out = np.zeros((h, w), np.int64)
    total = 0
    for c in np.unique(labels[labels != NODATA]):
        mask = np.zeros((rows[-1] + 1, cols[-1] + 1), bool)
        mask[np.ix_(rows, cols)] = labels == c
        found, n = ndimage.label(mask)  # the default structure: 4-connectivity
        found = found[np.ix_(rows, cols)]
        out[found > 0] = found[found > 0] + total
        total += n
    return out, total


def same_partition(a: np.ndarray, b: np.ndarray, where: np.ndarray) -> bool:
    """Whether ``a`` and ``b`` group the pixels of ``where`` into the same sets (ids aside)."""
    a, b = a[where].astype(np.int64), b[where].astype(np.int64)
    if not a.size:
        return True
    pairs = np.unique(a * (int(b.max()) + 1) + b)
    return len(pairs) == len(np.unique(a)) == len(np.unique(b))


def check_min_area(regions: np.ndarray, kept: np.ndarray, row_m2: np.ndarray | None, min_area: float) -> None:
    """A region is kept whole or dropped whole; dropped ones are below the bound, kept ones not."""
    assert row_m2 is not None, "--min-area needs a CRS"
    m2 = np.bincount(regions.ravel(), weights=np.broadcast_to(row_m2[:, None], regions.shape).ravel())
    kept_ids = np.unique(regions[kept])
    dropped_ids = np.setdiff1d(np.unique(regions[regions > 0]), kept_ids)
    assert not np.isin(regions[~kept & (regions > 0)], kept_ids).any(), "a region kept in part"
    assert (m2[kept_ids] >= min_area * (1 - 1e-9)).all() and (m2[dropped_ids] < min_area * (1 + 1e-9)).all()


def check_polygon_areas(frame: gpd.GeoDataFrame, part: np.ndarray, kept: np.ndarray, row_m2: np.ndarray | None,
                        source: Input, rtol: float = 1e-9) -> None:
    """``area`` = pixels x pixel area (CRS units²); ``area_m2`` = the true area of the pixels."""
    pixels = frame.pixels.to_numpy()
    pixel_area = abs(source.transform.determinant)
    assert np.allclose(frame["area"].to_numpy(), pixels * pixel_area, rtol=1e-9, atol=0), "area != pixels x pixel area"
    assert np.allclose(shapely.area(frame.geometry.values), frame["area"].to_numpy(), rtol=1e-12, atol=0)
    if row_m2 is None:
        assert frame.area_m2.isna().all(), "area_m2 without a CRS"
        return
    weights = np.broadcast_to(row_m2[:, None], part.shape)[kept]
    expected = np.bincount(part[kept] - 1, weights=weights, minlength=len(frame))
    got = frame.area_m2.to_numpy(dtype=np.float64)
    error = np.abs(got / expected - 1)
    worst = int(np.argmax(error))
    assert error[worst] <= rtol, (f"area_m2 of polygon {worst} (class {frame.class_id.iat[worst]}, {pixels[worst]} px) is "
                                  f"{got[worst]:.1f} m², its pixels' true area {expected[worst]:.1f} m² "
                                  f"(relative error {error[worst]:.2e} > {rtol:.0e})")


# --------------------------------------------------------------------------- item.json


def check_item(path: Path, labels: np.ndarray, names: list[str], source: Input,
               max_footprint_nodata: float | None) -> float:
    """The STAC item: footprint around every labelled pixel centre, inside the raster; grid, classes,
    assets. Returns the share of the footprint (pixel centres inside it) that is nodata."""
    item = json.loads(path.read_text())
    assert item["type"] == "Feature" and item["stac_version"] == "1.1.0"
    geometry = shapely.geometry.shape(item["geometry"])
    assert geometry.is_valid and geometry.geom_type in ("Polygon", "MultiPolygon")
    assert item["bbox"] == [float(v) for v in geometry.bounds] or np.allclose(item["bbox"], geometry.bounds, rtol=0, atol=1e-12)
    props = item["properties"]
    assert props["proj:shape"] == list(labels.shape)
    assert np.allclose(props["proj:transform"], list(source.transform)[:6], rtol=1e-15, atol=0)
    footprint = shapely.geometry.shape(transform_geom("EPSG:4326", source.crs, item["geometry"]))
    h, w = labels.shape
    pixel = max(math.hypot(source.transform.a, source.transform.d), math.hypot(source.transform.b, source.transform.e))
    rectangle = shapely.Polygon([source.transform @ p for p in ((0, 0), (w, 0), (w, h), (0, h))])
    assert rectangle.buffer(pixel * 1e-3).covers(footprint), "the footprint reaches outside the raster"
    rows, cols = np.nonzero(labels != NODATA)
    xs, ys = source.transform @ (cols + 0.5, rows + 0.5)
    shapely.prepare(footprint)
    outside = ~shapely.intersects_xy(footprint, xs, ys)
    assert not outside.any(), f"{int(outside.sum())} labelled pixel centres outside the footprint, e.g. row {rows[outside][0]}"
    if source.valid.all():  # no nodata: the raster's rectangle
        assert footprint.symmetric_difference(rectangle).area <= 1e-6 * rectangle.area
    inside = rasterize([(footprint, 1)], out_shape=labels.shape, transform=source.transform, fill=0, dtype="uint8") > 0
    share = float((inside & ~source.valid).sum() / max(1, inside.sum()))
    if max_footprint_nodata is not None:
        assert share <= max_footprint_nodata, f"{share:.1%} of the footprint is nodata"
    for key in ("labels", "labels_zarr"):
        if key in item["assets"]:
            classes = {c["value"]: c for c in item["assets"][key]["classification:classes"]}
            assert sorted(classes) == [*range(len(names)), NODATA], (key, sorted(classes))
            assert [classes[i]["name"] for i in range(len(names))] == names and classes[NODATA].get("nodata") is True
    for key, asset in item["assets"].items():
        href = asset["href"]
        if href.startswith("./"):
            target = path.parent / href[2:]
            assert target.exists(), (key, href)
            if "file:checksum" in asset:
                data = target.read_bytes()
                assert asset["file:size"] == len(data), (key, asset["file:size"], len(data))
                assert asset["file:checksum"] == "1220" + hashlib.sha256(data).hexdigest(), key
    return share


# --------------------------------------------------------------------------- quicklook, query


def check_quicklook(path: Path, shape: tuple[int, int]) -> tuple[int, int]:
    """quicklook.png opens as RGBA, its long side min(2048, the raster's), the aspect kept."""
    with Image.open(path) as img:
        img.verify()
    with Image.open(path) as img:
        img.load()
        h, w = shape
        scale = min(QUICKLOOK_MAX, max(h, w)) / max(h, w)
        expected = (max(1, round(w * scale)), max(1, round(h * scale)))
        assert img.mode == "RGBA" and img.size == expected, (img.mode, img.size, expected)
        return img.size


def check_queries(out: Path, labels: np.ndarray, counts: np.ndarray, class_m2: np.ndarray | None,
                  names: list[str], source: Input, options: dict[str, Any]) -> None:
    """``fcnseg query`` of the whole raster, on labels.zarr and on labels.tif: the label counts."""
    rasters = [out / "labels.zarr"] + ([out / "labels.tif"] if options["cog"] else [])
    valid = int(source.valid.sum())
    for raster in rasters:
        result = query_classes(raster)
        assert (result.valid_pixels, result.nodata_pixels) == (valid, labels.size - valid), (raster, result)
        assert [c.class_id for c in result.classes] == list(range(len(names))), (raster, result.classes)
        assert [c.pixels for c in result.classes] == counts.tolist(), (raster, result.classes, counts)
        for c in result.classes:
            assert c.class_name == names[c.class_id]
            if class_m2 is None:
                assert c.area_m2 is None
            else:
                assert math.isclose(c.area_m2, class_m2[c.class_id], rel_tol=1e-9, abs_tol=1e-6), (raster, c)
