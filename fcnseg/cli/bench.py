"""``fcnseg bench-model`` and ``bench-pipeline``: the model's own speed and the pipeline's against it."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Optional

import typer

from fcnseg.cli.base import BATCH_HELP, TILE_HELP, app
from fcnseg.cli.errors import clear_errors
from fcnseg.models import DEMO_MODEL


@app.command("bench-model")
def bench_model(
    model: Annotated[Optional[Path], typer.Option(help="Checkpoint (default: the shipped demo model).")] = None,
    tile: Annotated[int, typer.Option(help="Tile side in pixels.")] = 1024,
    batch_size: Annotated[int, typer.Option(help="Tiles per forward pass.")] = 1,
    device: Annotated[str, typer.Option(help="auto, cpu or cuda.")] = "auto",
    iterations: Annotated[int, typer.Option(help="Timed forward passes (after one warm-up).")] = 5,
    channels_last: Annotated[Optional[bool], typer.Option("--channels-last/--contiguous", help="Memory format of weights and activations (default: channels-last on the CPU, contiguous on a GPU).")] = None,
) -> None:
    """The model's own forward throughput on random input, warm: the pipeline's yardstick."""
    from fcnseg.models.inference import (
        benchmark_forward, execution_of, load_for_inference, resolve_device, uses_channels_last,
    )

    with clear_errors():
        torch_device = resolve_device(device)
        net, card = load_for_inference(model or DEMO_MODEL, torch_device, channels_last=channels_last)
        mps = benchmark_forward(net, card.bands, tile, batch_size, torch_device, iterations)
    typer.echo(json.dumps({"model": str(model or DEMO_MODEL), "arch": card.arch, "width": card.width,
                           "device": str(torch_device), "execution": execution_of(torch_device), "tile": tile,
                           "batch_size": batch_size,
                           "channels_last": uses_channels_last(torch_device, channels_last),
                           "megapixels_per_second": round(mps, 3)}))


@app.command("bench-pipeline")
def bench_pipeline(
    model: Annotated[Optional[Path], typer.Option(help="Checkpoint (default: the shipped demo model).")] = None,
    size: Annotated[int, typer.Option(help="Side of the generated scene in pixels.")] = 2048,
    tile: Annotated[Optional[int], typer.Option(help=TILE_HELP)] = None,
    batch_size: Annotated[Optional[int], typer.Option(help=BATCH_HELP)] = None,
    device: Annotated[str, typer.Option(help="auto, cpu or cuda.")] = "auto",
    workers: Annotated[int, typer.Option(help="Workers of the many-worker run (one-worker run always made).")] = 2,
) -> None:
    """The inference stage against the model's own speed: output and model-equivalent MP/s, the I/O ceiling, workers."""
    from fcnseg.bench import bench_pipeline as run_bench
    from fcnseg.pipeline.tiles import check_tiling

    with clear_errors():
        check_tiling(tile, None, batch_size)
        if size < 32 or workers < 1:
            raise ValueError("--size must be at least 32 and --workers at least 1")
        figures = run_bench(model or DEMO_MODEL, size=size, tile=tile, batch_size=batch_size, device=device,
                            workers=workers)
    typer.echo(json.dumps(figures))
