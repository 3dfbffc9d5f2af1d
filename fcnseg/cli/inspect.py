"""``fcnseg query`` and ``verify``: read a finished output (what is where; is it as its run wrote it)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Optional

import typer

from fcnseg.cli.base import app
from fcnseg.cli.errors import clear_errors, fail
from fcnseg.tables import print_query


@app.command()
def query(
    raster: Annotated[str, typer.Argument(help="An output folder (its labels.zarr), labels.tif, labels.zarr, or any single-band class raster with nodata.")],
    bbox: Annotated[Optional[tuple[float, float, float, float]], typer.Option(help="Box MINX MINY MAXX MAXY (in --bbox-crs).")] = None,
    bbox_crs: Annotated[Optional[str], typer.Option("--bbox-crs", "--crs", help="CRS of --bbox or --point, e.g. EPSG:4326 (default: the raster's).")] = None,
    aoi: Annotated[Optional[str], typer.Option(help="Area of interest: a vector file (GeoPackage, GeoJSON, Shapefile...) in any CRS.")] = None,
    point: Annotated[Optional[tuple[float, float]], typer.Option(help="The class at X Y (in --bbox-crs).")] = None,
    partial: Annotated[bool, typer.Option(help="Read a label store whose run was interrupted, as it is.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object only.")] = False,
    by: Annotated[Optional[str], typer.Option(help="With --aoi: one answer per feature, identified by this field (without it: the union of the features).")] = None,
    output: Annotated[Optional[Path], typer.Option(help="With --by: write the answers to this file instead of printing them: .csv or .parquet (GeoParquet; one row per feature and class) or .gpkg (GeoPackage; one row per feature, a column per class), with each feature's fields and geometry.")] = None,
    overwrite: Annotated[bool, typer.Option(help="Replace an existing --output file.")] = False,
) -> None:
    """How much of each class is in a box, an area of interest (pixel centres inside), each of its features (--by), at a point, or everywhere."""
    from fcnseg.pipeline.analysis.query import query_classes
    from fcnseg.pipeline.output.layout import labels_in

    raster = labels_in(raster)
    with clear_errors():
        if by is not None and aoi is None:
            raise ValueError("--by applies to --aoi: give the area-of-interest file too")
        if output is not None and by is None:
            raise ValueError("--output writes the per-feature rows: give --aoi FILE --by FIELD")
        given = [name for name, value in (("--bbox", bbox), ("--aoi", aoi), ("--point", point)) if value is not None]
        if len(given) > 1:
            raise ValueError(f"{' and '.join(given)} are mutually exclusive: choose one selection")
        if bbox_crs is not None and bbox is None and point is None:
            raise ValueError("--bbox-crs (--crs) applies to --bbox or --point; give one of them")
        if by is not None:  # per feature only: the union is not counted as well
            rows = _feature_rows(raster, aoi, by, output, overwrite, partial)
        else:
            result = query_classes(raster, bbox=bbox, bbox_crs=bbox_crs, aoi=aoi, point=point, point_crs=bbox_crs,
                                   allow_partial=partial)
    if by is not None and output is not None:  # the table is in the file: say what it holds
        typer.echo(json.dumps(rows.to_dict()) if as_json else rows.summary())
        return
    if by is not None:
        _print_feature_rows(rows, as_json)
        return
    if as_json:
        typer.echo(json.dumps(result.to_dict()))
        return
    print_query(result)


def _feature_rows(raster: str, aoi: str, by: str, output: Path | None, overwrite: bool, partial: bool):
    """The per-feature rows, or (--output) what the file written holds: its rows stream to the file."""
    if output is not None:
        from fcnseg.pipeline.analysis.feature_table import write_feature_table

        return write_feature_table(raster, aoi, by, output, overwrite=overwrite, allow_partial=partial)
    from fcnseg.pipeline.analysis.features import query_features

    return query_features(raster, aoi, by, allow_partial=partial)


def _print_feature_rows(rows: list, as_json: bool) -> None:
    """``--json``: one object with the rows; else the table."""
    if as_json:
        typer.echo(json.dumps({"features": [row.to_json() for row in rows]}))
        return
    from fcnseg.tables import print_feature_query

    print_feature_query(rows)


@app.command()
def verify(
    out: Annotated[Path, typer.Argument(help="A finished segment output folder.")],
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object (the report) only.")] = False,
) -> None:
    """Re-read a finished output against its records: every chunk's labels against the ledger's sha256, every file against item.json's size and sha256. Exit 1 when anything differs."""
    from fcnseg.pipeline.output.verify import verify_output

    with clear_errors():
        report = verify_output(out)
    if as_json:
        typer.echo(json.dumps(report.to_dict()))
    else:
        for problem in report.problems:
            typer.echo(problem)
        if report.ok:
            typer.echo(report.summary())
    if not report.ok:
        fail(f"{out}: {len(report.problems)} problem(s) found; the output is not as its run wrote it")
