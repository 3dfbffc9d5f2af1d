"""A checkpoint as an ONNX file for other runtimes: the FCN with its normalisation and nodata
policy inside the graph, any height and width, the model card in the file's metadata.

What the graph takes (``docs/export.md``): ``pixels`` (batch, bands, height, width) float32, the
raw values as stored (uint8, uint16, int16 ... cast to float32, the cast ``normalize_on_device``
makes first) and ``valid`` (batch, height, width) bool. Inside: ``(x - mean) / std`` and the
nodata fill, the same float32 arithmetic as fcnseg's own path, so a runtime needs nothing from
the card to get fcnseg's numbers. Out: ``logits`` (batch, classes, height, width) float32 and
``labels`` (batch, height, width) uint8, argmax with 255 where not valid. Raw pixels rather than
normalised ones: the normalisation is then part of the model, as it is of a checkpoint, and a
consumer cannot pair a model with the wrong statistics.

Height and width are free (not only multiples of 32): the FCN's pools use ``ceil_mode`` and each
upsampling is cropped at the top-left, and the exported graph keeps those crops symbolic (checked
on several shapes of every residue class by ``tests/test_export.py``; each export is also checked
here against torch before it is written). Like fcnseg's tiles, a tile read on the stride-32 grid
with the card's halo gives a whole-image result.

The exporter: ``torch.onnx.export(dynamo=True)`` (torch.export + onnxscript), the one torch
maintains; the TorchScript exporter (``dynamo=False``) also works on this model but is deprecated
since torch 2.9. ``torch.export``'s own ``.pt2`` is not offered: on torch 2.13 it specialises the
top-left crops to the example's shape class (a runtime assertion that ``ceil(h/16) == 2 ceil(h/32)``),
so one file cannot take every tile's shape.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import warnings
from collections.abc import Callable, Iterator, Mapping
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from fcnseg.atomic import as_created, atomic_write
from fcnseg.errors import CheckpointError
from fcnseg.models.card import STRIDE, ModelCard, receptive_field
from fcnseg.models.fcn import FCNBase
from fcnseg.models.onnx_runtime import CARD_KEY, EXPORT_FORMAT, EXPORT_FORMAT_VERSION, EXPORT_KEY, require

log = logging.getLogger(__name__)

#: ONNX opset of the graph: the one torch's exporter translates to natively (its onnxscript functions are
#: written for 18; 16 and 17 go through onnx's version converter), and read by ONNX Runtime since 1.14.
OPSET = 18
INPUTS = ("pixels", "valid")
OUTPUTS = ("logits", "labels")
#: The example the graph is traced with: a batch of two (a batch of one would be fixed at one)
#: and a height and width that are not multiples of 32.
EXAMPLE_SHAPE = (2, 70, 45)


class RawPixelFCN(nn.Module):
    """The FCN behind fcnseg's normalisation and nodata policy: raw pixels and validity in,
    logits and labels (255 where not valid) out."""

    def __init__(self, model: FCNBase, card: ModelCard) -> None:
        super().__init__()
        self.model = model
        shape = (1, -1, 1, 1)
        self.register_buffer("mean", torch.tensor(card.normalization.mean, dtype=torch.float32).view(shape))
        self.register_buffer("std", torch.tensor(card.normalization.std, dtype=torch.float32).view(shape))
        self.fill = float(card.nodata.fill)
        self.nodata_label = int(card.nodata.label)

    def forward(self, pixels: Tensor, valid: Tensor) -> tuple[Tensor, Tensor]:
        x = (pixels - self.mean) / self.std
        x = torch.where(valid[:, None], x, torch.full_like(x, self.fill))
        logits = self.model(x)
        labels = logits.argmax(dim=1).to(torch.uint8)
        return logits, torch.where(valid, labels, torch.full_like(labels, self.nodata_label))


def fcnseg_version() -> str:
    try:
        return version("fcnseg")
    except PackageNotFoundError:
        return "unknown"


def export_info(card: ModelCard, source: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """What the file says of itself besides the card: the graph's inputs and outputs, the tiling
    its results need (stride, receptive field, the halo fcnseg would use), who wrote it."""
    radius = receptive_field(card.arch) // 2
    return {
        "format": EXPORT_FORMAT, "format_version": EXPORT_FORMAT_VERSION, "fcnseg_version": fcnseg_version(),
        "torch": torch.__version__, "opset": OPSET,
        "inputs": {"pixels": "float32 (batch, bands, height, width): raw pixel values as stored, cast to float32",
                   "valid": "bool (batch, height, width): false where the input is nodata"},
        "outputs": {"logits": "float32 (batch, classes, height, width)",
                    "labels": f"uint8 (batch, height, width): argmax of logits, {card.nodata.label} where not valid"},
        "normalization": "inside the graph: (pixels - mean) / std, nodata pixels set to nodata.fill",
        "stride": STRIDE, "receptive_field": receptive_field(card.arch), "halo": -(-radius // STRIDE) * STRIDE,
        "tiling": "tile origins on multiples of stride, each tile read with halo pixels around its core",
        **({"source": dict(source)} if source else {}),
    }


def export_onnx(model: FCNBase, card: ModelCard, path: str | Path, *, source: Mapping[str, Any] | None = None,
                check_before_rename: Callable[[], None] | None = None) -> Path:
    """Write ``model`` (with ``card``) as an ONNX file at ``path``, atomically: the graph is checked
    against torch on an odd-sized batch before it is renamed into place, so a wrong graph is never
    left behind. ``source``: what the export came from (the checkpoint's path and content hash);
    ``check_before_rename``: called just before the rename (the caller's overwrite rule, again).
    ``model`` is cast to float32 in place (a checkpoint loads as float32 already)."""
    require("onnxscript", "fcnseg export --format onnx")
    onnx = require("onnx", "fcnseg export --format onnx")
    path = Path(path)
    wrapped = RawPixelFCN(model.float().eval(), card).eval()
    program = _export(wrapped, card)
    program.model.producer_name, program.model.producer_version = "fcnseg", fcnseg_version()
    program.model.doc_string = f"fcnseg {card.arch} (width {card.width:g}): raw pixels and validity in (docs/export.md)"
    program.model.metadata_props[CARD_KEY] = json.dumps(card.to_json(), sort_keys=True)
    program.model.metadata_props[EXPORT_KEY] = json.dumps(export_info(card, source), sort_keys=True)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_write(path, durable=True) as tmp:
        program.save(tmp, external_data=False)
        onnx.checker.check_model(str(tmp))
        check_against_torch(tmp, wrapped, card, name=path)
        if check_before_rename is not None:
            check_before_rename()
        as_created(tmp)
    log.info("wrote %s (%s, width %g, opset %d)", path, card.arch, card.width, OPSET)
    return path


def _export(wrapped: RawPixelFCN, card: ModelCard) -> Any:
    """The dynamo exporter's program, batch, height and width symbolic; its chatter kept out of
    stdout (a command's stdout is its result)."""
    batch, height, width = EXAMPLE_SHAPE
    example = (torch.zeros(batch, card.bands, height, width), torch.ones(batch, height, width, dtype=torch.bool))
    dims = {"pixels": {0: "batch", 2: "height", 3: "width"}, "valid": {0: "batch", 1: "height", 2: "width"}}
    with _quiet():
        program = torch.onnx.export(wrapped, example, dynamo=True, input_names=list(INPUTS),
                                    output_names=list(OUTPUTS), dynamic_shapes=dims, opset_version=OPSET,
                                    optimize=True, verbose=False, external_data=False)
    logits, labels = program.model.graph.outputs
    shape_type = type(program.model.graph.inputs[0].shape)
    logits.shape = shape_type(["batch", card.num_classes, "height", "width"])  # the input's (the exporter's
    labels.shape = shape_type(["batch", "height", "width"])  # expression of the crops says the same, unreadably)
    return program


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """The exporter's progress lines (stdout), warnings and torch's log lines, out of the way."""
    names = ("torch.onnx", "torch.export", "torch._export", "torch.fx", "onnxscript", "onnx_ir")
    loggers = [logging.getLogger(name) for name in names]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
            warnings.simplefilter("ignore")
            yield
    finally:
        for logger, level in zip(loggers, levels, strict=True):
            logger.setLevel(level)


#: How far the exported logits may lie from torch's on the check's batch, relative to their size:
#: the same arithmetic in another library's kernels (summation order), nothing more.
CHECK_TOLERANCE = 1e-4


def check_against_torch(path: Path, wrapped: RawPixelFCN, card: ModelCard, *,
                        name: Path | None = None) -> None:
    """The written graph run by onnxruntime on a batch of a new shape (odd height and width, another
    batch size) against torch: CheckpointError (naming ``name``, the file to be) if the logits differ
    beyond summation order or a nodata pixel gets a class."""
    ort = require("onnxruntime", "checking an ONNX export")
    rng = np.random.default_rng(0)
    scale = np.abs(np.asarray(card.normalization.mean)) + 3 * np.asarray(card.normalization.std)
    pixels = (rng.random((3, card.bands, 77, 100)) * scale[None, :, None, None]).astype(np.float32)
    valid = rng.random((3, 77, 100)) > 0.1
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    logits, labels = session.run(list(OUTPUTS), {"pixels": pixels, "valid": valid})
    with torch.inference_mode():
        expected, _ = wrapped(torch.from_numpy(pixels), torch.from_numpy(valid))
    expected = expected.numpy()
    error = float(np.abs(logits - expected).max()) if logits.shape == expected.shape else float("inf")
    if error > CHECK_TOLERANCE * max(1.0, float(np.abs(expected).max())):
        raise CheckpointError(f"{name or path}: the exported graph's logits differ from torch's by {error:.3g};"
                              " not written")
    if not (labels[~valid] == card.nodata.label).all():
        raise CheckpointError(f"{name or path}: the exported graph labels nodata pixels; not written")
