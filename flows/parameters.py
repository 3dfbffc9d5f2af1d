"""The flows' parameter descriptions where Prefect reads them.

A flow's parameters are typed ``Annotated[T, Field(description=...)]``, the descriptions being the
command line's help texts (``pipeline.option_texts``); an options model (``SegmentOptions``,
``TrainRequest``) carries its own fields' descriptions into the schema. Prefect takes a top-level
parameter's description from the docstring's ``Args:`` section, or from a ``Field`` given as the
default (which a direct call of the function would then receive as the value), not from
``Annotated``: ``described`` writes that section from the annotations, so the deployment's form
in the UI, ``help()`` and ``--help`` say the same.
"""

from __future__ import annotations

import inspect
import typing
from collections.abc import Callable
from typing import TypeVar

from pydantic.fields import FieldInfo

F = TypeVar("F", bound=Callable[..., object])


def parameter_descriptions(fn: Callable[..., object]) -> dict[str, str]:
    """Each parameter's description, from its ``Annotated[..., Field(description=...)]``."""
    hints = typing.get_type_hints(fn, include_extras=True)
    found = {}
    for name in inspect.signature(fn).parameters:
        for meta in getattr(hints.get(name), "__metadata__", ()):
            if isinstance(meta, FieldInfo) and meta.description:
                found[name] = meta.description
    return found


def described(fn: F) -> F:
    """``fn`` with an ``Args:`` section (Google style, what Prefect parses) of its parameters'
    descriptions appended to its docstring; put it below ``@flow``."""
    lines = [f"    {name}: {text}" for name, text in parameter_descriptions(fn).items()]
    if lines:
        fn.__doc__ = "\n".join([inspect.getdoc(fn) or "", "", "Args:", *lines])
    return fn
