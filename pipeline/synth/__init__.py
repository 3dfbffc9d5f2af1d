"""Procedural synthetic land-cover scenes, rendered window by window.

A scene is a pure function of ``(seed, size)`` and global pixel coordinates: every
random quantity comes either from hashing integer lattice coordinates with the seed
(value noise, jittered point sets) or from a handful of per-scene parameters drawn
once from ``np.random.default_rng(seed)`` (rivers, main roads, street grid, class
thresholds).  Nothing depends on the window being rendered, so any window of a
20000 x 20000 scene can be rendered on its own, and equals the same region cut out
of any larger window, bit for bit.  That is what lets ``write_scene`` stream a scene
of any size to disk with memory bounded by the block size.

Floating point is kept deterministic per pixel: only IEEE add/mul/div/sqrt, floor and
min/max act on per-pixel arrays (no transcendental functions, no BLAS reductions), so a
pixel's value cannot depend on how numpy vectorises the array it sits in.
"""

from __future__ import annotations

import functools
import json
import logging
import math
import os
import time
import zlib
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import rasterio
from affine import Affine
from rasterio.windows import Window

logger = logging.getLogger(__name__)


# --------------------------------------------------------------------------- public API


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


def render_window(
    seed: int,
    size: int,
    row_off: int,
    col_off: int,
    height: int,
    width: int,
    collar: int = 0,
) -> tuple[np.ndarray, np.ndarray]:
    """Render one window of the ``size`` x ``size`` scene of ``seed``.

    Returns ``image`` (4, height, width) uint16 reflectance*10000 (bands ``BAND_NAMES``)
    and ``labels`` (height, width) uint8 class ids.  With ``collar`` > 0, pixels outside
    the scene's slanted footprint are nodata (image 0 in all bands, label 255).
    """
    _check_window(size, row_off, col_off, height, width, collar)
    scene = _scene(int(seed), int(size))
    rows = np.arange(row_off - _HALO, row_off + height + _HALO, dtype=np.float64)
    cols = np.arange(col_off - _HALO, col_off + width + _HALO, dtype=np.float64)
    layers = _build_layers(scene, rows, cols)
    image = _paint(scene, layers)
    labels = layers.labels[_HALO:-_HALO, _HALO:-_HALO].copy()
    if collar > 0:
        outside = ~_footprint_mask(_collar_quad(scene.seed, scene.size, collar), rows[_HALO:-_HALO], cols[_HALO:-_HALO])
        image[:, outside] = IMAGE_NODATA
        labels[outside] = LABEL_NODATA
    return image, labels


def write_scene(
    out_dir: Path,
    size: int,
    seed: int = 0,
    *,
    collar: int = 0,
    block: int = 1024,
) -> tuple[Path, Path]:
    """Write ``image.tif`` and ``labels.tif`` of a scene, one block at a time.

    Memory is bounded by ``block`` (never by ``size``).  Both files are written under
    temporary names and renamed into place only when complete, so an interrupted run
    leaves no file that looks finished.  Returns (image path, labels path).
    """
    if block <= 0:
        raise ValueError(f"block must be positive, got {block}")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    final = (out_dir / "image.tif", out_dir / "labels.tif")
    tmp = tuple(p.with_name(f".{p.name}.{os.getpid()}.partial") for p in final)
    _check_window(size, 0, 0, size, size, collar)
    started = time.perf_counter()
    try:
        with (
            rasterio.open(tmp[0], "w", **_image_profile(size)) as img_ds,
            rasterio.open(tmp[1], "w", **_label_profile(size)) as lab_ds,
        ):
            _describe_datasets(img_ds, lab_ds)
            for window in _blocks(size, block):
                image, labels = render_window(seed, size, *window, collar=collar)
                logger.debug("rendering block rows %d+%d cols %d+%d", *window)
                win = Window(window[1], window[0], window[3], window[2])
                img_ds.write(image, window=win)
                lab_ds.write(labels, 1, window=win)
        for src, dst in zip(tmp, final):
            os.replace(src, dst)
    finally:
        for p in tmp:
            p.unlink(missing_ok=True)
    logger.info("wrote synthetic scene seed=%d size=%d to %s in %.1f s",
                seed, size, out_dir, time.perf_counter() - started)
    return final


# --------------------------------------------------------------------------- GeoTIFF helpers


def _image_profile(size: int) -> dict:
    """Creation options for image.tif: tiled, DEFLATE + horizontal predictor."""
    transform = Affine(PIXEL_SIZE, 0.0, ORIGIN[0], 0.0, -PIXEL_SIZE, ORIGIN[1])  # = from_origin(*ORIGIN, ...)
    return dict(
        driver="GTiff", width=size, height=size, count=len(BAND_NAMES), dtype="uint16",
        nodata=IMAGE_NODATA, crs=CRS, transform=transform,
        tiled=True, blockxsize=TILE, blockysize=TILE, compress="deflate", predictor=2,
        interleave="pixel", BIGTIFF="IF_SAFER",
    )


def _label_profile(size: int) -> dict:
    """Creation options for labels.tif: one uint8 band, nodata 255, tiled, DEFLATE."""
    profile = _image_profile(size)
    profile.update(count=1, dtype="uint8", nodata=LABEL_NODATA, predictor=1)
    profile.pop("interleave")
    return profile


def _describe_datasets(img_ds, lab_ds) -> None:
    """Band names, palette and class tags, so GIS tools show the data meaningfully."""
    img_ds.descriptions = BAND_NAMES
    lab_ds.set_band_description(1, "class")
    lab_ds.write_colormap(1, {i: (*c.color, 255) for i, c in enumerate(CLASSES)})
    lab_ds.update_tags(
        class_names=json.dumps([c.name for c in CLASSES]),
        class_colors=json.dumps([list(c.color) for c in CLASSES]),
    )


def _blocks(size: int, block: int):
    """Row-major (row_off, col_off, height, width) windows covering the scene."""
    for r in range(0, size, block):
        for c in range(0, size, block):
            yield r, c, min(block, size - r), min(block, size - c)


def _check_window(size: int, row_off: int, col_off: int, height: int, width: int, collar: int) -> None:
    """Reject windows outside the scene: the scene's content is only defined inside it."""
    if size <= 0:
        raise ValueError(f"scene size must be positive, got {size}")
    if height <= 0 or width <= 0:
        raise ValueError(f"window must be non-empty, got {height}x{width}")
    if row_off < 0 or col_off < 0 or row_off + height > size or col_off + width > size:
        raise ValueError(f"window rows {row_off}+{height}, cols {col_off}+{width} outside a {size}x{size} scene")
    if collar < 0 or (collar > 0 and 2 * collar >= size):
        raise ValueError(f"collar must be 0 or less than half the scene size {size}, got {collar}")


# --------------------------------------------------------------------------- hashing and noise

_MASK64 = (1 << 64) - 1
_M1 = np.uint64(0xBF58476D1CE4E5B9)
_M2 = np.uint64(0x94D049BB133111EB)
_PRIMES = tuple(np.uint64(k) for k in (0x9E3779B97F4A7C15, 0xC2B2AE3D27D4EB4F, 0x165667B19E3779F9, 0xD6E8FEB86659FD93))
_S30, _S27, _S31, _S40 = (np.uint64(s) for s in (30, 27, 31, 40))
_BYTE = np.uint64(0xFF)


def _mix_int(x: int) -> int:
    """splitmix64 finaliser on a Python int (for per-scene keys)."""
    x &= _MASK64
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & _MASK64
    return x ^ (x >> 31)


def _key(seed: int, tag: str) -> int:
    """Independent 64-bit stream key for one named quantity of one seed."""
    return _mix_int(_mix_int(seed * 0x9E3779B97F4A7C15 + 0x632BE59BD9B4E019) ^ zlib.crc32(tag.encode()))


def _hash(key: int, *coords) -> np.ndarray:
    """uint64 hash of integer coordinates (scalars or arrays, broadcast together), splitmix64 style."""
    scalar = key
    x = None
    for c, p in zip(coords, _PRIMES):
        if np.ndim(c) == 0:  # keep scalar arithmetic in Python ints: numpy scalars warn on overflow
            scalar = (scalar + int(c) * int(p)) & _MASK64
        else:
            term = np.asarray(c, dtype=np.int64).astype(np.uint64) * p
            x = term if x is None else x + term
    x = np.full(1, scalar, np.uint64) if x is None else x + np.uint64(scalar)
    x ^= x >> _S30
    x *= _M1
    x ^= x >> _S27
    x *= _M2
    x ^= x >> _S31
    return x


def _unit(h: np.ndarray) -> np.ndarray:
    """Top 24 bits of a hash as float32 uniform in [0, 1) (exact in float32)."""
    return (h >> _S40).astype(np.float32) * np.float32(2.0**-24)


def _uniform(key: int, *coords) -> np.ndarray:
    """Uniform [0, 1) float32 per integer coordinate tuple."""
    return _unit(_hash(key, *coords))


def _smooth(f: np.ndarray) -> np.ndarray:
    """Smoothstep weight 3f^2 - 2f^3 (float32), the value-noise interpolant."""
    return f * f * (np.float32(3.0) - np.float32(2.0) * f)


def _split(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Integer lattice cell and float32 fraction of lattice coordinates."""
    i = np.floor(x)
    return i.astype(np.int64), (x - i).astype(np.float32)


def _noise_points(key: int, y: np.ndarray, x: np.ndarray) -> np.ndarray:
    """Value noise in [0, 1) at arbitrary points given in lattice units."""
    iy, fy = _split(y)
    ix, fx = _split(x)
    sy, sx = _smooth(fy), _smooth(fx)
    l00, l01 = _uniform(key, iy, ix), _uniform(key, iy, ix + 1)
    l10, l11 = _uniform(key, iy + 1, ix), _uniform(key, iy + 1, ix + 1)
    t0 = l00 + (l01 - l00) * sx
    t1 = l10 + (l11 - l10) * sx
    return t0 + (t1 - t0) * sy


def _lerp_grid(lattice: np.ndarray, iy: np.ndarray, wy: np.ndarray, ix: np.ndarray, wx: np.ndarray) -> np.ndarray:
    """Separable interpolation of lattice (..., ny, nx) to the pixel grid, same formula as the point version."""
    a = lattice[..., ix]
    t = a + (lattice[..., ix + 1] - a) * wx
    b = t[..., iy, :]
    return b + (t[..., iy + 1, :] - b) * wy[:, None]


def _noise_grid(key: int, rows: np.ndarray, cols: np.ndarray, scale: float) -> np.ndarray:
    """Value noise in [0, 1) on a pixel grid (axis aligned, for fine textures); cheap: separable."""
    iy, fy = _split(rows / scale)
    ix, fx = _split(cols / scale)
    y0, x0 = iy[0], ix[0]
    lat = _uniform(key, np.arange(y0, iy[-1] + 2)[:, None], np.arange(x0, ix[-1] + 2)[None, :])
    return _lerp_grid(lat, iy - y0, _smooth(fy), ix - x0, _smooth(fx))


Octaves = tuple[tuple[float, float], ...]  # (scale in px, weight)


def _fbm_points(key: int, r: np.ndarray, c: np.ndarray, octaves: Octaves) -> np.ndarray:
    """Multi-octave value noise, roughly in [-1, 1], each octave on a rotated lattice.

    Rotating the lattice per octave hides the axis-aligned look of value noise in the
    shapes that thresholded low-frequency fields draw (lakes, forests).
    """
    total = np.zeros(np.broadcast(r, c).shape, np.float32)
    for i, (scale, weight) in enumerate(octaves):
        ang = 0.61 + 2.39996 * i
        ca, sa = math.cos(ang) / scale, math.sin(ang) / scale
        y = r * ca - c * sa + 17.31 * i
        x = r * sa + c * ca + 41.73 * i
        total += np.float32(weight) * (_noise_points(key + i, y, x) - np.float32(0.5))
    return total * np.float32(2.0 / sum(w for _, w in octaves))


# Low-frequency fields: evaluated on a coarse node grid (every _NODE px, global
# alignment) and bilinearly upsampled, which is cheap and still exact per pixel.
_NODE = 8
_LAKE: Octaves = ((700, 1.0), (350, 0.5), (170, 0.25), (85, 0.12))
_FOREST_F: Octaves = ((520, 1.0), (260, 0.55), (130, 0.3), (64, 0.16), (32, 0.08))
_SETTLE: Octaves = ((900, 1.0), (420, 0.45))
_AGRI: Octaves = ((1100, 1.0), (500, 0.5))
_ILLUM: Octaves = ((2600, 1.0), (1200, 0.5))
_GRASS_F: Octaves = ((180, 1.0), (75, 0.5), (30, 0.25))
_TURBID: Octaves = ((320, 1.0), (120, 0.5))
_SPECIES: Octaves = ((160, 1.0), (70, 0.5))
_FIELD_VAR: Octaves = ((90, 1.0), (35, 0.5))
_COARSE_FIELDS: tuple[tuple[str, Octaves], ...] = (
    ("lake", _LAKE), ("forest", _FOREST_F), ("illum", _ILLUM), ("grass", _GRASS_F),
    ("turbid", _TURBID), ("species", _SPECIES), ("fieldvar", _FIELD_VAR),
)


def _coarse_fields(seed: int, rows: np.ndarray, cols: np.ndarray) -> dict[str, np.ndarray]:
    """All low-frequency fields of the window, as (h, w) float32 arrays."""
    n = _NODE
    iy, fy = np.floor_divide(rows, n).astype(np.int64), ((rows % n) / n).astype(np.float32)
    ix, fx = np.floor_divide(cols, n).astype(np.int64), ((cols % n) / n).astype(np.float32)
    node_r = (np.arange(iy[0], iy[-1] + 2) * n).astype(np.float64)[:, None]
    node_c = (np.arange(ix[0], ix[-1] + 2) * n).astype(np.float64)[None, :]
    nodes = np.stack([_fbm_points(_key(seed, name), node_r, node_c, octs) for name, octs in _COARSE_FIELDS])
    up = _lerp_grid(nodes, iy - iy[0], fy, ix - ix[0], fx)
    return {name: up[i] for i, (name, _) in enumerate(_COARSE_FIELDS)}


# --------------------------------------------------------------------------- strokes (rivers, roads)


@dataclass(frozen=True)
class _Strokes:
    """Polyline segments with a half-width that varies linearly along each segment."""

    ay: np.ndarray
    ax: np.ndarray
    by: np.ndarray
    bx: np.ndarray
    hw0: np.ndarray
    hw1: np.ndarray
    reach: np.ndarray  # max half-width of each segment


def _strokes(ay, ax, by, bx, hw0, hw1) -> _Strokes:
    return _Strokes(ay, ax, by, bx, hw0, hw1, np.maximum(hw0, hw1))


def _polyline(points: np.ndarray, half_width: np.ndarray) -> _Strokes:
    """Segments between consecutive (row, col) points."""
    return _strokes(points[:-1, 0], points[:-1, 1], points[1:, 0], points[1:, 1], half_width[:-1], half_width[1:])


def _concat(parts: list[_Strokes]) -> _Strokes:
    return _strokes(*(np.concatenate([getattr(p, f) for p in parts]) for f in ("ay", "ax", "by", "bx", "hw0", "hw1")))


def _near(s: _Strokes, y0: float, y1: float, x0: float, x1: float, margin: float) -> np.ndarray:
    """Indices of segments that can come within ``margin`` of the box [y0, y1] x [x0, x1]."""
    m = s.reach + margin
    hit = (
        (np.minimum(s.ay, s.by) - m <= y1) & (np.maximum(s.ay, s.by) + m >= y0)
        & (np.minimum(s.ax, s.bx) - m <= x1) & (np.maximum(s.ax, s.bx) + m >= x0)
    )
    return np.flatnonzero(hit)


def _segment_value(s: _Strokes, k: int, yy: np.ndarray, xx: np.ndarray) -> np.ndarray:
    """Distance to segment k minus its local half-width (negative inside the stroke)."""
    ey, ex = s.by[k] - s.ay[k], s.bx[k] - s.ax[k]
    dy, dx = yy - s.ay[k], xx - s.ax[k]
    t = np.clip((dy * ey + dx * ex) / (ey * ey + ex * ex), 0.0, 1.0)
    qy, qx = dy - t * ey, dx - t * ex
    return np.sqrt(qy * qy + qx * qx) - (s.hw0[k] + t * (s.hw1[k] - s.hw0[k]))


def _stroke_field(s: _Strokes, rows: np.ndarray, cols: np.ndarray, margin: float) -> np.ndarray:
    """min over segments of (distance - half-width), clamped at ``margin``, on a pixel grid.

    Each segment is only evaluated on the patch it can reach; beyond the patch its
    value exceeds ``margin``, so the clamped result is exact for any window.
    """
    out = np.full((rows.size, cols.size), margin, np.float64)
    r0, c0 = rows[0], cols[0]
    for k in _near(s, rows[0], rows[-1], cols[0], cols[-1], margin):
        m = s.reach[k] + margin
        i0 = max(0, int(math.floor(min(s.ay[k], s.by[k]) - m - r0)))
        i1 = min(rows.size, int(math.ceil(max(s.ay[k], s.by[k]) + m - r0)) + 1)
        j0 = max(0, int(math.floor(min(s.ax[k], s.bx[k]) - m - c0)))
        j1 = min(cols.size, int(math.ceil(max(s.ax[k], s.bx[k]) + m - c0)) + 1)
        if i0 >= i1 or j0 >= j1:
            continue
        patch = out[i0:i1, j0:j1]
        np.minimum(patch, _segment_value(s, k, rows[i0:i1, None], cols[None, j0:j1]), out=patch)
    return out.astype(np.float32)


def _stroke_points(s: _Strokes, py: np.ndarray, px: np.ndarray, margin: float) -> np.ndarray:
    """Same as ``_stroke_field`` but at scattered points (e.g. block or building centres)."""
    out = np.full(py.shape, margin, np.float64)
    if py.size == 0:
        return out
    for k in _near(s, py.min(), py.max(), px.min(), px.max(), margin):
        np.minimum(out, _segment_value(s, k, py, px), out=out)
    return out


# --------------------------------------------------------------------------- per-scene parameters

_TARGET_LAKE = 0.05  # share of the scene under lakes (rivers come on top)
_TARGET_FOREST = 0.35  # share of the scene where the forest field is on (before others cut it)
_TARGET_URBAN = 0.17  # share of street blocks that are built up
_TARGET_CROP = 0.72  # share of parcels that are cropland (the rest are meadows)
_ROAD_BONUS_REACH = 350.0  # settlements grow along main roads within this distance


@dataclass(frozen=True)
class _Scene:
    """Everything global about one scene; small, computed once per (seed, size)."""

    seed: int
    size: int
    rivers: _Strokes
    roads: _Strokes
    grid_cos: float  # street grid orientation
    grid_sin: float
    block: float  # street grid spacing (px)
    street_hw: float  # street half-width (px)
    grid_off: tuple[float, float]  # street grid offset in rotated (u, v) coordinates
    parcel: float  # parcel (Voronoi) cell size (px)
    t_lake: float
    t_forest: float
    t_urban: float
    t_crop: float


@functools.lru_cache(maxsize=8)
def _scene(seed: int, size: int) -> _Scene:
    """Draw a scene's global parameters, then calibrate class thresholds on coarse samples.

    Calibrating thresholds on samples of the scene itself keeps every class's share
    near its target in every scene (even a 1024 px one), whatever the seed.
    """
    rng = np.random.default_rng(seed)
    rivers = _concat([_make_river(rng, size) for _ in range(1 + size // 5000)])
    roads = _concat([_make_road(rng, size) for _ in range(2 + size // 2500)])
    angle = math.atan2(roads.by[0] - roads.ay[0], roads.bx[0] - roads.ax[0]) + rng.normal(0, 0.15)
    block = float(rng.uniform(105, 135))
    base = _Scene(
        seed=seed, size=size, rivers=rivers, roads=roads,
        grid_cos=math.cos(angle), grid_sin=math.sin(angle), block=block,
        street_hw=float(rng.uniform(4.0, 5.0)), grid_off=(float(rng.uniform(0, block)), float(rng.uniform(0, block))),
        parcel=float(rng.uniform(150, 190)),
        t_lake=math.inf, t_forest=math.inf, t_urban=math.inf, t_crop=math.inf,
    )
    return _calibrate(base)


def _make_river(rng: np.random.Generator, size: int) -> _Strokes:
    """A meandering river from one scene edge to the opposite one, 15-60 px wide."""
    pad = 200.0
    a, b = rng.uniform(0.2, 0.8, 2) * size
    start, end = ((-pad, a), (size + pad, b)) if rng.integers(2) else ((a, -pad), (b, size + pad))
    start, end = np.array(start), np.array(end)
    length = float(np.hypot(*(end - start)))
    direction = (end - start) / length
    normal = np.array([-direction[1], direction[0]])
    t = np.arange(0.0, length + 8.0, 8.0)
    offset = np.zeros_like(t)
    for _ in range(3):
        wavelength = rng.uniform(350, 1400)
        offset += rng.uniform(0.04, 0.1) * wavelength * np.sin(2 * np.pi * t / wavelength + rng.uniform(0, 2 * np.pi))
    points = start + t[:, None] * direction + offset[:, None] * normal
    swell = np.sin(2 * np.pi * t / rng.uniform(600, 2000) + rng.uniform(0, 2 * np.pi))
    width = rng.uniform(22, 42) * (1 + 0.35 * swell)
    return _polyline(points, np.clip(width, 15, 60) / 2)


def _make_road(rng: np.random.Generator, size: int) -> _Strokes:
    """A long, nearly straight main road through the scene, 12-14 px wide."""
    centre = rng.uniform(0.2, 0.8, 2) * size
    angle = rng.uniform(0, np.pi)
    direction = np.array([math.sin(angle), math.cos(angle)])
    normal = np.array([-direction[1], direction[0]])
    half_len = size * 1.5 + 200
    t = np.arange(-half_len, half_len + 32.0, 32.0)
    wavelength = rng.uniform(2500, 7000)
    offset = rng.uniform(0, 60) * np.sin(2 * np.pi * t / wavelength + rng.uniform(0, 2 * np.pi))
    points = centre + t[:, None] * direction + offset[:, None] * normal
    return _polyline(points, np.full(t.size, rng.uniform(6.0, 7.0)))


def _sample_grid(size: int, n_max: int = 64) -> tuple[np.ndarray, np.ndarray]:
    """A regular grid of sample points over the scene, for threshold calibration."""
    n = int(min(n_max, max(16, size // 16)))
    p = (np.arange(n) + 0.5) * (size / n)
    return np.repeat(p, n), np.tile(p, n)


def _subsample(*arrays: np.ndarray, n_max: int = 4096) -> tuple[np.ndarray, ...]:
    step = max(1, int(math.ceil(arrays[0].size / n_max)))
    return tuple(a[::step] for a in arrays)


def _calibrate(s: _Scene) -> _Scene:
    """Pick the thresholds that give each class its target share in this scene."""
    r, c = _sample_grid(s.size)
    t_lake = _threshold(_fbm_points(_key(s.seed, "lake"), r, c, _LAKE), _TARGET_LAKE)
    t_forest = _threshold(_fbm_points(_key(s.seed, "forest"), r, c, _FOREST_F), _TARGET_FOREST)
    s = replace(s, t_lake=t_lake, t_forest=t_forest)

    k, j = _subsample(*_blocks_inside(s))
    t_urban = _threshold(_urban_score(s, k, j), _TARGET_URBAN)

    n = int(math.ceil(s.size / s.parcel))
    ci, cj = _subsample(np.repeat(np.arange(n), n), np.tile(np.arange(n), n))
    t_crop = _threshold(_fbm_points(_key(s.seed, "agri"), *_parcel_sites(s, ci, cj), _AGRI), _TARGET_CROP)
    logger.debug("scene seed=%d size=%d thresholds lake=%.3f forest=%.3f urban=%.3f crop=%.3f",
                 s.seed, s.size, t_lake, t_forest, t_urban, t_crop)
    return replace(s, t_urban=t_urban, t_crop=t_crop)


def _threshold(values: np.ndarray, share: float) -> float:
    """The value that ``share`` of the samples exceed (inf when there are no samples)."""
    return float(np.quantile(values, 1.0 - share)) if values.size else math.inf


# --------------------------------------------------------------------------- street grid and settlements


def _to_grid(s: _Scene, r: np.ndarray, c: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Pixel (row, col) -> rotated street-grid coordinates (u along, v across)."""
    u = c * s.grid_cos + r * s.grid_sin + s.grid_off[0]
    v = r * s.grid_cos - c * s.grid_sin + s.grid_off[1]
    return u, v


def _from_grid(s: _Scene, u: np.ndarray, v: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Rotated street-grid coordinates -> pixel (row, col)."""
    u, v = u - s.grid_off[0], v - s.grid_off[1]
    return u * s.grid_sin + v * s.grid_cos, u * s.grid_cos - v * s.grid_sin


def _blocks_inside(s: _Scene) -> tuple[np.ndarray, np.ndarray]:
    """All street blocks (k, j) whose centre lies inside the scene."""
    k, j = _block_range(s, np.array([0.0, s.size]), np.array([0.0, s.size]))
    kk, jj = np.meshgrid(np.arange(*k), np.arange(*j), indexing="ij")
    r, c = _from_grid(s, (kk + 0.5) * s.block, (jj + 0.5) * s.block)
    inside = (r >= 0) & (r < s.size) & (c >= 0) & (c < s.size)
    return kk[inside], jj[inside]


def _block_range(
    s: _Scene, rows: np.ndarray, cols: np.ndarray, pad: int = 0
) -> tuple[tuple[int, int], tuple[int, int]]:
    """Half-open ranges of block indices (k, j) covering the pixel box spanned by rows, cols."""
    r = np.array([rows[0], rows[0], rows[-1], rows[-1]])
    c = np.array([cols[0], cols[-1], cols[0], cols[-1]])
    u, v = _to_grid(s, r, c)
    k = (int(math.floor(u.min() / s.block)) - pad, int(math.floor(u.max() / s.block)) + 1 + pad)
    j = (int(math.floor(v.min() / s.block)) - pad, int(math.floor(v.max() / s.block)) + 1 + pad)
    return k, j


def _urban_score(s: _Scene, k: np.ndarray, j: np.ndarray) -> np.ndarray:
    """How strongly a street block wants to be built up: settlement noise + nearness to a main road.

    Blocks whose centre is in a lake or river get a very low score.
    """
    r, c = _from_grid(s, (k + 0.5) * s.block, (j + 0.5) * s.block)
    score = _fbm_points(_key(s.seed, "settle"), r, c, _SETTLE).astype(np.float64)
    road = _stroke_points(s.roads, r, c, _ROAD_BONUS_REACH)
    score += 0.5 * np.clip(1.0 - road / _ROAD_BONUS_REACH, 0.0, 1.0)
    in_lake = _fbm_points(_key(s.seed, "lake"), r, c, _LAKE) > s.t_lake - 0.04
    wet = in_lake | (_stroke_points(s.rivers, r, c, s.block) < 0.25 * s.block)
    return np.where(wet, -10.0, score)


def _urban_table(s: _Scene, rows: np.ndarray, cols: np.ndarray) -> tuple[np.ndarray, int, int]:
    """Built-up flag per street block around the window, with the table's (k, j) origin."""
    (k0, k1), (j0, j1) = _block_range(s, rows, cols, pad=2)
    kk, jj = np.meshgrid(np.arange(k0, k1), np.arange(j0, j1), indexing="ij")
    urban = _urban_score(s, kk.ravel(), jj.ravel()).reshape(kk.shape) > s.t_urban
    return urban, k0, j0


def _streets(s: _Scene, u: np.ndarray, v: np.ndarray, urban: np.ndarray, k0: int, j0: int) -> np.ndarray:
    """Street pixels: grid lines bordering at least one built-up block."""
    P, hw = s.block, s.street_hw
    out = np.zeros(u.shape, bool)
    line = np.floor(u / P + 0.5)  # lines of constant u separate blocks (k-1, j) and (k, j)
    idx = np.nonzero(np.abs(u - line * P) < hw)
    k, j = line[idx].astype(np.int64) - k0, np.floor(v[idx] / P).astype(np.int64) - j0
    out[idx] = urban[k - 1, j] | urban[k, j]
    line = np.floor(v / P + 0.5)  # lines of constant v separate blocks (k, j-1) and (k, j)
    idx = np.nonzero(np.abs(v - line * P) < hw)
    k, j = np.floor(u[idx] / P).astype(np.int64) - k0, line[idx].astype(np.int64) - j0
    out[idx] |= urban[k, j - 1] | urban[k, j]
    return out


# --------------------------------------------------------------------------- buildings

_ROOFS = np.array([  # blue, green, red, nir (reflectance * 10000)
    (620, 720, 1750, 1900),  # red tile
    (560, 640, 1150, 1400),  # brown tile
    (780, 820, 860, 930),  # dark grey
    (1650, 1700, 1760, 1900),  # light grey concrete
    (2500, 2550, 2600, 2700),  # white flat roof
    (470, 500, 540, 620),  # anthracite
], np.float32)
_ROOF_P = np.cumsum([0.34, 0.16, 0.16, 0.14, 0.08, 0.12])
_ROOF_GABLED = np.array([True, True, True, False, False, True])


@dataclass(frozen=True)
class _Buildings:
    """Building footprints around a window: one optional footprint per sub-cell of each block.

    Arrays are flat over the table's (k, j, slot row, slot col) index; ``shape`` unflattens it.
    """

    shape: tuple[int, int, int, int]
    exists: np.ndarray
    cu: np.ndarray  # centre in grid coordinates
    cv: np.ndarray
    hx: np.ndarray  # half sizes along the footprint's own axes
    hy: np.ndarray
    cos: np.ndarray
    sin: np.ndarray
    roof: np.ndarray  # roof type index into _ROOFS
    tone: np.ndarray  # per-building brightness factor
    k0: int
    j0: int


def _sub_cell(s: _Scene) -> tuple[float, float]:
    """(margin from the street centre line, sub-cell size) of the 3x3 building slots in a block."""
    margin = s.street_hw + 3.0
    return margin, (s.block - 2 * margin) / 3


def _building_table(s: _Scene, urban: np.ndarray, k0: int, j0: int) -> _Buildings:
    """Footprints for every sub-cell of the blocks in the table, decided by hashing (k, j, slot)."""
    margin, q = _sub_cell(s)
    nk, nj = urban.shape
    kk = np.arange(k0, k0 + nk)[:, None, None, None]
    jj = np.arange(j0, j0 + nj)[None, :, None, None]
    a = np.arange(3)[None, None, :, None]
    b = np.arange(3)[None, None, None, :]
    key = _key(s.seed, "building")

    def rnd(attr: int) -> np.ndarray:
        return _uniform(key, kk, jj, a * 3 + b, attr).astype(np.float64)

    rotated = rnd(0) < 0.3
    cos, sin = _rotation(np.where(rotated, (rnd(1) - 0.5) * 0.6, 0.0))  # up to +-33 degrees
    limit = q / 2 - 1.5
    hx = 6.0 + rnd(2) * (limit - 6.0)
    hy = 6.0 + rnd(3) * (limit - 6.0)
    ex, ey = hx * np.abs(cos) + hy * np.abs(sin), hx * np.abs(sin) + hy * np.abs(cos)
    shrink = np.minimum(1.0, limit / np.maximum(ex, ey))
    hx, hy, ex, ey = hx * shrink, hy * shrink, ex * shrink, ey * shrink
    cu = kk * s.block + margin + (a + 0.5) * q + (rnd(4) - 0.5) * 2 * (limit - ex)
    cv = jj * s.block + margin + (b + 0.5) * q + (rnd(5) - 0.5) * 2 * (limit - ey)
    centre_slot = (a == 1) & (b == 1)
    exists = (rnd(6) < np.where(centre_slot, 0.4, 0.9)) & urban[:, :, None, None]
    cu, cv = np.broadcast_to(cu, exists.shape), np.broadcast_to(cv, exists.shape)
    exists &= _clear_of_water_and_roads(s, cu, cv, np.hypot(hx, hy))
    roof = np.searchsorted(_ROOF_P, rnd(7) * _ROOF_P[-1], side="right")
    roof = np.minimum(roof, len(_ROOFS) - 1)
    tone = 0.85 + 0.3 * rnd(8)
    def flat(x: np.ndarray) -> np.ndarray:
        return np.broadcast_to(x, exists.shape).ravel()

    return _Buildings(exists.shape, *(flat(x) for x in (exists, cu, cv, hx, hy, cos, sin, roof, tone)), k0, j0)


def _clear_of_water_and_roads(s: _Scene, cu: np.ndarray, cv: np.ndarray, radius: np.ndarray) -> np.ndarray:
    """False for footprints that a main road, a river or a lake would cut through."""
    r, c = _from_grid(s, cu.ravel(), cv.ravel())
    rad = np.broadcast_to(radius, cu.shape).ravel()
    clear = _stroke_points(s.roads, r, c, 40.0) > rad + 2.0
    clear &= _stroke_points(s.rivers, r, c, 40.0) > rad + 3.0
    clear &= _fbm_points(_key(s.seed, "lake"), r, c, _LAKE) < s.t_lake - 0.03
    return clear.reshape(cu.shape)


def _building_ids(s: _Scene, b: _Buildings, u: np.ndarray, v: np.ndarray, urban_px: np.ndarray):
    """Flat index into the building table for each pixel (-1 where no roof), and roof facet shading."""
    margin, q = _sub_cell(s)
    bid = np.full(u.shape, -1, np.int64)
    facet = np.ones(u.shape, np.float32)
    idx = np.nonzero(urban_px)
    uu, vv = u[idx], v[idx]
    k = np.floor(uu / s.block)
    j = np.floor(vv / s.block)
    sa = np.floor((uu - k * s.block - margin) / q)
    sb = np.floor((vv - j * s.block - margin) / q)
    ok = (sa >= 0) & (sa < 3) & (sb >= 0) & (sb < 3)
    slot = (k - b.k0, j - b.j0, np.clip(sa, 0, 2), np.clip(sb, 0, 2))
    flat = np.ravel_multi_index(tuple(i.astype(np.int64) for i in slot), b.shape)
    du, dv = uu - b.cu[flat], vv - b.cv[flat]
    x = du * b.cos[flat] + dv * b.sin[flat]  # in the footprint's own axes
    y = dv * b.cos[flat] - du * b.sin[flat]
    hx, hy = b.hx[flat], b.hy[flat]
    inside = ok & b.exists[flat] & (np.abs(x) < hx) & (np.abs(y) < hy)
    bid[idx] = np.where(inside, flat, -1)
    facet[idx] = np.where(inside, _roof_shading(x, y, hx, hy, _ROOF_GABLED[b.roof[flat]]), 1.0)
    return bid, facet


def _roof_shading(x: np.ndarray, y: np.ndarray, hx: np.ndarray, hy: np.ndarray, gabled: np.ndarray) -> np.ndarray:
    """Brightness factor on a roof: gabled roofs show two facets either side of the ridge
    (along the long axis), and every roof has slightly darker eaves."""
    across = np.where(hx >= hy, y, x)
    facets = np.where(gabled, np.where(across >= 0, 1.12, 0.86), 1.0)
    eave = (np.abs(x) > hx - 1.0) | (np.abs(y) > hy - 1.0)
    return (facets * np.where(eave, 0.85, 1.0)).astype(np.float32)


def _shadow(building: np.ndarray) -> np.ndarray:
    """Pixels shaded by a building: the sun is in the south-west, shadows fall north-east (<= 3 px).

    A pixel is in shadow when a roof lies a few pixels from it towards the sun
    (rows +dr, cols -dc); needs a halo of 3 px around the window to be exact.
    """
    out = np.zeros_like(building)
    h, w = building.shape
    for dr, dc in ((1, 1), (2, 1), (2, 2), (3, 2), (1, 0), (0, 1)):
        out[: h - dr, dc:] |= building[dr:, : w - dc]
    return out & ~building


# --------------------------------------------------------------------------- parcels (Voronoi fields)


def _parcel_sites(s: _Scene, ci: np.ndarray, cj: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Jittered-grid Voronoi site of parcel cell (ci, cj), in pixel coordinates."""
    key = _key(s.seed, "parcel")
    jy = _uniform(key, ci, cj, 0).astype(np.float64)
    jx = _uniform(key, ci, cj, 1).astype(np.float64)
    return (ci + 0.1 + 0.8 * jy) * s.parcel, (cj + 0.1 + 0.8 * jx) * s.parcel


@dataclass(frozen=True)
class _Parcels:
    """Nearest parcel site per pixel (as a flat index into the window's site table)."""

    site: np.ndarray  # (h, w) int64
    gap: np.ndarray  # (h, w) float32, approx. distance to the parcel border
    ci: np.ndarray  # site table: parcel cell indices, flattened
    cj: np.ndarray


def _parcels(s: _Scene, rows: np.ndarray, cols: np.ndarray) -> _Parcels:
    """Voronoi partition of the window into parcels (80-300 px), one grid cell at a time."""
    G = s.parcel
    cell_r = np.floor(rows / G).astype(np.int64)
    cell_c = np.floor(cols / G).astype(np.int64)
    i0, j0 = cell_r[0] - 1, cell_c[0] - 1
    ni, nj = cell_r[-1] - i0 + 2, cell_c[-1] - j0 + 2
    ci, cj = np.meshgrid(np.arange(i0, i0 + ni), np.arange(j0, j0 + nj), indexing="ij")
    sy, sx = _parcel_sites(s, ci, cj)
    site = np.empty((rows.size, cols.size), np.int64)
    gap = np.empty((rows.size, cols.size), np.float32)
    r_edges = np.searchsorted(cell_r, np.arange(cell_r[0], cell_r[-1] + 2))
    c_edges = np.searchsorted(cell_c, np.arange(cell_c[0], cell_c[-1] + 2))
    for a in range(len(r_edges) - 1):
        rs = slice(r_edges[a], r_edges[a + 1])
        for b in range(len(c_edges) - 1):
            cs = slice(c_edges[b], c_edges[b + 1])
            site[rs, cs], gap[rs, cs] = _nearest_site(rows[rs, None], cols[None, cs], sy, sx, a + 1, b + 1)
    return _Parcels(site, gap, ci.ravel(), cj.ravel())


def _nearest_site(yy, xx, sy, sx, a: int, b: int):
    """Nearest of the 3x3 candidate sites around table cell (a, b), and the border distance."""
    d1 = np.full(np.broadcast(yy, xx).shape, np.inf)
    d2 = d1.copy()
    best = np.zeros(d1.shape, np.int64)
    nj = sy.shape[1]
    for da in (-1, 0, 1):
        for db in (-1, 0, 1):
            dy, dx = yy - sy[a + da, b + db], xx - sx[a + da, b + db]
            d = dy * dy + dx * dx
            closer = d < d1
            d2 = np.where(closer, d1, np.minimum(d2, d))
            d1 = np.where(closer, d, d1)
            best = np.where(closer, (a + da) * nj + (b + db), best)
    return best, (0.5 * (np.sqrt(d2) - np.sqrt(d1))).astype(np.float32)


# --------------------------------------------------------------------------- layers (labels + what painting needs)

_HALO = 4  # extra pixels rendered around a window, for building shadows


@dataclass
class _Layers:
    """Per-pixel intermediate products of one (haloed) window."""

    labels: np.ndarray
    fields: dict[str, np.ndarray]
    rows: np.ndarray
    cols: np.ndarray
    river: np.ndarray  # distance to river bank (negative inside)
    lake: np.ndarray  # lake field minus threshold (positive inside)
    main_road: np.ndarray  # bool
    parcels: _Parcels
    buildings: _Buildings
    building_id: np.ndarray
    facet: np.ndarray
    shadow: np.ndarray


def _build_layers(s: _Scene, rows: np.ndarray, cols: np.ndarray) -> _Layers:
    """Label map of the window plus the intermediate fields that painting reuses."""
    fields = _coarse_fields(s.seed, rows, cols)
    lake = fields["lake"] - np.float32(s.t_lake)
    river = _stroke_field(s.rivers, rows, cols, 1.0)
    main_road = _stroke_field(s.roads, rows, cols, 1.0) < 0
    water = (lake > 0) | (river < 0)
    edge = np.float32(0.04) * (_noise_grid(_key(s.seed, "forest-edge"), rows, cols, 12.0) - np.float32(0.5))
    forest = fields["forest"] + edge > np.float32(s.t_forest)

    u, v = _to_grid(s, rows[:, None], cols[None, :])
    urban, k0, j0 = _urban_table(s, rows, cols)
    urban_px = urban[np.floor(u / s.block).astype(np.int64) - k0, np.floor(v / s.block).astype(np.int64) - j0]
    road = main_road | _streets(s, u, v, urban, k0, j0)
    buildings = _building_table(s, urban, k0, j0)
    building_id, facet = _building_ids(s, buildings, u, v, urban_px)
    building = (building_id >= 0) & ~road & ~water

    parcels = _parcels(s, rows, cols)
    crop_site = _fbm_points(_key(s.seed, "agri"), *_parcel_sites(s, parcels.ci, parcels.cj), _AGRI) > s.t_crop
    labels = np.full(u.shape, GRASSLAND, np.uint8)
    labels[crop_site[parcels.site]] = CROPLAND
    labels[forest & ~urban_px] = FOREST
    labels[urban_px] = GRASSLAND
    labels[water] = WATER
    labels[road] = ROAD
    labels[building] = BUILDING
    return _Layers(labels, fields, rows, cols, river, lake, main_road, parcels, buildings,
                   np.where(building, building_id, -1), facet, _shadow(building))


# --------------------------------------------------------------------------- painting

_C = functools.partial(np.array, dtype=np.float32)
_WATER_DEEP = _C((380, 450, 260, 110))
_WATER_TURBID = _C((620, 780, 560, 240))
_WATER_SHALLOW = _C((700, 880, 700, 520))
_CONIFER = _C((210, 370, 220, 2300))
_BROADLEAF = _C((330, 580, 340, 3700))
_GRASS = _C((430, 800, 560, 3100))
_GRASS_DRY = _C((620, 960, 900, 2650))
_CROPS = np.array([  # crop canopy colours
    (320, 700, 370, 4300),  # dense green
    (480, 880, 620, 3500),  # young green
    (720, 1060, 1330, 2800),  # ripe cereal
    (560, 980, 820, 3200),  # rapeseed-ish / mixed
], np.float32)
_SOILS = np.array([
    (720, 880, 1100, 1900),  # brown
    (520, 640, 780, 1450),  # dark, moist
    (980, 1130, 1330, 2250),  # light, dry
], np.float32)
_MAIN_ROAD = _C((820, 870, 920, 980))
_STREET = _C((1080, 1130, 1180, 1260))


def _paint(s: _Scene, lay: _Layers) -> np.ndarray:
    """Reflectance image (4, h, w) uint16 of the window's core from its layers."""
    img = np.zeros((4,) + lay.labels.shape, np.float32)
    for cls, painter in (
        (WATER, _paint_water), (FOREST, _paint_forest), (CROPLAND, _paint_cropland),
        (GRASSLAND, _paint_grassland), (ROAD, _paint_road), (BUILDING, _paint_building),
    ):
        idx = np.nonzero(lay.labels == cls)
        if idx[0].size:
            img[:, idx[0], idx[1]] = painter(s, lay, idx)
    img[:, lay.shadow] *= np.float32(0.5)
    core = (slice(None), slice(_HALO, -_HALO), slice(_HALO, -_HALO))
    img = img[core] * (np.float32(1.0) + np.float32(0.08) * lay.fields["illum"][core[1:]])
    img += _sensor_noise(s.seed, lay.rows[_HALO:-_HALO], lay.cols[_HALO:-_HALO], img)
    return np.clip(np.rint(img), 1, 10000).astype(np.uint16)


def _lerp(a: np.ndarray, b: np.ndarray, t: np.ndarray) -> np.ndarray:
    """Per-pixel blend of two band colours: (4, n)."""
    return a[:, None] + (b - a)[:, None] * t[None, :]


def _paint_water(s: _Scene, lay: _Layers, idx) -> np.ndarray:
    """Smooth, dark, low NIR; murkier in places, lighter in the shallows by the banks."""
    turbid = np.clip(0.5 + lay.fields["turbid"][idx], 0, 1)
    color = _lerp(_WATER_DEEP, _WATER_TURBID, turbid)
    depth = np.maximum(-lay.river[idx] / 5.0, lay.lake[idx] / 0.03)
    shallow = np.clip(1.0 - depth, 0, 1) * np.float32(0.6)
    return color + (_WATER_SHALLOW[:, None] - color) * shallow[None, :]


def _paint_forest(s: _Scene, lay: _Layers, idx) -> np.ndarray:
    """Dark green, high NIR, with sunlit round crowns and shaded gaps between them."""
    species = np.clip(0.5 + 1.2 * lay.fields["species"][idx], 0, 1)
    color = _lerp(_CONIFER, _BROADLEAF, species)
    light = _crowns(s.seed, lay.rows[idx[0]], lay.cols[idx[1]])
    return color * (np.float32(0.35) + np.float32(0.95) * light)[None, :]


def _crowns(seed: int, r: np.ndarray, c: np.ndarray) -> np.ndarray:
    """Illumination of a canopy of round crowns on a jittered 6 px lattice (0 = shadowed gap)."""
    cell = 6.0
    key = _key(seed, "crowns")
    ci, cj = np.floor(r / cell).astype(np.int64), np.floor(c / cell).astype(np.int64)
    i0, j0 = ci.min() - 1, cj.min() - 1
    ti, tj = np.meshgrid(np.arange(i0, ci.max() + 2), np.arange(j0, cj.max() + 2), indexing="ij")
    ty = ((ti + 0.2 + 0.6 * _uniform(key, ti, tj, 0)) * cell).ravel()
    tx = ((tj + 0.2 + 0.6 * _uniform(key, ti, tj, 1)) * cell).ravel()
    tr = (cell * (0.5 + 0.4 * _uniform(key, ti, tj, 2))).astype(np.float64).ravel()
    best = np.zeros(r.shape)
    ny = np.zeros(r.shape)
    nx = np.zeros(r.shape)
    for da in (-1, 0, 1):
        for db in (-1, 0, 1):
            t = (ci + da - i0) * ti.shape[1] + (cj + db - j0)
            dy, dx, rad = r - ty[t], c - tx[t], tr[t]
            h2 = rad * rad - dy * dy - dx * dx
            higher = h2 > best * best
            h = np.sqrt(np.maximum(h2, 0.0))
            best = np.where(higher, h, best)
            ny = np.where(higher, dy / rad, ny)
            nx = np.where(higher, dx / rad, nx)
    nz = np.sqrt(np.maximum(1.0 - ny * ny - nx * nx, 0.0))
    sun = 0.45 * ny - 0.45 * nx + 0.77 * nz  # sun from the south-west, 50 deg high
    return np.where(best > 0, 0.25 + 0.75 * np.clip(sun, 0, 1), 0.0).astype(np.float32)


def _paint_cropland(s: _Scene, lay: _Layers, idx) -> np.ndarray:
    """Per-parcel crop and soil colours, mixed along row stripes in a per-parcel direction."""
    t = _crop_table(s.seed, lay.parcels.ci, lay.parcels.cj)
    site = lay.parcels.site[idx]
    r, c = lay.rows[idx[0]], lay.cols[idx[1]]
    phase = (r * t.cos[site] + c * t.sin[site]) * t.freq[site]
    stripe = _smooth(np.abs(np.float32(2.0) * (phase - np.floor(phase)).astype(np.float32) - np.float32(1.0)))
    mix = np.clip(t.cover[site] + t.amp[site] * (stripe - 0.5) + 0.15 * lay.fields["fieldvar"][idx], 0, 1)
    soil, crop = t.soil[site].T, t.crop[site].T
    color = (soil + (crop - soil) * mix[None, :]) * t.tone[site][None, :]
    margin = np.clip(1.0 - (lay.parcels.gap[idx] - 1.0) / 1.5, 0, 1) * np.float32(0.8)
    return color + (_GRASS_DRY[:, None] - color) * margin[None, :]


@dataclass(frozen=True)
class _CropTable:
    """Per-parcel appearance: canopy and soil colour, cover, row stripes."""

    crop: np.ndarray  # (n, 4)
    soil: np.ndarray  # (n, 4)
    cover: np.ndarray  # crop cover fraction
    amp: np.ndarray  # stripe contrast
    cos: np.ndarray  # row direction
    sin: np.ndarray
    freq: np.ndarray  # 1 / row period (px)
    tone: np.ndarray  # brightness factor


def _crop_table(seed: int, ci: np.ndarray, cj: np.ndarray) -> _CropTable:
    """Appearance of the parcels (ci, cj), drawn by hashing the parcel cell."""
    key = _key(seed, "crop")

    def rnd(attr: int) -> np.ndarray:
        return _uniform(key, ci, cj, attr)

    crop = _CROPS[np.minimum((rnd(0) * len(_CROPS)).astype(np.int64), len(_CROPS) - 1)]
    soil = _SOILS[np.minimum((rnd(1) * len(_SOILS)).astype(np.int64), len(_SOILS) - 1)]
    bare = rnd(2) < 0.25
    cos, sin = _rotation(np.float32(2.0) * rnd(5) - np.float32(1.0))
    return _CropTable(
        crop=crop, soil=soil,
        cover=np.where(bare, 0.0, 0.35 + 0.6 * rnd(3)).astype(np.float32),
        amp=np.where(bare, 0.15, 0.25 + 0.5 * rnd(4)).astype(np.float32),
        cos=cos.astype(np.float64), sin=sin.astype(np.float64),
        freq=1.0 / (5.0 + 7.0 * rnd(6).astype(np.float64)),
        tone=(0.88 + 0.24 * rnd(7)).astype(np.float32),
    )


def _rotation(t: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(cos, sin) of the angle 2*atan(t), by rational formulas.

    numpy's cos/sin may take different SIMD paths at different positions of an array;
    these IEEE-exact formulas give a table entry the same value wherever it sits.
    """
    d = 1 + t * t
    return (1 - t * t) / d, 2 * t / d


def _paint_grassland(s: _Scene, lay: _Layers, idx) -> np.ndarray:
    """Mid green, high-ish NIR, smooth low-frequency variation and no stripes."""
    dry = np.clip(0.35 + 0.9 * lay.fields["grass"][idx], 0, 1)
    color = _lerp(_GRASS, _GRASS_DRY, dry)
    fine = _noise_grid(_key(s.seed, "grass-fine"), lay.rows, lay.cols, 4.0)[idx]
    return color * (np.float32(0.94) + np.float32(0.12) * fine)[None, :]


def _paint_road(s: _Scene, lay: _Layers, idx) -> np.ndarray:
    """Grey asphalt, low NIR; main roads darker than streets; fine grain."""
    color = np.where(lay.main_road[idx][None, :], _MAIN_ROAD[:, None], _STREET[:, None])
    fine = _noise_grid(_key(s.seed, "asphalt"), lay.rows, lay.cols, 2.5)[idx]
    return color * (np.float32(0.95) + np.float32(0.1) * fine)[None, :]


def _paint_building(s: _Scene, lay: _Layers, idx) -> np.ndarray:
    """Roof colour per building, gabled roofs in two facets, darker eaves."""
    bid = lay.building_id[idx]
    b = lay.buildings
    color = _ROOFS[b.roof[bid]].T * b.tone[bid][None, :].astype(np.float32)
    return color * lay.facet[idx][None, :]


def _sensor_noise(seed: int, rows: np.ndarray, cols: np.ndarray, img: np.ndarray) -> np.ndarray:
    """Per-band sensor noise: triangular, ~2% of the signal plus a floor, hashed from (seed, row, col)."""
    h = _hash(_key(seed, "sensor"), rows.astype(np.int64)[:, None], cols.astype(np.int64)[None, :])
    out = np.empty_like(img)
    for band in range(img.shape[0]):
        bits = h >> np.uint64(16 * band)
        lo = (bits & _BYTE).astype(np.float32)
        hi = ((bits >> np.uint64(8)) & _BYTE).astype(np.float32)
        tri = (lo + hi) / np.float32(255.0) - np.float32(1.0)  # triangular in [-1, 1]
        out[band] = tri * (np.float32(0.04) * img[band] + np.float32(20.0))
    return out


# --------------------------------------------------------------------------- nodata collar


def _collar_quad(seed: int, size: int, collar: int) -> np.ndarray:
    """Footprint corners (row, col), clockwise from top-left, each inset 0..collar px."""
    rng = np.random.default_rng([seed, 0xC011A2])
    inset = rng.uniform(0, collar, (4, 2))
    last = size - 1.0
    return np.array([
        (inset[0, 0], inset[0, 1]),
        (inset[1, 0], last - inset[1, 1]),
        (last - inset[2, 0], last - inset[2, 1]),
        (last - inset[3, 0], inset[3, 1]),
    ])


def _footprint_mask(quad: np.ndarray, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
    """True inside the convex footprint (each edge's inner half-plane)."""
    inside = np.ones((rows.size, cols.size), bool)
    for (r0, c0), (r1, c1) in zip(quad, np.roll(quad, -1, axis=0)):
        cross = (c1 - c0) * (rows[:, None] - r0) - (r1 - r0) * (cols[None, :] - c0)
        inside &= cross >= 0
    return inside
