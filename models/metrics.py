"""The paper's four segmentation metrics, from a confusion matrix that ignores nodata.

Long et al. report pixel accuracy, mean accuracy, mean IU and frequency-weighted IU. With
n_ij the pixels of class i predicted as j, t_i = sum_j n_ij the pixels of class i:

    pixel accuracy  sum_i n_ii / sum_i t_i
    mean accuracy   (1/n_cl) sum_i n_ii / t_i
    mean IU         (1/n_cl) sum_i n_ii / (t_i + sum_j n_ji - n_ii)
    frequency-weighted IU  (sum_k t_k)^-1 sum_i t_i n_ii / (t_i + sum_j n_ji - n_ii)

A confusion matrix adds up over tiles, so large rasters are scored tile by tile.
Classes that appear neither in the labels nor in the predictions are left out of the means
(their IU is undefined), and classes absent from the labels are left out of mean accuracy.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, TypedDict

import numpy as np

IGNORE_INDEX = 255


class Metrics(TypedDict):
    pixel_acc: float
    mean_acc: float
    mean_iou: float
    fw_iou: float
    per_class_iou: list[float | None]
    confusion: list[list[int]]


def confusion_matrix(
    predicted: np.ndarray, target: np.ndarray, num_classes: int, ignore_index: int = IGNORE_INDEX
) -> np.ndarray:
    """(num_classes, num_classes) int64 counts, rows = true class, columns = predicted class."""
    target = np.asarray(target).ravel()
    predicted = np.asarray(predicted).ravel()
    valid = (target != ignore_index) & (target < num_classes)
    index = target[valid].astype(np.int64) * num_classes + predicted[valid].astype(np.int64)
    counts = np.bincount(index, minlength=num_classes * num_classes)
    return counts[: num_classes * num_classes].reshape(num_classes, num_classes)


def metrics_from_confusion(confusion: np.ndarray) -> Metrics:
    """The four metrics, per-class IU and the matrix itself, as plain JSON-ready types."""
    confusion = np.asarray(confusion, dtype=np.float64)
    true_pixels = confusion.sum(axis=1)
    predicted_pixels = confusion.sum(axis=0)
    hits = np.diag(confusion)
    union = true_pixels + predicted_pixels - hits
    total = true_pixels.sum()
    with np.errstate(divide="ignore", invalid="ignore"):
        iou = np.where(union > 0, hits / union, np.nan)
        accuracy = np.where(true_pixels > 0, hits / true_pixels, np.nan)
    present = true_pixels > 0
    return Metrics(
        pixel_acc=float(hits.sum() / total) if total else float("nan"),
        mean_acc=float(np.nanmean(accuracy)) if present.any() else float("nan"),
        mean_iou=float(np.nanmean(iou)) if (union > 0).any() else float("nan"),
        fw_iou=float((true_pixels[present] * iou[present]).sum() / total) if total else float("nan"),
        per_class_iou=[None if np.isnan(v) else float(v) for v in iou],
        confusion=confusion.astype(np.int64).tolist(),
    )


def named_metrics(metrics: Mapping[str, Any], class_names: Sequence[str]) -> dict[str, Any]:
    """The metrics with ``per_class_iou`` as one ``{"class_id", "class", "iou"}`` per class, in
    class-id order: what ``evaluate --json`` prints, the card keeps and the train-fcn flow returns.
    A list, not a name -> IoU mapping, so that entry ``i`` is still class ``i`` (as in the bare list
    it replaces and in ``confusion``'s rows) and a class id stays beside its name; an old reader that
    took the entries for numbers fails, not misreads."""
    per_class = [{"class_id": i, "class": name, "iou": iou}
                 for i, (name, iou) in enumerate(zip(class_names, class_ious(metrics), strict=True))]
    return {**metrics, "per_class_iou": per_class}


def class_ious(metrics: Mapping[str, Any]) -> list[float | None]:
    """Each class's IoU in class-id order from ``per_class_iou`` as named entries (``named_metrics``)
    or as the bare list of cards written before them; [] when not recorded."""
    return [entry["iou"] if isinstance(entry, Mapping) else entry for entry in metrics.get("per_class_iou") or []]
