"""FCN-32s, FCN-16s and FCN-8s over a VGG16 backbone (Long, Shelhamer & Darrell, 2015).

Faithful to the paper's topology: VGG16's five conv blocks, fc6 as a 7x7 convolution and fc7
as a 1x1 convolution (4096 channels at full width) with dropout, 1x1 scoring layers on fc7,
pool4 and pool3, skip fusion by sum, and transposed convolutions initialised as bilinear
upsampling (the final one kept fixed, as in the paper).

Two deliberate differences from the Caffe reference, both for size independence:

* Instead of padding conv1_1 by 100 pixels and cropping with offsets, every pooling layer uses
  ``ceil_mode`` and fc6 pads by 3. A pooling grid therefore starts at the input's origin, feature
  maps are ``ceil(H / stride)`` in size, and each upsampling step is cropped at the top-left.
  An input of any height and width gives scores of exactly that size, and a tile whose origin
  lies on a multiple of 32 sees the same pooling grid as the whole image.
* ``width`` scales every channel count (backbone and fc6/fc7) for small, fast variants that
  keep the same topology.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor, nn

from fcnseg.models.card import ARCHS, STRIDE, Arch  # the names a model card may give, built here; their stride
from fcnseg.models.card import receptive_field  # the geometry, torch-free for tiling; re-exported here

#: VGG16's conv blocks at full width: (number of convs, channels).
VGG16_BLOCKS: tuple[tuple[int, int], ...] = ((2, 64), (2, 128), (3, 256), (3, 512), (3, 512))
FC_CHANNELS = 4096


def scaled(channels: int, width: float) -> int:
    """Channel count at a width multiplier (never below 4)."""
    return max(4, int(round(channels * width)))


def bilinear_kernel(channels: int, size: int) -> Tensor:
    """A (channels, channels, size, size) transposed-conv weight that upsamples bilinearly per channel."""
    factor = (size + 1) // 2
    center = factor - 1 if size % 2 == 1 else factor - 0.5
    og = np.ogrid[:size, :size]
    filt = (1 - abs(og[0] - center) / factor) * (1 - abs(og[1] - center) / factor)
    weight = torch.zeros(channels, channels, size, size)
    weight[range(channels), range(channels)] = torch.from_numpy(filt).float()
    return weight


def upsampler(channels: int, factor: int, learnable: bool) -> nn.ConvTranspose2d:
    """A ``factor``x transposed convolution, initialised (and, if not learnable, fixed) as bilinear."""
    layer = nn.ConvTranspose2d(
        channels, channels, kernel_size=2 * factor, stride=factor, padding=factor // 2, bias=False
    )
    with torch.no_grad():
        layer.weight.copy_(bilinear_kernel(channels, 2 * factor))
    layer.weight.requires_grad_(learnable)
    return layer


def crop_to(x: Tensor, like: Tensor) -> Tensor:
    """Crop ``x`` at the top-left to the spatial size of ``like`` (grids are anchored at the origin)."""
    return x[..., : like.shape[-2], : like.shape[-1]]


class VGG16Backbone(nn.Module):
    """VGG16's 13 conv layers and 5 max-pools; returns pool3, pool4 and pool5."""

    def __init__(self, in_channels: int, width: float = 1.0) -> None:
        super().__init__()
        self.blocks = nn.ModuleList()
        #: Channels leaving each block (pool1 .. pool5).
        self.block_channels: list[int] = []
        channels = in_channels
        for b, (n_convs, out) in enumerate(VGG16_BLOCKS, start=1):
            block = nn.Sequential()
            for c in range(1, n_convs + 1):
                block.add_module(f"conv{b}_{c}", nn.Conv2d(channels, scaled(out, width), 3, padding=1))
                block.add_module(f"relu{b}_{c}", nn.ReLU(inplace=True))
                channels = scaled(out, width)
            block.add_module(f"pool{b}", nn.MaxPool2d(2, stride=2, ceil_mode=True))
            self.blocks.append(block)
            self.block_channels.append(channels)
        self.out_channels = channels

    def convs(self) -> list[nn.Conv2d]:
        """The 13 conv layers in order (the order of torchvision's ``features``)."""
        return [m for block in self.blocks for m in block if isinstance(m, nn.Conv2d)]

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        pools = []
        for block in self.blocks:
            x = block(x)
            pools.append(x)
        return pools[2], pools[3], pools[4]


class FCNBase(nn.Module):
    """Backbone, fc6/fc7 as convolutions, and the scoring layer on fc7; subclasses fuse skips."""

    arch: Arch

    def __init__(self, in_channels: int, num_classes: int, width: float = 1.0) -> None:
        super().__init__()
        self.in_channels = in_channels
        self.num_classes = num_classes
        self.width = width
        self.backbone = VGG16Backbone(in_channels, width)
        fc = scaled(FC_CHANNELS, width)
        self.fc6 = nn.Conv2d(self.backbone.out_channels, fc, kernel_size=7, padding=3)
        self.fc7 = nn.Conv2d(fc, fc, kernel_size=1)
        self.relu = nn.ReLU(inplace=True)
        self.drop6 = nn.Dropout2d(0.5)
        self.drop7 = nn.Dropout2d(0.5)
        self.score_fr = nn.Conv2d(fc, num_classes, kernel_size=1)
        self._init_weights()

    def _init_weights(self) -> None:
        """He init for the backbone and fc layers; zero init for scoring layers, as in the paper."""
        for name, module in self.named_modules():
            if isinstance(module, nn.Conv2d):
                if name.startswith("score"):
                    nn.init.zeros_(module.weight)
                else:
                    nn.init.kaiming_normal_(module.weight, mode="fan_in", nonlinearity="relu")
                nn.init.zeros_(module.bias)

    def features(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """pool3, pool4 and the class scores on fc7 (stride 8, 16, 32)."""
        pool3, pool4, pool5 = self.backbone(x)
        h = self.drop6(self.relu(self.fc6(pool5)))
        h = self.drop7(self.relu(self.fc7(h)))
        return pool3, pool4, self.score_fr(h)


class FCN32s(FCNBase):
    """Scores from fc7 alone, upsampled 32x."""

    arch: Arch = "fcn32s"

    def __init__(self, in_channels: int, num_classes: int, width: float = 1.0) -> None:
        super().__init__(in_channels, num_classes, width)
        self.upscore32 = upsampler(num_classes, 32, learnable=False)

    def forward(self, x: Tensor) -> Tensor:
        _, _, score = self.features(x)
        return crop_to(self.upscore32(score), x)


class FCN16s(FCNBase):
    """fc7 scores upsampled 2x plus pool4 scores, then upsampled 16x."""

    arch: Arch = "fcn16s"

    def __init__(self, in_channels: int, num_classes: int, width: float = 1.0) -> None:
        super().__init__(in_channels, num_classes, width)
        self.score_pool4 = nn.Conv2d(self.backbone.block_channels[3], num_classes, 1)
        self.upscore2 = upsampler(num_classes, 2, learnable=True)
        self.upscore16 = upsampler(num_classes, 16, learnable=False)
        self._init_weights()

    def forward(self, x: Tensor) -> Tensor:
        _, pool4, score = self.features(x)
        score_pool4 = self.score_pool4(pool4)
        fuse_pool4 = crop_to(self.upscore2(score), score_pool4) + score_pool4
        return crop_to(self.upscore16(fuse_pool4), x)


class FCN8s(FCNBase):
    """FCN-16s' fusion plus pool3 scores, then upsampled 8x: the finest of the three."""

    arch: Arch = "fcn8s"

    def __init__(self, in_channels: int, num_classes: int, width: float = 1.0) -> None:
        super().__init__(in_channels, num_classes, width)
        self.score_pool4 = nn.Conv2d(self.backbone.block_channels[3], num_classes, 1)
        self.score_pool3 = nn.Conv2d(self.backbone.block_channels[2], num_classes, 1)
        self.upscore2 = upsampler(num_classes, 2, learnable=True)
        self.upscore_pool4 = upsampler(num_classes, 2, learnable=True)
        self.upscore8 = upsampler(num_classes, 8, learnable=False)
        self._init_weights()

    def forward(self, x: Tensor) -> Tensor:
        pool3, pool4, score = self.features(x)
        score_pool4 = self.score_pool4(pool4)
        fuse_pool4 = crop_to(self.upscore2(score), score_pool4) + score_pool4
        score_pool3 = self.score_pool3(pool3)
        fuse_pool3 = crop_to(self.upscore_pool4(fuse_pool4), score_pool3) + score_pool3
        return crop_to(self.upscore8(fuse_pool3), x)


MODELS: dict[str, type[FCNBase]] = {"fcn32s": FCN32s, "fcn16s": FCN16s, "fcn8s": FCN8s}


def build_model(arch: str, in_channels: int, num_classes: int, width: float = 1.0) -> FCNBase:
    """An FCN of the named architecture, freshly initialised."""
    if arch not in MODELS:
        raise ValueError(f"unknown architecture {arch!r}; choose one of {', '.join(ARCHS)}")
    if in_channels < 1 or num_classes < 2:
        raise ValueError("an FCN needs at least 1 input band and 2 classes")
    if not 0 < width <= 1:
        raise ValueError(f"width must be in (0, 1], got {width}")
    return MODELS[arch](in_channels, num_classes, width)


def count_parameters(model: nn.Module) -> int:
    """All parameters, learnable or fixed (the paper's count includes the upsampling filters)."""
    return sum(p.numel() for p in model.parameters())

