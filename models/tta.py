"""Test-time augmentation: a tile's logits averaged over its flips (``flip``: identity, left-right,
up-down, both) or over all eight dihedral views (``d4``: those four, each also transposed, which
gives the rotations by 90° and 270° and the two diagonal mirrors), on the device, before stitching.

Why the padding: the FCN's pooling grid starts at its input's first pixel (``fcn.py``). A read
window starts on a multiple of 32 of the raster, so a tile seen as it is lies on the whole image's
grid; flipped, its grid starts at the window's far edge, which for an interior tile is a multiple
of 32 from the origin but not, in general, from the raster's far edge, where the flipped whole
image's grid starts. So every flipped axis is first padded at its far end (bottom, right) to a
multiple of 32, with the nodata fill: an interior window (a multiple of 32 long) gets no padding,
an edge window is padded to where the padded raster ends, a whole-image run alike. A flipped tile
then lies on the flipped (padded) whole image's grid, and a tiled TTA run equals a whole-image TTA
run, as a plain one does. A transpose keeps the first pixel in place and needs nothing; it needs
no square input either (an FCN takes any height and width, and a batch's tiles share one shape).
The identity view is never padded: its logits are ``tta="none"``'s.

Memory: one view at a time through the model, its logits added to one float32 sum: d4 costs
eight forward passes, but the batch's memory is one view's activations plus the input, its
transformed copy and the sum.

Torch is not imported here at module level: the option checks (``check_tta``) stay light.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from fcnseg.models.card import STRIDE

if TYPE_CHECKING:
    from torch import Tensor

    from fcnseg.models.fcn import FCNBase

__all__ = ["TTA_MODES", "View", "check_tta", "tta_logits", "views"]

#: ``--tta``'s choices: none, the four flips, the eight dihedral views.
TTA_MODES = ("none", "flip", "d4")


@dataclass(frozen=True)
class View:
    """One dihedral transform of a (..., h, w) tensor: the flips first (on the input's own axes),
    then the transpose; ``back`` undoes it on the logits."""

    transpose: bool = False
    flip_rows: bool = False
    flip_cols: bool = False

    @property
    def name(self) -> str:
        parts = [p for p, on in (("flip-rows", self.flip_rows), ("flip-cols", self.flip_cols),
                                 ("transpose", self.transpose)) if on]
        return "+".join(parts) or "identity"

    def _dims(self) -> list[int]:
        return [d for d, on in ((-2, self.flip_rows), (-1, self.flip_cols)) if on]

    def apply(self, x: Tensor, fill: float) -> Tensor:
        """The view of ``x`` the model sees: each flipped axis padded at its far end with ``fill``
        to a multiple of STRIDE, flipped, then transposed."""
        height, width = x.shape[-2:]
        pad_rows = -height % STRIDE if self.flip_rows else 0
        pad_cols = -width % STRIDE if self.flip_cols else 0
        if pad_rows or pad_cols:
            padded = x.new_full((*x.shape[:-2], height + pad_rows, width + pad_cols), fill)
            padded[..., :height, :width] = x
            x = padded
        if self._dims():
            x = x.flip(self._dims())
        if self.transpose:
            x = x.transpose(-2, -1).contiguous()
        return x

    def back(self, logits: Tensor, height: int, width: int) -> Tensor:
        """``logits`` of this view on the input's grid: transposed and flipped back, the padding cut off."""
        if self.transpose:
            logits = logits.transpose(-2, -1)
        if self._dims():
            logits = logits.flip(self._dims())
        return logits[..., :height, :width]


_FLIPS = (View(), View(flip_cols=True), View(flip_rows=True), View(flip_rows=True, flip_cols=True))
_VIEWS: dict[str, tuple[View, ...]] = {
    "none": (View(),),
    "flip": _FLIPS,
    "d4": _FLIPS + tuple(View(True, v.flip_rows, v.flip_cols) for v in _FLIPS),
}


def check_tta(mode: object) -> None:
    """ValueError naming ``--tta`` for anything but none, flip or d4."""
    if mode not in TTA_MODES:
        raise ValueError(f"--tta must be none, flip or d4, got {mode!r}")


def views(mode: str) -> tuple[View, ...]:
    """The views ``mode`` averages, the identity first."""
    check_tta(mode)
    return _VIEWS[mode]


def tta_logits(model: FCNBase, x: Tensor, mode: str, fill: float) -> Tensor:
    """(n, classes, h, w) float32 logits of the normalised batch ``x``, averaged over ``mode``'s
    views (``forward_logits`` of each, one at a time; ``fill``: the card's nodata fill, what the
    padding of a flipped axis holds). ``none``: ``forward_logits`` itself, unchanged."""
    from fcnseg.models.inference import forward_logits

    chosen = views(mode)
    if len(chosen) == 1:
        return forward_logits(model, x)
    height, width = x.shape[-2:]
    total: Tensor | None = None
    for view in chosen:  # a fixed order: the same sum, bit for bit, for a tile and the whole image
        logits = view.back(forward_logits(model, view.apply(x, fill)), height, width)
        total = logits if total is None else total.add_(logits)
    assert total is not None
    return total.div_(len(chosen))
