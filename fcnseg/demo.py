"""``make demo``: the shipped model on a synthetic scene it has never seen, end to end.

Synthesises a scene of a fresh seed, evaluates the shipped demo FCN-8s on it tile by tile and
prints the paper's four metrics, then runs the ``segment-scene`` flow on it (an ephemeral Prefect
server, a Dask cluster inside this process: labels.zarr, labels.tif, polygons, quicklook,
item.json) and prints where the outputs are and how much of each class the scene holds.
"""

from __future__ import annotations

import argparse
import ctypes
import gc
import os
import shutil
from pathlib import Path

# offline: no telemetry from the ephemeral Prefect server the flow starts
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("DO_NOT_TRACK", "1")

from fcnseg.cli import setup_logging
from fcnseg.flows.segment_scene import segment_scene
from fcnseg.models import DEMO_MODEL
from fcnseg.models.checkpoint import load_checkpoint
from fcnseg.models.inference import resolve_device
from fcnseg.pipeline.cluster import in_process_client
from fcnseg.pipeline.cluster_specs import torch_threads
from fcnseg.pipeline.orchestrator import SegmentOptions, read_run_report
from fcnseg.pipeline.synth import write_scene
from fcnseg.pipeline.training.evaluate import evaluate_raster
from fcnseg.tables import console, print_metrics, print_report

#: A seed the demo model never saw in training or validation (docs/training.md, "The shipped demo model").
DEMO_SEED = 2026


#: glibc's mallopt parameter for the most malloc arenas (M_ARENA_MAX), and the demo's value.
M_ARENA_MAX, DEMO_ARENAS = -8, 2


def glibc() -> ctypes.CDLL | None:
    """The C library when it is glibc (its malloc tuning below), else None."""
    try:
        libc = ctypes.CDLL("libc.so.6")
        return libc if hasattr(libc, "malloc_trim") else None
    except OSError:
        return None


def share_malloc_arenas() -> None:
    """At most DEMO_ARENAS malloc arenas in this process: the flow's tasks run on the in-process
    worker's threads, and with an arena per thread (glibc's default, up to 8 per core) they cannot
    reuse the memory the evaluation freed on the main thread, so the peak held both (measured:
    docs/benchmarks.md#figures-quoted-in-code-comments)."""
    libc = glibc()
    if libc is not None:
        libc.mallopt(M_ARENA_MAX, DEMO_ARENAS)


def release_memory() -> None:
    """Hand freed heap back to the OS (glibc's ``malloc_trim``) between the evaluation and the flow."""
    gc.collect()
    libc = glibc()
    if libc is not None:
        libc.malloc_trim(0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("demo-out"), help="Folder for the demo scene.")
    parser.add_argument("--size", type=int, default=1024, help="Side of the synthetic scene in pixels.")
    parser.add_argument("--seed", type=int, default=DEMO_SEED, help="Scene seed.")
    args = parser.parse_args()
    setup_logging()
    share_malloc_arenas()

    # --out is the demo's own folder (its flow/ is removed below): a scene there from before synth
    # tagged its files is replaced too
    image, labels = write_scene(args.out / "scene", args.size, args.seed, overwrite=True)
    console.print(f"synthetic scene (seed {args.seed}, {args.size} px): {image}")
    device = resolve_device("auto")
    model, card = load_checkpoint(DEMO_MODEL, device)
    console.print(f"model: {DEMO_MODEL.name} ({card.arch}, width {card.width}, {card.num_classes} classes) on {device}")
    metrics = evaluate_raster(model, card, image, labels, device=device, progress=True)
    print_metrics(metrics, card.class_names)
    del model  # the flow's worker loads its own: this copy, and the evaluation's freed buffers, go back
    release_memory()

    # the segment-scene flow, as a deployment would run it (an ephemeral Prefect server), on a Dask
    # cluster inside this process: worker processes would each import torch and hold a model (each
    # its own memory; measured: docs/benchmarks.md#figures-quoted-in-code-comments) for a scene of four chunks
    output_root = args.out / "flow"
    shutil.rmtree(output_root, ignore_errors=True)  # a fresh run each time, not a skipped one
    with in_process_client(torch_threads(1)) as client:
        result = segment_scene(inputs=str(image), output_root=str(output_root), options=SegmentOptions(tile=512),
                               scheduler_address=client.scheduler.address)
    for scene, outcome in result.items():
        # one line however narrow the terminal: paths are not wrapped mid-sentence
        console.print(f"segment-scene flow: {scene} {outcome['status']} into {outcome['out']}:", soft_wrap=True)
        print_report(read_run_report(outcome["out"]))

if __name__ == "__main__":
    main()
