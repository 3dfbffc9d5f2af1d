"""Flow ``train-fcn``: scheduled retraining — train on a labelled raster, then evaluate the result.

The work is ``fcnseg.pipeline.training.train.train_model`` and ``evaluate_raster``, as two tasks; the
metrics of the new checkpoint land in a markdown artifact, so a retraining run can be compared with
the last one before the checkpoint is put to use. The score is honest about what it was measured on:
the checkpoint is chosen on held-out blocks of the training scene or on a validation scene
(``val_image``/``val_labels``), never on the evaluation scene, and the report says which scene the
score comes from and what picked the checkpoint (a score on the training scene is not an unseen one).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

from prefect import flow, task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NO_CACHE
from pydantic import Field

from fcnseg.flows.parameters import described
from fcnseg.models.card import TrainingProvenance
from fcnseg.models.checkpoint import load_checkpoint
from fcnseg.models.inference import resolve_device
from fcnseg.models.metrics import named_metrics
from fcnseg.pipeline.overwrite import OVERWRITE, check_checkpoint_out
from fcnseg.pipeline.training.evaluate import evaluate_raster
from fcnseg.pipeline.training.train import TrainRequest, train_model

#: What ``scored_on`` says when no evaluation scene was given.
TRAINING_SCENE = "training scene (not an unseen score)"


def chosen_on(training: TrainingProvenance, holdout: float) -> str:
    """What picked the checkpoint, from its card's ``training`` record (as ``train_model`` writes it):
    the best mean IU on a validation scene or on held-out blocks, or the last weights where there was
    no validation (holdout 0, or held-out blocks dropped because a class had too few labels)."""
    best = training.best_step
    if training.val_image:
        return f"validation scene {training.val_image} (best mean IU, step {best})"
    if training.holdout:
        blocks = training.holdout
        return (f"held-out blocks of the training scene ({blocks['blocks']} blocks of {blocks['block']} px, "
                f"{100 * blocks['fraction']:.0f} % of each class; best mean IU, step {best})")
    if holdout > 0:
        return (f"last weights (step {best}): the held-out blocks were dropped, a class had too few labels "
                "to hold out (see the run's log); give val_image/val_labels to validate")
    return f"last weights (step {best}): holdout 0, no validation"


@task(name="train", cache_policy=NO_CACHE, persist_result=False)
def train(request: TrainRequest) -> dict[str, Any]:
    path, result, card = train_model(request)
    return {"checkpoint": str(path), "seconds": result.seconds, "best_step": result.best_step,
            "chosen_on": chosen_on(card.training, request.holdout)}


@task(name="evaluate", cache_policy=NO_CACHE, persist_result=False)
def evaluate(
    checkpoint: str, image: str, labels: str, label_field: str | None, label_layer: str | None, device: str,
    bands: tuple[int, ...] | None = None,
) -> dict[str, Any]:
    """The new checkpoint's scores, fed the bands it was trained on."""
    device_ = resolve_device(device)
    model, card = load_checkpoint(checkpoint, device_)
    metrics = evaluate_raster(
        model, card, image, labels, label_field=label_field, label_layer=label_layer, device=device_, bands=bands,
        progress=False,
    )
    return {"class_names": card.class_names, **metrics}


def iou_rows(class_names: list[str], per_class_iou: list[float | None]) -> list[str]:
    """The report's per-class rows: a class neither labelled nor predicted in the scored scene has
    no IU (None), shown as "—", not as a number."""
    return [f"| {n} | {'—' if iou is None else f'{iou:.4f}'} |" for n, iou in zip(class_names, per_class_iou)]


def paired(name: str, image: str | None, labels: str | None) -> None:
    if (image is None) != (labels is None):
        raise ValueError(f"{name}_image and {name}_labels go together")


@flow(name="train-fcn", log_prints=False)
@described
def train_fcn(
    request: Annotated[TrainRequest, Field(description=(
        "The training, as fcnseg train's options: image, labels and out at least (TrainRequest)."))],
    eval_image: Annotated[str | None, Field(description=(
        "Scene to score the new checkpoint on (never one it was chosen on); default: the training scene."))] = None,
    eval_labels: Annotated[str | None, Field(description="Labels of eval_image.")] = None,
) -> dict[str, Any]:
    """Train a checkpoint to ``request.out`` and score it on ``eval_image``/``eval_labels``.

    ``request`` holds ``fcnseg train``'s options (``TrainRequest``: image, labels, out, val_image,
    val_labels, arch, width, init, vgg16_weights, steps, chip, batch_size, lr, seed, device,
    label_field, label_layer, classes, outside, class_name, bands, val_every, sampling,
    class_weights, max_class_weight, holdout, read_threads, augment_gain, augment_offset, augment_gamma, augment_noise,
    augment_blur, overwrite), with the same defaults and one-line errors.
    The checkpoint is chosen on ``val_image``/``val_labels`` when given, else on ``holdout`` blocks
    of the training scene, else it is the last weights; the evaluation scene is never used to choose
    it (nor may it be the validation scene). Without an evaluation scene the score is on the training
    scene, which only says the run worked. The report and the returned ``scored_on``/``chosen_on``
    say which of these it was. An fcnseg checkpoint at ``out`` is replaced (the nightly retraining);
    any other file there only with ``overwrite``, an input of the training never.
    """
    paired("eval", eval_image, eval_labels)
    paired("val", request.val_image, request.val_labels)
    if eval_image and request.val_image and Path(eval_image).resolve() == request.val_image.resolve():
        raise ValueError(f"val_image is the evaluation scene {eval_image}: a checkpoint chosen on the pixels it is "
                         "scored on has no unseen score; give another validation scene or leave it to holdout")
    # the evaluation scene is an input too, one train_model does not know of (the rule: pipeline.overwrite)
    check_checkpoint_out(request.out, option="out", inputs={"eval_image": eval_image, "eval_labels": eval_labels},
                         overwrite=request.overwrite, override=OVERWRITE)
    request = request.replace(progress=False)
    image, labels = str(request.image), str(request.labels)
    trained = train(request)
    scored_on = f"eval scene {eval_image}" if eval_image else TRAINING_SCENE
    metrics = evaluate(trained["checkpoint"], eval_image or image, eval_labels or labels, request.label_field,
                       request.label_layer, request.device, request.bands)
    rows = iou_rows(metrics["class_names"], metrics["per_class_iou"])
    create_markdown_artifact(
        key="train-fcn-report",
        markdown="\n".join([
            "# fcnseg train-fcn", "", f"Checkpoint `{trained['checkpoint']}` ({request.arch}, width {request.width}, "
            f"{request.steps} steps, {trained['seconds']:.0f} s), trained on `{image}`.", "",
            f"- **Scored on:** {scored_on}", f"- **Checkpoint chosen on:** {trained['chosen_on']}", "",
            f"pixel acc {metrics['pixel_acc']:.4f} · mean acc {metrics['mean_acc']:.4f} · "
            f"mean IU {metrics['mean_iou']:.4f} · fw IU {metrics['fw_iou']:.4f}", "",
            "| class | IU |", "|---|---:|", *rows,
        ]),
    )
    return {"checkpoint": trained["checkpoint"], "scored_on": scored_on, "chosen_on": trained["chosen_on"],
            **{k: metrics[k] for k in ("pixel_acc", "mean_acc", "mean_iou", "fw_iou")},
            "per_class_iou": named_metrics(metrics, metrics["class_names"])["per_class_iou"]}
