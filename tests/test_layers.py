"""The layers of the code, checked by parsing every module (nothing is imported): which part of
fcnseg may import which (the rule: ``fcnseg/errors.py``'s docstring). An import inside a function
or under ``TYPE_CHECKING`` counts as much as one at the top of a module."""

from __future__ import annotations

import ast
import subprocess
import sys
from functools import cache
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
#: Each folder of the repository and the package it installs as (pyproject.toml's package-dir).
PACKAGES = {"fcnseg": "fcnseg", "models": "fcnseg.models", "pipeline": "fcnseg.pipeline", "flows": "fcnseg.flows"}
#: The bottom layer: standard library only, nothing else of fcnseg.
FOUNDATION = ("fcnseg", "fcnseg.errors", "fcnseg.atomic", "fcnseg.digest")
#: The top layer: the command line and what only it uses.
COMMAND_LINE = ("fcnseg.cli", "fcnseg.tables", "fcnseg.demo", "fcnseg.bench", "fcnseg.__main__")


def module_name(path: Path) -> str:
    folder, *rest = path.relative_to(REPO).with_suffix("").parts
    parts = [PACKAGES[folder], *rest]
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


@cache
def modules() -> dict[str, Path]:
    """Every module of fcnseg by its dotted name."""
    found = {module_name(path): path for folder in PACKAGES for path in sorted((REPO / folder).rglob("*.py"))}
    assert set(PACKAGES.values()) | set(FOUNDATION) | {"fcnseg.models.card"} <= set(found)  # the layout it knows
    return found


def imported(path: Path) -> set[str]:
    """The modules a file imports anywhere in it: ``from a.b import c`` counts as a.b and a.b.c
    (c may be a module or a name; either way a.b is imported)."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            assert node.level == 0, f"{path}:{node.lineno}: a relative import (fcnseg's imports are absolute)"
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return names


def within(name: str, packages: tuple[str, ...]) -> bool:
    return any(name == p or name.startswith(f"{p}.") for p in packages)


def violations(importers: tuple[str, ...], forbidden: tuple[str, ...]) -> list[str]:
    """``importer imports imported`` for each import of something in ``forbidden`` by a module in ``importers``."""
    return [f"{name} imports {target}" for name, path in modules().items() if within(name, importers)
            for target in sorted(imported(path)) if within(target, forbidden)]


PREFECT = ("prefect", "prefect_dask")


@pytest.mark.parametrize(("importers", "forbidden"), [
    (("fcnseg.models",), ("fcnseg.pipeline", "fcnseg.flows", *PREFECT, *COMMAND_LINE)),
    (("fcnseg.pipeline",), ("fcnseg.flows", *PREFECT, *COMMAND_LINE)),
    (("fcnseg.flows",), COMMAND_LINE),
], ids=["models", "pipeline", "flows"])
def test_a_layer_imports_nothing_above_it(importers, forbidden):
    assert violations(importers, forbidden) == []


def test_the_foundation_imports_nothing_else_of_fcnseg():
    """errors.py and atomic.py are what models/ and pipeline/ both stand on; the package's
    __init__.py runs before either, so it must import nothing of fcnseg either (not the CLI)."""
    found = [f"{name} imports {target}" for name in FOUNDATION for target in sorted(imported(modules()[name]))
             if within(target, ("fcnseg",))]
    assert found == []


def test_the_model_card_imports_no_torch():
    """The products and ``fcnseg query`` describe outputs by the card: importing it must stay light."""
    assert not {name.split(".")[0] for name in imported(modules()["fcnseg.models.card"])} & {"torch", "safetensors"}
    code = "import fcnseg.models.card, sys; assert not {'torch', 'safetensors'} & set(sys.modules), sys.modules.keys()"
    subprocess.run([sys.executable, "-c", code], check=True)


def test_cluster_specs_does_not_import_cluster():
    """cluster.py builds on cluster_specs.py; the other way round was a cycle closed by imports inside functions."""
    assert violations(("fcnseg.pipeline.cluster_specs",), ("fcnseg.pipeline.cluster",)) == []


def pipeline(*names: str) -> tuple[str, ...]:
    return tuple(f"fcnseg.pipeline.{name}" for name in names)


def loose_modules() -> tuple[str, ...]:
    """The modules at the top of ``pipeline/`` (not its ``__init__``, not a sub-package's)."""
    return tuple(name for name, path in modules().items() if path.parent == REPO / "pipeline" and path.stem != "__init__")


#: Imports the layers do not want yet, each named (docs/design.md, "Not yet"): none at present
#: (segment/plan.py's polygon cell and model description left products with 67fce94).
NOT_YET: set[tuple[str, str]] = set()


def not_yet(found: list[str]) -> list[str]:
    """``importer imports imported`` lines less those NOT_YET names."""
    known = [f"{name} imports {target}" for name, target in NOT_YET]
    return [v for v in found if not any(v == k or v.startswith(f"{k}.") for k in known)]


def unwanted(importers: tuple[str, ...], forbidden: tuple[str, ...]) -> list[str]:
    """``violations`` less those NOT_YET names."""
    return not_yet(violations(importers, forbidden))


@pytest.mark.parametrize(("importers", "forbidden"), [
    (None, pipeline("segment", "orchestrator", "products", "analysis", "training", "synth", "engine")),
    (pipeline("synth"), pipeline("segment", "orchestrator", "products", "analysis", "training", "engine", "output")),
    (pipeline("analysis"), pipeline("segment", "orchestrator", "products", "training", "synth", "engine", "output")),
    (pipeline("engine"), pipeline("segment", "orchestrator", "products", "analysis", "training", "synth", "output")),
    (pipeline("output"), pipeline("segment", "orchestrator", "training", "synth", "engine")),
    (pipeline("products"), pipeline("segment", "orchestrator", "training", "synth", "engine")),
    (pipeline("training"), pipeline("segment", "orchestrator", "products", "synth", "output")),
    (pipeline("segment"), pipeline("orchestrator", "products", "training", "synth")),
    (pipeline("orchestrator"), pipeline("training", "synth")),
], ids=["loose modules", "synth", "analysis", "engine", "output", "products", "training", "segment", "orchestrator"])
def test_a_part_of_pipeline_imports_nothing_above_it(importers, forbidden):
    """Inside pipeline/, bottom to top (docs/design.md): analysis below the output folder's package
    (it opens a store by its path), which never reaches up into segment/ (its run identity lived
    there), the engine (the tile loop) into none of the stages it serves, training into segment/
    (evaluate runs the engine, not the orchestrator), segment/ (the stage on Dask) into the
    products or the orchestrator that drives it."""
    assert unwanted(importers or loose_modules(), forbidden) == []


def test_only_the_orchestrator_imports_the_products():
    """The CLI, the library face and the flows run the products through the orchestrator alone:
    nothing else of fcnseg (the flows included) imports ``pipeline/products/``."""
    found = [f"{name} imports {target}" for name, path in modules().items()
             if not within(name, pipeline("products", "orchestrator"))  # by name: "fcnseg" holds them all
             for target in sorted(imported(path)) if within(target, pipeline("products"))]
    assert not_yet(found) == []
    assert violations(("fcnseg.flows",), pipeline("products")) == []


#: The modules that only re-exported others' new homes (issue 23), gone with their importers.
STUBS = ("pipeline/outputs.py", "pipeline/object_store.py", "pipeline/segment/guard.py", "pipeline/segment/record.py",
         "pipeline/segment/records.py", "pipeline/segment/predict.py", "pipeline/segment/tile_source.py",
         "pipeline/segment/staging.py", "pipeline/segment/finish.py")


def test_no_stubs_keep_old_import_paths():
    """One home per name: no module of the old paths, none that re-exports another with ``import *``."""
    assert [stub for stub in STUBS if (REPO / stub).exists()] == []
    starred = [f"{name}:{node.lineno}" for name, path in modules().items()
               for node in ast.walk(ast.parse(path.read_text(), str(path)))
               if isinstance(node, ast.ImportFrom) and any(alias.name == "*" for alias in node.names)]
    assert starred == []
