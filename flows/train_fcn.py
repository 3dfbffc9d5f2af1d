"""Flow ``train-fcn``: scheduled retraining — train on a labelled raster, then evaluate the result.

The work is ``fcnseg.pipeline.training.train.train_model`` and ``evaluate_raster``, as two tasks; the
metrics of the new checkpoint on the evaluation scene land in a markdown artifact, so a
retraining run can be compared with the last one before the checkpoint is put to use.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

from prefect import flow, task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NO_CACHE
from pydantic import Field

from fcnseg.models.checkpoint import load_checkpoint
from fcnseg.models.inference import resolve_device
from fcnseg.pipeline.training.evaluate import evaluate_raster
from fcnseg.pipeline.training.train import TrainRequest, train_model


@task(name="train", cache_policy=NO_CACHE, persist_result=False)
def train(request: TrainRequest) -> dict[str, Any]:
    path, result, card = train_model(request)
    return {"checkpoint": str(path), "seconds": result.seconds, "best_step": result.best_step}


@task(name="evaluate", cache_policy=NO_CACHE, persist_result=False)
def evaluate(
    checkpoint: str, image: str, labels: str, label_field: str | None, label_layer: str | None, device: str
) -> dict[str, Any]:
    device_ = resolve_device(device)
    model, card = load_checkpoint(checkpoint, device_)
    metrics = evaluate_raster(
        model, card, image, labels, label_field=label_field, label_layer=label_layer, device=device_, progress=False
    )
    return {"class_names": card.class_names, **metrics}


@flow(name="train-fcn", log_prints=False)
def train_fcn(
    image: str,
    labels: str,
    out: str,
    eval_image: str | None = None,
    eval_labels: str | None = None,
    arch: Literal["fcn32s", "fcn16s", "fcn8s"] = "fcn8s",
    width: Annotated[float, Field(gt=0, le=1)] = 0.125,
    init: str | None = None,
    steps: Annotated[int, Field(ge=1)] = 2000,
    chip: Annotated[int, Field(ge=32, multiple_of=32)] = 256,
    batch_size: Annotated[int, Field(ge=1)] = 8,
    lr: Annotated[float, Field(gt=0)] = 1e-3,
    seed: int = 0,
    device: str = "auto",
    label_field: str | None = None,
    label_layer: str | None = None,
    outside: Literal["background", "unlabelled"] | None = None,
    class_name: str | None = None,
    sampling: Literal["labelled", "uniform"] = "labelled",
    class_weights: Literal["median", "sqrt", "none"] = "median",
    holdout: Annotated[float, Field(ge=0, lt=1)] = 0.2,
) -> dict[str, Any]:
    """Train a checkpoint to ``out``; evaluate it on ``eval_image``/``eval_labels`` (default: the
    training scene, which only says the run worked — give a held-out scene)."""
    request = TrainRequest(
        image=Path(image), labels=Path(labels), out=Path(out),
        val_image=Path(eval_image) if eval_image else None, val_labels=Path(eval_labels) if eval_labels else None,
        arch=arch, width=width, init=Path(init) if init else None, steps=steps, chip=chip, batch_size=batch_size,
        lr=lr, seed=seed, device=device, label_field=label_field, label_layer=label_layer, outside=outside,
        class_name=class_name, sampling=sampling, class_weights=class_weights, holdout=holdout, progress=False,
    )
    trained = train(request)
    metrics = evaluate(trained["checkpoint"], eval_image or image, eval_labels or labels, label_field, label_layer, device)
    rows = [f"| {n} | {iou:.4f} |" for n, iou in zip(metrics["class_names"], metrics["per_class_iou"])]
    create_markdown_artifact(
        key="train-fcn-report",
        markdown="\n".join([
            "# fcnseg train-fcn", "", f"Checkpoint `{trained['checkpoint']}` ({arch}, width {width}, {steps} steps, "
            f"{trained['seconds']:.0f} s), evaluated on `{eval_image or image}`:", "",
            f"pixel acc {metrics['pixel_acc']:.4f} · mean acc {metrics['mean_acc']:.4f} · "
            f"mean IU {metrics['mean_iou']:.4f} · fw IU {metrics['fw_iou']:.4f}", "",
            "| class | IU |", "|---|---:|", *rows,
        ]),
    )
    return {"checkpoint": trained["checkpoint"], **{k: metrics[k] for k in ("pixel_acc", "mean_acc", "mean_iou", "fw_iou")}}
