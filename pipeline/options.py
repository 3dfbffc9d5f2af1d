"""Options as one definition: a frozen pydantic model that the CLI builds, the Prefect flows take as
a parameter and the library validates. Its fields' descriptions are the ``--help`` texts and the
flows' parameter schema alike, so the two cannot drift apart (``tests/test_option_sets.py``).

The descriptions themselves are ``option_texts``' strings, which the command line reads without
importing pydantic. A bad value fails as every fcnseg error does, in one line naming the
command-line option (``--tile must be a positive multiple of 32, got 100``): the models check their values in a
``mode="before"`` validator that raises these lines before pydantic's own constraints (which name
no option) are reached, and constructing a model turns pydantic's ``ValidationError`` (several
lines, a link) into a ``ValueError`` of that one line. A flow validating its parameters gets the
same line inside Prefect's "invalid parameters" message.
"""

from __future__ import annotations

from typing import Any, Self

from pydantic import BaseModel, ConfigDict, ValidationError

#: Side of a polygon cell in pixels (``SegmentOptions.polygon_cell``'s default, ``cell_polygons.CELL``):
#: the largest polygon fcnseg writes (a region beyond it is split in parts sharing a region_id).
#: 2048² pixels hold the most complex background with room to spare (measured:
#: docs/benchmarks.md#polygon-memory). Here, in a light module, so a plan needs no products.
POLYGON_CELL = 2048


class OptionModel(BaseModel):
    """Frozen, strict about names (a misspelt option in a flow's parameters is refused, not ignored),
    and failing in one line."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    def __init__(self, **data: Any) -> None:
        try:
            super().__init__(**data)
        except ValidationError as exc:
            raise ValueError(option_error(exc)) from None

    def replace(self, **changes: Any) -> Self:
        """A copy with ``changes``, validated as a new model is (``model_copy`` would not check them)."""
        return type(self)(**{**{name: getattr(self, name) for name in type(self).model_fields}, **changes})


def option_name(field: str) -> str:
    """The command-line option of a field: ``batch_size`` -> ``--batch-size``."""
    return "--" + field.replace("_", "-")


def option_error(exc: ValidationError) -> str:
    """pydantic's error as fcnseg's one line: a value checked by the model says it in its own words;
    anything pydantic refused itself (a wrong type, a misspelt name) names the option and the value."""
    error = exc.errors()[0]
    if error["type"] == "value_error":
        return str(error["ctx"]["error"])
    field = str(error["loc"][0]) if error["loc"] else ""  # the option, not the item of a list
    message = error["msg"][:1].lower() + error["msg"][1:]
    return f"{option_name(field)}: {message}, got {error['input']!r}"


def whole_number(value: Any) -> int | None:
    """``value`` where it is an int (not a bool), else None: the models check numbers before
    pydantic's constraints, and leave anything else to pydantic's type errors."""
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def real_number(value: Any) -> float | None:
    """``value`` where it is an int or float (not a bool), else None (``whole_number``)."""
    return value if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def check_band_numbers(bands: Any) -> None:
    """``--bands`` as given (a list or tuple; anything else is left to pydantic): 1-based numbers, at least one."""
    if isinstance(bands, (list, tuple)) and (not bands or any(whole_number(b) is not None and b < 1 for b in bands)):
        raise ValueError(f"--bands must be 1-based band numbers, got {list(bands)}")
