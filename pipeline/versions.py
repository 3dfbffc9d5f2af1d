"""The software a run used, by name and version: recorded in run.json and the STAC item, so two
outputs that differ can be told apart by what made them."""

from __future__ import annotations

import platform
from functools import cache
from importlib.metadata import PackageNotFoundError, version

#: The packages whose versions shape an output (the model's arithmetic, GDAL's writers, the store).
PACKAGES = ("fcnseg", "torch", "numpy", "rasterio", "zarr", "dask", "distributed", "shapely", "pyogrio", "pyarrow")


@cache
def software_versions() -> dict[str, str]:
    """``{"fcnseg": "0.1.0", "python": "3.11.2", "gdal": "3.10.3", "torch": ...}`` for this process."""
    import rasterio

    found = {"python": platform.python_version(), "gdal": rasterio.__gdal_version__}
    for name in PACKAGES:
        try:
            found[name] = version(name)
        except PackageNotFoundError:
            continue
    return dict(sorted(found.items()))
