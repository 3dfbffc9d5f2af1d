"""A forward pass on numpy input: device placement, autocast on CUDA, softmax scores out."""

from __future__ import annotations

import contextlib

import numpy as np
import torch

from fcnseg.models.fcn import FCNBase


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
    """bf16 autocast on GPUs that have it, fp16 on older ones, full precision on the CPU."""
    precision = precision_for(device)
    if precision == "fp32":
        return contextlib.nullcontext()
    return torch.autocast("cuda", dtype=torch.bfloat16 if precision == "bf16" else torch.float16)


@torch.inference_mode()
def predict_probabilities(model: FCNBase, batch: np.ndarray, device: torch.device) -> np.ndarray:
    """(n, classes, h, w) float32 class probabilities for a (n, bands, h, w) normalised batch."""
    x = torch.from_numpy(np.ascontiguousarray(batch)).to(device, non_blocking=True)
    with autocast_for(device):
        logits = model(x)
    return torch.softmax(logits.float(), dim=1).cpu().numpy()


def benchmark_forward(
    model: FCNBase, bands: int, tile: int, batch_size: int, device: torch.device, iterations: int = 5
) -> float:
    """Megapixels per second of warm forward passes (softmax and copy back included)."""
    import time

    batch = np.random.default_rng(0).standard_normal((batch_size, bands, tile, tile), dtype=np.float32)
    predict_probabilities(model, batch, device)  # warm-up: allocator, kernels, autotuning
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    started = time.perf_counter()
    for _ in range(iterations):
        predict_probabilities(model, batch, device)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return iterations * batch_size * tile * tile / 1e6 / (time.perf_counter() - started)
