"""Radiometry that changes between scenes: sensor gain and offset per band, haze, the season's vegetation.

A model trained on one scene meets the next with another sun, season, atmosphere and sensor gain
(issue 27). ``Radiometry`` makes a scene of the same land cover look like such a next scene:

- ``season`` (-1..1) shifts the vegetation classes' red and NIR against each other (+: lusher,
  NIR up and red down by up to ``SEASON_SHIFT``; -: senescent, the other way), before the light;
- ``haze`` (reflectance at its thickest, in the blue band) adds a smooth field of path radiance,
  thinner towards the NIR (``HAZE_BANDS``) and varying over the scene between 20 % and 100 % of it;
- ``gain`` and ``offset`` (per band, blue, green, red, NIR; offset in reflectance) are the sensor's.

Sensor noise comes after them, on the changed signal. Only add and multiply act on pixels, so a
window stays a crop of any larger window; the identity (the default) leaves every byte as it was.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from fcnseg.pipeline.synth.fields import coarse_field
from fcnseg.pipeline.synth.noise import Octaves
from fcnseg.pipeline.synth.spec import BAND_NAMES, CROPLAND, FOREST, GRASSLAND

_BLUE, _GREEN, _RED, _NIR = (BAND_NAMES.index(b) for b in ("blue", "green", "red", "nir"))
#: The most ``season`` moves vegetation's NIR (and, the other way, its red): 25 % at season +-1.
SEASON_SHIFT = 0.25
#: Haze per band relative to the blue band's (path radiance falls with wavelength).
HAZE_BANDS = (1.0, 0.75, 0.55, 0.3)
_HAZE: Octaves = ((1800, 1.0), (700, 0.5))
VEGETATION = (FOREST, CROPLAND, GRASSLAND)
#: Reflectance in the painted image's units (uint16 reflectance * 10000).
_UNIT = 10000.0


@dataclass(frozen=True)
class Radiometry:
    """How a scene's radiometry departs from the generator's own (the identity: all defaults)."""

    gain: tuple[float, float, float, float] = (1.0, 1.0, 1.0, 1.0)
    offset: tuple[float, float, float, float] = (0.0, 0.0, 0.0, 0.0)
    haze: float = 0.0
    season: float = 0.0

    def __post_init__(self) -> None:
        object.__setattr__(self, "gain", per_band("--gain", self.gain))
        object.__setattr__(self, "offset", per_band("--offset", self.offset))
        if any(not (math.isfinite(g) and 0 < g <= 10) for g in self.gain):
            raise ValueError(f"--gain must be above 0 and at most 10 per band, got {list(self.gain)}")
        if any(not (math.isfinite(o) and -0.5 <= o <= 0.5) for o in self.offset):
            raise ValueError(f"--offset must be reflectance from -0.5 to 0.5 per band, got {list(self.offset)}")
        if not (isinstance(self.haze, (int, float)) and math.isfinite(self.haze) and 0 <= self.haze <= 0.5):
            raise ValueError(f"--haze must be reflectance from 0 to 0.5, got {self.haze!r}")
        if not (isinstance(self.season, (int, float)) and math.isfinite(self.season) and -1 <= self.season <= 1):
            raise ValueError(f"--season must be from -1 to 1 (0 = the generator's own), got {self.season!r}")

    @property
    def is_identity(self) -> bool:
        return self == Radiometry()

    def tag(self) -> dict:
        """The settings that differ from the identity (the scene's tag records them; none by default)."""
        base = Radiometry()
        return {name: list(v) if isinstance(v, tuple) else v
                for name in ("gain", "offset", "haze", "season") if (v := getattr(self, name)) != getattr(base, name)}


def per_band(option: str, values) -> tuple[float, float, float, float]:
    """One value for every band, or four (blue, green, red, NIR), as floats."""
    values = (values,) if isinstance(values, (int, float)) else tuple(values)
    if len(values) == 1:
        values = values * 4
    if len(values) != 4 or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values):
        raise ValueError(f"{option} takes one number or four (blue,green,red,nir), got {list(values)}")
    return tuple(float(v) for v in values)  # type: ignore[return-value]


def shift_season(img: np.ndarray, labels: np.ndarray, season: float) -> None:
    """In place on the (4, h, w) painted image: vegetation's NIR up and red down (season > 0), or the reverse."""
    if season == 0:
        return
    veg = np.isin(labels, VEGETATION)
    img[_NIR, veg] *= np.float32(1.0 + SEASON_SHIFT * season)
    img[_RED, veg] *= np.float32(1.0 - SEASON_SHIFT * season)


def apply_sensor(img: np.ndarray, radiometry: Radiometry, seed: int, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
    """Haze, then the sensor's gain and offset, on a (4, h, w) image of the window's core."""
    if radiometry.haze:
        field = coarse_field(seed, "haze", _HAZE, rows, cols)  # about -1..1
        thickness = np.float32(radiometry.haze * _UNIT) * (np.float32(0.6) + np.float32(0.4) * np.clip(field, -1, 1))
        for band, share in enumerate(HAZE_BANDS):
            img[band] += np.float32(share) * thickness
    gain = np.asarray(radiometry.gain, np.float32)[:, None, None]
    offset = np.asarray(radiometry.offset, np.float32)[:, None, None] * np.float32(_UNIT)
    return img * gain + offset
