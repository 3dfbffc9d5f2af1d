"""The item's model: the MLM extension (v1.4.0) fields that say which network made the labels and
how it reads the input, from the checkpoint's model card.

A catalogue user comparing two segmentations needs more than a hash: the architecture, the bands
the model took (in which order, scaled how), the classes it predicts, and the checkpoint itself
(the ``mlm:model`` asset, with its size and sha256 as ``file:`` fields, so a copy can be checked).
Only the card is read from the checkpoint (its JSON header), and the parameter count from the
safetensors header: no tensor is loaded. A segment run reads them once, when it plans
(``segment.plan.planned_model``), and its item describes that model: a file put at the path
during the run changes nothing in it.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from fcnseg.errors import CheckpointError
from fcnseg.models.card import ModelCard
from fcnseg.models.card_file import ModelSource, read_card_file  # ModelSource: its home beside the header reader
from fcnseg.models.tta import views
from fcnseg.pipeline.output.file_fields import sha256_multihash

log = logging.getLogger(__name__)

TASKS = ["semantic-segmentation"]
#: MLM's predefined name for the framework (its schema lists it; "Enum names should be preferred").
FRAMEWORK = "PyTorch"
#: The checkpoint is a safetensors file (weights + card), written by safetensors.torch.save_file.
MODEL_MEDIA_TYPE = "application/octet-stream; framework=pytorch; profile=safetensors"
ARTIFACT_TYPE = "safetensors.torch.save_file"
ARCHITECTURES = {"fcn32s": "FCN-32s", "fcn16s": "FCN-16s", "fcn8s": "FCN-8s"}
#: mlm:name must match this (MLM v1.4.0).
NAME_PATTERN = re.compile(r"^[a-zA-Z][a-zA-Z0-9_.\-\s]+[a-zA-Z0-9]$")
#: mlm:framework_version must be semantic (MLM v1.4.0): "2.13.0+cpu" is, "2.13.0a0+git" is not.
SEMVER = re.compile(r"^(0|[1-9]\d*)\.(0|[1-9]\d*)\.(0|[1-9]\d*)(?:-[0-9A-Za-z.-]+)?(?:\+[0-9A-Za-z-]+(?:\.[0-9A-Za-z-]+)*)?$")


def read_model(model_path: str | Path | None, sha256: str | None) -> ModelSource | None:
    """The checkpoint's card, or None (logged) when there is no path or the file cannot be read:
    the item then goes without MLM fields rather than failing a finished run."""
    if not model_path:
        return None
    try:
        card = read_card_file(model_path, verify=False).card
    except (CheckpointError, OSError) as e:
        log.warning("no MLM fields in the STAC item: %s", e)
        return None
    return ModelSource(str(model_path), card, sha256)


def mlm_properties(model: ModelSource, classes: Sequence[Mapping[str, Any]], torch_version: str | None,
                   input_bands: Sequence[int] | None = None, tta: str = "none",
                   normalization: Mapping[str, Sequence[float]] | None = None) -> dict[str, Any]:
    """Item-level MLM fields: name, architecture, task, framework, input (bands, shape, scaling) and
    output (class scores, classes). ``classes``: the model's classes as classification class objects;
    ``tta``: the run's test-time augmentation (``models.tta``), which the output's scores are
    averaged over: said in its description and, for a run that used it, in ``fcnseg:tta``.
    ``normalization``: the run's per-band ``{"mean", "std"}`` matched to the input (``--normalize
    scene``), which the input's scaling then says in place of the card's."""
    card = model.card
    fields: dict[str, Any] = {
        "mlm:name": model_name(model.path, card.arch),
        "mlm:architecture": architecture_name(card.arch),
        "mlm:tasks": list(TASKS),
        "mlm:framework": FRAMEWORK,
    }
    version = framework_version(torch_version)
    if version:
        fields["mlm:framework_version"] = version
    parameters = model.parameters if model.parameters is not None else total_parameters(model.path)
    if parameters is not None:
        fields["mlm:total_parameters"] = parameters
    fields.update(_pretraining(card))
    fields["mlm:input"] = [model_input(card, input_bands, normalization)]
    fields["mlm:output"] = [model_output(card, classes, tta)]
    if tta != "none":
        fields["fcnseg:tta"] = {"mode": tta, "views": [view.name for view in views(tta)]}
    return fields


def model_asset(model: ModelSource, input_bands: Sequence[int] | None = None,
                out_dir: Path | None = None) -> dict[str, Any]:
    """The ``mlm:model`` asset: the checkpoint, by absolute URI (``local_href``: relative only when it
    lies inside the output folder ``out_dir``, so it travels with it), with
    ``file:size`` and ``file:checksum`` when known and the input band names (``raster:bands``,
    which MLM needs to resolve ``mlm:input`` bands by name)."""
    asset: dict[str, Any] = {
        "href": _uri(model.path) if out_dir is None else local_href(model.path, out_dir),
        "type": MODEL_MEDIA_TYPE,
        "title": f"{architecture_name(model.card.arch)} checkpoint (safetensors, with its model card)",
        "roles": ["mlm:model", "mlm:checkpoint", "mlm:weights", "model", "weights", "checkpoint"],
        "mlm:artifact_type": ARTIFACT_TYPE,
        "raster:bands": [{"name": name} for name in band_names(model.card, input_bands)],
    }
    if model.size is not None:
        asset["file:size"] = model.size
    else:
        try:
            asset["file:size"] = os.stat(model.path).st_size
        except OSError:
            pass  # a remote checkpoint: no size
    if model.sha256:
        asset["file:checksum"] = sha256_multihash(model.sha256)
    return asset


# --------------------------------------------------------------------------- pieces


def model_input(card: ModelCard, input_bands: Sequence[int] | None,
                normalization: Mapping[str, Sequence[float]] | None = None) -> dict[str, Any]:
    """The input: the card's bands in order, z-score scaled per band (by the card's mean and std, or
    ``normalization``: those the run matched to the input), as float32 (batch, channel, y, x)."""
    scaling = ({"mean": card.normalization.mean, "std": card.normalization.std} if normalization is None
               else normalization)
    matched = "" if normalization is None else (
        " (mean and stddev matched to this input: its median and interquartile range per band mapped onto the"
        " training scene's, --normalize scene)")
    names = band_names(card, input_bands)
    source = f"bands {', '.join(map(str, input_bands))} of the input raster" if input_bands else "the input raster's bands"
    nodata = card.nodata
    return {
        "name": "image tiles",
        "bands": names,
        "input": {"shape": [-1, card.bands, -1, -1], "dim_order": ["batch", "channel", "height", "width"],
                  "data_type": "float32"},
        "description": (f"Tiles of {source} as {', '.join(names)}, each scaled (x - mean) / stddev{matched}; pixels that "
                        "are nodata in the input (by GDAL's dataset mask: every band at its nodata value, or "
                        f"masked) are set to {nodata.fill:g} after scaling and labelled {nodata.label}. Any tile "
                        "size that is a multiple of 32 (the network is fully convolutional)."),
        "value_scaling": [{"type": "z-score", "mean": float(m), "stddev": float(s)}
                          for m, s in zip(scaling["mean"], scaling["std"], strict=True)],
        "resize_type": None,
    }


def model_output(card: ModelCard, classes: Sequence[Mapping[str, Any]], tta: str = "none") -> dict[str, Any]:
    """The output: a score per class and pixel (averaged over the views of ``tta``); the labels are their argmax."""
    averaged = "" if tta == "none" else (
        f", averaged over {len(views(tta))} views of each tile (test-time augmentation {tta}: "
        f"{', '.join(view.name for view in views(tta))}; each view's scores turned back before the mean)")
    return {
        "name": "class scores",
        "tasks": list(TASKS),
        "result": {"shape": [-1, card.num_classes, -1, -1], "dim_order": ["batch", "class", "height", "width"],
                   "data_type": "float32"},
        "description": f"Per-class scores (logits){averaged}; a pixel's label is the class of the highest score.",
        "classification:classes": [dict(c) for c in classes],
    }


def architecture_name(arch: str) -> str:
    """mlm:architecture: the literature's name (FCN-8s) for the card's ``arch`` (fcn8s)."""
    return ARCHITECTURES.get(arch, arch)


def band_names(card: ModelCard, input_bands: Sequence[int] | None) -> list[str]:
    """The card's band names, else ``band_N`` for the input band numbers the run read."""
    if card.band_names:
        return [str(n) for n in card.band_names]
    numbers = list(input_bands) if input_bands and len(input_bands) == card.bands else range(1, card.bands + 1)
    return [f"band_{n}" for n in numbers]


def model_name(model_path: str, arch: str) -> str:
    """mlm:name: the checkpoint's file stem, fitted to MLM's pattern (else fcnseg-ARCH)."""
    stem = re.sub(r"[^a-zA-Z0-9_.\-\s]+", "-", Path(str(model_path)).stem)
    stem = re.sub(r"^[^a-zA-Z]+|[^a-zA-Z0-9]+$", "", stem)
    return stem if NAME_PATTERN.match(stem) else f"fcnseg-{arch}"


def framework_version(version: str | None) -> str | None:
    """The torch version when it is semantic, else its release part (``2.13.0``), else None."""
    if not version:
        return None
    if SEMVER.match(version):
        return version
    release = re.match(r"^\d+\.\d+\.\d+", version)
    return release.group(0) if release else None


def total_parameters(model_path: str) -> int | None:
    """Weights in the checkpoint, from the tensor shapes in its header (no tensor is read, no torch)."""
    try:
        return read_card_file(model_path, verify=False).parameters
    except (CheckpointError, OSError) as e:
        log.debug("cannot count the parameters of %s: %s", model_path, e)
        return None


def _pretraining(card: ModelCard) -> dict[str, Any]:
    """mlm:pretrained(_source) from the card's training record: an ImageNet VGG16 or an init checkpoint."""
    training = card.training
    if not (training.recorded("vgg16_weights") or training.recorded("init")):
        return {}
    vgg, init = training.vgg16_weights, training.init
    if isinstance(init, Mapping) and init.get("path"):
        source = f"fine-tuned from checkpoint {Path(str(init['path'])).name} (sha256 {init.get('sha256', '?')})"
    elif vgg:
        source = f"ImageNet VGG16 backbone ({Path(str(vgg)).name})"
    else:
        source = None
    return {"mlm:pretrained": source is not None, "mlm:pretrained_source": source}


def local_href(path: str | Path, out_dir: Path) -> str:
    """``./name`` for a local file inside ``out_dir`` (it is copied with the folder), else an absolute
    URI: a ``../`` path would dangle as soon as the folder alone is copied or uploaded, while an
    absolute one still names where the file was (and ``file:checksum`` checks a copy of it)."""
    text = str(path)
    if re.match(r"^[A-Za-z][A-Za-z0-9+.-]*://", text):
        return text
    resolved, folder = Path(text).resolve(), out_dir.resolve()
    if resolved.is_relative_to(folder):
        return f"./{resolved.relative_to(folder).as_posix()}"
    return resolved.as_uri()


def _uri(path: str) -> str:
    """A URL as it is; a local path as an absolute file:// URI."""
    if re.match(r"^[A-Za-z][A-Za-z0-9+.-]*://", path):
        return path
    return Path(path).resolve().as_uri()
