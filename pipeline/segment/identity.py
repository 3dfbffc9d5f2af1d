"""What identifies a run besides its options: the input's content and how the model is executed.

A path names a file, not its content: a scene replaced at the same path after a killed run must
not be resumed with chunks of the old one, nor found "complete". The input's fingerprint is cheap
(a few megabytes read, whatever the scene's size) and changes when the file does:

* a local file: its size, modification time and a sha256 over its header and evenly spaced
  samples of its bytes (a replaced file with the old timestamp still differs there);
* a URI or GDAL virtual path (``s3://``, ``/vsicurl/``, a VRT): what GDAL exposes of the
  dataset (size, bands, types, georeferencing) and a sha256 over the pixels of sampled windows;
* and for a dataset of several files (a VRT's sources, an ENVI header and its data, a ``.msk``
  or ``.aux.xml`` sidecar), every local file GDAL lists for it, each fingerprinted as a local
  file: a source re-delivered under a VRT changes the VRT's fingerprint even where the sampled
  windows miss it. (A single-file input's fingerprint is that file's alone, as before.)

The execution (``cpu fp32``, ``cuda bf16`` ...) is what the workers compute with; two executions
may label near ties differently, so the chunks of one output all come from one.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from rasterio.windows import Window

from fcnseg.pipeline.io import open_raster, read_window

#: Bytes read at the start of a file (the TIFF header and its first directories).
HEADER_BYTES = 1 << 20
#: Bytes read at each of SAMPLES evenly spaced offsets (and at the end).
SAMPLE_BYTES = 1 << 16
SAMPLES = 32
#: Side of the windows sampled on a grid of WINDOW_GRID x WINDOW_GRID for a URI.
WINDOW = 256
WINDOW_GRID = 3


def input_fingerprint(path: str) -> dict[str, Any]:
    """The input's fingerprint: equal for the same content, different when any of its files changes."""
    local = Path(path)
    single = local.is_file() and local.suffix.lower() != ".vrt"
    fingerprint = file_fingerprint(local) if single else dataset_fingerprint(path)
    others = [f for f in dataset_files(path) if not (single and f == os.path.abspath(local))]
    if others:
        fingerprint["files"] = {f: file_fingerprint(Path(f)) for f in others}
    return fingerprint


def dataset_files(path: str) -> list[str]:
    """The local files GDAL reads for the dataset (``src.files``: the file itself, a VRT's
    sources, sidecars), as sorted absolute paths; remote ones (``/vsicurl/`` ...) are left out."""
    with open_raster(path) as src:
        return sorted({os.path.abspath(f) for f in src.files if Path(f).is_file()})


def file_fingerprint(path: Path) -> dict[str, Any]:
    stat = path.stat()
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        digest.update(f.read(HEADER_BYTES))
        if stat.st_size > HEADER_BYTES:
            step = max(SAMPLE_BYTES, (stat.st_size - HEADER_BYTES) // SAMPLES)
            for offset in [*range(HEADER_BYTES, stat.st_size, step), max(HEADER_BYTES, stat.st_size - SAMPLE_BYTES)]:
                f.seek(offset)
                digest.update(f.read(SAMPLE_BYTES))
    return {"size": stat.st_size, "mtime_ns": stat.st_mtime_ns, "sha256_sampled": digest.hexdigest()}


def dataset_fingerprint(path: str) -> dict[str, Any]:
    digest = hashlib.sha256()
    with open_raster(path) as src:
        header = (src.width, src.height, src.count, src.dtypes, src.nodatavals, tuple(src.transform),
                  src.crs.to_wkt() if src.crs else None)
        digest.update(repr(header).encode())
        for window in sample_windows(src.height, src.width):
            digest.update(np.ascontiguousarray(read_window(src, window)).tobytes())
    return {"sha256_sampled": digest.hexdigest()}


def sample_windows(height: int, width: int) -> list[Window]:
    """WINDOW_GRID x WINDOW_GRID windows spread over the raster (corners and centre included)."""
    h, w = min(WINDOW, height), min(WINDOW, width)
    rows = np.linspace(0, height - h, WINDOW_GRID).astype(int)
    cols = np.linspace(0, width - w, WINDOW_GRID).astype(int)
    return [Window(int(c), int(r), w, h) for r in dict.fromkeys(rows) for c in dict.fromkeys(cols)]


@dataclass(frozen=True, kw_only=True)
class WorkerExecution:
    """A worker's answer to "how would you compute for ``--device``?": the execution (``cpu fp32``,
    ``cuda bf16`` ...), or the one-line reason it cannot (``--device cuda`` without CUDA). An
    answer rather than an exception raised on the worker, so the driver can say which worker refused."""

    execution: str | None = None
    refusal: str | None = None


def worker_execution(device: str) -> WorkerExecution:
    """On a worker: the execution its tasks will use for ``device``, or why it has none."""
    from fcnseg.models.inference import execution_of
    from fcnseg.pipeline.faults import crash_point
    from fcnseg.pipeline.segment.worker import worker_device

    crash_point("handshake")
    try:
        return WorkerExecution(execution=execution_of(worker_device(device)))
    except ValueError as exc:
        return WorkerExecution(refusal=str(exc))


def worker_device_name(device: str) -> str:
    """On a worker: the device its tasks run on for ``device``, named for the run record
    (``cpu``, ``cuda:0 NVIDIA H200``)."""
    import torch

    from fcnseg.pipeline.segment.worker import worker_device

    try:
        resolved = worker_device(device)
    except ValueError:  # such a worker's refusal ended the run before (``agree_execution``)
        return "unavailable"
    if resolved.type != "cuda":
        return resolved.type
    return f"{resolved} {torch.cuda.get_device_name(resolved)}"
