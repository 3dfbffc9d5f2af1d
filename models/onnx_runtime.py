"""An fcnseg ONNX export run by onnxruntime: the model card read back from the file's metadata,
raw tile pixels in, the labels fcnseg would give out (``docs/export.md`` has the tiled recipe).

Torch-free on purpose (numpy, onnxruntime and the torch-free card only): a machine that serves the
exported file needs neither torch nor the checkpoint. ``fcnseg export`` writes the file
(``models/onnx_export.py``, which takes its metadata keys from here).
"""

from __future__ import annotations

import importlib
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from fcnseg.errors import CheckpointError, FcnsegError
from fcnseg.models.card import ModelCard

__all__ = ["CARD_KEY", "EXPORT_KEY", "EXTRA", "OnnxModel", "read_onnx_card", "require"]

#: The metadata_props keys of an export: the model card (``ModelCard.to_json``) and what the graph is.
CARD_KEY = "fcnseg.card"
EXPORT_KEY = "fcnseg.export"
EXPORT_FORMAT = "fcnseg-onnx"
EXPORT_FORMAT_VERSION = 1
#: The extra that brings what an export and its runtime need (pyproject.toml's ``onnx``), in words
#: without brackets: the command line's error line is rich markup, where ``[onnx]`` would vanish.
EXTRA = "fcnseg's extra 'onnx' (pip install onnx onnxscript onnxruntime, pinned in constraints.txt)"


def require(module: str, purpose: str) -> Any:
    """``module`` imported, or one line that names the extra to install (imported by name: the
    onnx packages are an extra, not a dependency)."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise FcnsegError(f"{purpose} needs {exc.name or module}, of {EXTRA}") from None


def read_onnx_card(path: Path, metadata: dict[str, str]) -> tuple[ModelCard, dict[str, Any]]:
    """The card and the export's description from an ONNX file's metadata_props; CheckpointError
    naming the file for anything fcnseg export did not write."""
    if CARD_KEY not in metadata or EXPORT_KEY not in metadata:
        raise CheckpointError(f"{path}: an ONNX model without fcnseg's model card (not written by fcnseg export)")
    try:
        card = ModelCard.from_json(json.loads(metadata[CARD_KEY]))
        card.validate()
        info = json.loads(metadata[EXPORT_KEY])
    except (ValueError, KeyError, TypeError) as exc:
        raise CheckpointError(f"{path}: its fcnseg model card is damaged ({exc})") from None
    if info.get("format") != EXPORT_FORMAT or int(info.get("format_version", 0)) > EXPORT_FORMAT_VERSION:
        raise CheckpointError(f"{path}: export format {info.get('format')} version {info.get('format_version')};"
                              f" this fcnseg reads {EXPORT_FORMAT} up to version {EXPORT_FORMAT_VERSION}")
    return card, info


class OnnxModel:
    """``OnnxModel(path)``: an export loaded once; ``labels(pixels, valid)`` per tile or batch.

    ``providers``: onnxruntime's execution providers in order of preference (default: the CPU's);
    ``threads``: its intra-op threads (default: onnxruntime's, one per core).
    """

    def __init__(self, path: str | Path, *, providers: Sequence[str] | None = None, threads: int | None = None) -> None:
        self.path = Path(path)
        ort = require("onnxruntime", f"{self.path}: running an ONNX export")
        if not self.path.is_file():
            raise CheckpointError(f"{self.path}: no such ONNX file")
        options = ort.SessionOptions()
        if threads is not None:
            options.intra_op_num_threads = threads
        try:
            self.session = ort.InferenceSession(str(self.path), options,
                                                providers=list(providers or ["CPUExecutionProvider"]))
        except Exception as exc:  # noqa: BLE001 - onnxruntime's errors share no base class but Exception
            first = " ".join(str(exc).split())[:200]
            raise CheckpointError(f"{self.path}: not an ONNX model onnxruntime can load ({first})") from None
        self.card, self.info = read_onnx_card(self.path, self.session.get_modelmeta().custom_metadata_map)

    @property
    def providers(self) -> list[str]:
        """The execution providers the session runs on (onnxruntime drops those it lacks)."""
        return self.session.get_providers()

    def run(self, pixels: np.ndarray, valid: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """(logits, labels) of raw pixels: one tile (bands, h, w) or a batch (n, bands, h, w), as
        stored (any real type; cast to float32 as fcnseg's own path does). ``valid`` (h, w) or
        (n, h, w), False at nodata; None: every pixel whose bands are all finite."""
        return tuple(self._run(("logits", "labels"), pixels, valid))  # type: ignore[return-value]

    def labels(self, pixels: np.ndarray, valid: np.ndarray | None = None) -> np.ndarray:
        """uint8 labels (255 = nodata) of raw pixels, as ``run`` takes them (the logits stay in the runtime)."""
        return self._run(("labels",), pixels, valid)[0]

    def _run(self, outputs: Sequence[str], pixels: np.ndarray, valid: np.ndarray | None) -> list[np.ndarray]:
        pixels = np.asarray(pixels)
        single = pixels.ndim == 3
        if pixels.ndim not in (3, 4) or pixels.shape[-3] != self.card.bands:
            raise FcnsegError(f"{self.path}: pixels of shape {pixels.shape}; the model takes"
                              f" ({self.card.bands}, h, w) or (n, {self.card.bands}, h, w) raw pixel values")
        if pixels.dtype.kind not in "biuf":
            raise FcnsegError(f"{self.path}: pixels of type {pixels.dtype}; the model takes real pixel values")
        if valid is None:
            valid = np.isfinite(pixels).all(axis=-3) if pixels.dtype.kind == "f" else np.ones(
                pixels.shape[:-3] + pixels.shape[-2:], dtype=bool)
        valid = np.asarray(valid, dtype=bool)
        if valid.shape != pixels.shape[:-3] + pixels.shape[-2:]:
            raise FcnsegError(f"{self.path}: valid of shape {valid.shape} for pixels of shape {pixels.shape}")
        if single:
            pixels, valid = pixels[None], valid[None]
        feed = {"pixels": np.ascontiguousarray(pixels, dtype=np.float32), "valid": np.ascontiguousarray(valid)}
        results = self.session.run(list(outputs), feed)
        return [result[0] for result in results] if single else results
