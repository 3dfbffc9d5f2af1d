"""The outputs in QGIS itself (headless) and in the system's GDAL: labels.tif's legend shows the
class names in their colours, polygons.gpkg opens drawn by class. Skips where QGIS is absent
(Debian: ``apt-get install python3-qgis``; ``.ci/run`` installs it)."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from fcnseg.models import DEMO_MODEL
from fcnseg.models.checkpoint import read_card
from fcnseg.pipeline.products.styles import hex_color
from fcnseg.pipeline.orchestrator import SegmentOptions, segment
from fcnseg.pipeline.synth import write_scene

SYSTEM_PYTHON = "/usr/bin/python3"
CHECK = Path(__file__).with_name("qgis_check.py")


def qgis_available() -> bool:
    try:
        return subprocess.run([SYSTEM_PYTHON, "-c", "import qgis.core, osgeo.gdal"], capture_output=True,
                              timeout=60).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


pytestmark = pytest.mark.skipif(not qgis_available(), reason="needs QGIS (apt-get install python3-qgis)")


def test_qgis_shows_the_class_names_in_their_colours(tmp_path, cluster):
    image, _ = write_scene(tmp_path / "scene", 256, seed=12)
    out = tmp_path / "out"
    report = segment(image, DEMO_MODEL, out, SegmentOptions(tile=128), scheduler=cluster, progress=False)
    env = {**os.environ, "QT_QPA_PLATFORM": "offscreen", "XDG_RUNTIME_DIR": str(tmp_path)}
    result = subprocess.run([SYSTEM_PYTHON, str(CHECK), str(out)], capture_output=True, text=True, env=env, timeout=120)
    assert result.returncode == 0, result.stderr
    seen = json.loads(result.stdout.strip().splitlines()[-1])
    card = read_card(DEMO_MODEL)
    legend = [[c.name, hex_color(tuple(c.color))] for c in card.classes]
    assert seen["labels_valid"] and seen["labels_renderer"] == "paletted"
    assert seen["labels_legend"] == legend  # one row per class, named, in its colour: not 256 rows "0" … "255"
    assert seen["polygons_valid"] and seen["polygons_count"] == report.polygons
    assert seen["polygons_renderer"] == "categorizedSymbol" and seen["polygons_field"] == "class_name"
    assert seen["polygons_legend"] == legend
    assert seen["gdal_category_names"] == [c.name for c in card.classes]  # GDAL (and so QGIS without the .qml)
    assert seen["gdal_rat"] == [[str(i), c.name, *map(str, c.color), "255"] for i, c in enumerate(card.classes)]
