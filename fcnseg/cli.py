"""The ``fcnseg`` command line: thin wrappers over the library, one clear error line on bad input."""

from __future__ import annotations

import contextlib
import errno
import json
import logging
import os
import signal
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.logging import RichHandler

from fcnseg.errors import FcnsegError
from fcnseg.models import DEMO_MODEL
from fcnseg.models.card import ClassInfo, ModelCard, Normalization, class_count_problem, class_names_problem
from fcnseg.tables import console, print_metrics, print_query, print_report

class FcnsegApp(typer.Typer):
    """The ``fcnseg`` command, as the console script and ``python -m fcnseg`` call it: usage errors
    (``--tile abc``, an unknown option) in fcnseg's one line (status 2) instead of click's boxed
    usage message, and SIGTERM (a service manager, a batch queue stopping the job) treated as Ctrl-C
    is: the same clean-up, one line, status 143."""

    def __call__(self, *args, **kwargs) -> None:
        kwargs["standalone_mode"] = False  # click's errors come here, not to its own printer
        with sigterm_as_interrupt():
            try:
                status = super().__call__(*args, **kwargs)
            except typer.Abort:
                status = error_line("aborted", 1)
            except Exception as exc:
                if not is_usage_error(exc):
                    raise
                status = usage_failure(exc)
        if _terminated.is_set() and status != TERMINATED_STATUS:  # a SIGTERM before clear_errors held it
            status = error_line(TERMINATED_LINE, TERMINATED_STATUS)
        sys.exit(status if isinstance(status, int) else 0)


app = FcnsegApp(
    name="fcnseg",
    help="Segment arbitrarily large geospatial rasters with an FCN-8s.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
log = logging.getLogger("fcnseg")

TILE_HELP = "Core chunk size in pixels (multiple of 32); default: 2048 where the device's memory holds it."
OUTSIDE_HELP = ("Vector labels' pixels outside every feature: 'background' (class 0) or 'unlabelled' (not trained"
                " on or scored). Default: background for a layer without --label-field, unlabelled with one.")
LAYER_HELP = "Layer of vector labels, where the file holds several layers with geometries."
BATCH_HELP = "Tiles per forward pass; default: 1 on the CPU, as many as half a GPU's memory holds (at most 8)."
OVERWRITE_HELP = ("Replace a file at the checkpoint's path that is not an fcnseg checkpoint, or a read-only one. An"
                  " fcnseg checkpoint is replaced without it; an input of this command never, not even with it.")



def setup_logging(verbose: bool = False) -> None:
    """fcnseg's own messages on stderr through rich; the libraries' routine chatter kept out."""
    logging.basicConfig(
        level=logging.INFO, format="%(message)s", handlers=[RichHandler(console=console, show_path=False)]
    )
    logging.getLogger("fcnseg").setLevel(logging.DEBUG if verbose else logging.INFO)
    # GDAL's errors reach us as exceptions; Dask's cluster start/stop messages are noise here.
    # Dask sets its loggers up when imported (also in worker processes): tell it through its config.
    # A task's error reaches the command as its exception (one line below), so the workers' own
    # "Compute Failed" tracebacks are noise too.
    os.environ.setdefault("DASK_LOGGING__DISTRIBUTED", "critical")
    for name in ("rasterio", "tornado", "pyogrio", "botocore", "aiobotocore", "s3fs"):
        logging.getLogger(name).setLevel(logging.WARNING)
    logging.getLogger("distributed").setLevel(logging.CRITICAL)


@app.callback()
def main(verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Debug logging.")] = False) -> None:
    setup_logging(verbose)


@contextlib.contextmanager
def clear_errors(out: str | Path | None = None) -> Iterator[None]:
    """Turn every failure into one line on stderr and a non-zero exit: 1 for errors, 130 for Ctrl-C,
    143 for SIGTERM.

    The library's errors (``FcnsegError``, and the ValueErrors of a value checked) name the file or
    option and the problem; operating-system errors (a full disk, a read-only folder) are put in
    those words here, naming ``out`` (the command's output) where the error names no file. Anything
    else is a bug: one line still, and the traceback with ``--verbose``.
    """
    try:
        yield
    except typer.Exit:
        raise
    except Terminated:
        fail(TERMINATED_LINE, status=TERMINATED_STATUS)
    except KeyboardInterrupt:
        fail("interrupted; run the same command again to resume", status=130)
    except (FcnsegError, FileNotFoundError, ValueError) as exc:
        fail(str(exc))
    except OSError as exc:
        fail(os_error_line(exc, out))
    except Exception as exc:  # noqa: BLE001 - the last line of defence against a traceback
        line = cluster_error_line(exc)
        if line is None:
            log.debug("unexpected error", exc_info=True)
            line = f"unexpected {type(exc).__name__}: {exc} (run with --verbose for the traceback)"
        fail(line)


def fail(message: str, status: int = 1) -> None:
    raise typer.Exit(error_line(message, status))


def error_line(message: str, status: int) -> int:
    """Print ``fcnseg: error: MESSAGE`` as one line on stderr; ``status``, for the caller to exit with."""
    first = " ".join(message.split())  # one line, whatever the library put in it
    console.print(f"[red]fcnseg: error:[/red] {first}", highlight=False, soft_wrap=True)
    return status


#: A full disk or quota: the error rarely names the file (zarr, GDAL); the output is where it was written.
DISK_FULL = (errno.ENOSPC, errno.EDQUOT)


def os_error_line(exc: OSError, out: str | Path | None = None) -> str:
    """An OSError as ``FILE: what happened`` (and what to do about a full disk, naming ``out``
    when the error names no file)."""
    if exc.errno in DISK_FULL:
        where = f"{exc.filename or out}: " if exc.filename or out else ""
        return f"{where}no space left on the device; free some and run the same command again: it resumes"
    where = f"{exc.filename}: " if exc.filename else ""
    return f"{where}{exc.strerror or exc}"


def cluster_error_line(exc: Exception) -> str | None:
    """Dask's errors for workers that died or never came (a stage after inference), in one line."""
    if "distributed" not in sys.modules:  # no cluster ran: not one of its errors (and no import for it)
        return None
    from fcnseg.pipeline.cluster import lost_worker_line

    return lost_worker_line(exc)


# --- SIGTERM -------------------------------------------------------------------------------------

TERMINATED_LINE = "terminated; run the same command again to resume"
TERMINATED_STATUS = 128 + signal.SIGTERM
_terminated = threading.Event()


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised where the main thread is, as Ctrl-C's KeyboardInterrupt is: everything
    unwinds the same way (the cluster stopped, OUT's lock released, nothing complete-looking left)."""


def _raise_terminated(signum: int, frame: object) -> None:
    signal.signal(signal.SIGTERM, signal.SIG_DFL)  # a second SIGTERM during the clean-up ends it at once
    _terminated.set()
    raise Terminated()


@contextlib.contextmanager
def sigterm_as_interrupt() -> Iterator[None]:
    """SIGTERM raises Terminated in the main thread in here (elsewhere signals cannot be set)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGTERM, _raise_terminated)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


# --- usage errors ----------------------------------------------------------------------------------

#: What a value failed to be, by pydantic's error type (typer checks values with pydantic).
EXPECTED = {"int_parsing": "a valid integer", "int_from_float": "a whole number", "float_parsing": "a valid number",
            "bool_parsing": "true or false", "enum": "one of the choices", "literal_error": "one of the choices"}


def is_usage_error(exc: BaseException) -> bool:
    """A click (typer) error about the command line itself: an unknown option, a bad value."""
    return hasattr(exc, "format_message") and hasattr(exc, "exit_code") and "ClickException" in _class_names(exc)


def _class_names(exc: BaseException) -> set[str]:
    return {cls.__name__ for cls in type(exc).__mro__}


def usage_failure(exc: Exception) -> int:
    """Print a usage error as fcnseg's one line; its exit status (2). ``fcnseg`` alone prints the help."""
    if "NoArgsIsHelpError" in _class_names(exc):
        message = exc.format_message()
        if message.strip():
            console.print(message, highlight=False)
        return exc.exit_code
    return error_line(usage_line(exc), exc.exit_code)


def usage_line(exc: Exception) -> str:
    """``--tile: 'abc' is not a valid integer``, ``-x.tif: no such option ...``: the option or
    argument first, as every fcnseg error names what it is about."""
    names = _class_names(exc)
    context = getattr(exc, "ctx", None)
    help_hint = f" (see {context.command_path} --help)" if context is not None else ""
    if "NoSuchOption" in names:
        return no_such_option_line(exc.option_name, getattr(exc, "possibilities", None), help_hint)
    param = getattr(exc, "param", None)
    if param is None or "MissingParameter" in names:
        return exc.format_message().rstrip(".") + help_hint
    name = param.opts[0] if getattr(param, "param_type_name", "") == "option" and param.opts else param.name.upper()
    errors = getattr(exc.__cause__, "errors", None)
    if callable(errors) and errors():
        first = errors()[0]
        expected = EXPECTED.get(first.get("type", ""))
        value = first.get("input")
        if expected:
            return f"{name}: {value!r} is not {expected}"
        return f"{name}: {value!r}: {first.get('msg', exc.message)}"
    return f"{name}: {exc.message}"


def no_such_option_line(option: str, possibilities: list[str] | None, help_hint: str) -> str:
    """An unknown option; the word as given (``-x.tif``, where click saw ``-x``), and what was meant."""
    given = next((a for a in sys.argv[1:] if a == option), None) or next(
        (a for a in sys.argv[1:] if a.startswith(option)), option)
    if possibilities:
        return f"{given}: no such option (did you mean {', '.join(sorted(possibilities))}?)"
    if given != option or "." in given or "/" in given:
        return f"{given}: no such option; a file whose name starts with '-' is given as ./{given}"
    return f"{given}: no such option{help_hint}"


def csv_list(value: str | None) -> list[str] | None:
    return [v.strip() for v in value.split(",") if v.strip()] if value else None


def csv_ints(value: str | None, option: str = "--bands") -> list[int] | None:
    items = csv_list(value)
    if not items:
        return None
    try:
        return [int(v) for v in items]
    except ValueError:
        raise ValueError(f"{option} takes comma-separated whole numbers, got {value!r}") from None


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
    overwrite: Annotated[bool, typer.Option(help="Replace an image.tif or labels.tif in OUT_DIR that synth did not write (or a read-only one). synth's own earlier scene is replaced without it; other files there are never touched.")] = False,
) -> None:
    """Write a synthetic multi-band land-cover scene and its label raster."""
    from fcnseg.pipeline.synth import write_scene

    with clear_errors():
        if size < 32:
            raise ValueError(f"--size must be at least 32, got {size}")
        image, labels = write_scene(out_dir, size, seed, collar=collar, rotate=rotate, bands=bands, dtype=dtype,
                                    crs=crs, layout=layout, overwrite=overwrite)
    typer.echo(f"{image}\n{labels}")


@app.command()
def train(
    image: Annotated[Path, typer.Option(help="Training image (any raster rasterio opens).")],
    labels: Annotated[Path, typer.Option(help="Class raster on the image's grid, or vector labels (any format OGR reads: GeoPackage, SpatiaLite, FlatGeobuf, GML, KML, Shapefile, GeoJSON; or GeoParquet).")],
    out: Annotated[Path, typer.Option(help="Checkpoint to write (.safetensors); an fcnseg checkpoint there is replaced (retraining to the same --out), anything else only with --overwrite, an input of this command never.")],
    val_image: Annotated[Optional[Path], typer.Option(help="Validation image.")] = None,
    val_labels: Annotated[Optional[Path], typer.Option(help="Validation labels.")] = None,
    arch: Annotated[str, typer.Option(help="fcn32s, fcn16s or fcn8s.")] = "fcn8s",
    width: Annotated[float, typer.Option(help="Channel width multiplier (1.0 = the paper's VGG16).")] = 0.125,
    init: Annotated[Optional[Path], typer.Option(help="Start from this checkpoint (staged training); label values map to classes as in its training unless --classes is given.")] = None,
    vgg16_weights: Annotated[Optional[Path], typer.Option(help="ImageNet VGG16 state dict (torchvision layout), width 1.0 only.")] = None,
    steps: Annotated[int, typer.Option(help="Optimisation steps.")] = 2000,
    chip: Annotated[int, typer.Option(help="Chip side in pixels.")] = 256,
    batch_size: Annotated[int, typer.Option(help="Chips per step.")] = 8,
    lr: Annotated[float, typer.Option(help="Peak learning rate.")] = 1e-3,
    seed: Annotated[int, typer.Option(help="Random seed.")] = 0,
    device: Annotated[str, typer.Option(help="auto, cpu or cuda.")] = "auto",
    label_field: Annotated[Optional[str], typer.Option(help="Class field of vector labels (integers: the class ids; text: classes in --classes order, else sorted). Without it a vector layer is footprints: every feature one class.")] = None,
    label_layer: Annotated[Optional[str], typer.Option(help=LAYER_HELP)] = None,
    classes: Annotated[Optional[str], typer.Option(help="Class names, comma separated, in id order.")] = None,
    outside: Annotated[Optional[str], typer.Option(help=OUTSIDE_HELP)] = None,
    class_name: Annotated[Optional[str], typer.Option(help="Class name of a footprint layer (no --label-field); default: the layer's name.")] = None,
    bands: Annotated[Optional[str], typer.Option(help="1-based bands to use, comma separated (default: all).")] = None,
    val_every: Annotated[int, typer.Option(help="Validate every N steps.")] = 250,
    sampling: Annotated[str, typer.Option(help="Where chips are centred: on labelled pixels, each class with equal chance (labelled), or anywhere with at least 5 % labelled pixels (uniform, the old sampler).")] = "labelled",
    class_weights: Annotated[str, typer.Option(help="Class weights in the loss: median frequency balancing of the pixels training sees (median), its square root (sqrt), or equal (none).")] = "median",
    holdout: Annotated[float, typer.Option(help="Without --val-image: share of each class's labelled pixels held out in blocks of the scene to validate on and keep the best mean IU (dropped, with a warning, where a class has too few labels to split); 0 turns it off.")] = 0.2,
    read_threads: Annotated[int, typer.Option(help="Threads reading the next batch's chips while the model trains (0: in the training thread).")] = 4,
    overwrite: Annotated[bool, typer.Option(help=OVERWRITE_HELP)] = False,
) -> None:
    """Train an FCN on random chips of a labelled raster; keeps the best checkpoint."""
    from fcnseg.pipeline.training.train import TrainRequest, train_model

    with clear_errors():
        request = TrainRequest(
            image=image, labels=labels, out=out, val_image=val_image, val_labels=val_labels, arch=arch,
            width=width, init=init, vgg16_weights=vgg16_weights, steps=steps, chip=chip,
            batch_size=batch_size, lr=lr, seed=seed, device=device, label_field=label_field,
            label_layer=label_layer, classes=csv_list(classes), outside=outside, class_name=class_name, bands=csv_ints(bands), val_every=val_every,
            sampling=sampling, class_weights=class_weights, holdout=holdout, read_threads=read_threads,
            progress=console.is_terminal, overwrite=overwrite,
        )
        path, result, card = train_model(request)
    best = f", best val mean IU {result.best_metrics['mean_iou']:.4f} at step {result.best_step}" if result.best_metrics else ""
    log.info("wrote %s (%s, width %s, %.0f s%s)", path, card.arch, card.width, result.seconds, best)


@app.command()
def evaluate(
    model: Annotated[Path, typer.Option(help="Checkpoint (.safetensors).")],
    image: Annotated[Path, typer.Option(help="Image to segment.")],
    labels: Annotated[Path, typer.Option(help="Reference class raster, or vector labels (any format OGR reads, or GeoParquet); values map to classes as in training (the model card).")],
    label_field: Annotated[Optional[str], typer.Option(help="Class field of vector labels; default: the one the model was trained with.")] = None,
    label_layer: Annotated[Optional[str], typer.Option(help=LAYER_HELP)] = None,
    outside: Annotated[Optional[str], typer.Option(help="Vector labels' pixels outside every feature: 'background' (class 0) or 'unlabelled' (not scored). Default: as the model was trained (its card).")] = None,
    bands: Annotated[Optional[str], typer.Option(help="1-based bands to feed the model, comma separated.")] = None,
    tile: Annotated[Optional[int], typer.Option(help=TILE_HELP)] = None,
    halo: Annotated[Optional[int], typer.Option(help="Halo around each tile (multiple of 32); default from the model.")] = None,
    batch_size: Annotated[Optional[int], typer.Option(help=BATCH_HELP)] = None,
    device: Annotated[str, typer.Option(help="auto, cpu or cuda.")] = "auto",
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object only.")] = False,
) -> None:
    """Pixel accuracy, mean accuracy, mean IU, frequency-weighted IU, per-class IU, confusion matrix."""
    from fcnseg.models.inference import load_for_inference, resolve_device
    from fcnseg.pipeline.training.evaluate import evaluate_raster

    with clear_errors():
        torch_device = resolve_device(device)
        net, card = load_for_inference(model, torch_device)
        metrics = evaluate_raster(
            net, card, image, labels, device=torch_device, label_field=label_field, outside=outside,
            label_layer=label_layer, bands=csv_ints(bands), tile=tile, halo=halo, batch_size=batch_size, progress=console.is_terminal and not as_json,
        )
    if as_json:
        typer.echo(json.dumps(metrics))
        return
    print_metrics(metrics, card.class_names)


@app.command("init-model")
def init_model(
    out: Annotated[Path, typer.Argument(help="Checkpoint to write (.safetensors); an fcnseg checkpoint there is replaced, anything else only with --overwrite.")],
    arch: Annotated[str, typer.Option(help="fcn32s, fcn16s or fcn8s.")] = "fcn8s",
    bands: Annotated[int, typer.Option(help="Input bands.")] = 3,
    classes: Annotated[int, typer.Option(help="Number of classes.")] = 2,
    width: Annotated[float, typer.Option(help="Channel width multiplier.")] = 1.0,
    seed: Annotated[int, typer.Option(help="Random seed.")] = 0,
    class_names: Annotated[Optional[str], typer.Option(help="Class names, comma separated (default class_0, ...).")] = None,
    vgg16_weights: Annotated[Optional[Path], typer.Option(help="ImageNet VGG16 state dict to start from (width 1.0).")] = None,
    overwrite: Annotated[bool, typer.Option(help=OVERWRITE_HELP)] = False,
) -> None:
    """Write a randomly initialised checkpoint (identity normalisation: mean 0, std 1)."""
    import torch

    from fcnseg.models.checkpoint import save_checkpoint
    from fcnseg.models.fcn import build_model
    from fcnseg.models.vgg_weights import load_vgg16_imagenet
    from fcnseg.pipeline.classes import default_colors
    from fcnseg.pipeline.overwrite import check_checkpoint_out

    with clear_errors():
        check_model_shape(bands, classes, width)
        names = csv_list(class_names) or [f"class_{i}" for i in range(classes)]
        if len(names) != classes:
            raise ValueError(f"--class-names has {len(names)} names for --classes {classes}")
        problem = class_names_problem(names)
        if problem:
            raise ValueError(f"--class-names: {problem}")
        check_checkpoint_out(out, option="OUT", inputs={"--vgg16-weights": vgg16_weights}, overwrite=overwrite)
        torch.manual_seed(seed)
        model = build_model(arch, bands, classes, width)
        if vgg16_weights is not None:
            load_vgg16_imagenet(model, vgg16_weights)
        card = ModelCard(
            arch=arch, width=width, bands=bands,
            classes=[ClassInfo(n, c) for n, c in zip(names, default_colors(len(names)), strict=True)],
            normalization=Normalization(mean=[0.0] * bands, std=[1.0] * bands),
            training={"init": "random", "seed": seed, "vgg16_weights": str(vgg16_weights) if vgg16_weights else None},
        )
        save_checkpoint(out, model, card)
    typer.echo(str(out))


def check_model_shape(bands: int, classes: int, width: float) -> None:
    """init-model's --bands, --classes and --width, each refused by name before a model is built."""
    problem = class_count_problem(classes)
    if problem:
        raise ValueError(f"--classes {classes}: {problem}")
    if bands < 1:
        raise ValueError(f"--bands must be at least 1, got {bands}")
    if not 0 < width <= 1:
        raise ValueError(f"--width must be above 0 and at most 1 (the paper's VGG16), got {width}")


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


@app.command()
def query(
    raster: Annotated[str, typer.Argument(help="labels.tif, labels.zarr, or any single-band class raster with nodata.")],
    bbox: Annotated[Optional[tuple[float, float, float, float]], typer.Option(help="Box MINX MINY MAXX MAXY (in --bbox-crs).")] = None,
    bbox_crs: Annotated[Optional[str], typer.Option("--bbox-crs", "--crs", help="CRS of --bbox or --point, e.g. EPSG:4326 (default: the raster's).")] = None,
    aoi: Annotated[Optional[str], typer.Option(help="Area of interest: a vector file (GeoPackage, GeoJSON, Shapefile...) in any CRS.")] = None,
    point: Annotated[Optional[tuple[float, float]], typer.Option(help="The class at X Y (in --bbox-crs).")] = None,
    partial: Annotated[bool, typer.Option(help="Read a label store whose run was interrupted, as it is.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object only.")] = False,
) -> None:
    """How much of each class is in a box, an area of interest (pixel centres inside), at a point, or everywhere."""
    from fcnseg.pipeline.analysis.query import query_classes

    with clear_errors():
        given = [name for name, value in (("--bbox", bbox), ("--aoi", aoi), ("--point", point)) if value is not None]
        if len(given) > 1:
            raise ValueError(f"{' and '.join(given)} are mutually exclusive: choose one selection")
        if bbox_crs is not None and bbox is None and point is None:
            raise ValueError("--bbox-crs (--crs) applies to --bbox or --point; give one of them")
        result = query_classes(raster, bbox=bbox, bbox_crs=bbox_crs, aoi=aoi, point=point, point_crs=bbox_crs,
                               allow_partial=partial)
    if as_json:
        typer.echo(json.dumps(result.to_dict()))
        return
    print_query(result)


@app.command()
def verify(
    out: Annotated[Path, typer.Argument(help="A finished segment output folder.")],
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object (the report) only.")] = False,
) -> None:
    """Re-read a finished output against its records: every chunk's labels against the ledger's sha256, every file against item.json's size and sha256. Exit 1 when anything differs."""
    from fcnseg.pipeline.segment.verify import verify_output

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
