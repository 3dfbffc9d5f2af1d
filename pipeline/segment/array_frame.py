"""The library face's arrays in and out of ``array.predict_pixels``: a numpy array or an xarray
DataArray becomes (bands, rows, cols) pixels and its nodata, and the labels and probabilities go
back onto the input's grid (coordinates, attributes, CRS and transform) when it was a DataArray.
xarray and rioxarray are imported only for a DataArray: a numpy caller never loads them."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import numpy as np
    import xarray as xr

    from fcnseg.models.card import ModelCard


def bands_first(array: Any) -> tuple[Any, Any]:
    """(the pixels as (bands, rows, cols), the DataArray they came from or None). A 2-D array is
    one band; a DataArray is ordered band, y, x by its dimension names when it has them and stays
    a DataArray, so a lazily opened or dask-backed one is read a tile's window at a time."""
    import numpy as np

    if is_data_array(array):
        if array.ndim == 3 and {"y", "x"} <= set(array.dims):
            array = array.transpose(next(d for d in array.dims if d not in ("y", "x")), "y", "x")
        return (array.expand_dims("band") if array.ndim == 2 else array), array
    if not hasattr(array, "shape") or not hasattr(array, "__getitem__"):
        array = np.asarray(array)
    return (array[None] if array.ndim == 2 else array), None


def is_data_array(array: Any) -> bool:
    return type(array).__name__ == "DataArray" and hasattr(array, "dims")


def array_nodata(array: Any) -> float | None:
    """A DataArray's nodata: rioxarray's ``.rio.nodata`` (it reads ``_FillValue``), else ``_FillValue``."""
    if not is_data_array(array):
        return None
    try:
        import rioxarray  # noqa: F401  (registers .rio)

        found = array.rio.nodata
    except Exception:  # an array rioxarray cannot read a grid from
        found = None
    if found is None:
        found = array.attrs.get("_FillValue", array.encoding.get("_FillValue"))
    return None if found is None else float(found)


def on_input_grid(frame: xr.DataArray, card: ModelCard, labels: np.ndarray,
                    probs: np.ndarray | None) -> tuple[xr.DataArray, xr.DataArray | None]:
    """Labels (y, x) and probabilities (class, y, x) on the input's grid: its y/x coordinates (and
    any coordinate on them, such as ``spatial_ref``), its attributes, its CRS and transform."""
    import rioxarray  # noqa: F401
    import xarray as xr

    from fcnseg.pipeline.store import NODATA, PROBABILITY_SCALE

    y, x = frame.dims[-2:]
    coords = {name: c for name, c in frame.coords.items() if set(c.dims) <= {y, x}}
    classes = {"class_names": list(card.class_names), "class_colors": [list(c.color) for c in card.classes]}
    attrs = {k: v for k, v in frame.attrs.items() if k not in ("_FillValue", "scale_factor", "add_offset",
                                                                  "long_name", "units", "nodata")}
    out = xr.DataArray(labels, dims=(y, x), coords=coords, attrs={**attrs, "long_name": "class label", **classes})
    out = with_grid(out, frame).rio.write_nodata(NODATA, encoded=False)
    if probs is None:
        return out, None
    p = xr.DataArray(probs, dims=("class", y, x), coords={**coords, "class": list(card.class_names)},
                     attrs={**attrs, "long_name": "class probability", "scale_factor": 1 / PROBABILITY_SCALE,
                            **classes})
    return out, with_grid(p, frame).rio.write_nodata(NODATA, encoded=False)


def with_grid(out: xr.DataArray, frame: xr.DataArray) -> xr.DataArray:
    """``out`` with ``frame``'s CRS and transform, where rioxarray finds them."""
    try:
        crs, transform = frame.rio.crs, frame.rio.transform()
    except Exception:  # no spatial dimensions rioxarray knows
        return out
    out = out.rio.write_transform(transform)
    return out.rio.write_crs(crs) if crs is not None else out
