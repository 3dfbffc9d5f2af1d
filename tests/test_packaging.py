"""What the package declares against what its code is: every sub-package installs (an installed, not
editable, fcnseg must hold every module), and the declared dependencies are the third-party modules the
code imports, no more and no fewer. Nothing is imported or installed: modules are parsed."""

from __future__ import annotations

import ast
import sys
import tomllib
from importlib.metadata import packages_distributions
from pathlib import Path

from packaging.requirements import Requirement

REPO = Path(__file__).resolve().parents[1]
PYPROJECT = tomllib.loads((REPO / "pyproject.toml").read_text())
#: Declared dependencies the code never imports, each with why it is declared.
USED_WITHOUT_IMPORT = {
    "rfc3339-validator": "jsonschema checks the STAC items' date-time fields with it (format checking)",
}


def installed_package(folder: Path) -> str:
    """The dotted name a source folder installs as, by pyproject.toml's package-dir."""
    package_dir = PYPROJECT["tool"]["setuptools"]["package-dir"]
    top, *rest = folder.relative_to(REPO).parts
    (package,) = [name for name, source in package_dir.items() if source == top]
    return ".".join([package, *rest])


def code_folders() -> list[Path]:
    """Every folder of fcnseg's code that holds Python modules."""
    tops = set(PYPROJECT["tool"]["setuptools"]["package-dir"].values())
    return sorted({path.parent for top in tops for path in (REPO / top).rglob("*.py")})


def data_folders() -> list[Path]:
    """The folders of data only (the demo model's weights, the STAC schemas), by package-data."""
    package_dir = PYPROJECT["tool"]["setuptools"]["package-dir"]
    folders = []
    for package in PYPROJECT["tool"]["setuptools"]["package-data"]:
        top = max((name for name in package_dir if package.startswith(name)), key=len)
        folders.append(REPO / package_dir[top] / Path(*package.removeprefix(top).lstrip(".").split(".")))
    return folders


def third_party_imports() -> set[str]:
    """The top-level names of every non-standard module that fcnseg's code imports, anywhere in a file."""
    names: set[str] = set()
    for top in set(PYPROJECT["tool"]["setuptools"]["package-dir"].values()):
        for path in (REPO / top).rglob("*.py"):
            for node in ast.walk(ast.parse(path.read_text(), str(path))):
                if isinstance(node, ast.Import):
                    names |= {alias.name.split(".")[0] for alias in node.names}
                elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                    names.add(node.module.split(".")[0])
    return {name for name in names if name not in sys.stdlib_module_names and name != "fcnseg"}


def declared_distributions() -> set[str]:
    """The distributions pyproject.toml's dependencies name, extras counted (dask[distributed])."""
    declared = set()
    for line in PYPROJECT["project"]["dependencies"]:
        requirement = Requirement(line)
        declared.add(requirement.name.lower())
        declared |= {extra.lower() for extra in requirement.extras}
    return declared


def test_every_sub_package_is_installed():
    listed = set(PYPROJECT["tool"]["setuptools"]["packages"])
    assert all(folder.is_dir() for folder in data_folders())
    needed = {installed_package(folder) for folder in code_folders() + data_folders()}
    assert needed - listed == set(), "pyproject.toml's packages lacks these: a wheel would leave them out"
    assert listed - needed == set(), "pyproject.toml's packages names folders that do not exist"


def test_declared_dependencies_are_the_imported_ones():
    distributions = packages_distributions()
    imported = {distributions[name][0].lower() for name in third_party_imports()}
    declared = declared_distributions()
    assert imported - declared == set(), "imported but not declared in pyproject.toml"
    assert declared - imported == set(USED_WITHOUT_IMPORT), "declared but never imported"
