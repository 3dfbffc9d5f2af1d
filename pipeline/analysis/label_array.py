"""A segment output's labels as a labelled ``xarray.DataArray``: the analyst's one call.

Lazily backed by the store (dask over zarr chunks): opening reads metadata only, whatever the
scene's size. The georeferencing is the store's own grid mapping (``store.store_geometry``), put on
the array with rioxarray, so ``.rio.crs`` and ``.rio.transform()`` equal labels.tif's; a store in
pixel coordinates (an input without CRS) gets its transform and no CRS. The class table is the
one ``classes.store_classes`` reads everywhere else.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import rioxarray  # noqa: F401  (registers the .rio accessor)
import xarray as xr

from fcnseg.errors import InputError
from fcnseg.pipeline.classes import store_classes
from fcnseg.pipeline.store import LABELS, NODATA, open_store, require_complete, store_geometry


def open_label_array(store: str | Path, *, allow_partial: bool = False,
                     folder: str | Path | None = None) -> xr.DataArray:
    """``labels`` (dims y, x; uint8, 255 = nodata as ``_FillValue`` and ``.rio.nodata``) of the label
    store at ``store`` with its CRS and transform and its class names and colours in ``attrs``; not
    loaded. The store's path, not an output folder's: analysis knows no folder's names (the caller
    joins them, ``output.layout.store_of``); ``folder``: the output folder asked for, named in the
    error for a missing store.

    Raises InputError naming the path for a missing or foreign store, and for an incomplete one
    (its run was interrupted) unless ``allow_partial``.
    """
    path = str(store)
    if "://" not in path and not Path(path).is_dir():
        asked = store if folder is None else folder
        raise InputError(f"{path}: no label store there (is {asked} a segment output folder?)")
    try:
        group = open_store(path, mode="r")
    except Exception as exc:  # zarr's GroupNotFoundError, a damaged zarr.json
        raise InputError(f"{path}: cannot open as a Zarr label store ({' '.join(str(exc).split())})") from None
    if LABELS not in group or "spatial_ref" not in group:
        raise InputError(f"{path}: not an fcnseg label store (no '{LABELS}' array or no 'spatial_ref')")
    require_complete(group, path, allow_partial=allow_partial)
    crs, transform = store_geometry(group)
    classes = store_classes(dict(group[LABELS].attrs))
    with warnings.catch_warnings():  # consolidated metadata: not in the v3 spec yet (read when there)
        warnings.simplefilter("ignore", category=UserWarning)
        warnings.simplefilter("ignore", category=RuntimeWarning)
        dataset = xr.open_zarr(path, mask_and_scale=False, decode_coords="all", chunks={})
    labels = dataset[LABELS]
    labels.attrs.pop("nodata", None)  # said once, as _FillValue (CF) and .rio.nodata
    labels.attrs.update({"class_names": classes.names, "class_colors": [list(c) for c in classes.colors or []]})
    labels = labels.rio.write_transform(transform)
    if crs is not None:
        labels = labels.rio.write_crs(crs)
    return labels.rio.write_nodata(NODATA, encoded=False)
