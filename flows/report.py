"""The markdown a ``segment-scene`` run leaves as its Prefect artifact (no Prefect import here)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from fcnseg.pipeline.orchestrator import RunReport


@dataclass
class SceneOutcome:
    scene: str
    status: Literal["processed", "skipped", "failed"]
    report: RunReport | None = None
    error: str | None = None


#: What a class area shows for a scene without CRS: it has no square metres, and none are made up.
NO_AREA = "—"


def square_metres(area_m2: float | None) -> str:
    return NO_AREA if area_m2 is None else f"{area_m2:,.0f}"


def markdown_report(outcomes: list[SceneOutcome], output_root: str) -> str:
    """Scenes processed, skipped and failed; per scene its throughput, outputs and class areas
    (a scene without CRS shows its areas as "—": pixels are counted, square metres are not known)."""
    counts = {s: sum(o.status == s for o in outcomes) for s in ("processed", "skipped", "failed")}
    lines = [
        "# fcnseg segment-scene",
        "",
        f"**{counts['processed']} processed, {counts['skipped']} skipped (already complete), "
        f"{counts['failed']} failed** — outputs under `{output_root}`",
        "",
        "| scene | status | chunks | MP/s | seconds | output |",
        "|---|---|---:|---:|---:|---|",
    ]
    for o in outcomes:
        name = Path(o.scene).name
        if o.report is None:
            lines.append(f"| {name} | failed: {o.error} | | | | |")
            continue
        r = o.report
        lines.append(
            f"| {name} | {o.status} | {r.chunks.total} | {r.megapixels_per_second:.2f} | "
            f"{r.seconds.get('total', 0):.1f} | `{r.out}` |"
        )
    for o in outcomes:
        if o.report is None:
            continue
        r = o.report
        lines += ["", f"## {Path(o.scene).name} ({o.status})", "", "Files: " + ", ".join(f"`{r.location(f)}`" for f in r.files), ""]
        lines += ["| class | pixels | area m² | share |", "|---|---:|---:|---:|"]
        lines += [f"| {c.class_name} | {c.pixels:,} | {square_metres(c.area_m2)} | {100 * c.share:.1f} % |"
                  for c in r.class_areas]
    return "\n".join(lines) + "\n"
