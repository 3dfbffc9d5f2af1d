"""``fcnseg train``, ``evaluate`` and ``init-model``: the commands that make or score a checkpoint."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Optional

import typer

from fcnseg.cli.base import BATCH_HELP, LAYER_HELP, OVERWRITE_HELP, TILE_HELP, app, csv_ints, csv_list, log
from fcnseg.cli.errors import clear_errors
from fcnseg.errors import InputError
from fcnseg.models.card import (
    ClassInfo, ModelCard, Normalization, TrainingProvenance, class_count_problem, class_names_problem,
)
from fcnseg.models.metrics import named_metrics
from fcnseg.pipeline.option_texts import SEGMENT_HELP
from fcnseg.pipeline.option_texts import TRAIN_HELP as HELP
from fcnseg.pipeline.training.augment import DEFAULT as AUGMENT
from fcnseg.tables import console, print_metrics


@app.command()
def train(
    image: Annotated[Path, typer.Option(help=HELP["image"])],
    labels: Annotated[Path, typer.Option(help=HELP["labels"])],
    out: Annotated[Path, typer.Option(help=HELP["out"])],
    val_image: Annotated[Optional[Path], typer.Option(help=HELP["val_image"])] = None,
    val_labels: Annotated[Optional[Path], typer.Option(help=HELP["val_labels"])] = None,
    arch: Annotated[str, typer.Option(help=HELP["arch"])] = "fcn8s",
    width: Annotated[float, typer.Option(help=HELP["width"])] = 0.125,
    init: Annotated[Optional[Path], typer.Option(help=HELP["init"])] = None,
    vgg16_weights: Annotated[Optional[Path], typer.Option(help=HELP["vgg16_weights"])] = None,
    steps: Annotated[int, typer.Option(help=HELP["steps"])] = 2000,
    chip: Annotated[int, typer.Option(help=HELP["chip"])] = 256,
    batch_size: Annotated[int, typer.Option(help=HELP["batch_size"])] = 8,
    lr: Annotated[float, typer.Option(help=HELP["lr"])] = 1e-3,
    seed: Annotated[int, typer.Option(help=HELP["seed"])] = 0,
    device: Annotated[str, typer.Option(help=HELP["device"])] = "auto",
    label_field: Annotated[Optional[str], typer.Option(help=HELP["label_field"])] = None,
    label_layer: Annotated[Optional[str], typer.Option(help=HELP["label_layer"])] = None,
    classes: Annotated[Optional[str], typer.Option(help=HELP["classes"])] = None,
    outside: Annotated[Optional[str], typer.Option(help=HELP["outside"])] = None,
    class_name: Annotated[Optional[str], typer.Option(help=HELP["class_name"])] = None,
    bands: Annotated[Optional[str], typer.Option(help=HELP["bands"])] = None,
    val_every: Annotated[int, typer.Option(help=HELP["val_every"])] = 250,
    sampling: Annotated[str, typer.Option(help=HELP["sampling"])] = "labelled",
    class_weights: Annotated[str, typer.Option(help=HELP["class_weights"])] = "median",
    max_class_weight: Annotated[Optional[float], typer.Option(help=HELP["max_class_weight"])] = None,
    holdout: Annotated[float, typer.Option(help=HELP["holdout"])] = 0.2,
    read_threads: Annotated[int, typer.Option(help=HELP["read_threads"])] = 4,
    augment_gain: Annotated[float, typer.Option(help=HELP["augment_gain"])] = AUGMENT.gain,
    augment_offset: Annotated[float, typer.Option(help=HELP["augment_offset"])] = AUGMENT.offset,
    augment_gamma: Annotated[float, typer.Option(help=HELP["augment_gamma"])] = AUGMENT.gamma,
    augment_noise: Annotated[float, typer.Option(help=HELP["augment_noise"])] = AUGMENT.noise,
    augment_blur: Annotated[float, typer.Option(help=HELP["augment_blur"])] = AUGMENT.blur,
    overwrite: Annotated[bool, typer.Option(help=HELP["overwrite"])] = False,
) -> None:
    """Train an FCN on random chips of a labelled raster; keeps the best checkpoint."""
    from fcnseg.pipeline.training.train import TrainRequest, train_model

    with clear_errors():
        request = TrainRequest(
            image=image, labels=labels, out=out, val_image=val_image, val_labels=val_labels, arch=arch,
            width=width, init=init, vgg16_weights=vgg16_weights, steps=steps, chip=chip,
            batch_size=batch_size, lr=lr, seed=seed, device=device, label_field=label_field,
            label_layer=label_layer, classes=csv_list(classes), outside=outside, class_name=class_name, bands=csv_ints(bands), val_every=val_every,
            sampling=sampling, class_weights=class_weights,
            max_class_weight=max_class_weight, holdout=holdout, read_threads=read_threads,
            augment_gain=augment_gain, augment_offset=augment_offset, augment_gamma=augment_gamma,
            augment_noise=augment_noise, augment_blur=augment_blur,
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
    tta: Annotated[str, typer.Option(help=SEGMENT_HELP["tta"])] = "none",
    normalize: Annotated[str, typer.Option(help=SEGMENT_HELP["normalize"])] = "card",
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object only.")] = False,
) -> None:
    """Pixel accuracy, mean accuracy, mean IU, frequency-weighted IU, per-class IU, confusion matrix."""
    from fcnseg.models.inference import load_for_inference, resolve_device
    from fcnseg.models.tta import check_tta
    from fcnseg.pipeline.training.evaluate import evaluate_raster

    with clear_errors():
        check_tta(tta)  # before the model loads
        if normalize not in ("card", "scene"):
            raise InputError(f"--normalize must be card or scene, got {normalize!r}")
        torch_device = resolve_device(device)
        net, card = load_for_inference(model, torch_device)
        metrics = evaluate_raster(
            net, card, image, labels, device=torch_device, label_field=label_field, outside=outside,
            label_layer=label_layer, bands=csv_ints(bands), tile=tile, halo=halo, batch_size=batch_size, progress=console.is_terminal and not as_json,
            tta=tta, normalize=normalize, model_name=str(model),
        )
    if as_json:
        typer.echo(json.dumps(named_metrics(metrics, card.class_names)))
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
            training=TrainingProvenance.of(init="random", seed=seed,
                                           vgg16_weights=str(vgg16_weights) if vgg16_weights else None),
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
