"""The training loop: pixelwise cross-entropy that ignores unlabelled pixels, best checkpoint kept.

Data comes from a ``next_batch`` callable (the pipeline reads random windows from rasters), so
this module needs nothing but torch. Each batch is augmented with random flips and 90-degree
rotations, which are exact symmetries for overhead imagery. Adam with warm-up and cosine decay
replaces the paper's SGD with momentum 0.99 and fixed learning rate: the same minimum, reached
in far fewer steps when training small variants from scratch on a CPU. On CUDA the forward pass
runs under autocast (bf16 where supported, else fp16 with loss scaling). The loss may weigh
classes (``TrainConfig.class_weights``) so a class of a few hundred pixels is not swamped; the
checkpoint kept is the one with the best validation mean IU (``improves``), never the lowest loss.
"""

from __future__ import annotations

import copy
import logging
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from fcnseg.errors import TrainingDiverged
from fcnseg.models.checkpoint import non_finite_tensor
from fcnseg.models.fcn import FCNBase
from fcnseg.models.inference import autocast_for
from fcnseg.models.metrics import IGNORE_INDEX, Metrics

log = logging.getLogger(__name__)

BatchSource = Callable[[], tuple[np.ndarray, np.ndarray]]
Validator = Callable[[FCNBase], Metrics]


@dataclass
class TrainConfig:
    steps: int = 2000
    lr: float = 1e-3
    weight_decay: float = 1e-4
    warmup_steps: int = 100
    val_every: int = 250
    seed: int = 0
    #: A bar on the terminal; without it a log line each tenth of the steps (a log file, a flow run).
    progress: bool = True
    #: Per-class loss weights (e.g. median frequency balancing); None: every labelled pixel counts the same.
    class_weights: Sequence[float] | None = None


@dataclass
class TrainResult:
    best_metrics: Metrics | None
    best_step: int
    history: list[dict[str, Any]] = field(default_factory=list)
    seconds: float = 0.0


def augment(x: torch.Tensor, y: torch.Tensor, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Random horizontal flip and k*90 degree rotation, the same for image and labels of a batch."""
    k = int(torch.randint(0, 4, (1,), generator=generator))
    x, y = torch.rot90(x, k, dims=(-2, -1)), torch.rot90(y, k, dims=(-2, -1))
    if bool(torch.randint(0, 2, (1,), generator=generator)):
        x, y = torch.flip(x, dims=(-1,)), torch.flip(y, dims=(-1,))
    return x.contiguous(), y.contiguous()


def learning_rate(step: int, config: TrainConfig) -> float:
    """Linear warm-up, then cosine decay to 1% of the peak."""
    if step < config.warmup_steps:
        return config.lr * (step + 1) / config.warmup_steps
    progress = (step - config.warmup_steps) / max(1, config.steps - config.warmup_steps)
    return config.lr * (0.01 + 0.99 * 0.5 * (1 + math.cos(math.pi * min(1.0, progress))))


def improves(metrics: Metrics, best: Metrics | None) -> bool:
    """Whether a validation beats the best so far: by mean IU, the paper's headline metric (the
    training loss keeps falling while a small class collapses, so it cannot pick the checkpoint)."""
    return best is None or metrics["mean_iou"] > best["mean_iou"]


def loss_function(config: TrainConfig, device: torch.device) -> nn.CrossEntropyLoss:
    """Pixelwise cross-entropy that skips unlabelled pixels, class-weighted when asked."""
    weights = config.class_weights
    weight = None if weights is None else torch.tensor(weights, dtype=torch.float32, device=device)
    return nn.CrossEntropyLoss(weight=weight, ignore_index=IGNORE_INDEX)


def diverged(where: str, what: str, config: TrainConfig) -> TrainingDiverged:
    """The one line a diverged training ends with: where, what, and what to try."""
    return TrainingDiverged(f"training diverged {where}: {what}; try a lower --lr (now {config.lr:g})"
                            " (no checkpoint written)")


def check_final_weights(model: FCNBase, x: torch.Tensor, step: int, config: TrainConfig) -> None:
    """The weights training returns are finite and give finite scores on its last batch: the
    last step's update can spoil them after its own loss was still finite."""
    bad = non_finite_tensor(model.state_dict())
    if bad is not None:
        raise diverged(f"after step {step}", f"tensor {bad} holds NaN or infinite values", config)
    mode = model.training
    model.eval()
    with torch.no_grad(), autocast_for(x.device):
        finite = bool(torch.isfinite(model(x).float()).all())
    model.train(mode)
    if not finite:
        raise diverged(f"after step {step}", "its weights give NaN or infinite scores", config)


def train(
    model: FCNBase,
    next_batch: BatchSource,
    config: TrainConfig,
    device: torch.device,
    validate: Validator | None = None,
) -> TrainResult:
    """Train ``model`` in place; on return it holds the best weights seen by ``validate``
    (by mean IU), or the last weights when there is no validation. A NaN or infinite loss, or
    returned weights that are (or score) non-finite, end it with ``TrainingDiverged``."""
    torch.manual_seed(config.seed)
    generator = torch.Generator().manual_seed(config.seed)
    model.to(device).train()
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=config.lr, weight_decay=config.weight_decay)
    use_scaler = device.type == "cuda" and not torch.cuda.is_bf16_supported()
    scaler = torch.amp.GradScaler("cuda", enabled=use_scaler)
    loss_fn = loss_function(config, device)
    result = TrainResult(best_metrics=None, best_step=-1)
    best_state: dict[str, torch.Tensor] | None = None
    started = time.perf_counter()
    running = float("nan")

    bar = tqdm(range(config.steps), desc="train", unit="step", disable=not config.progress)
    for step in bar:
        images, labels = next_batch()
        x = torch.from_numpy(images).to(device, non_blocking=True)
        y = torch.from_numpy(labels.astype(np.int64)).to(device, non_blocking=True)
        x, y = augment(x, y, generator)
        for group in optimizer.param_groups:
            group["lr"] = learning_rate(step, config)
        with autocast_for(device):
            loss = loss_fn(model(x).float(), y)
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
        value = float(loss.detach())
        if not math.isfinite(value):
            raise diverged(f"at step {step + 1}", f"loss {value}", config)
        running = value if math.isnan(running) else 0.95 * running + 0.05 * value
        bar.set_postfix(loss=f"{running:.3f}")

        last = step + 1 == config.steps
        if validate is not None and ((step + 1) % config.val_every == 0 or last):
            metrics = validate(model)
            model.train()
            entry = {"step": step + 1, "loss": running, **{k: metrics[k] for k in ("pixel_acc", "mean_acc", "mean_iou", "fw_iou")}}
            result.history.append(entry)
            log.info("step %d: loss %.4f, val mean IU %.4f, pixel acc %.4f", step + 1, running, metrics["mean_iou"], metrics["pixel_acc"])
            if improves(metrics, result.best_metrics):
                result.best_metrics, result.best_step = metrics, step + 1
                best_state = copy.deepcopy({k: v.detach().cpu() for k, v in model.state_dict().items()})
        elif (step + 1) % 50 == 0 or last:
            result.history.append({"step": step + 1, "loss": running})
        if not config.progress and (step + 1) % max(1, config.steps // 10) == 0:
            log.info("train: step %d of %d (%d %%), loss %.4f", step + 1, config.steps,
                     100 * (step + 1) // config.steps, running)

    if best_state is not None:
        model.load_state_dict(best_state)
    else:
        result.best_step = config.steps
    check_final_weights(model, x, result.best_step, config)
    result.seconds = time.perf_counter() - started
    return result
