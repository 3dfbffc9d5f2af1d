"""Deterministic randomness from integer coordinates: hashing, value noise and fbm.

Every random quantity of a scene that is not a per-scene parameter comes from here: a
hash of (key, integer coordinates), so it is the same whichever window asks for it.
Also the small IEEE-exact helpers (smoothstep, blends, rational rotation) that keep a
pixel's value independent of how numpy vectorises the array it sits in.
"""

from __future__ import annotations

import math
import zlib

import numpy as np

_MASK64 = (1 << 64) - 1
_M1 = np.uint64(0xBF58476D1CE4E5B9)
_M2 = np.uint64(0x94D049BB133111EB)
_PRIMES = tuple(np.uint64(k) for k in (0x9E3779B97F4A7C15, 0xC2B2AE3D27D4EB4F, 0x165667B19E3779F9, 0xD6E8FEB86659FD93))
_S30, _S27, _S31, _S40 = (np.uint64(s) for s in (30, 27, 31, 40))


def _mix_int(x: int) -> int:
    """splitmix64 finaliser on a Python int (for per-scene keys)."""
    x &= _MASK64
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & _MASK64
    return x ^ (x >> 31)


def stream_key(seed: int, tag: str) -> int:
    """Independent 64-bit stream key for one named quantity of one seed."""
    return _mix_int(_mix_int(seed * 0x9E3779B97F4A7C15 + 0x632BE59BD9B4E019) ^ zlib.crc32(tag.encode()))


def hash_coords(key: int, *coords) -> np.ndarray:
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


def uniform(key: int, *coords) -> np.ndarray:
    """Uniform [0, 1) float32 per integer coordinate tuple."""
    return _unit(hash_coords(key, *coords))


def smooth(f: np.ndarray) -> np.ndarray:
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
    sy, sx = smooth(fy), smooth(fx)
    l00, l01 = uniform(key, iy, ix), uniform(key, iy, ix + 1)
    l10, l11 = uniform(key, iy + 1, ix), uniform(key, iy + 1, ix + 1)
    t0 = l00 + (l01 - l00) * sx
    t1 = l10 + (l11 - l10) * sx
    return t0 + (t1 - t0) * sy


def lerp_grid(lattice: np.ndarray, iy: np.ndarray, wy: np.ndarray, ix: np.ndarray, wx: np.ndarray) -> np.ndarray:
    """Separable interpolation of lattice (..., ny, nx) to the pixel grid, same formula as the point version."""
    a = lattice[..., ix]
    t = a + (lattice[..., ix + 1] - a) * wx
    b = t[..., iy, :]
    return b + (t[..., iy + 1, :] - b) * wy[:, None]


def noise_grid(key: int, rows: np.ndarray, cols: np.ndarray, scale: float) -> np.ndarray:
    """Value noise in [0, 1) on a pixel grid (axis aligned, for fine textures); cheap: separable."""
    iy, fy = _split(rows / scale)
    ix, fx = _split(cols / scale)
    y0, x0 = iy[0], ix[0]
    lat = uniform(key, np.arange(y0, iy[-1] + 2)[:, None], np.arange(x0, ix[-1] + 2)[None, :])
    return lerp_grid(lat, iy - y0, smooth(fy), ix - x0, smooth(fx))


Octaves = tuple[tuple[float, float], ...]  # (scale in px, weight)


def fbm_points(key: int, r: np.ndarray, c: np.ndarray, octaves: Octaves) -> np.ndarray:
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


def lerp(a: np.ndarray, b: np.ndarray, t: np.ndarray) -> np.ndarray:
    """Per-pixel blend of two band colours: (4, n)."""
    return a[:, None] + (b - a)[:, None] * t[None, :]


def rotation(t: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(cos, sin) of the angle 2*atan(t), by rational formulas.

    numpy's cos/sin may take different SIMD paths at different positions of an array;
    these IEEE-exact formulas give a table entry the same value wherever it sits.
    """
    d = 1 + t * t
    return (1 - t * t) / d, 2 * t / d
