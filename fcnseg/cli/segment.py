"""``fcnseg segment``: a raster of any size into an output folder, on Dask."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Optional

import typer

from fcnseg.cli.base import BATCH_HELP, TILE_HELP, app, csv_ints
from fcnseg.cli.errors import clear_errors
from fcnseg.models import DEMO_MODEL
from fcnseg.tables import console, print_report


@app.command()
def segment(
    input: Annotated[str, typer.Argument(help="Raster to segment: any path or URI rasterio opens.")],
    out: Annotated[str, typer.Option(help="Output folder (labels.zarr, run.json), or an object-store URI (s3://bucket/prefix: staged locally, uploaded when complete).")],
    model: Annotated[Optional[Path], typer.Option(help="Checkpoint (default: the shipped demo model).")] = None,
    tile: Annotated[Optional[int], typer.Option(help=TILE_HELP)] = None,
    halo: Annotated[Optional[int], typer.Option(help="Context around each tile (multiple of 32); default from the model.")] = None,
    stitch: Annotated[str, typer.Option(help="crop (keep each tile's core) or blend (cross-fade across borders).")] = "crop",
    batch_size: Annotated[Optional[int], typer.Option(help=BATCH_HELP)] = None,
    device: Annotated[str, typer.Option(help="auto, cpu or cuda.")] = "auto",
    workers: Annotated[Optional[int], typer.Option(help="Local Dask workers (default: from the machine).")] = None,
    scheduler: Annotated[Optional[str], typer.Option(help="Existing Dask scheduler, tcp://HOST:PORT.")] = None,
    cluster_spec: Annotated[Optional[str], typer.Option(help="Dask cluster to start: deploy/clusters/NAME.yaml or a path.")] = None,
    probabilities: Annotated[bool, typer.Option(help="Also store class probabilities.")] = False,
    bands: Annotated[Optional[str], typer.Option(help="1-based bands to feed the model, comma separated.")] = None,
    overwrite: Annotated[bool, typer.Option(help="Replace a run with another model or parameters.")] = False,
    cog: Annotated[bool, typer.Option(help="Write labels.tif (and probabilities.tif) as Cloud-Optimized GeoTIFF.")] = True,
    polygons: Annotated[bool, typer.Option(help="Write polygons.parquet and polygons.gpkg (regions merged across chunks).")] = True,
    simplify: Annotated[float, typer.Option(help="Simplify polygons (topology-preserving) by this tolerance, CRS units; 0 = exact pixel edges.")] = 0.0,
    min_area: Annotated[float, typer.Option(help="Leave out polygons smaller than this, m².")] = 0.0,
    polygon_cell: Annotated[Optional[int], typer.Option(help="Side in pixels of the cells polygonised apart: a region crossing cells is one polygon per cell, all with one region_id (default 2048).")] = None,
    quicklook: Annotated[bool, typer.Option(help="Write quicklook.png (image, labels, legend).")] = True,
    stac: Annotated[bool, typer.Option(help="Write item.json (a STAC Item of the outputs).")] = True,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object (the run's report) only.")] = False,
) -> None:
    """Segment a raster of any size by tiles on Dask into OUT: labels.zarr, labels.tif, polygons, quicklook, item.json (resumable)."""
    from fcnseg.pipeline.segment import SegmentOptions
    from fcnseg.pipeline.segment import segment as run_segment

    with clear_errors(out=out):
        options = SegmentOptions(
            tile=tile, halo=halo, stitch=stitch, batch_size=batch_size, device=device,
            probabilities=probabilities, bands=tuple(csv_ints(bands)) if bands else None, cog=cog,
            polygons=polygons, simplify=simplify, min_area=min_area,
            polygon_cell=SegmentOptions.polygon_cell if polygon_cell is None else polygon_cell, quicklook=quicklook, stac=stac,
        )
        report = run_segment(input, model or DEMO_MODEL, out, options, scheduler=scheduler, cluster_spec=cluster_spec,
                             workers=workers, overwrite=overwrite, progress=console.is_terminal and not as_json)
    if as_json:
        typer.echo(json.dumps(report.to_dict()))
    else:
        print_report(report)
