"""Random training chips read window by window from disk (never the whole raster)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from rasterio.io import DatasetReader
from rasterio.windows import Window

from fcnseg.models.checkpoint import ModelCard, Normalization
from fcnseg.pipeline.io import InputError, read_model_input, read_pixels
from fcnseg.pipeline.training.labels import UNLABELLED, LabelSource


class ChipSampler:
    """Batches of (normalised image, labels) chips at random positions of one raster pair.

    Chips with too few labelled valid pixels are drawn again, so sparse labels still train.
    """

    def __init__(
        self,
        src: DatasetReader,
        bands: Sequence[int],
        labels: LabelSource,
        card: ModelCard,
        *,
        chip: int,
        batch_size: int,
        seed: int = 0,
        min_labelled: float = 0.05,
        max_tries: int = 50,
    ) -> None:
        if chip > min(src.height, src.width):
            raise InputError(f"{src.name}: {src.width}x{src.height} is smaller than a {chip}px chip")
        self.src, self.bands, self.labels, self.card = src, list(bands), labels, card
        self.chip, self.batch_size = chip, batch_size
        self.rng = np.random.default_rng(seed)
        self.min_labelled, self.max_tries = min_labelled, max_tries

    def _random_window(self) -> Window:
        row = int(self.rng.integers(0, self.src.height - self.chip + 1))
        col = int(self.rng.integers(0, self.src.width - self.chip + 1))
        return Window(col, row, self.chip, self.chip)

    def _chip(self) -> tuple[np.ndarray, np.ndarray]:
        for _ in range(self.max_tries):
            window = self._random_window()
            labels = self.labels.read(window)
            x, valid = read_model_input(self.src, self.bands, window, self.card)
            labels[~valid] = UNLABELLED
            if (labels != UNLABELLED).mean() >= self.min_labelled:
                return x, labels
        raise InputError(f"{self.src.name}: found no chip with labelled valid pixels in {self.max_tries} tries")

    def __call__(self) -> tuple[np.ndarray, np.ndarray]:
        chips = [self._chip() for _ in range(self.batch_size)]
        return np.stack([c[0] for c in chips]), np.stack([c[1] for c in chips])


def band_statistics(
    src: DatasetReader, bands: Sequence[int], *, windows: int = 64, size: int = 256, seed: int = 0
) -> Normalization:
    """Per-band mean and std of valid pixels over random windows: the normalisation a model keeps."""
    rng = np.random.default_rng(seed)
    size = min(size, src.height, src.width)
    total = np.zeros(len(bands))
    total_sq = np.zeros(len(bands))
    count = 0
    for _ in range(windows):
        window = Window(int(rng.integers(0, src.width - size + 1)), int(rng.integers(0, src.height - size + 1)), size, size)
        pixels, valid = read_pixels(src, bands, window)
        values = pixels[:, valid].astype(np.float64)
        total += values.sum(axis=1)
        total_sq += (values**2).sum(axis=1)
        count += values.shape[1]
    if count == 0:
        raise InputError(f"{src.name}: no valid pixel found to compute band statistics")
    mean = total / count
    std = np.sqrt(np.maximum(total_sq / count - mean**2, 0.0))
    return Normalization(mean=[float(m) for m in mean], std=[float(max(s, 1e-6)) for s in std])
