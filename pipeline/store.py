"""The Zarr v3 label store: ``labels`` (uint8, 255 = nodata) and optional class probabilities.

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

from fcnseg.pipeline.io import InputError, open_raster

LABELS = "labels"
PROBABILITIES = "probabilities"
NODATA = 255
#: Probabilities are stored as uint8: value * PROBABILITY_SCALE, 255 = nodata (CF scale_factor decodes them).
PROBABILITY_SCALE = 254


#: What ties a data array to the grid mapping (CF), for xarray and rioxarray.
GEO_ATTRS = {"grid_mapping": "spatial_ref", "coordinates": "spatial_ref"}


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
) -> zarr.Group:
    """A new, empty store (every pixel 255 until written) with all geo metadata in place."""
    if transform.b != 0 or transform.d != 0:
        raise ValueError("rotated or sheared transforms are not supported by the Zarr grid mapping")
    group = zarr.open_group(str(path), mode="w", zarr_format=3)
    group.attrs.update({"Conventions": "CF-1.8", **attrs})

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
    return group


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


def write_chunk(group: zarr.Group, window: Window, labels: np.ndarray, probabilities: np.ndarray | None = None) -> None:
    """Write one core window (a whole chunk, or the clipped chunk at the raster's edge)."""
    rows = slice(int(window.row_off), int(window.row_off + window.height))
    cols = slice(int(window.col_off), int(window.col_off + window.width))
    if probabilities is not None and PROBABILITIES in group:
        group[PROBABILITIES][:, rows, cols] = probabilities
    group[LABELS][rows, cols] = labels


def quantize_probabilities(scores: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """(classes, h, w) float probabilities to uint8 (255 where not valid)."""
    out = np.rint(np.clip(scores, 0, 1) * PROBABILITY_SCALE).astype(np.uint8)
    out[:, ~valid] = NODATA
    return out
