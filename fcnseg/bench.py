"""``fcnseg bench-pipeline``: how close the inference stage comes to the model's own speed.

In one run on one device: the model's warm forward throughput at the pipeline's read-window size
(``bench-model``), the inference stage on a generated scene in output megapixels per second and in
model-equivalent megapixels per second (the read windows the model computed, halo included), the
I/O ceiling (the same run with a model that computes almost nothing), one worker against two, and
the ratios between them. The stage is timed by ``segment`` itself (``seconds.infer``: from the first
task to the last, cluster start excluded) with every product switched off.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

from fcnseg.models.checkpoint import ModelCard, save_checkpoint
from fcnseg.models.fcn import build_model
from fcnseg.models.inference import benchmark_forward, load_for_inference, resolve_device
from fcnseg.models.sizing import default_tiling
from fcnseg.pipeline.cluster_specs import scoped_environ
from fcnseg.pipeline.orchestrator import SegmentOptions, segment
from fcnseg.pipeline.synth import write_scene
from fcnseg.pipeline.tiles import default_halo, iter_tiles

#: The width of the "computes almost nothing" model (every layer at its minimum of 4 channels).
IO_CEILING_WIDTH = 1 / 64


def bench_pipeline(model_path: Path, *, size: int, tile: int | None, batch_size: int | None, device: str,
                   workers: int, work_dir: Path | None = None) -> dict[str, Any]:
    """The figures above, as one JSON-ready dict (tile and batch None: as ``segment`` chooses them)."""
    torch_device = resolve_device(device)
    net, card = load_for_inference(model_path, torch_device)
    halo = default_halo(card.arch)
    tile, batch_size = default_tiling(card.width, halo, torch_device, tile, batch_size)
    window = tile + 2 * halo
    model_mps = benchmark_forward(net, card.bands, window, batch_size, torch_device, iterations=3)
    with tempfile.TemporaryDirectory(dir=work_dir) as tmp:
        root = Path(tmp)
        image, _ = write_scene(root / "scene", size, seed=5)
        tiles = list(iter_tiles(size, size, tile, halo))
        output_px = sum(t.core.width * t.core.height for t in tiles)
        computed_px = sum(t.read_window.width * t.read_window.height for t in tiles)
        options = SegmentOptions(tile=tile, batch_size=batch_size, device=device, cog=False, polygons=False,
                                 quicklook=False, stac=False)

        def infer_seconds(model: Path, n_workers: int, name: str) -> float:
            # one torch thread per worker (a lone one would get every core): workers against a worker
            with scoped_environ("FCNSEG_TORCH_THREADS", "1"):
                report = segment(image, model, root / name, options, workers=n_workers, progress=False)
            return report.seconds["infer"]

        one = infer_seconds(model_path, 1, "one")
        many = infer_seconds(model_path, workers, "many") if workers > 1 else one
        light = root / "light.safetensors"
        save_checkpoint(light, build_model(card.arch, card.bands, card.num_classes, IO_CEILING_WIDTH), _light_card(card))
        io_only = infer_seconds(light, workers, "io")
    best = min(one, many)
    return {
        "device": str(torch_device), "model": str(model_path), "arch": card.arch, "width": card.width,
        "scene": size, "tile": tile, "halo": halo, "read_window": window, "batch_size": batch_size, "workers": workers,
        "halo_overhead": round(computed_px / output_px, 3),
        "bench_model_mps": round(model_mps, 3),
        "one_worker": {"seconds": round(one, 2), "output_mps": round(output_px / 1e6 / one, 3),
                       "model_equivalent_mps": round(computed_px / 1e6 / one, 3)},
        f"{workers}_workers": {"seconds": round(many, 2), "output_mps": round(output_px / 1e6 / many, 3),
                               "model_equivalent_mps": round(computed_px / 1e6 / many, 3)},
        "io_ceiling_output_mps": round(output_px / 1e6 / io_only, 3),
        "ratios": {
            "model_equivalent_vs_bench_model": round(computed_px / 1e6 / best / model_mps, 3),
            "output_vs_bench_model": round(output_px / 1e6 / best / model_mps, 3),
            "workers_speedup": round(one / many, 3),
        },
    }


def _light_card(card: ModelCard) -> ModelCard:
    return ModelCard(arch=card.arch, width=IO_CEILING_WIDTH, bands=card.bands, classes=card.classes,
                     normalization=card.normalization, nodata=card.nodata, band_names=card.band_names)
