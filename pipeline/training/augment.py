"""Photometric augmentation of training chips: the radiometry that changes from scene to scene.

A model trained from scratch on one scene learns that scene's brightness, contrast and band
balance (issue 27: a model labelled none of the next scene's water). Each chip is changed as
another scene of the same sensor might look, on its pixels as stored, before the card's
normalisation: per band a gamma on the scene's 2-98 % range, a gain and an offset; then a
Gaussian blur and Gaussian noise, both of a strength drawn per chip. Flips and rotations stay in
``models.train``.

The chip reader applies it with the chip's own generator (``ChipSampler``: seeded by the run's
seed and the chip's number), so the chips are the same for any number of reader threads and a
seed trains the same model. Nodata pixels stay nodata: they never enter the blur, and the
normalisation sets them to the fill value afterwards.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

#: Most a setting may ask for (``TrainRequest``'s checks name them): a gain of 2x either way, an offset
#: of 2 band standard deviations, a gamma of 2 or 1/2, noise of one standard deviation, a blur of 4 px.
LIMITS = {"gain": 1.0, "offset": 2.0, "gamma": 1.0, "noise": 1.0, "blur": 4.0}


@dataclass(frozen=True)
class Photometric:
    """How far a chip's radiometry may move; 0 turns a part off (all 0: no augmentation).

    ``gain``: per band x (1 + gain) ** u, u uniform in -1..1 (0.2: 0.83x to 1.2x). ``offset``: per
    band, uniform within +-offset band standard deviations. ``gamma``: per band, the exponent
    (1 + gamma) ** u on the scene's 2-98 % range. ``noise``: Gaussian, of a standard deviation
    drawn per chip from 0 to ``noise`` band standard deviations. ``blur``: Gaussian, of a sigma
    drawn per chip from 0 to ``blur`` pixels.
    """

    gain: float = 0.0
    offset: float = 0.0
    gamma: float = 0.0
    noise: float = 0.0
    blur: float = 0.0

    @property
    def active(self) -> bool:
        return any(getattr(self, name) for name in LIMITS)

    def to_json(self) -> dict[str, float] | None:
        """The card's record of it (None: off)."""
        return asdict(self) if self.active else None


#: ``fcnseg train``'s default (issue 27's cross-scene benchmark, 1500 steps, five seeds): against none,
#: mean IU under a sensor gain and offset 0.29 -> 0.74, haze 0.65 -> 0.80, on the real scene's shifted
#: half 0.54 -> 0.61; on scenes of the training radiometry 0.80 -> 0.81 and 0.62 -> 0.61 (real).
DEFAULT = Photometric(gain=0.3, offset=0.75, gamma=0.3, noise=0.05, blur=1.0)


def check_setting(name: str, value: float) -> str | None:
    """Why ``value`` cannot be the ``name`` setting (None when it can)."""
    if not (math.isfinite(value) and 0 <= value <= LIMITS[name]):
        return f"at least 0 and at most {LIMITS[name]:g}"
    return None


@dataclass(frozen=True)
class BandReference:
    """What the changes are measured against, per band: the scene's mean and standard deviation
    (offset, noise), and its 2nd and 98th percentiles (the range the gamma bends)."""

    mean: Sequence[float]
    std: Sequence[float]
    low: Sequence[float]
    high: Sequence[float]


class Augmenter:
    """A chip's photometric change, drawn from the chip's own generator."""

    def __init__(self, settings: Photometric, reference: BandReference) -> None:
        self.settings = settings
        column = lambda values: np.asarray(values, np.float32)[:, None, None]  # noqa: E731
        self.mean, self.std = column(reference.mean), column(reference.std)
        self.low = column(reference.low)
        self.span = np.maximum(column(reference.high) - self.low, np.float32(1e-6))

    def __call__(self, pixels: np.ndarray, valid: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """(bands, h, w) float32 pixels as stored, changed; nodata pixels are left to the normalisation."""
        s, bands = self.settings, pixels.shape[0]
        x = pixels.astype(np.float32)
        if not valid.all():  # the nodata values (0, -9999) would bleed into the blur and bend the gamma
            x[:, ~valid] = self.mean[:, :, 0]
        if s.gamma:
            exponent = column_of((1 + s.gamma) ** rng.uniform(-1, 1, bands))
            u = (x - self.low) / self.span
            x = self.low + np.sign(u) * np.abs(u) ** exponent * self.span
        if s.gain or s.offset:
            gain = column_of((1 + s.gain) ** rng.uniform(-1, 1, bands))
            offset = column_of(rng.uniform(-1, 1, bands) * s.offset) * self.std
            x = x * gain + offset
        if s.blur:
            x = gaussian_blur(x, float(rng.uniform(0, s.blur)))
        if s.noise:
            x = x + rng.standard_normal(x.shape, dtype=np.float32) * (np.float32(rng.uniform(0, s.noise)) * self.std)
        return x


def column_of(values: np.ndarray) -> np.ndarray:
    return np.asarray(values, np.float32)[:, None, None]


def gaussian_blur(x: np.ndarray, sigma: float) -> np.ndarray:
    """Separable Gaussian blur of the last two axes, edges reflected (sigma below 0.1 px: unchanged).
    Here in a few lines of numpy rather than scipy, a test-only dependency, or torch in reader threads."""
    if sigma < 0.1:
        return x
    radius = max(1, math.ceil(3 * sigma))
    taps = np.exp(-0.5 * (np.arange(-radius, radius + 1) / sigma) ** 2).astype(np.float32)
    taps /= taps.sum()
    h, w = x.shape[-2:]
    rows = np.pad(x, [(0, 0)] * (x.ndim - 2) + [(radius, radius), (0, 0)], mode="reflect")
    x = sum(tap * rows[..., i : i + h, :] for i, tap in enumerate(taps))
    cols = np.pad(x, [(0, 0)] * (x.ndim - 1) + [(radius, radius)], mode="reflect")
    return sum(tap * cols[..., i : i + w] for i, tap in enumerate(taps))


def from_request(values: Mapping[str, Any]) -> Photometric:
    """The settings from a request's ``augment_*`` fields."""
    return Photometric(**{name: float(values[f"augment_{name}"]) for name in LIMITS})
