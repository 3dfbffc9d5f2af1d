"""A forward pass on the worker's device: device and precision choice, weights cast once to the
device's arithmetic, raw pixels normalised on the device, logits out as float32."""

from __future__ import annotations

import contextlib
import time
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch

from fcnseg.models.fcn import FCNBase

if TYPE_CHECKING:
    from fcnseg.models.checkpoint import ModelCard, NodataPolicy, Normalization

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


def resolve_device(device: str = "auto") -> torch.device:
    """``auto`` takes CUDA when present, else the CPU."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"--device {device}: CUDA is not available on this machine")
    return torch.device(device)


def precision_for(device: torch.device) -> str:
    """The arithmetic a forward pass uses on ``device``: bf16 on GPUs that have it, fp16 on older
    ones, fp32 on the CPU."""
    if device.type != "cuda":
        return "fp32"
    return "bf16" if native_bf16(device) else "fp16"


def native_bf16(device: torch.device) -> bool:
    """bf16 in hardware on this GPU (compute capability 8.0, Ampere, or newer). Not
    ``torch.cuda.is_bf16_supported()``: it also counts bf16 emulated on older GPUs (V100, T4),
    where fp16 is several times faster, and it looks at the current device, not this one."""
    major, _ = torch.cuda.get_device_capability(device)
    return major >= 8


def execution_of(device: torch.device) -> str:
    """Device type and precision, e.g. ``cpu fp32`` or ``cuda bf16``: labels computed two ways
    may differ in near ties, so a run records this and never mixes two."""
    return f"{device.type} {precision_for(device)}"


def autocast_for(device: torch.device) -> contextlib.AbstractContextManager:
    """bf16 autocast on GPUs that have it, fp16 on older ones, full precision on the CPU (training)."""
    precision = precision_for(device)
    if precision == "fp32":
        return contextlib.nullcontext()
    return torch.autocast("cuda", dtype=DTYPES[precision])


#: Where the channels-last memory format is the default. On the CPU (oneDNN) it is faster than the
#: contiguous format with the same labels (``benchmarks/forward_speed.py``; measured:
#: docs/benchmarks.md#channels-last-on-the-cpu) and needs less memory; on a GPU it is measured by
#: ``benchmarks/gpu.sh`` and stays off until a run there shows it faster.
CHANNELS_LAST_BY_DEFAULT = frozenset({"cpu"})


def prepare_for_inference(model: FCNBase, device: torch.device, *, channels_last: bool | None = None) -> FCNBase:
    """``model`` ready to run on ``device``: weights cast once to the device's arithmetic (autocast
    would cast them again at every forward pass), cuDNN left to pick its fastest kernels for the
    tile shapes (a run has one or a few), channels-last memory format where it is faster
    (``channels_last`` None: ``CHANNELS_LAST_BY_DEFAULT``)."""
    model = model.to(device=device, dtype=DTYPES[precision_for(device)]).eval()
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    if uses_channels_last(device, channels_last):
        model = model.to(memory_format=torch.channels_last)
    return model


def uses_channels_last(device: torch.device, channels_last: bool | None = None) -> bool:
    """Whether a model prepared for ``device`` runs in channels-last format (None: the default there)."""
    return device.type in CHANNELS_LAST_BY_DEFAULT if channels_last is None else channels_last


def load_for_inference(path: str | Path, device: torch.device, *, expected_content_sha256: str | None = None,
                       channels_last: bool | None = None) -> tuple[FCNBase, ModelCard]:
    """A checkpoint loaded and prepared for inference on ``device`` (``prepare_for_inference``)."""
    from fcnseg.models.checkpoint import load_checkpoint

    model, card = load_checkpoint(path, device, expected_content_sha256=expected_content_sha256)
    return prepare_for_inference(model, device, channels_last=channels_last), card


def normalize_on_device(pixels: torch.Tensor, valid: torch.Tensor, normalization: Normalization,
                        nodata: NodataPolicy) -> torch.Tensor:
    """(n, bands, h, w) float32 ``(x - mean) / std`` from raw pixels (uint8, uint16, ... as stored),
    with pixels outside the (n, h, w) ``valid`` set to ``nodata.fill``. The same float32 arithmetic
    as ``pipeline.io.normalize`` on the host, bit for bit; here the raw pixels cross to the device,
    half or a quarter of the bytes of float32."""
    shape = (1, -1, 1, 1)
    mean = torch.tensor(normalization.mean, dtype=torch.float32, device=pixels.device).view(shape)
    std = torch.tensor(normalization.std, dtype=torch.float32, device=pixels.device).view(shape)
    if pixels.dtype == torch.uint16:  # few kernels take uint16 on every backend: widen it through int16
        pixels = pixels.view(torch.int16).to(torch.int32).bitwise_and_(0xFFFF)
    x = (pixels.to(torch.float32) - mean) / std
    return x.masked_fill_(~valid.to(torch.bool)[:, None], nodata.fill)


def forward_logits(model: FCNBase, x: torch.Tensor) -> torch.Tensor:
    """(n, classes, h, w) float32 logits. A model prepared for inference computes in its weights'
    type; a float32 model on a GPU under autocast, so both compute as ``execution_of`` says."""
    weights = next(model.parameters())
    if weights.dtype == torch.float32 and x.device.type == "cuda":
        with autocast_for(x.device):
            return model(x).float()
    return model(x.to(weights.dtype)).float()


@torch.inference_mode()
def benchmark_forward(
    model: FCNBase, bands: int, tile: int, batch_size: int, device: torch.device, iterations: int = 5
) -> float:
    """Megapixels per second of warm forward passes on input already on the device, with the
    least any use of them needs: argmax on the device and uint8 labels copied back."""
    x = torch.randn((batch_size, bands, tile, tile), generator=torch.Generator().manual_seed(0)).to(device)

    def once() -> None:
        forward_logits(model, x).argmax(dim=1).to(torch.uint8).cpu()

    once()  # warm-up: allocator, kernels, cuDNN's autotuning
    started = time.perf_counter()
    for _ in range(iterations):
        once()
    return iterations * batch_size * tile * tile / 1e6 / (time.perf_counter() - started)
