"""Checkpoints: safetensors weights with the model card as JSON metadata, in one file.

A checkpoint carries everything inference needs besides the weights: architecture and width,
bands and their normalisation, how nodata is handled, class names and colours, and where the
weights came from (training provenance and metrics). A content hash over the card and the tensors
is stored in the file and checked on load, so a damaged file is refused rather than half-used.

Loading never unpickles anything: safetensors is a JSON header and raw tensor bytes.

The card itself (``ModelCard`` and its parts, and its validation) is ``fcnseg.models.card``, which
imports no torch; its names are re-exported here, as is ``CheckpointError`` (``fcnseg.errors``).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from fcnseg.atomic import as_created, atomic_write
from fcnseg.errors import CheckpointError
from fcnseg.models.card import (
    MAX_CLASSES, OUTSIDE_POLICIES, ClassInfo, LabelMapping, ModelCard, NodataPolicy, Normalization, check_color,
    class_count_problem, class_names_problem,
)
from fcnseg.models.card_file import FORMAT, FORMAT_VERSION, METADATA_KEY, file_sha256
from fcnseg.models.card_file import check_format as _check_format
from fcnseg.models.card_file import parse_card as _parse_card
from fcnseg.models.fcn import FCNBase, build_model

__all__ = [
    "FORMAT", "FORMAT_VERSION", "MAX_CLASSES", "METADATA_KEY", "OUTSIDE_POLICIES", "CheckpointError", "ClassInfo",
    "LabelMapping", "ModelCard", "NodataPolicy", "Normalization", "check_color", "class_count_problem",
    "class_names_problem", "content_hash", "content_sha256", "file_sha256", "is_checkpoint", "load_checkpoint",
    "non_finite_tensor", "read_card", "save_checkpoint", "verify_checkpoint",
]

def non_finite_tensor(tensors: Mapping[str, torch.Tensor]) -> str | None:
    """The first tensor (by name) holding NaN or an infinity, else None: a NaN weight makes every
    score it reaches NaN, and argmax of NaN is class 0.

    Exact, and cheap enough for every load: a tensor's sum is non-finite whenever one of its values
    is, so the sum screens each tensor in one pass without temporaries, and ``isfinite().all()``
    decides only where the sum is non-finite (NaN and infinities, or finite values overflowing it).
    It takes a small part of what ``isfinite().all()`` on every tensor takes, and of a whole
    verified load (read, content hash) (measured: docs/benchmarks.md#checking-every-tensor-on-load)."""
    for name in sorted(tensors):
        tensor = tensors[name]
        if not tensor.is_floating_point() or bool(torch.isfinite(tensor.sum())):
            continue
        if not bool(torch.isfinite(tensor).all()):
            return name
    return None


def content_hash(card_json: str, tensors: dict[str, torch.Tensor]) -> str:
    """sha256 over the card (without its hash) and every tensor's name, dtype, shape and bytes."""
    digest = hashlib.sha256(card_json.encode())
    for name in sorted(tensors):
        tensor = tensors[name].detach().cpu().contiguous()
        digest.update(f"{name}|{tensor.dtype}|{tuple(tensor.shape)}".encode())
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def save_checkpoint(path: str | Path, model: FCNBase, card: ModelCard) -> Path:
    """Write weights and card atomically: a crash leaves the old file or none, never half a file."""
    card.validate()
    path = Path(path)
    tensors = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    bad = non_finite_tensor(tensors)
    if bad is not None:
        raise CheckpointError(f"{path}: tensor {bad} holds NaN or infinite values (a diverged training?); not written")
    card_json = json.dumps(card.to_json(), sort_keys=True)
    metadata = {
        "format": FORMAT,
        "format_version": str(FORMAT_VERSION),
        METADATA_KEY: card_json,
        "content_sha256": content_hash(card_json, tensors),
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_write(path, durable=True) as tmp:
        save_file(tensors, tmp, metadata=metadata)
        as_created(tmp)  # safetensors writes 0600: a worker or colleague could not read the checkpoint
    return path


def _header_metadata(path: Path) -> dict[str, str]:
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint file")
    try:
        with safe_open(str(path), framework="pt") as f:
            metadata = f.metadata() or {}
    except (SafetensorError, OSError, ValueError) as exc:
        raise CheckpointError(f"{path}: not a safetensors checkpoint ({exc})") from None
    _check_format(path, metadata)
    return metadata


def is_checkpoint(path: str | Path) -> bool:
    """True for a safetensors file whose header carries fcnseg's model card (of any format version,
    damaged tensors or not): what a command that writes checkpoints may replace as its own."""
    try:
        with safe_open(str(path), framework="pt") as f:
            metadata = f.metadata() or {}
    except (SafetensorError, OSError, ValueError):
        return False
    return metadata.get("format") == FORMAT and METADATA_KEY in metadata


def read_card(path: str | Path) -> ModelCard:
    """The model card alone, from the file's header (cheap: reads no tensors)."""
    path = Path(path)
    return _parse_card(path, _header_metadata(path))


def _verified_tensors(path: Path) -> tuple[dict[str, str], dict[str, torch.Tensor]]:
    """The header metadata and all tensors of the file, read through one open file and checked
    against the stored content hash (a file replaced meanwhile cannot mix two checkpoints)."""
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint file")
    try:
        file = safe_open(str(path), framework="pt")
    except (SafetensorError, OSError, ValueError) as exc:
        raise CheckpointError(f"{path}: not a safetensors checkpoint ({exc})") from None
    with file as f:
        metadata = f.metadata() or {}
        _check_format(path, metadata)
        try:
            tensors = {name: f.get_tensor(name) for name in f.keys()}
        except (SafetensorError, OSError, ValueError, RuntimeError) as exc:
            raise CheckpointError(f"{path}: cannot read tensors, file truncated or damaged ({exc})") from None
    if content_hash(metadata[METADATA_KEY], tensors) != metadata.get("content_sha256"):
        raise CheckpointError(f"{path}: content hash mismatch, file damaged or edited")
    bad = non_finite_tensor(tensors)
    if bad is not None:
        raise CheckpointError(f"{path}: tensor {bad} holds NaN or infinite values (a diverged training?);"
                              " it cannot give meaningful labels")
    return metadata, tensors


def content_sha256(path: str | Path) -> str:
    """The checkpoint's stored content hash (card and tensors), from its header: what identifies
    the model whatever the file's name or timestamps."""
    return _header_metadata(Path(path))["content_sha256"]


def verify_checkpoint(path: str | Path) -> ModelCard:
    """The card of a checkpoint whose every byte has been checked (no model is built)."""
    metadata, _ = _verified_tensors(Path(path))
    return _parse_card(Path(path), metadata)


def load_checkpoint(
    path: str | Path, device: str | torch.device = "cpu", *, expected_content_sha256: str | None = None,
) -> tuple[FCNBase, ModelCard]:
    """The model (in eval mode, on ``device``) and its card; refuses damaged or foreign files, and
    with ``expected_content_sha256`` any checkpoint but that one (a file replaced since a run was
    planned)."""
    path = Path(path)
    metadata, tensors = _verified_tensors(path)
    if expected_content_sha256 is not None and metadata["content_sha256"] != expected_content_sha256:
        raise CheckpointError(
            f"{path}: the checkpoint changed since the run was planned (content hash "
            f"{metadata['content_sha256'][:12]}, planned {expected_content_sha256[:12]}); rerun to plan with this one"
        )
    card = _parse_card(path, metadata)
    model = build_model(card.arch, card.bands, card.num_classes, card.width)
    try:
        model.load_state_dict(tensors, strict=True)
    except RuntimeError as exc:
        first = str(exc).splitlines()[0]
        raise CheckpointError(f"{path}: weights do not match {card.arch} width {card.width} ({first})") from None
    return model.to(device).eval(), card
