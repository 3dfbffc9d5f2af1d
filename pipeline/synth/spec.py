"""What a synthetic scene is: its land-cover classes, bands, nodata values and georeferencing."""

from __future__ import annotations

from dataclasses import dataclass


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
