"""A checkpoint's model card and content hash read from the file itself, without torch.

A safetensors file is an 8-byte little-endian header length, a JSON header (each tensor's dtype,
shape and byte range, and the string metadata that holds the card) and the raw tensor bytes. So
``fcnseg info`` can print a card, and check every byte against the stored content hash, in a
process that never imports torch (seconds of start-up saved, and no torch needed at all).
``fcnseg.models.checkpoint`` writes checkpoints and loads them into a model; it takes its format
constants and card checks from here, so both read a file the same way.
"""

from __future__ import annotations

import hashlib
import json
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from fcnseg.digest import file_sha256  # a run records it to say which model made its output
from fcnseg.errors import CheckpointError
from fcnseg.models.card import ModelCard

__all__ = ["FORMAT", "FORMAT_VERSION", "METADATA_KEY", "CardFile", "ModelSource", "check_format", "file_sha256",
           "parse_card", "read_card_file"]

FORMAT = "fcnseg-checkpoint"
FORMAT_VERSION = 1
METADATA_KEY = "fcnseg"

#: A header longer than this is no checkpoint's (the demo model's is a few kB): refused, not read.
MAX_HEADER_BYTES = 100 * 1024 * 1024

#: safetensors' dtype names as torch prints them: the content hash digests ``str(tensor.dtype)``.
TORCH_DTYPES = {
    "F64": "torch.float64", "F32": "torch.float32", "F16": "torch.float16", "BF16": "torch.bfloat16",
    "I64": "torch.int64", "I32": "torch.int32", "I16": "torch.int16", "I8": "torch.int8", "U8": "torch.uint8",
    "BOOL": "torch.bool", "U16": "torch.uint16", "U32": "torch.uint32", "U64": "torch.uint64",
    "F8_E4M3": "torch.float8_e4m3fn", "F8_E5M2": "torch.float8_e5m2",
}


#: Per float dtype of safetensors, the unsigned integer of its width and its exponent bits: a value
#: whose exponent bits are all set is NaN or an infinity, so non-finite weights are found in the raw
#: bytes (bf16 included, which numpy has no float for) without building a tensor.
EXPONENT_BITS = {
    "F64": ("<u8", 0x7FF0000000000000), "F32": ("<u4", 0x7F800000), "F16": ("<u2", 0x7C00), "BF16": ("<u2", 0x7F80),
}


@dataclass(frozen=True)
class ModelSource:
    """The checkpoint a run used: where it was read from, its card, its file's sha256 and size, and
    its parameter count (None: read from ``path`` when the item is made). Here, beside the header
    reader, so a run can plan with it without torch and the products describe the same record."""

    path: str
    card: ModelCard
    sha256: str | None
    size: int | None = None
    parameters: int | None = None


@dataclass(frozen=True)
class CardFile:
    """What a checkpoint file says without its weights loaded: the card, the stored content hash,
    whether the bytes match it (None: not checked), and the tensors' count and parameters."""

    card: ModelCard
    content_sha256: str | None
    verified: bool | None
    tensors: int
    parameters: int
    format_version: int


def check_format(path: Path, metadata: dict[str, str]) -> None:
    """An fcnseg checkpoint of a format this version reads, else CheckpointError naming the file."""
    if metadata.get("format") != FORMAT or METADATA_KEY not in metadata:
        raise CheckpointError(f"{path}: a safetensors file, but not an fcnseg checkpoint (no model card)")
    if int(metadata.get("format_version", "0")) > FORMAT_VERSION:
        raise CheckpointError(f"{path}: checkpoint format {metadata['format_version']} is newer than this fcnseg")


def parse_card(path: Path, metadata: dict[str, str]) -> ModelCard:
    """The card in the metadata, validated; CheckpointError naming the file when it is not a card."""
    try:
        card = ModelCard.from_json(json.loads(metadata[METADATA_KEY]))
        card.validate()
    except (KeyError, TypeError, ValueError) as exc:
        raise CheckpointError(f"{path}: invalid model card ({exc})") from None
    return card


def read_card_file(path: str | Path, *, verify: bool = True, finite: bool = False) -> CardFile:
    """The card of the checkpoint at ``path`` and, with ``verify``, every tensor's bytes checked
    against the stored content hash (as loading does): a damaged file is one CheckpointError.
    With ``finite`` (and ``verify``), a float tensor holding NaN or an infinity is refused too, as
    loading refuses it: a run's plan checks this without torch."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint file")
    with open(path, "rb") as f:
        header, data_start = _read_header(path, f)
        metadata = header.pop("__metadata__", None) or {}
        check_format(path, metadata)
        card = parse_card(path, metadata)
        stored = metadata.get("content_sha256")
        scan = _scan(path, f, data_start, header, metadata[METADATA_KEY], finite) if verify else None
    verified = None if scan is None else scan[0] == stored
    if verified is False:
        raise CheckpointError(f"{path}: content hash mismatch, file damaged or edited")
    if scan is not None and scan[1] is not None:
        raise CheckpointError(f"{path}: tensor {scan[1]} holds NaN or infinite values (a diverged training?);"
                              " it cannot give meaningful labels")
    parameters = sum(_count(entry["shape"]) for entry in header.values())
    return CardFile(card=card, content_sha256=stored, verified=verified, tensors=len(header), parameters=parameters,
                    format_version=int(metadata.get("format_version", "0")))


def _read_header(path: Path, f: Any) -> tuple[dict[str, Any], int]:
    """The JSON header and where the tensors' bytes start; CheckpointError for anything else."""
    start = f.read(8)
    if len(start) != 8:
        raise CheckpointError(f"{path}: not a safetensors checkpoint (shorter than its header)")
    (length,) = struct.unpack("<Q", start)
    if length > MAX_HEADER_BYTES:
        raise CheckpointError(f"{path}: not a safetensors checkpoint (header length {length})")
    raw = f.read(length)
    try:
        header = json.loads(raw)
    except (UnicodeDecodeError, ValueError):
        raise CheckpointError(f"{path}: not a safetensors checkpoint (its header is not JSON)") from None
    if len(raw) != length or not isinstance(header, dict):
        raise CheckpointError(f"{path}: not a safetensors checkpoint (truncated or damaged header)")
    return header, 8 + length


def _scan(path: Path, f: Any, data_start: int, header: dict[str, Any], card_json: str,
          finite: bool) -> tuple[str, str | None]:
    """``checkpoint.content_hash`` over the file's bytes (the card, then per tensor by name its
    name, torch dtype and shape, and its bytes) and, with ``finite``, the first tensor by name
    holding NaN or an infinity (as ``checkpoint.non_finite_tensor`` finds it), else None."""
    digest = hashlib.sha256(card_json.encode())
    bad = None
    for name in sorted(header):
        entry = header[name]
        try:
            dtype, shape, (begin, end) = TORCH_DTYPES[entry["dtype"]], tuple(entry["shape"]), entry["data_offsets"]
        except (KeyError, TypeError, ValueError):
            raise CheckpointError(f"{path}: tensor {name}: damaged header entry") from None
        digest.update(f"{name}|{dtype}|{shape}".encode())
        exponent = EXPONENT_BITS.get(entry["dtype"]) if finite and bad is None else None
        f.seek(data_start + begin)
        left = end - begin
        while left > 0:
            block = f.read(min(left, 1 << 20))  # a multiple of every dtype's width: no value is split
            if not block:
                raise CheckpointError(f"{path}: cannot read tensors, file truncated or damaged (tensor {name})")
            digest.update(block)
            left -= len(block)
            if exponent is not None and _non_finite(block, *exponent):
                bad, exponent = name, None
    return digest.hexdigest(), bad


def _non_finite(block: bytes, unsigned: str, bits: int) -> bool:
    """Whether a block of one float dtype's raw (little-endian) values holds NaN or an infinity:
    its exponent bits all set."""
    dtype = np.dtype(unsigned)
    values = np.frombuffer(block, dtype=dtype, count=len(block) // dtype.itemsize)
    mask = dtype.type(bits)
    return bool(np.any((values & mask) == mask))


def _count(shape: list[int]) -> int:
    total = 1
    for size in shape:
        total *= int(size)
    return total
