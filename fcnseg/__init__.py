"""fcnseg: segment arbitrarily large geospatial rasters with an FCN-8s, tile by tile, seamlessly.

>>> import fcnseg
>>> report = fcnseg.segment("scene.tif", "out")          # the demo model; labels.zarr, labels.tif, polygons ...
>>> labels = fcnseg.open_labels("out")                    # an xarray.DataArray with CRS, transform, classes
>>> fcnseg.predict_array(fcnseg.load_model("demo"), pixels)   # a numpy array or DataArray in memory

``segment``, ``load_model``, ``predict_array``, ``open_labels``, ``query``, ``train``, ``evaluate``
and ``Model`` live in ``fcnseg.api``; ``FcnsegError`` (every expected failure, one line naming the
file or option) in ``fcnseg.errors``. See docs/python-api.md.

This module is the foundation layer (docs/design.md): it imports nothing of fcnseg, so the names
load on first use (PEP 562), and ``import fcnseg`` stays free of torch, Dask, rasterio and Prefect.
"""

import importlib as _importlib

__version__ = "0.1.0"

#: Each public name and the module that defines it, loaded on first access.
_LAZY = {
    "segment": "api", "load_model": "api", "predict_array": "api", "open_labels": "api",
    "query": "api", "train": "api", "evaluate": "api", "Model": "api", "FcnsegError": "errors",
}

__all__ = [*_LAZY, "__version__"]


def __getattr__(name: str) -> object:
    """``fcnseg.segment`` and the other names of ``__all__``: imported from their module on first use."""
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(_importlib.import_module(f"{__name__}.{module}"), name)
    globals()[name] = value  # later lookups are plain attribute reads
    return value


def __dir__() -> list[str]:
    """The public names, the lazy ones included, for tab completion and help()."""
    return sorted(__all__)
