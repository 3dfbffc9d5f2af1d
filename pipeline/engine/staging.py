"""Host-to-device copies of a batch through pinned memory.

A copy from ordinary (pageable) host memory is synchronous and goes through a bounce buffer of
the driver; from pinned memory it is a direct, asynchronous DMA. Pinning is expensive, so each
batch shape gets one pinned buffer, reused batch after batch: a CUDA event tells when the last
copy out of it has finished and the buffer may be filled again. On the CPU a batch is just
stacked. Raw pixels travel as stored (uint8, uint16: a half or a quarter of float32's bytes).
"""

from __future__ import annotations

import threading
from collections.abc import Sequence

import numpy as np
import torch

#: Pinned buffers kept per device (batch shapes: full tiles, and the edge tiles' few shapes).
MAX_BUFFERS = 8

#: Pixel types that cross to the device as stored; any other is converted to float32 on the host
#: (the same float32 values ``normalize`` would start from).
DEVICE_DTYPES = frozenset({np.dtype(t) for t in ("uint8", "int8", "uint16", "int16", "int32", "float32", "bool")})


def transferable(pixels: np.ndarray) -> np.ndarray:
    """``pixels`` in a type that crosses to the device as is."""
    return pixels if pixels.dtype in DEVICE_DTYPES else pixels.astype(np.float32)


class DeviceStaging:
    """``staging.to_device(arrays)``: the arrays stacked into one batch on ``device``."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self._buffers: dict[tuple, tuple[torch.Tensor, torch.cuda.Event | None]] = {}
        self._lock = threading.Lock()

    def to_device(self, arrays: Sequence[np.ndarray]) -> torch.Tensor:
        if self.device.type != "cuda":
            return torch.from_numpy(np.stack(arrays))
        key = (len(arrays), *arrays[0].shape, arrays[0].dtype.str)
        with self._lock:
            buffer, copied = self._buffer(key, (len(arrays), *arrays[0].shape), arrays[0].dtype)
            if copied is not None:
                copied.synchronize()  # the previous batch has left this buffer
            np.stack(arrays, out=buffer.numpy())
            on_device = buffer.to(self.device, non_blocking=True)
            event = torch.cuda.Event()
            event.record(torch.cuda.current_stream(self.device))
            self._buffers[key] = (buffer, event)
        return on_device

    def _buffer(self, key: tuple, shape: tuple[int, ...], dtype: np.dtype) -> tuple[torch.Tensor, torch.cuda.Event | None]:
        if key not in self._buffers:
            if len(self._buffers) >= MAX_BUFFERS:
                _, copied = self._buffers.pop(next(iter(self._buffers)))
                if copied is not None:
                    copied.synchronize()
            host = torch.from_numpy(np.empty(0, dtype=dtype)).dtype
            self._buffers[key] = (torch.empty(shape, dtype=host, pin_memory=True), None)
        return self._buffers[key]


_STAGING: dict[torch.device, DeviceStaging] = {}


def staging_for(device: torch.device) -> DeviceStaging:
    """This process's staging for ``device`` (its pinned buffers serve every task)."""
    if device not in _STAGING:
        _STAGING[device] = DeviceStaging(device)
    return _STAGING[device]
