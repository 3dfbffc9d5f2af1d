"""How a label value becomes a class id: the one text form the model card records for a value,
the order of values that name no class id, and the ids training gives outside every feature.

The bottom of the label sources (``labels.py`` reads class rasters, ``vector_labels.py`` burns
vectors): both map values so, so that evaluation maps its reference labels exactly as training did.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import numpy as np

UNLABELLED = 255
BACKGROUND = 0  #: the class id of pixels outside every feature under ``--outside background``
FOOTPRINT = 1  #: the class id of every feature of a layer without a class field


def value_key(value: Any) -> str | None:
    """A label value as the text the card records: whole numbers as their digits (``1``, ``1.0``,
    ``"1"`` and ``"01"`` are all ``"1"``), anything else as stripped text; None when missing."""
    if value is None or (isinstance(value, float) and not np.isfinite(value)):
        return None
    if isinstance(value, (bool, np.bool_)):
        return str(int(value))
    if isinstance(value, (int, np.integer)):
        return str(int(value))
    if isinstance(value, (float, np.floating)):
        return str(int(value)) if float(value).is_integer() else repr(float(value))
    text = str(value).strip()
    try:
        return str(int(text))
    except ValueError:
        return text


def is_whole(key: str | None) -> bool:
    """Whether a recorded value is a whole number: such values may be class ids themselves."""
    try:
        int(key)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return False
    return True


def natural_order(keys: Iterable[str]) -> list[str]:
    """Whole numbers first in numeric order (``"2"`` before ``"10"``), then text in text order."""
    return sorted(set(keys), key=lambda k: (0, int(k), "") if is_whole(k) else (1, 0, k))


def identity_values(num_classes: int) -> list[str | None]:
    """The card's values of a model whose label values are its class ids."""
    return [str(i) for i in range(num_classes)]
