"""Initialise an FCN's backbone and fc6/fc7 from ImageNet VGG16 weights in a local file.

Nothing is downloaded: the user brings the file. The layout is torchvision's ``vgg16`` state dict
(``features.{0,2,5,...,28}.{weight,bias}``, ``classifier.{0,3,6}.{weight,bias}``), as saved by
``torch.save(torchvision.models.vgg16(weights=...).state_dict(), path)`` or converted to
safetensors. A ``.safetensors`` file is read as such; any other file goes through
``torch.load(weights_only=True)``, PyTorch's restricted loader that accepts tensors only and runs
no code. As in the paper, fc6 and fc7 become convolutions (``classifier.0`` reshaped to 7x7,
``classifier.3`` to 1x1) and the 1000-class ImageNet classifier is dropped.

Bands: with 3 or more bands, the first three take the RGB filters and each extra band takes the
mean of the RGB filters. With fewer than three bands, each band takes the mean of the RGB filters
scaled by 3/bands, so a grey image gives the same first-layer response as in ImageNet training.
Only a full-width (``width=1``) model can take these weights.
"""

from __future__ import annotations

from pathlib import Path

import torch
from safetensors.torch import load_file

from fcnseg.models.fcn import FC_CHANNELS, FCNBase

#: torchvision's ``features`` indices of VGG16's 13 conv layers.
TORCHVISION_CONV_INDICES = (0, 2, 5, 7, 10, 12, 14, 17, 19, 21, 24, 26, 28)


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """Tensors from a safetensors file or, safely, from a torch-saved state dict."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such VGG16 weights file")
    try:
        if path.suffix == ".safetensors":
            return load_file(str(path))
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any reader failure is one clear error
        raise ValueError(f"{path}: cannot read VGG16 weights ({exc.__class__.__name__}: {exc})") from None
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ValueError(f"{path}: not a state dict of tensors")
    return state


def expand_first_layer(rgb_weight: torch.Tensor, bands: int) -> torch.Tensor:
    """conv1_1's (out, 3, 3, 3) filters adapted to ``bands`` input bands (see module docstring)."""
    mean = rgb_weight.mean(dim=1, keepdim=True)
    if bands < 3:
        return mean.repeat(1, bands, 1, 1) * (3.0 / bands)
    return torch.cat([rgb_weight, mean.repeat(1, bands - 3, 1, 1)], dim=1)


def load_vgg16_imagenet(model: FCNBase, path: str | Path) -> FCNBase:
    """Copy ImageNet VGG16 weights into ``model``'s backbone, fc6 and fc7, in place."""
    if model.width != 1.0:
        raise ValueError(f"{path}: ImageNet VGG16 weights fit only width 1.0, not {model.width}")
    state = read_state_dict(path)
    needed = [f"features.{i}.{p}" for i in TORCHVISION_CONV_INDICES for p in ("weight", "bias")]
    needed += [f"classifier.{i}.{p}" for i in (0, 3) for p in ("weight", "bias")]
    missing = [k for k in needed if k not in state]
    if missing:
        raise ValueError(f"{path}: not torchvision's VGG16 layout (missing {', '.join(missing[:3])} ...)")

    with torch.no_grad():
        for conv, index in zip(model.backbone.convs(), TORCHVISION_CONV_INDICES, strict=True):
            weight = state[f"features.{index}.weight"]
            if index == 0:
                weight = expand_first_layer(weight, model.in_channels)
            _copy(conv.weight, weight, path, f"features.{index}.weight")
            _copy(conv.bias, state[f"features.{index}.bias"], path, f"features.{index}.bias")
        fc6 = state["classifier.0.weight"].reshape(FC_CHANNELS, -1, 7, 7)
        _copy(model.fc6.weight, fc6, path, "classifier.0.weight")
        _copy(model.fc6.bias, state["classifier.0.bias"], path, "classifier.0.bias")
        _copy(model.fc7.weight, state["classifier.3.weight"][:, :, None, None], path, "classifier.3.weight")
        _copy(model.fc7.bias, state["classifier.3.bias"], path, "classifier.3.bias")
    return model


def _copy(target: torch.Tensor, source: torch.Tensor, path: str | Path, name: str) -> None:
    if target.shape != source.shape:
        raise ValueError(f"{path}: {name} has shape {tuple(source.shape)}, expected {tuple(target.shape)}")
    target.copy_(source)
