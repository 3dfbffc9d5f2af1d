"""The names of one output folder, files and run state alike: every stage and reader agrees on them here.

Kept free of heavy imports so that readers (STAC, query) can use the names without the
Dask/torch stack. The run state (``STATE_DIR``) is fcnseg's own: what a killed run resumes from,
never one of the outputs an analyst opens.
"""

from __future__ import annotations

from pathlib import Path

STORE_NAME = "labels.zarr"
LABELS_COG = "labels.tif"
#: labels.tif's class names for GDAL (PAM: category names, attribute table) and QGIS (its default style).
LABELS_PAM = "labels.tif.aux.xml"
LABELS_QML = "labels.qml"
PROBABILITIES_COG = "probabilities.tif"
#: The per-pixel confidence (``--confidence``): its COG and its picture beside the quicklook.
CONFIDENCE_COG = "confidence.tif"
CONFIDENCE_PNG = "confidence.png"
POLYGONS_PARQUET = "polygons.parquet"
POLYGONS_GPKG = "polygons.gpkg"
QUICKLOOK_PNG = "quicklook.png"
ITEM_JSON = "item.json"
RUN_JSON = "run.json"

#: Every file a run may leave in OUT (a run with other parameters starts by removing them).
OUTPUT_FILES = (RUN_JSON, ITEM_JSON, STORE_NAME, LABELS_COG, LABELS_PAM, LABELS_QML, PROBABILITIES_COG, POLYGONS_PARQUET, POLYGONS_GPKG,
                QUICKLOOK_PNG, CONFIDENCE_COG, CONFIDENCE_PNG)

#: The advisory lock of a local OUT (``hold``): present only while a run holds it.
LOCK_FILE = ".fcnseg.lock"
#: Resume state: the run's parameters, the execution its chunks were computed with, the ledger.
STATE_DIR = ".fcnseg-run"
#: In STATE_DIR: the run's identity (on a bucket too: it tells a later run the prefix is fcnseg's).
PARAMETERS_JSON = "parameters.json"
#: In STATE_DIR: how the chunks were computed (``cpu fp32`` ...): a rerun on other workers is refused.
EXECUTION_JSON = "execution.json"
#: In STATE_DIR: the chunk ledger, one marker per finished chunk (``ledger``).
LEDGER_DIR = "done"
#: In STATE_DIR: blend's scratch, pass-1 results and their ledger (removed when the run completes).
SCRATCH_STORE = "blend.zarr"
PASS1_LEDGER = "pass1"
#: In STATE_DIR on a bucket: the lease of the run writing the prefix (``hold``).
LEASE_JSON = "lease.json"

#: What a run keeps in STATE_DIR about its chunks (a restart forgets them all).
CHUNK_STATE = (LEDGER_DIR, SCRATCH_STORE, PASS1_LEDGER)
#: The same files relative to OUT, as keys under an object-store prefix.
PARAMETERS_KEY = f"{STATE_DIR}/{PARAMETERS_JSON}"
LEASE_KEY = f"{STATE_DIR}/{LEASE_JSON}"


def state_folder(out: str | Path) -> Path:
    """OUT's run state (``STATE_DIR``)."""
    return Path(out) / STATE_DIR


def ledger_folder(out: str | Path) -> Path:
    """OUT's chunk ledger: where ``ChunkLedger`` keeps the markers of the final store."""
    return state_folder(out) / LEDGER_DIR


def labels_in(path: str | Path) -> str:
    """What a reader of ``path`` opens: an output folder's labels.zarr (``fcnseg query OUT``), else
    ``path`` itself (a labels.zarr, labels.tif or any class raster)."""
    text = str(path).rstrip("/") or str(path)
    return store_of(text) if Path(text).is_dir() and not text.endswith(".zarr") else str(path)


def store_of(out: str | Path) -> str:
    """labels.zarr of an output folder (or the store itself, given its path): what a reader of a
    folder opens (``analysis`` takes the store's path; it knows no folder's names)."""
    text = str(out).rstrip("/")
    return text if text.endswith(".zarr") else f"{text}/{STORE_NAME}"
