"""``TrainRequest``: a training as ``fcnseg train`` asks for it, and its one-line checks.

Apart from the training itself (``train.py``), as ``segment_options.py`` is apart from the plan.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import Field, model_validator
from pydantic.json_schema import SkipJsonSchema

from fcnseg.models.card import ARCHS, STRIDE, Arch, class_count_problem, class_names_problem
from fcnseg.pipeline.option_texts import TRAIN_HELP as HELP
from fcnseg.pipeline.options import OptionModel, check_band_numbers, option_name, real_number, whole_number
from fcnseg.pipeline.training.augment import DEFAULT, LIMITS, Photometric, check_setting
from fcnseg.pipeline.training.chips import SAMPLING
from fcnseg.pipeline.training.labels import check_outside

#: The ``augment_*`` fields of a training without photometric augmentation (all five 0; the default is
#: ``augment.DEFAULT``): what the benchmarks recorded before it was the default train with.
AUGMENT_OFF: dict[str, float] = {f"augment_{name}": 0.0 for name in LIMITS}

#: Loss weights: median frequency balancing (Eigen & Fergus), its square root (half as far from
#: equal weights, in ratio), or none.
CLASS_WEIGHTS = ("median", "sqrt", "none")

class TrainRequest(OptionModel):
    """A training as ``fcnseg train`` asks for it: the one definition that the command builds its
    options from, the ``train-fcn`` flow takes as its ``request`` parameter and ``train_model`` runs.
    The descriptions are the help texts (``option_texts``); a bad value fails in one line naming the
    option, before any file is opened (``options.OptionModel``)."""

    image: Annotated[Path, Field(description=HELP["image"])]
    labels: Annotated[Path, Field(description=HELP["labels"])]
    out: Annotated[Path, Field(description=HELP["out"])]
    val_image: Annotated[Path | None, Field(description=HELP["val_image"])] = None
    val_labels: Annotated[Path | None, Field(description=HELP["val_labels"])] = None
    arch: Annotated[Arch, Field(description=HELP["arch"])] = "fcn8s"
    width: Annotated[float, Field(gt=0, le=1, description=HELP["width"])] = 0.125
    init: Annotated[Path | None, Field(description=HELP["init"])] = None
    vgg16_weights: Annotated[Path | None, Field(description=HELP["vgg16_weights"])] = None
    steps: Annotated[int, Field(ge=1, description=HELP["steps"])] = 2000
    chip: Annotated[int, Field(ge=STRIDE, description=HELP["chip"])] = 256
    batch_size: Annotated[int, Field(ge=1, description=HELP["batch_size"])] = 8
    lr: Annotated[float, Field(gt=0, allow_inf_nan=False, description=HELP["lr"])] = 1e-3
    seed: Annotated[int, Field(description=HELP["seed"])] = 0
    device: Annotated[str, Field(description=HELP["device"])] = "auto"
    label_field: Annotated[str | None, Field(description=HELP["label_field"])] = None
    label_layer: Annotated[str | None, Field(description=HELP["label_layer"])] = None
    classes: Annotated[tuple[str, ...] | None, Field(description=HELP["classes"])] = None
    outside: Annotated[Literal["background", "unlabelled"] | None, Field(description=HELP["outside"])] = None
    class_name: Annotated[str | None, Field(description=HELP["class_name"])] = None
    bands: Annotated[tuple[Annotated[int, Field(ge=1)], ...] | None, Field(description=HELP["bands"])] = None
    val_every: Annotated[int, Field(ge=1, description=HELP["val_every"])] = 250
    #: A progress bar on a terminal (the command line's choice; a flow trains without one).
    progress: Annotated[bool, SkipJsonSchema()] = True
    sampling: Annotated[Literal["labelled", "uniform"], Field(description=HELP["sampling"])] = "labelled"
    class_weights: Annotated[Literal["median", "sqrt", "none"], Field(description=HELP["class_weights"])] = "median"
    max_class_weight: Annotated[float | None, Field(ge=1, allow_inf_nan=False, description=HELP["max_class_weight"])] = None
    holdout: Annotated[float, Field(ge=0, lt=1, description=HELP["holdout"])] = 0.2
    read_threads: Annotated[int, Field(ge=0, description=HELP["read_threads"])] = 4
    augment_gain: Annotated[float, Field(ge=0, le=LIMITS["gain"], description=HELP["augment_gain"])] = DEFAULT.gain
    augment_offset: Annotated[float, Field(ge=0, le=LIMITS["offset"], description=HELP["augment_offset"])] = DEFAULT.offset
    augment_gamma: Annotated[float, Field(ge=0, le=LIMITS["gamma"], description=HELP["augment_gamma"])] = DEFAULT.gamma
    augment_noise: Annotated[float, Field(ge=0, le=LIMITS["noise"], description=HELP["augment_noise"])] = DEFAULT.noise
    augment_blur: Annotated[float, Field(ge=0, le=LIMITS["blur"], description=HELP["augment_blur"])] = DEFAULT.blur
    overwrite: Annotated[bool, Field(description=HELP["overwrite"])] = False

    @model_validator(mode="before")
    @classmethod
    def _one_line_errors(cls, data: Any) -> Any:
        """Refuse options that cannot train, before any file is opened, named as on the command line
        (before pydantic's constraints, which name no option)."""
        if isinstance(data, dict):
            check_request(data)
        return data


def check_request(data: dict[str, Any]) -> None:
    """The training options' values as the command line names them; ValueError in one line. Values
    of another type are left to pydantic (``--steps: input should be a valid integer``)."""
    arch = data.get("arch", "fcn8s")
    if isinstance(arch, str) and arch not in ARCHS:
        raise ValueError(f"--arch must be one of {', '.join(ARCHS)}, got {arch!r}")
    checks = [
        ("steps", whole_number, lambda v: v >= 1, "at least 1"),
        ("batch_size", whole_number, lambda v: v >= 1, "at least 1"),
        ("chip", whole_number, lambda v: v >= STRIDE, f"at least {STRIDE} (the model's stride)"),
        ("lr", real_number, lambda v: v > 0 and math.isfinite(v), "a positive number"),
        ("val_every", whole_number, lambda v: v >= 1, "at least 1"),
        ("width", real_number, lambda v: 0 < v <= 1, "above 0 and at most 1 (the paper's VGG16)"),
        ("sampling", text, lambda v: v in SAMPLING, f"one of {', '.join(SAMPLING)}"),
        ("class_weights", text, lambda v: v in CLASS_WEIGHTS, f"one of {', '.join(CLASS_WEIGHTS)}"),
        ("max_class_weight", real_number, lambda v: v >= 1 and math.isfinite(v), "at least 1 (the median class's weight)"),
        ("holdout", real_number, lambda v: 0 <= v < 1, "at least 0 and below 1"),
        ("read_threads", whole_number, lambda v: v >= 0, "at least 0"),
    ]
    for name, typed, ok, rule in checks:
        value = typed(data.get(name))
        if value is not None and not ok(value):
            raise ValueError(f"{option_name(name)} must be {rule}, got {value}")
    for name in LIMITS:
        value = real_number(data.get(f"augment_{name}"))
        problem = None if value is None else check_setting(name, value)
        if problem:
            raise ValueError(f"--augment-{name} must be {problem}, got {value}")
    check_outside(text(data.get("outside")))
    check_band_numbers(data.get("bands"))
    classes = data.get("classes")
    if isinstance(classes, (list, tuple)) and all(isinstance(c, str) for c in classes):
        problem = class_count_problem(len(classes)) or class_names_problem(classes)
        if problem:
            raise ValueError(f"--classes: {problem}")


def text(value: Any) -> str | None:
    """``value`` where it is a str, else None (``options.whole_number``)."""
    return value if isinstance(value, str) else None


def photometric(request: TrainRequest) -> Photometric:
    """The request's photometric augmentation (``augment.Photometric``; all 0: none)."""
    return Photometric(**{name: getattr(request, f"augment_{name}") for name in LIMITS})
