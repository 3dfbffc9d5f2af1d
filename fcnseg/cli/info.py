"""``fcnseg info MODEL``: a checkpoint's model card, read from the file's header without torch.

What a user asks of a model before running it (which bands in which order, how they are
normalised, the classes and their colours, how label values became classes, where the weights
came from, how well they scored) is all in the card; the weights are not needed to answer it."""

from __future__ import annotations

import json
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from fcnseg.cli.base import app
from fcnseg.cli.errors import clear_errors
from fcnseg.models.card import ModelCard
from fcnseg.models.metrics import class_ious

#: The provenance fields the text view lists, in this order (``--json`` has every one the card holds).
PROVENANCE_SHOWN = ("command", "image", "labels", "val_image", "val_labels", "init", "vgg16_weights", "steps",
                    "best_step", "chip", "batch_size", "lr", "seed", "optimizer", "sampling", "device", "started",
                    "seconds", "torch", "python")


@app.command()
def info(
    model: Annotated[str, typer.Argument(help="A checkpoint (.safetensors), or 'demo' for the shipped demo model.")],
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object (the file's facts and its card) only.")] = False,
) -> None:
    """A model's card: architecture, bands and normalisation, classes and colours, label mapping, training provenance, metrics. Every byte is checked against the checkpoint's content hash."""
    from fcnseg.api import model_path
    from fcnseg.models.card_file import read_card_file

    with clear_errors():
        path = model_path(model)
        found = read_card_file(path)
    facts = {"model": str(path), "content_sha256": found.content_sha256, "verified": found.verified,
             "format_version": found.format_version, "tensors": found.tensors, "parameters": found.parameters}
    if as_json:
        typer.echo(json.dumps({**facts, "card": found.card.to_json()}))
        return
    print_card(facts, found.card)


def print_card(facts: dict[str, Any], card: ModelCard) -> None:
    """The card as a few tables on stdout (what a person reads; ``--json`` is for scripts)."""
    out = Console()
    out.print(f"[bold]{facts['model']}[/bold]: {card.arch}, width {card.width:g}, {facts['parameters']:,} parameters"
              f" in {facts['tensors']} tensors, content sha256 {facts['content_sha256']} (verified)", highlight=False)
    out.print(band_table(card))
    out.print(class_table(card))
    out.print(key_value_table("Training provenance", provenance_rows(card)))
    metrics = {k: v for k, v in card.metrics.items() if isinstance(v, (int, float))}
    if metrics:
        out.print(key_value_table("Metrics (validation)", [(k, f"{v:.4f}") for k, v in metrics.items()]))


def band_table(card: ModelCard) -> Table:
    """Input band by band: its name, mean and std; nodata below."""
    table = Table(title=f"Bands ({card.bands})")
    for column in ("band", "name", "mean", "std"):
        table.add_column(column, justify="left" if column == "name" else "right")
    for i in range(card.bands):
        name = card.band_names[i] if card.band_names else "-"
        table.add_row(str(i + 1), name, f"{card.normalization.mean[i]:.4f}", f"{card.normalization.std[i]:.4f}")
    nodata = card.nodata
    table.caption = (f"input nodata {'from the raster' if nodata.input is None else f'{nodata.input:g}'}, "
                     f"filled with {nodata.fill:g} after normalisation; label {nodata.label} = nodata")
    return table


def class_table(card: ModelCard) -> Table:
    """Class by class: id, name, colour, the label value it came from and its validation IU."""
    table = Table(title=f"Classes ({card.num_classes})")
    for column in ("id", "class", "colour", "label value", "IU"):
        table.add_column(column, justify="right" if column in ("id", "IU") else "left")
    values = card.labels.values if card.labels else [str(i) for i in range(card.num_classes)]
    ious = class_ious(card.metrics) or [None] * card.num_classes
    for i, (info_, value, iou) in enumerate(zip(card.classes, values, ious, strict=False)):
        hex_color = "#{:02x}{:02x}{:02x}".format(*(int(c) for c in info_.color))
        table.add_row(str(i), info_.name, f"[{hex_color}]██[/] {hex_color}", "-" if value is None else str(value),
                      "-" if iou is None else f"{iou:.4f}")
    labels = card.labels
    table.caption = ("label mapping not recorded (values are class ids)" if labels is None else
                     f"{labels.kind} labels" + (f", field {labels.field}" if labels.field else "")
                     + f", pixels outside every feature: {labels.outside}")
    return table


def provenance_rows(card: ModelCard) -> list[tuple[str, str]]:
    """The recorded provenance fields, as text; the ones this card does not hold left out."""
    rows = []
    for name in PROVENANCE_SHOWN:
        if card.training.recorded(name):
            value = getattr(card.training, name)
            rows.append((name, "-" if value is None else json.dumps(value) if isinstance(value, dict) else str(value)))
    return rows or [("-", "not recorded")]


def key_value_table(title: str, rows: list[tuple[str, str]]) -> Table:
    table = Table(title=title, show_header=False)
    table.add_column("key")
    table.add_column("value", overflow="fold")
    for key, value in rows:
        table.add_row(key, value)
    return table
