"""``fcnseg segment``: a raster of any size into an output folder, on Dask. Its options are
``SegmentOptions``' fields, with their descriptions as help (``pipeline.option_texts``) and their defaults."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Optional

import typer

from fcnseg.cli.base import app, csv_ints
from fcnseg.cli.errors import clear_errors
from fcnseg.models import DEMO_MODEL
from fcnseg.pipeline.option_texts import RUN_HELP
from fcnseg.pipeline.option_texts import SEGMENT_HELP as HELP
from fcnseg.tables import console, print_report


@app.command()
def segment(
    input: Annotated[str, typer.Argument(help="Raster to segment: any path or URI rasterio opens.")],
    out: Annotated[str, typer.Option(help="Output folder (labels.zarr, run.json), or an object-store URI (s3://bucket/prefix: staged locally, uploaded when complete).")],
    model: Annotated[Optional[Path], typer.Option(help=RUN_HELP["model"])] = None,
    tile: Annotated[Optional[int], typer.Option(help=HELP["tile"])] = None,
    halo: Annotated[Optional[int], typer.Option(help=HELP["halo"])] = None,
    stitch: Annotated[str, typer.Option(help=HELP["stitch"])] = "crop",
    batch_size: Annotated[Optional[int], typer.Option(help=HELP["batch_size"])] = None,
    device: Annotated[str, typer.Option(help=HELP["device"])] = "auto",
    workers: Annotated[Optional[int], typer.Option(help=RUN_HELP["workers"])] = None,
    scheduler: Annotated[Optional[str], typer.Option(help=RUN_HELP["scheduler"])] = None,
    cluster_spec: Annotated[Optional[str], typer.Option(help=RUN_HELP["cluster_spec"])] = None,
    probabilities: Annotated[bool, typer.Option(help=HELP["probabilities"])] = False,
    confidence: Annotated[bool, typer.Option(help=HELP["confidence"])] = False,
    tta: Annotated[str, typer.Option(help=HELP["tta"])] = "none",
    normalize: Annotated[str, typer.Option(help=HELP["normalize"])] = "card",
    bands: Annotated[Optional[str], typer.Option(help=HELP["bands"])] = None,
    overwrite: Annotated[bool, typer.Option(help=RUN_HELP["overwrite"])] = False,
    cog: Annotated[bool, typer.Option(help=HELP["cog"])] = True,
    polygons: Annotated[bool, typer.Option(help=HELP["polygons"])] = True,
    simplify: Annotated[float, typer.Option(help=HELP["simplify"])] = 0.0,
    min_area: Annotated[float, typer.Option(help=HELP["min_area"])] = 0.0,
    polygon_cell: Annotated[Optional[int], typer.Option(help=HELP["polygon_cell"])] = None,
    quicklook: Annotated[bool, typer.Option(help=HELP["quicklook"])] = True,
    stac: Annotated[bool, typer.Option(help=HELP["stac"])] = True,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object (the run's report) only.")] = False,
) -> None:
    """Segment a raster of any size by tiles on Dask into OUT: labels.zarr, labels.tif, polygons, quicklook, item.json (resumable)."""
    from fcnseg.pipeline.segment_options import SegmentOptions  # light: a bad option fails before the run's imports

    with clear_errors(out=out):
        options = SegmentOptions(
            tile=tile, halo=halo, stitch=stitch, batch_size=batch_size, device=device,
            probabilities=probabilities, tta=tta, bands=csv_ints(bands), cog=cog, polygons=polygons, simplify=simplify,
            min_area=min_area, polygon_cell=polygon_cell, quicklook=quicklook, stac=stac, confidence=confidence,
            normalize=normalize,
        )
        from fcnseg.pipeline.orchestrator import segment as run_segment

        report = run_segment(input, model or DEMO_MODEL, out, options, scheduler=scheduler, cluster_spec=cluster_spec,
                             workers=workers, overwrite=overwrite, progress=console.is_terminal and not as_json)
    if as_json:
        typer.echo(json.dumps(report.to_dict()))
    else:
        print_report(report)
