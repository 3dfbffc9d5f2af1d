"""What the commands print on a terminal: metrics, a run's outputs, per-class areas, as tables."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from typing import TYPE_CHECKING

from rich.console import Console
from rich.table import Table

if TYPE_CHECKING:
    from fcnseg.pipeline.analysis.query import ClassArea

#: Reports go to stderr (stdout is kept for what a script reads: paths, JSON). ``soft_wrap``: a
#: sentence is one line, never cut at 80 columns when stderr is a log file (tables keep their width).
console = Console(stderr=True, soft_wrap=True)


def print_metrics(metrics: dict, class_names: list[str]) -> None:
    """The four metrics and per-class IU as tables on the terminal."""
    out = Console()
    summary = Table(title="Segmentation metrics", show_header=True)
    for key in ("pixel_acc", "mean_acc", "mean_iou", "fw_iou"):
        summary.add_column(key, justify="right")
    summary.add_row(*(f"{metrics[k]:.4f}" for k in ("pixel_acc", "mean_acc", "mean_iou", "fw_iou")))
    out.print(summary)
    per_class = Table(title="Per-class IU")
    per_class.add_column("id", justify="right")
    per_class.add_column("class")
    per_class.add_column("IU", justify="right")
    per_class.add_column("pixels", justify="right")
    for i, (name, iou) in enumerate(zip(class_names, metrics["per_class_iou"], strict=True)):
        per_class.add_row(str(i), name, "-" if iou is None else f"{iou:.4f}", str(sum(metrics["confusion"][i])))
    out.print(per_class)


def print_report(report) -> None:
    """Where the outputs are and how much of each class the scene holds."""
    if report.skipped:
        console.print(f"{report.out}: already complete for this model and these parameters; nothing to do")
    else:
        chunks = report.chunks
        console.print(
            f"{chunks.total} chunks ({chunks.computed} computed, {chunks.skipped_nodata} nodata, "
            f"{chunks.reused} reused), {report.megapixels_per_second:.2f} MP/s, peak {report.peak_memory_mb:.0f} MB"
        )
    if report.simplify_area_error:  # --simplify: what a polygon's area may be off by, summed over them
        console.print(f"{report.polygons} polygons, simplified: {report.simplify_area_error:.3%} of their area moved "
                      "between neighbours (the total unchanged)")
    for name in report.files:
        console.print(f"  {report.location(name)}")
    console.print(class_area_table("class areas", report.class_areas))


def class_area_table(title: str, classes: Sequence[ClassArea]) -> Table:
    """Per-class pixels, area and share, with a total row (what `segment` and `query` print)."""
    table = Table(title=title, show_footer=True)
    valid = sum(c.pixels for c in classes)
    table.add_column("id", "", justify="right")
    table.add_column("class", "total")
    table.add_column("pixels", f"{valid:,}", justify="right")
    metres = all(c.area_m2 is not None for c in classes)  # a raster without CRS has no m²
    total = f"{sum(c.area_m2 for c in classes):,.2f}" if metres else "-"
    table.add_column("area m²", total, justify="right")
    table.add_column("share %", "100.00" if valid else "-", justify="right")
    confident = any(c.mean_confidence is not None for c in classes)  # a store with a confidence band
    if confident:
        table.add_column("mean confidence", "", justify="right")
    for c in classes:
        area = f"{c.area_m2:,.2f}" if c.area_m2 is not None else "-"
        row = [str(c.class_id), c.class_name, f"{c.pixels:,}", area, f"{100 * c.share:.2f}"]
        if confident:
            row.append("-" if c.mean_confidence is None else f"{c.mean_confidence:.3f}")
        table.add_row(*row)
    return table


def print_query(result) -> None:
    """Per-class pixels, area and share as a table, with a total row (a raster without CRS: areas in px²)."""
    data, sel = result.to_dict(), result.selection
    crs = sel.get("crs") or "pixel coordinates"
    where = {
        "raster": "whole raster",
        "bbox": f"bbox {' '.join(f'{v:g}' for v in sel.get('bbox', []))} ({crs})",
        "aoi": f"area of interest {sel.get('path')}",
        "point": f"point {sel.get('x')} {sel.get('y')} ({crs})",
    }[sel["type"]]
    if "point" in data:
        where += f": row {data['point']['row']}, col {data['point']['col']}"
    pixels = data["units"] == "pixels"  # no CRS: a pixel is the unit of area, never a made-up m²
    classes = [replace(c, area_m2=float(c.pixels)) for c in result.classes] if pixels else result.classes
    table = class_area_table(f"{data['raster']}, {where}", classes)
    if pixels:
        table.columns[3].header = "area px²"
    if data.get("nodata"):
        table.caption = "nodata at this point"
    elif data["nodata_pixels"]:
        table.caption = f"{data['nodata_pixels']:,} nodata pixels left out"
    Console().print(table)


def print_feature_query(rows: Sequence) -> None:
    """One line per feature and class (``query --aoi FILE --by FIELD``): feature, class, pixels, area, share."""
    table = Table(title="per feature")
    for name, justify in (("feature", "left"), ("id", "right"), ("class", "left"), ("pixels", "right"),
                          ("area m²", "right"), ("share %", "right")):
        table.add_column(name, justify=justify)
    for r in rows:
        area = f"{r.area_m2:,.2f}" if r.area_m2 is not None else "-"
        table.add_row(str(r.feature), str(r.class_id), r.class_name, f"{r.pixels:,}", area, f"{100 * r.share:.2f}")
    Console().print(table)
