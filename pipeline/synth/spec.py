"""What a synthetic scene is: its land-cover classes, bands, nodata values and georeferencing."""

from __future__ import annotations

import math
from dataclasses import dataclass

from affine import Affine


@dataclass(frozen=True)
class LandCoverClass:
    """A class id's name and display colour (the id is its index in ``CLASSES``)."""

    name: str
    color: tuple[int, int, int]


CLASSES: tuple[LandCoverClass, ...] = (
    LandCoverClass("water", (30, 100, 200)),
    LandCoverClass("forest", (20, 110, 40)),
    LandCoverClass("cropland", (230, 200, 60)),
    LandCoverClass("grassland", (140, 200, 100)),
    LandCoverClass("road", (120, 120, 120)),
    LandCoverClass("building", (200, 40, 40)),
)
WATER, FOREST, CROPLAND, GRASSLAND, ROAD, BUILDING = range(len(CLASSES))

BAND_NAMES = ("blue", "green", "red", "nir")
LABEL_NODATA = 255
IMAGE_NODATA = 0  # image is uint16 reflectance*10000; valid pixels are clipped to >= 1
PIXEL_SIZE = 1.0  # metres
CRS = "EPSG:32633"  # UTM zone 33N
ORIGIN = (500000.0, 5400000.0)  # upper-left corner (x, y) of every synthetic scene
TILE = 256  # GeoTIFF internal tile size

# --- delivery shapes: how a scene's pixels are stored (``write_scene``'s options) ---

BAND_SETS: dict[int, tuple[str, ...]] = {  # --bands N: which bands, in file order
    4: BAND_NAMES,
    3: ("red", "green", "blue"),  # a true-colour delivery, in RGB order
    2: ("red", "nir"),  # the NDVI pair
    1: ("pan (mean of blue, green, red)",),  # panchromatic-like
}


@dataclass(frozen=True)
class Encoding:
    """How reflectance is stored: reflectance = value * scale + offset; ``nodata`` is never a valid value."""

    dtype: str
    nodata: float
    scale: float
    offset: float


INT16_SHIFT = 1000  # int16 value = reflectance*10000 - 1000, so dark pixels (water, shadow) are negative
ENCODINGS: dict[str, Encoding] = {
    "uint16": Encoding("uint16", IMAGE_NODATA, 1e-4, 0.0),  # valid 1..10000
    "int16": Encoding("int16", -9999, 1e-4, INT16_SHIFT * 1e-4),  # valid -999..9000
    "float32": Encoding("float32", math.nan, 1.0, 0.0),  # valid 1e-4..1
}


@dataclass(frozen=True)
class Grid:
    """A scene's georeferencing: CRS, upper-left corner (x, y) and square pixel side in CRS units."""

    crs: str
    origin: tuple[float, float]
    pixel_size: float

    @property
    def transform(self) -> Affine:
        return Affine(self.pixel_size, 0.0, self.origin[0], 0.0, -self.pixel_size, self.origin[1])


GRIDS: dict[str, Grid] = {
    CRS: Grid(CRS, ORIGIN, PIXEL_SIZE),
    # the same place, UTM 33N (500000, 5400000) = 15.0 E, 48.753 N; 1e-5 deg = 1.11 m north-south, 0.73 m east-west
    "EPSG:4326": Grid("EPSG:4326", (15.0, 48.75), 1e-5),
}

LAYOUTS = ("tiled", "stripped")
STRIP_ROWS = 8  # rows per strip of a stripped (untiled, uncompressed) GeoTIFF
ROTATE_STEP = 4  # px: a rotated footprint is decided per 4x4 cell, so its edges are staircases
