"""``fcnseg query --aoi FILE --by FIELD --output TABLE``: the per-feature rows as a file.

One row per feature and class with the feature's attributes, its geometry (in the AOI file's own
CRS, as the analyst gave it), then class_id, class_name, pixels, area_m2, share, valid_pixels and
nodata_pixels. ``.csv`` (geometry as WKT) or ``.parquet`` (GeoParquet). Written through the one
atomic write: a failed or killed query leaves no half table that looks complete, and an existing
file is replaced only with ``--overwrite`` (the inputs never).
"""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path
from typing import Any

from fcnseg.pipeline.analysis.features import FeatureClassArea, iter_feature_areas
from fcnseg.pipeline.io import InputError, atomic_write
from fcnseg.pipeline.overwrite import check_target

#: Suffix -> format of ``--output``.
FORMATS = {".csv": "csv", ".parquet": "parquet", ".geoparquet": "parquet"}
#: The class columns, after the feature's own (a feature field of the same name is prefixed "aoi_").
CLASS_COLUMNS = ("class_id", "class_name", "pixels", "area_m2", "share", "valid_pixels", "nodata_pixels")


def write_feature_table(raster: str | Path, aoi: str | Path, by: str, output: str | Path, *,
                        overwrite: bool = False, allow_partial: bool = False) -> list[FeatureClassArea]:
    """Write the per-feature table to ``output`` and return its rows."""
    output = Path(output)
    kind = FORMATS.get(output.suffix.lower())
    if kind is None:
        raise InputError(f"{output}: --output must end in .csv or .parquet (GeoParquet)")
    check_target(output, option="--output", kind="a table", is_own=lambda _: False,
                 inputs={"RASTER": raster, "--aoi": aoi}, overwrite=overwrite)
    import geopandas
    import pyogrio

    crs = pyogrio.read_info(aoi)["crs"]
    records: list[dict[str, Any]] = []
    rows: list[FeatureClassArea] = []
    for attributes, feature_rows in iter_feature_areas(raster, aoi, by, allow_partial=allow_partial):
        base = {(f"aoi_{k}" if k in CLASS_COLUMNS else k): v for k, v in attributes.items()}
        for row in feature_rows:
            values = asdict(row)
            records.append({**base, **{name: values[name] for name in CLASS_COLUMNS}})
        rows.extend(feature_rows)
    frame = geopandas.GeoDataFrame(records, geometry="geometry", crs=crs) if records else \
        geopandas.GeoDataFrame({name: [] for name in CLASS_COLUMNS}, geometry=[], crs=crs)
    with atomic_write(output) as tmp:
        if kind == "csv":
            frame.to_wkt().to_csv(tmp, index=False)
        else:
            frame.to_parquet(tmp, index=False)
    return rows
