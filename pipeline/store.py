"""The Zarr v3 label store: ``labels`` (uint8, 255 = nodata), optional class probabilities and an
optional per-pixel ``confidence`` (the top class's probability, quantised as probabilities are).

Laid out so that ``xarray.open_zarr(path)`` gives DataArrays whose ``.rio.crs`` and
``.rio.transform()`` equal the input's: a CF grid mapping (0-d ``spatial_ref`` with ``crs_wkt``,
``spatial_ref`` and GDAL's ``GeoTransform``), 1-D ``x``/``y`` pixel-centre coordinates, and
``grid_mapping`` on every data array. Chunks are the core grid of the tiling, so each tile writes
exactly one chunk: writes from many processes need no locks.

A raster without a CRS (a scanned map, a microscopy mosaic, a PNG) is segmented in pixel
coordinates: ``spatial_ref`` then keeps its ``GeoTransform`` (whatever the input has; rasterio
gives such a file ``Affine.identity()``, so rows go down and y = row + 0.5) but has no WKT, and
``x``/``y`` are in units of "pixel". Every reader asks ``store_geometry``/``has_crs`` rather than
assuming metres, so nothing downstream invents a place on the Earth.

Overviews (``pyramid``): child groups ``1``, ``2`` ... hold ``labels`` at 2x, 4x ... coarser
pixels (each the *mode* of its block), each with its own grid mapping, listed with the root's
``labels`` in the root's ``multiscales`` attribute (the multiscales and spatial Zarr conventions
that GeoZarr builds on: ``asset``, ``derived_from``, ``transform.scale``, ``resampling_method``
"mode", ``spatial:transform``, ``spatial:shape`` per level). ``write_chunk`` writes a chunk's
blocks of the levels fine enough to map 1:1 to chunks; ``finish_pyramid`` makes the coarser ones
once the store is complete. ``xarray.open_zarr(path)`` of the root is unchanged by them.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import zarr
from affine import Affine
from rasterio.crs import CRS
from rasterio.windows import Window

from fcnseg.pipeline.classes import store_classes
from fcnseg.pipeline.io import InputError, open_raster
from fcnseg.pipeline.pyramid import (
    MODE,
    Level,
    block_modes,
    level_shape,
    multiscales_layout,
    pyramid_levels,
    source_level,
)

LABELS = "labels"
PROBABILITIES = "probabilities"
CONFIDENCE = "confidence"
NODATA = 255
#: Probabilities are stored as uint8: value * PROBABILITY_SCALE, 255 = nodata (CF scale_factor decodes them).
PROBABILITY_SCALE = 254


#: What ties a data array to the grid mapping (CF), for xarray and rioxarray.
GEO_ATTRS = {"grid_mapping": "spatial_ref", "coordinates": "spatial_ref"}

#: The root group's attribute listing full resolution and the overview levels (multiscales convention).
MULTISCALES = "multiscales"
#: The Zarr conventions the store's attributes follow: its pyramid, and the levels' grids in it.
CONVENTIONS = [
    {"schema_url": "https://raw.githubusercontent.com/zarr-conventions/multiscales/refs/tags/v1/schema.json",
     "spec_url": "https://github.com/zarr-conventions/multiscales/blob/v1/README.md",
     "uuid": "d35379db-88df-4056-af3a-620245f8e347", "name": "multiscales",
     "description": "Multiscale layout of zarr datasets"},
    {"schema_url": "https://raw.githubusercontent.com/zarr-conventions/spatial/refs/tags/v1/schema.json",
     "spec_url": "https://github.com/zarr-conventions/spatial/blob/v1/README.md",
     "uuid": "689b58e2-cf7b-45e0-9fff-9cfc0883d6b4", "name": "spatial:",
     "description": "Spatial coordinate information"},
]
#: The CRS of a group's arrays (GeoZarr's ``proj:``; GDAL 3.13 georeferences a store by it).
PROJ_CONVENTION = {
    "schema_url": "https://raw.githubusercontent.com/zarr-experimental/geo-proj/refs/tags/v1/schema.json",
    "spec_url": "https://github.com/zarr-experimental/geo-proj/blob/v1/README.md",
    "uuid": "f17cb550-5864-4468-aeb7-f3180cfb622f", "name": "proj:",
    "description": "Coordinate reference system information for geospatial data"}
#: Chunk side of the levels made once the store is complete, and the side (in pixels of their
#: source level) of the windows they are made from.
LEVEL_CHUNK = 512
LEVEL_WINDOW = 2048


def create_store(
    path: str | Path,
    *,
    height: int,
    width: int,
    crs: CRS | None,
    transform: Affine,
    chunk: int,
    class_names: Sequence[str],
    class_colors: Sequence[Sequence[int]],
    attrs: dict[str, Any],
    probabilities: bool = False,
    confidence: bool = False,
) -> zarr.Group:
    """A new, empty store (every pixel 255 until written) with all geo metadata in place, and the
    overview levels that its chunks write (``pyramid``; listed in the multiscales layout)."""
    if transform.b != 0 or transform.d != 0:
        raise ValueError("rotated or sheared transforms are not supported by the Zarr grid mapping")
    group = zarr.open_group(str(path), mode="w", zarr_format=3)
    group.attrs.update({"Conventions": "CF-1.8", **attrs})
    write_grid(group, crs, transform, height, width)
    labels = group.create_array(
        LABELS, shape=(height, width), dtype="uint8", chunks=(chunk, chunk), fill_value=NODATA, dimension_names=("y", "x")
    )
    labels.attrs.update({
        **GEO_ATTRS, "nodata": NODATA, "long_name": "class label",
        "flag_values": list(range(len(class_names))), "flag_meanings": " ".join(n.replace(" ", "_") for n in class_names),
        "class_names": list(class_names), "class_colors": [list(c) for c in class_colors],
    })
    if probabilities:
        probs = group.create_array(
            PROBABILITIES, shape=(len(class_names), height, width), dtype="uint8",
            chunks=(len(class_names), chunk, chunk), fill_value=NODATA, dimension_names=("class", "y", "x"),
        )
        probs.attrs.update({
            **GEO_ATTRS, "_FillValue": NODATA, "scale_factor": 1 / PROBABILITY_SCALE,
            "long_name": "class probability", "class_names": list(class_names),
        })
    if confidence:
        band = group.create_array(
            CONFIDENCE, shape=(height, width), dtype="uint8", chunks=(chunk, chunk), fill_value=NODATA,
            dimension_names=("y", "x"),
        )
        band.attrs.update({
            **GEO_ATTRS, "_FillValue": NODATA, "scale_factor": 1 / PROBABILITY_SCALE,
            "long_name": "probability of the pixel's class (the top class)",
        })
    per_chunk = [lv for lv in pyramid_levels(height, width, (chunk, chunk)) if lv.per_chunk]
    for level in per_chunk:
        create_level(group, level, (chunk // level.factor, chunk // level.factor))
    set_layout(group, per_chunk)
    return group


def write_grid(group: zarr.Group, crs: CRS | None, transform: Affine, height: int, width: int) -> None:
    """The CF grid mapping of a group: ``spatial_ref`` (GeoTransform, and the CRS when there is one)
    and the pixel-centre coordinates ``x`` and ``y``."""
    geotransform = " ".join(str(v) for v in (transform.c, transform.a, transform.b, transform.f, transform.d, transform.e))
    spatial_ref = group.create_array("spatial_ref", shape=(), dtype="int32", fill_value=0, dimension_names=())
    spatial_ref.attrs["GeoTransform"] = geotransform
    if crs is not None:  # without one (a scan, a microscopy mosaic) the grid is in pixel coordinates
        wkt = crs.to_wkt()
        spatial_ref.attrs.update({"crs_wkt": wkt, "spatial_ref": wkt})
    spatial_ref[...] = 0

    x = transform.c + (np.arange(width) + 0.5) * transform.a
    y = transform.f + (np.arange(height) + 0.5) * transform.e
    for name, values in (("x", x), ("y", y)):
        coord = group.create_array(name, shape=values.shape, dtype="float64", chunks=(max(1, min(len(values), 1 << 16)),), dimension_names=(name,))
        coord[:] = values
        coord.attrs.update({**axis_attrs(name, crs), "axis": name.upper()})


def geozarr_attrs(crs: CRS | None, transform: Affine, height: int, width: int) -> dict[str, Any]:
    """A group's grid in the GeoZarr conventions, beside its CF grid mapping: the CRS (``proj:code``
    and ``proj:wkt2``, none in pixel coordinates) and ``spatial:`` dimensions, transform, shape, bbox."""
    left, top = transform.c, transform.f
    right, bottom = left + width * transform.a, top + height * transform.e
    attrs: dict[str, Any] = {
        "spatial:dimensions": ["y", "x"], "spatial:transform": list(tuple(transform)[:6]),
        "spatial:shape": [height, width],
        "spatial:bbox": [min(left, right), min(top, bottom), max(left, right), max(top, bottom)],
    }
    if crs is not None:
        authority = crs.to_authority()
        if authority is not None:
            attrs["proj:code"] = ":".join(authority)
        attrs["proj:wkt2"] = crs.to_wkt(version="WKT2_2019")
    return attrs


def conventions(crs: CRS | None) -> list[dict[str, str]]:
    return [*CONVENTIONS, PROJ_CONVENTION] if crs is not None else list(CONVENTIONS)


def axis_attrs(name: str, crs: CRS | None) -> dict[str, str]:
    """CF attributes of the x or y coordinate: projected, geographic, or pixel coordinates."""
    if crs is None:
        return {"long_name": f"{name} pixel coordinate", "units": "pixel"}
    if crs.is_geographic:
        return {"standard_name": {"x": "longitude", "y": "latitude"}[name], "units": "degrees"}
    return {"standard_name": f"projection_{name}_coordinate", "units": "metre"}


def open_store(path: str | Path, mode: str = "r+") -> zarr.Group:
    return zarr.open_group(str(path), mode=mode, zarr_format=3)


#: The store's group attribute that its segment run sets once every planned chunk is written.
COMPLETE = "fcnseg_complete"
#: The store's group attribute naming the run that created it (a random token, kept by a resumed
#: run): every task carries its run's token and writes only into a store that holds the same one.
RUN_TOKEN = "fcnseg_run_token"


def open_run_store(path: str | Path, token: str | None, mode: str = "r+") -> zarr.Group:
    """The store at ``path`` when it is the one this run created (its ``RUN_TOKEN`` is ``token``).

    Why: a task given a path that names another store on its worker (a relative path resolved in
    another folder, a mount of another output) must write nothing there. ``token`` None: a store
    made without one (by a test or an earlier version), which must hold none either.
    """
    group = open_store(path, mode=mode)
    found = group.attrs.get(RUN_TOKEN)
    if found != token:
        raise InputError(f"{path}: not the label store this run created (its run token {found}, this run's {token}); "
                         "nothing was written to it. Does every worker see the output folder at this path?")
    return group


def label_chunk_file(store_path: str | Path, group: zarr.Group, row: int, col: int) -> Path:
    """The file of chunk (row, col) of a local store's ``labels``: absent while the chunk was never
    written (zarr leaves an all-nodata chunk unwritten)."""
    return Path(store_path) / LABELS / group[LABELS].metadata.encode_chunk_key((row, col))


def require_complete(group: zarr.Group, path: str | Path, *, allow_partial: bool = False) -> None:
    """Refuse a store whose run was interrupted (products and areas of it would look complete).
    A store without the attribute (written by another tool) counts as complete."""
    if group.attrs.get(COMPLETE, True) is False and not allow_partial:
        raise InputError(f"{path}: the label store is incomplete (its run was interrupted); rerun the segment "
                         "command to finish it, or pass --partial to read it as it is")


def has_crs(path: str | Path) -> bool:
    """Whether a label store (or a raster such as labels.tif) is georeferenced: the segment stage
    asks before writing outputs that need a place on the Earth (the STAC item)."""
    if Path(path).is_dir() or str(path).rstrip("/").endswith(".zarr"):
        return store_geometry(open_store(path, mode="r"))[0] is not None
    with open_raster(path) as src:  # opens a raster without CRS without a warning
        return src.crs is not None


def store_geometry(group: zarr.Group) -> tuple[CRS | None, Affine]:
    """CRS (None: pixel coordinates) and transform from the store's CF grid mapping."""
    attrs = group["spatial_ref"].attrs
    c, a, b, f, d, e = (float(v) for v in attrs["GeoTransform"].split())
    return (CRS.from_wkt(attrs["crs_wkt"]) if "crs_wkt" in attrs else None), Affine(a, b, c, d, e, f)


def write_chunk(group: zarr.Group, window: Window, labels: np.ndarray, probabilities: np.ndarray | None = None,
                confidence: np.ndarray | None = None) -> None:
    """Write one core window (a whole chunk, or the clipped chunk at the raster's edge), and its
    blocks of the overview levels written per chunk (a store without a pyramid has none). The
    labels last: a chunk whose labels are there has its other bands too."""
    rows = slice(int(window.row_off), int(window.row_off + window.height))
    cols = slice(int(window.col_off), int(window.col_off + window.width))
    if probabilities is not None and PROBABILITIES in group:
        group[PROBABILITIES][:, rows, cols] = probabilities
    if confidence is not None and CONFIDENCE in group:
        group[CONFIDENCE][rows, cols] = confidence
    array = group[LABELS]
    array[rows, cols] = labels
    if MULTISCALES in group.attrs:
        write_chunk_levels(group, array, window, labels)


def write_chunk_levels(group: zarr.Group, array: zarr.Array, window: Window, labels: np.ndarray) -> None:
    """The per-chunk levels' pixels of one chunk: each level chunk maps to this one chunk only."""
    levels = [lv for lv in pyramid_levels(*array.shape, array.chunks) if lv.per_chunk]
    if not levels:
        return
    _check_block_aligned(array.shape, window, levels[-1].factor)
    modes = block_modes(labels, [lv.factor for lv in levels], len(store_classes(array.attrs).names))
    for level in levels:
        r0, c0 = int(window.row_off) // level.factor, int(window.col_off) // level.factor
        block = modes[level.factor]
        group[level_path(level)][r0 : r0 + block.shape[0], c0 : c0 + block.shape[1]] = block


def _check_block_aligned(shape: tuple[int, ...], window: Window, factor: int) -> None:
    """A window's blocks are whole unless cut by the raster's edge (else a level pixel would miss pixels)."""
    r0, c0, h, w = int(window.row_off), int(window.col_off), int(window.height), int(window.width)
    if r0 % factor or c0 % factor or (h % factor and r0 + h != shape[0]) or (w % factor and c0 + w != shape[1]):
        raise ValueError(f"window {window} is not on the store's chunk grid: its overview blocks would be cut")


def create_level(group: zarr.Group, level: Level, chunks: tuple[int, int]) -> zarr.Array:
    """An empty overview level (255 until written): a child group with its own grid (GeoTransform
    with f x the pixel size, x/y, CRS), so ``xr.open_zarr(store, group=name)`` places it."""
    array = group[LABELS]
    crs, transform = store_geometry(group)
    height, width = level_shape(*array.shape, level.factor)
    child = group.create_group(level.name, overwrite=True)
    child.attrs.update({"Conventions": "CF-1.8", "overview_factor": level.factor, "resampling_method": MODE,
                        "zarr_conventions": conventions(crs)[1:],  # its grid, not a pyramid of its own
                        **geozarr_attrs(crs, transform @ Affine.scale(level.factor), height, width)})
    write_grid(child, crs, transform @ Affine.scale(level.factor), height, width)
    labels = child.create_array(LABELS, shape=(height, width), dtype="uint8", fill_value=NODATA,
                                chunks=(min(chunks[0], height), min(chunks[1], width)), dimension_names=("y", "x"))
    labels.attrs.update({**dict(array.attrs), "long_name": f"class label, mode of {level.factor} x {level.factor} pixels"})
    return labels


def level_path(level: Level) -> str:
    return f"{level.name}/{LABELS}"


def set_layout(group: zarr.Group, levels: list[Level]) -> None:
    """List full resolution and ``levels`` in the group's multiscales layout (GeoZarr's conventions)."""
    array = group[LABELS]
    crs, transform = store_geometry(group)
    group.attrs.update({
        "zarr_conventions": conventions(crs), **geozarr_attrs(crs, transform, *array.shape),
        MULTISCALES: {"layout": multiscales_layout(levels, array.shape, tuple(transform)[:6], LABELS),
                      "resampling_method": MODE},
    })


def store_levels(group: zarr.Group) -> list[Level] | None:
    """The store's overview levels, finest first, when it has all of them; None for a store from
    before pyramids (or one whose coarse levels ``finish_pyramid`` has not made yet)."""
    layout = group.attrs.get(MULTISCALES, {}).get("layout")
    if not layout:
        return None
    array = group[LABELS]
    levels = pyramid_levels(*array.shape, array.chunks)
    listed = {entry.get("asset") for entry in layout}
    return levels if all(level_path(lv) in listed for lv in levels) else None


def finish_pyramid(store: zarr.Group | str | Path) -> None:
    """Make the levels too coarse to be written per chunk and list every level in the layout.

    Call it once every chunk is written (before consolidating the metadata); running it again
    gives the same store. They are made window by window from the coarsest per-chunk level (full
    resolution when there is none): each pixel is the mode of that level's modes, and memory holds
    one window of it. A store from before pyramids is left as it is.
    """
    group = store if isinstance(store, zarr.Group) else open_store(store)
    if MULTISCALES not in group.attrs:
        return
    array = group[LABELS]
    levels = pyramid_levels(*array.shape, array.chunks)
    later = [lv for lv in levels if not lv.per_chunk]
    if later:
        source = source_level(levels)
        src = array if source.factor == 1 else group[level_path(source)]
        targets = {lv.factor // source.factor: create_level(group, lv, (LEVEL_CHUNK, LEVEL_CHUNK)) for lv in later}
        _fill_levels(src, targets, len(store_classes(array.attrs).names))
    set_layout(group, levels)


def _fill_levels(source: zarr.Array, targets: dict[int, zarr.Array], num_classes: int) -> None:
    """Each target (by its factor relative to ``source``) as the modes of ``source``'s blocks,
    window by window (aligned to every target's blocks)."""
    side = max(LEVEL_WINDOW, max(targets))
    height, width = source.shape
    for r0 in range(0, height, side):
        for c0 in range(0, width, side):
            modes = block_modes(source[r0 : r0 + side, c0 : c0 + side], list(targets), num_classes)
            for ratio, target in targets.items():
                block = modes[ratio]
                rr, cc = r0 // ratio, c0 // ratio
                target[rr : rr + block.shape[0], cc : cc + block.shape[1]] = block


def quantize_confidence(top: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """(h, w) top-class probabilities to uint8 as ``quantize_probabilities`` quantises each class
    (255 where not valid): rounding is monotone, so this is the largest of the pixel's quantised
    probabilities, the value probabilities.tif holds for its label."""
    return quantize_probabilities(top[None], valid)[0]


def quantize_probabilities(scores: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """(classes, h, w) float probabilities to uint8 (255 where not valid)."""
    out = np.rint(np.clip(scores, 0, 1) * PROBABILITY_SCALE).astype(np.uint8)
    out[:, ~valid] = NODATA
    return out
