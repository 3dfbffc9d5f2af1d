"""The FCN models: the paper's topology, size independence, and the grid tiles rely on."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from fcnseg.models.fcn import (
    ARCHS,
    STRIDE,
    bilinear_kernel,
    build_model,
    count_parameters,
    receptive_field,
    upsampler,
)


@pytest.mark.parametrize("arch", ARCHS)
def test_full_width_has_the_papers_134m_parameters(arch):
    model = build_model(arch, in_channels=3, num_classes=21, width=1.0)
    # The paper reports 134M for FCN-VGG16; FCN-32s' 64x64 upsampling filter adds 1.8M of fixed weights.
    assert abs(count_parameters(model) - 134e6) / 134e6 < 0.02
    assert model.fc6.kernel_size == (7, 7) and model.fc6.out_channels == 4096
    assert model.fc7.kernel_size == (1, 1) and model.fc7.out_channels == 4096
    assert sum(isinstance(m, nn.Dropout2d) for m in model.modules()) == 2
    assert len(model.backbone.convs()) == 13


def test_fcn8s_layers_follow_the_paper():
    model = build_model("fcn8s", 3, 21, 1.0)
    assert abs(count_parameters(model) - 134.5e6) < 0.2e6
    assert model.score_pool4.in_channels == 512 and model.score_pool3.in_channels == 256
    assert (model.upscore2.stride, model.upscore_pool4.stride, model.upscore8.stride) == ((2, 2), (2, 2), (8, 8))
    # intermediate upsampling learnable, final fixed to bilinear, as in the paper
    assert model.upscore2.weight.requires_grad and model.upscore_pool4.weight.requires_grad
    assert not model.upscore8.weight.requires_grad
    assert torch.equal(model.upscore8.weight, bilinear_kernel(21, 16))
    # scoring layers start at zero, so an untrained net predicts uniform scores
    assert not model.score_fr.weight.any() and not model.score_pool3.weight.any()


@pytest.mark.parametrize("width, channels", [(0.25, 16), (0.125, 8)])
def test_width_multiplier_keeps_topology(width, channels):
    small = build_model("fcn8s", 4, 6, width)
    full = build_model("fcn8s", 4, 6, 1.0)
    assert small.backbone.convs()[0].out_channels == channels
    assert small.fc6.out_channels == int(4096 * width)
    assert [type(m) for m in small.modules()] == [type(m) for m in full.modules()]


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("bands, height, width", [(1, 77, 100), (4, 32, 33), (13, 129, 64), (3, 5, 7)])
def test_output_has_the_inputs_exact_size(arch, bands, height, width):
    model = build_model(arch, bands, 5, width=0.125).eval()
    with torch.no_grad():
        out = model(torch.randn(2, bands, height, width))
    assert out.shape == (2, 5, height, width)


def test_bilinear_upsampler_interpolates_a_ramp():
    up = upsampler(1, 2, learnable=False)
    ramp = torch.arange(8, dtype=torch.float32).repeat(8, 1)[None, None]
    out = up(ramp)[0, 0]
    assert out.shape == (16, 16)
    # inside the border, each output pixel is the linear interpolation at its centre
    expected = (torch.arange(16, dtype=torch.float32) + 0.5) / 2 - 0.5
    assert torch.allclose(out[4, 1:-1], expected[1:-1], atol=1e-5)


def test_pooling_grid_is_anchored_at_the_origin():
    """A crop starting on a multiple of 32 sees the same pool5 cells as the whole image."""
    torch.manual_seed(0)
    model = build_model("fcn8s", 3, 4, 0.125).eval()
    x = torch.randn(1, 3, 480, 480)
    with torch.no_grad():
        _, _, whole = model.backbone(x)
        _, _, crop = model.backbone(x[..., 224:, 224:])
    offset = 224 // STRIDE
    # pool5 sees 212 px: cells more than 4 cells inside the crop have identical context
    assert torch.allclose(crop[..., 4:, 4:], whole[..., offset + 4 :, offset + 4 :], atol=1e-5)
    # an odd offset would break the grid
    with torch.no_grad():
        _, _, shifted = model.backbone(x[..., 224 + 16 :, 224 + 16 :])
    assert not torch.allclose(shifted[..., 4:-1, 4:-1], whole[..., offset + 4 : -1, offset + 4 : -1], atol=1e-3)


@pytest.mark.parametrize("arch", ARCHS)
def test_receptive_field_bounds_the_influence_of_a_pixel(arch):
    torch.manual_seed(0)
    model = build_model(arch, 3, 3, width=0.125).eval()
    for p in model.parameters():
        if p.requires_grad:
            nn.init.normal_(p, std=0.05)
    x = torch.randn(1, 3, 640, 96)
    y = x.clone()
    y[..., 333, 40] += 100.0
    with torch.no_grad():
        changed = ((model(x) - model(y)).abs().amax(dim=(0, 1, 3)) > 0).nonzero()[:, 0]
    radius = receptive_field(arch) // 2
    reach = max(333 - int(changed.min()), int(changed.max()) - 333)
    assert radius - 32 < reach <= radius


def test_build_model_rejects_nonsense():
    with pytest.raises(ValueError, match="unknown architecture"):
        build_model("fcn4s", 3, 2)
    with pytest.raises(ValueError, match="width"):
        build_model("fcn8s", 3, 2, width=2.0)
