"""Default tile and batch for a device: the largest that its memory holds comfortably.

Larger tiles cut the halo's share of the computation (on a 4096² scene, tile 1024 computes far
more pixels per output pixel than 2048: docs/benchmarks.md#figures-quoted-in-code-comments), so
the default is 2048 wherever the forward pass of one read window fits; a GPU then takes as many
tiles per batch as half its memory holds (at most ``MAX_BATCH``). A CPU gains nothing from
batches: it takes one tile at a time, and its memory is shared by a worker per core.

The memory of a forward pass is estimated per input pixel from the model's width, as measured on
the CPU in fp32 (``benchmarks/forward_memory.py``; measured: docs/benchmarks.md#forward-pass-memory;
``forward_bytes_per_pixel`` is a fit to those figures); on a GPU the activations are bf16/fp16
and cuDNN picks leaner kernels, so the CPU figure is an upper bound there.
"""

from __future__ import annotations

import logging
import os

import torch

from fcnseg.models.inference import resolve_device

log = logging.getLogger(__name__)

#: Tile sides tried, largest first (multiples of the model stride).
TILES = (2048, 1024, 512)
#: The most tiles per forward pass a default chooses: beyond it a GPU gains nothing but latency.
MAX_BATCH = 8
#: The share of a device's memory a default may plan for (the rest: weights, allocator slack, reads).
GPU_SHARE, CPU_SHARE = 0.5, 0.5
#: What a GPU that the planning machine cannot see is assumed to hold (the smallest datacentre GPUs).
UNSEEN_GPU_BYTES = 16e9


def forward_bytes_per_pixel(width: float) -> float:
    """Peak memory of a forward pass per input pixel at a width multiplier (fp32 on the CPU)."""
    return 100 + 1800 * width**2


def default_tiling(width: float, halo: int, device: torch.device, tile: int | None = None,
                   batch_size: int | None = None) -> tuple[int, int]:
    """(tile, batch size) for a model of ``width`` with ``halo`` on ``device``: what is given is
    kept, what is None is chosen (the batch for the tile, given or chosen)."""
    if tile is not None and batch_size is not None:
        return tile, batch_size
    per_pixel = forward_bytes_per_pixel(width)
    budget = device_budget(device)
    for tile in (tile,) if tile else TILES:
        window_bytes = (tile + 2 * halo) ** 2 * per_pixel
        if window_bytes <= budget or tile <= TILES[-1]:
            fitting = max(1, min(MAX_BATCH, int(budget // window_bytes)))
            batch = batch_size or (1 if device.type == "cpu" else fitting)
            log.debug("tile %d, batch %d on %s (%.1f GB planned per batch)", tile, batch, device,
                      batch * window_bytes / 1e9)
            return tile, batch
    raise AssertionError("unreachable")  # the loop returns at its last tile


def sizing_device(device: str) -> torch.device:
    """The device ``--device`` names, as far as this machine can tell (``auto``: CUDA when present)."""
    return resolve_device(device) if device == "auto" else torch.device(device)  # cuda unseen here: remote workers


def device_budget(device: torch.device) -> float:
    """Bytes a default may plan for one forward pass on ``device``: a share of a GPU's memory, or
    of the host's memory divided among a worker per core."""
    if device.type == "cuda":
        if not torch.cuda.is_available():  # remote GPU workers, planned from a machine without one
            return GPU_SHARE * UNSEEN_GPU_BYTES
        return GPU_SHARE * torch.cuda.get_device_properties(device.index or 0).total_memory
    import psutil

    return CPU_SHARE * psutil.virtual_memory().total / max(1, os.cpu_count() or 1)
