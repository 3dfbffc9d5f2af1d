"""``fcnseg export MODEL --format onnx``: a checkpoint as a file other runtimes run, the model card
in its metadata (``docs/export.md``)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Optional

import typer

from fcnseg.cli.base import app
from fcnseg.cli.errors import clear_errors
from fcnseg.errors import OutputConflict

FORMATS = ("onnx",)
#: Why ``--format pt2`` (torch.export) is not one of them, in the words the command prints.
PT2_REFUSED = ("--format pt2: not offered: torch.export on this torch fixes the FCN's crops to the example"
               " tile's shape class, so one .pt2 cannot take every tile's height and width (docs/export.md);"
               " use --format onnx")


@app.command()
def export(
    model: Annotated[str, typer.Argument(help="A checkpoint (.safetensors), or 'demo' for the shipped demo model.")],
    fmt: Annotated[str, typer.Option("--format", help="onnx: an ONNX graph (opset 18) of raw pixels and validity to logits and labels, any height and width, the model card in its metadata.")] = "onnx",
    out: Annotated[Optional[Path], typer.Option(help="File to write; default: MODEL's name with .onnx, in the current folder. An existing file is replaced only with --overwrite.")] = None,
    overwrite: Annotated[bool, typer.Option(help="Replace an existing --out file (never MODEL itself).")] = False,
) -> None:
    """Export a model for other runtimes (ONNX Runtime, or any that reads ONNX opset 18): normalisation and nodata inside the graph, the card (bands, normalisation, nodata, classes, colours, label mapping, stride, receptive field, fcnseg version) in its metadata. The export is checked against torch before it is written."""
    from fcnseg.api import model_path

    with clear_errors(out):
        if fmt == "pt2":
            raise ValueError(PT2_REFUSED)
        if fmt not in FORMATS:
            raise ValueError(f"--format {fmt}: choose one of {', '.join(FORMATS)}")
        path = model_path(model)
        target = out if out is not None else Path(f"{path.stem}.onnx")
        check_out(target, path, overwrite)
        from fcnseg.models.onnx_runtime import require

        for module in ("onnx", "onnxscript", "onnxruntime"):  # before the model is loaded: one line, at once
            require(module, "fcnseg export --format onnx")
        from fcnseg.models.checkpoint import content_sha256, load_checkpoint
        from fcnseg.models.onnx_export import export_onnx

        net, card = load_checkpoint(path)
        source = {"checkpoint": path.name, "content_sha256": content_sha256(path)}
        export_onnx(net, card, target, source=source, check_before_rename=lambda: check_out(target, path, overwrite))
    typer.echo(str(target))


def check_out(target: Path, model: Path, overwrite: bool) -> None:
    """The one overwrite rule (``pipeline.overwrite.check_target``: never MODEL, never a folder, a
    writable parent), and an existing file only with --overwrite: an export is never taken for its own."""
    from fcnseg.pipeline.overwrite import check_target

    check_target(target, option="--out", kind="", is_own=lambda _: True, inputs={"MODEL": model}, overwrite=True)
    if os.path.lexists(target) and not overwrite:
        raise OutputConflict(f"{target}: exists; use --overwrite to replace it, or another --out")

