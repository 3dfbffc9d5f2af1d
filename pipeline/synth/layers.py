"""Layers: the label map of a (haloed) window, with the intermediate fields that painting reuses.

This is where the drawing modules meet: water, forest, parcels, streets, main roads
and buildings are computed for the window and stacked into class labels, later
classes covering earlier ones.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from fcnseg.pipeline.synth.buildings import Buildings, building_ids, building_table, shadow
from fcnseg.pipeline.synth.cropland import Parcels, parcel_sites, partition_parcels
from fcnseg.pipeline.synth.fields import AGRI, coarse_fields
from fcnseg.pipeline.synth.noise import fbm_points, noise_grid, stream_key
from fcnseg.pipeline.synth.scene import Scene
from fcnseg.pipeline.synth.settlements import streets, to_grid, urban_table
from fcnseg.pipeline.synth.spec import BUILDING, CROPLAND, FOREST, GRASSLAND, ROAD, WATER
from fcnseg.pipeline.synth.strokes import stroke_field

HALO = 4  # extra pixels rendered around a window, for building shadows


@dataclass
class Layers:
    """Per-pixel intermediate products of one (haloed) window."""

    labels: np.ndarray
    fields: dict[str, np.ndarray]
    rows: np.ndarray
    cols: np.ndarray
    river: np.ndarray  # distance to river bank (negative inside)
    lake: np.ndarray  # lake field minus threshold (positive inside)
    main_road: np.ndarray  # bool
    parcels: Parcels
    buildings: Buildings
    building_id: np.ndarray
    facet: np.ndarray
    shadow: np.ndarray


def build_layers(s: Scene, rows: np.ndarray, cols: np.ndarray) -> Layers:
    """Label map of the window plus the intermediate fields that painting reuses."""
    fields = coarse_fields(s.seed, rows, cols)
    lake = fields["lake"] - np.float32(s.t_lake)
    river = stroke_field(s.rivers, rows, cols, 1.0)
    main_road = stroke_field(s.roads, rows, cols, 1.0) < 0
    water = (lake > 0) | (river < 0)
    edge = np.float32(0.04) * (noise_grid(stream_key(s.seed, "forest-edge"), rows, cols, 12.0) - np.float32(0.5))
    forest = fields["forest"] + edge > np.float32(s.t_forest)

    u, v = to_grid(s, rows[:, None], cols[None, :])
    urban, k0, j0 = urban_table(s, rows, cols)
    urban_px = urban[np.floor(u / s.block).astype(np.int64) - k0, np.floor(v / s.block).astype(np.int64) - j0]
    road = main_road | streets(s, u, v, urban, k0, j0)
    buildings = building_table(s, urban, k0, j0)
    building_id, facet = building_ids(s, buildings, u, v, urban_px)
    building = (building_id >= 0) & ~road & ~water

    parcels = partition_parcels(s, rows, cols)
    crop_site = fbm_points(stream_key(s.seed, "agri"), *parcel_sites(s, parcels.ci, parcels.cj), AGRI) > s.t_crop
    labels = np.full(u.shape, GRASSLAND, np.uint8)
    labels[crop_site[parcels.site]] = CROPLAND
    labels[forest & ~urban_px] = FOREST
    labels[urban_px] = GRASSLAND
    labels[water] = WATER
    labels[road] = ROAD
    labels[building] = BUILDING
    return Layers(labels, fields, rows, cols, river, lake, main_road, parcels, buildings,
                  np.where(building, building_id, -1), facet, shadow(building))

