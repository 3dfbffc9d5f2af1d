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

Sizing imports no torch unless a GPU is asked for or may be present: a run's plan (and a rerun
of a complete output, which computes nothing) sizes its tiles without torch's seconds of start-up
on a machine without a GPU driver (``gpu_driver_present``).
"""

from __future__ import annotations

import ctypes
import logging
import os
import sys
from dataclasses import dataclass
from typing import Protocol

log = logging.getLogger(__name__)

#: The libraries torch's GPU builds reach a GPU through (CUDA's driver, ROCm's HIP runtime): where
#: neither loads, ``torch.cuda.is_available()`` is False whatever torch build is installed.
GPU_DRIVERS = ("libcuda.so.1", "libamdhip64.so")

#: Tile sides tried, largest first (multiples of the model stride).
TILES = (2048, 1024, 512)
#: The most tiles per forward pass a default chooses: beyond it a GPU gains nothing but latency.
MAX_BATCH = 8
#: The share of a device's memory a default may plan for (the rest: weights, allocator slack, reads).
GPU_SHARE, CPU_SHARE = 0.5, 0.5
#: What a GPU that the planning machine cannot see is assumed to hold (the smallest datacentre GPUs).
UNSEEN_GPU_BYTES = 16e9


class Device(Protocol):
    """What sizing reads of a device: a ``torch.device`` or a ``PlannedDevice``."""

    @property
    def type(self) -> str: ...

    @property
    def index(self) -> int | None: ...


@dataclass(frozen=True)
class PlannedDevice:
    """A device as ``--device`` names it, without torch: ``type`` (cpu, cuda) and ``index``."""

    type: str
    index: int | None = None

    def __str__(self) -> str:
        return self.type if self.index is None else f"{self.type}:{self.index}"


def forward_bytes_per_pixel(width: float) -> float:
    """Peak memory of a forward pass per input pixel at a width multiplier (fp32 on the CPU)."""
    return 100 + 1800 * width**2


def default_tiling(width: float, halo: int, device: Device, tile: int | None = None,
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


def sizing_device(device: str) -> Device:
    """The device ``--device`` names, as far as this machine can tell (``auto``: CUDA when present;
    a named CUDA device may be unseen here: remote workers). torch is asked only where a GPU may be."""
    if device == "auto" and ("torch" in sys.modules or gpu_driver_present()):
        from fcnseg.models.inference import resolve_device

        return resolve_device(device)
    if device == "auto":
        return PlannedDevice("cpu")
    kind, _, index = device.partition(":")
    return PlannedDevice(kind, int(index) if index else None)


def gpu_driver_present() -> bool:
    """Whether a GPU driver library loads in this process (``GPU_DRIVERS``): without one torch sees
    no GPU, so ``auto`` is the CPU without importing torch."""
    for name in GPU_DRIVERS:
        try:
            ctypes.CDLL(name)
        except OSError:
            continue
        return True
    return False


def device_budget(device: Device) -> float:
    """Bytes a default may plan for one forward pass on ``device``: a share of a GPU's memory, or
    of the host's memory divided among a worker per core."""
    if device.type == "cuda":
        import torch

        if not torch.cuda.is_available():  # remote GPU workers, planned from a machine without one
            return GPU_SHARE * UNSEEN_GPU_BYTES
        return GPU_SHARE * torch.cuda.get_device_properties(device.index or 0).total_memory
    import psutil

    return CPU_SHARE * psutil.virtual_memory().total / max(1, os.cpu_count() or 1)
