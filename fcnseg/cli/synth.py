"""``fcnseg synth``: a synthetic scene to try the pipeline on without data of one's own."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from fcnseg.cli.base import app, csv_list
from fcnseg.cli.errors import clear_errors


@app.command()
def synth(
    out_dir: Annotated[Path, typer.Argument(help="Folder for image.tif and labels.tif.")],
    size: Annotated[int, typer.Option(help="Side of the square scene in pixels.")] = 1024,
    seed: Annotated[int, typer.Option(help="Scene seed: same seed, same scene.")] = 0,
    collar: Annotated[int, typer.Option(help="Nodata collar around a slanted footprint, in pixels.")] = 0,
    rotate: Annotated[float, typer.Option(metavar="DEG", help="Valid data is a square turned clockwise by DEG (0 <= DEG < 90; 0 = off) with its corners on the raster's edges, its edges stair-stepped on a 4 px grid, like a scene in its UTM frame. Not with --collar.")] = 0.0,
    bands: Annotated[int, typer.Option(help="Image bands: 4 blue,green,red,nir; 3 red,green,blue; 2 red,nir; 1 pan (mean of blue, green, red).")] = 4,
    dtype: Annotated[str, typer.Option(help="uint16 (reflectance*10000, nodata 0), int16 (reflectance*10000-1000, some valid values negative, nodata -9999) or float32 (reflectance, nodata NaN).")] = "uint16",
    crs: Annotated[str, typer.Option(help="EPSG:32633 (1 m pixels) or EPSG:4326 (1e-5 degree pixels, the same place).")] = "EPSG:32633",
    layout: Annotated[str, typer.Option(help="tiled (256 px DEFLATE tiles) or stripped (untiled, uncompressed, 8-row strips).")] = "tiled",
    gain: Annotated[str, typer.Option(help="Sensor gain per band: one number for all bands, or four for blue,green,red,nir (before --bands picks the delivered ones).")] = "1",
    offset: Annotated[str, typer.Option(help="Sensor offset per band in reflectance (-0.5..0.5): one number or four (blue,green,red,nir).")] = "0",
    haze: Annotated[float, typer.Option(help="Haze: added reflectance at its thickest in the blue band (0..0.5), smooth over the scene (20-100 % of it), thinner towards the NIR.")] = 0.0,
    season: Annotated[float, typer.Option(help="Seasonal shift of the vegetation classes, -1..1: + lusher (NIR up, red down, up to 25 %), - senescent (the reverse).")] = 0.0,
    overwrite: Annotated[bool, typer.Option(help="Replace an image.tif or labels.tif in OUT_DIR that synth did not write (or a read-only one). synth's own earlier scene is replaced without it; other files there are never touched.")] = False,
) -> None:
    """Write a synthetic multi-band land-cover scene and its label raster."""
    from fcnseg.pipeline.synth import Radiometry, write_scene

    with clear_errors():
        if size < 32:
            raise ValueError(f"--size must be at least 32, got {size}")
        radiometry = Radiometry(gain=csv_floats(gain, "--gain"), offset=csv_floats(offset, "--offset"), haze=haze,
                                season=season)
        image, labels = write_scene(out_dir, size, seed, collar=collar, rotate=rotate, bands=bands, dtype=dtype,
                                    crs=crs, layout=layout, overwrite=overwrite, radiometry=radiometry)
    typer.echo(f"{image}\n{labels}")


def csv_floats(value: str, option: str) -> tuple[float, ...]:
    """Comma-separated numbers of a per-band option; one line naming it otherwise."""
    try:
        return tuple(float(v) for v in csv_list(value) or [])
    except ValueError:
        raise ValueError(f"{option} takes one number or four, comma separated (blue,green,red,nir), got {value!r}") from None
