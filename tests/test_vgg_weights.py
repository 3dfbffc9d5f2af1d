"""ImageNet VGG16 initialisation from a local file in torchvision's layout (generated here)."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import save_file

from fcnseg.models.fcn import build_model
from fcnseg.models.vgg_weights import TORCHVISION_CONV_INDICES, expand_first_layer, load_vgg16_imagenet

VGG16_CHANNELS = [3, 64, 64, 128, 128, 256, 256, 256, 512, 512, 512, 512, 512, 512]


@pytest.fixture(scope="module")
def vgg16_state() -> dict[str, torch.Tensor]:
    """A state dict with torchvision's vgg16 keys and shapes, random values."""
    g = torch.Generator().manual_seed(0)
    state = {}
    for i, index in enumerate(TORCHVISION_CONV_INDICES):
        cin, cout = VGG16_CHANNELS[i], VGG16_CHANNELS[i + 1]
        state[f"features.{index}.weight"] = torch.randn(cout, cin, 3, 3, generator=g)
        state[f"features.{index}.bias"] = torch.randn(cout, generator=g)
    for index, (cin, cout) in {0: (25088, 4096), 3: (4096, 4096), 6: (4096, 1000)}.items():
        state[f"classifier.{index}.weight"] = torch.randn(cout, cin, generator=g)
        state[f"classifier.{index}.bias"] = torch.randn(cout, generator=g)
    return state


@pytest.mark.parametrize("fmt", ["pth", "safetensors"])
def test_vgg16_weights_land_in_backbone_fc6_fc7(vgg16_state, tmp_path, fmt):
    path = tmp_path / f"vgg16.{fmt}"
    if fmt == "pth":
        torch.save(vgg16_state, path)
    else:
        save_file(vgg16_state, str(path))
    model = load_vgg16_imagenet(build_model("fcn8s", 3, 21, 1.0), path)
    convs = model.backbone.convs()
    for conv, index in zip(convs, TORCHVISION_CONV_INDICES):
        assert torch.equal(conv.weight, vgg16_state[f"features.{index}.weight"])
        assert torch.equal(conv.bias, vgg16_state[f"features.{index}.bias"])
    assert torch.equal(model.fc6.weight.flatten(1), vgg16_state["classifier.0.weight"])
    assert torch.equal(model.fc7.weight[:, :, 0, 0], vgg16_state["classifier.3.weight"])


def test_extra_bands_take_the_mean_of_the_rgb_filters(vgg16_state, tmp_path):
    path = tmp_path / "vgg16.safetensors"
    save_file(vgg16_state, str(path))
    rgb = vgg16_state["features.0.weight"]
    model = load_vgg16_imagenet(build_model("fcn8s", 5, 4, 1.0), path)
    first = model.backbone.convs()[0].weight
    assert torch.equal(first[:, :3], rgb)
    assert torch.allclose(first[:, 3], rgb.mean(dim=1)) and torch.allclose(first[:, 4], rgb.mean(dim=1))
    # one band: a grey image gives the same first-layer response as RGB
    grey = expand_first_layer(rgb, 1)
    assert torch.allclose(grey[:, 0], rgb.sum(dim=1), atol=1e-5)


def test_wrong_files_and_widths_are_refused(vgg16_state, tmp_path):
    path = tmp_path / "vgg16.safetensors"
    save_file({k: v for k, v in vgg16_state.items() if k != "classifier.0.weight"}, str(path))
    with pytest.raises(ValueError, match="not torchvision's VGG16 layout"):
        load_vgg16_imagenet(build_model("fcn8s", 3, 2, 1.0), path)
    with pytest.raises(ValueError, match="width 1.0"):
        load_vgg16_imagenet(build_model("fcn8s", 3, 2, 0.5), path)
    garbage = tmp_path / "garbage.pth"
    garbage.write_bytes(b"not a state dict")
    with pytest.raises(ValueError, match="garbage.pth: cannot read VGG16 weights"):
        load_vgg16_imagenet(build_model("fcn8s", 3, 2, 1.0), garbage)
