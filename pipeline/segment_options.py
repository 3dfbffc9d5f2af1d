"""The segment command's options as one definition (``SegmentOptions``), in a module of their own:
the command line validates them before it imports anything heavy (issue 24: a bad option failed
only after seconds of imports), and ``segment.plan``, the flows and the library take them from
here (``segment.plan`` re-exports them). Imports pydantic, rasterio's windows and the model's
torch-free geometry and sizing, nothing of a run.
"""

from __future__ import annotations

import math
import re
from typing import Annotated, Any, Literal

from pydantic import Field, model_validator

from fcnseg.models.card import STRIDE
from fcnseg.models.sizing import default_tiling, sizing_device
from fcnseg.models.tta import check_tta
from fcnseg.pipeline.option_texts import SEGMENT_HELP as HELP
from fcnseg.pipeline.options import POLYGON_CELL, OptionModel, check_band_numbers, option_name, real_number, whole_number
from fcnseg.pipeline.tiles import check_tiling

__all__ = ["DEVICE_PATTERN", "POLYGON_CELL", "SegmentOptions", "check_options"]

DEVICE_PATTERN = re.compile(r"^(auto|cpu|cuda(:\d+)?)$")


class SegmentOptions(OptionModel):
    """How a raster is segmented and what is made from it: the one definition that ``fcnseg
    segment`` builds its options from (help texts, defaults), the ``segment-scene`` flow takes as
    its ``options`` parameter and ``segment()`` validates. The descriptions are the help texts
    (``option_texts``); a bad value fails in one line naming the option (``options.OptionModel``)."""

    tile: Annotated[int | None, Field(ge=STRIDE, multiple_of=STRIDE, description=HELP["tile"])] = None
    halo: Annotated[int | None, Field(ge=0, multiple_of=STRIDE, description=HELP["halo"])] = None
    stitch: Annotated[Literal["crop", "blend"], Field(description=HELP["stitch"])] = "crop"
    batch_size: Annotated[int | None, Field(ge=1, description=HELP["batch_size"])] = None
    device: Annotated[str, Field(pattern=DEVICE_PATTERN.pattern, description=HELP["device"])] = "auto"
    probabilities: Annotated[bool, Field(description=HELP["probabilities"])] = False
    confidence: Annotated[bool, Field(description=HELP["confidence"])] = False
    tta: Annotated[Literal["none", "flip", "d4"], Field(description=HELP["tta"])] = "none"
    normalize: Annotated[Literal["card", "scene"], Field(description=HELP["normalize"])] = "card"
    bands: Annotated[tuple[Annotated[int, Field(ge=1)], ...] | None, Field(min_length=1, description=HELP["bands"])] = None
    # what is made from the finished store (changing these never recomputes a chunk)
    cog: Annotated[bool, Field(description=HELP["cog"])] = True
    polygons: Annotated[bool, Field(description=HELP["polygons"])] = True
    simplify: Annotated[float, Field(ge=0, allow_inf_nan=False, description=HELP["simplify"])] = 0.0
    min_area: Annotated[float, Field(ge=0, allow_inf_nan=False, description=HELP["min_area"])] = 0.0
    #: None (the command line's and the flow's default) is taken as POLYGON_CELL when the options are made.
    polygon_cell: Annotated[int | None, Field(ge=1, description=HELP["polygon_cell"])] = None
    quicklook: Annotated[bool, Field(description=HELP["quicklook"])] = True
    stac: Annotated[bool, Field(description=HELP["stac"])] = True

    @model_validator(mode="before")
    @classmethod
    def _one_line_errors(cls, data: Any) -> Any:
        """Today's messages, naming the option, before pydantic's constraints (which name none)."""
        if isinstance(data, dict):
            check_options(data)
            if data.get("polygon_cell") is None:
                data = {**data, "polygon_cell": POLYGON_CELL}
        return data

    def validate(self) -> None:
        """Every option checked (as constructing the model did): for callers that check before
        anything is read or written; ValueError names the option."""
        check_options({name: getattr(self, name) for name in type(self).model_fields})

    def sized(self, width: float, halo: int) -> SegmentOptions:
        """These options with the tile and batch size that were left to the device chosen for it."""
        tile, batch_size = default_tiling(width, halo, sizing_device(self.device), self.tile, self.batch_size)
        return self.replace(tile=tile, batch_size=batch_size)

    def outputs(self) -> dict[str, Any]:
        """The options that shape the files made from the store, as recorded in run.json."""
        return {"cog": self.cog, "polygons": self.polygons, "simplify": self.simplify, "min_area": self.min_area,
                "polygon_cell": self.polygon_cell, "quicklook": self.quicklook, "stac": self.stac}


def check_options(data: dict[str, Any]) -> None:
    """The segment options' values as the command line names them; ValueError in one line. Values
    of another type are left to pydantic (``--tile: input should be a valid integer``)."""
    check_tiling(whole_number(data.get("tile")), whole_number(data.get("halo")), whole_number(data.get("batch_size")))
    stitch, device = data.get("stitch", "crop"), data.get("device", "auto")
    if isinstance(stitch, str) and stitch not in ("crop", "blend"):
        raise ValueError(f"--stitch must be crop or blend, got {stitch!r}")
    if isinstance(device, str) and not DEVICE_PATTERN.match(device):
        raise ValueError(f"--device must be auto, cpu, cuda or cuda:N, got {device!r}")
    tta = data.get("tta", "none")
    if isinstance(tta, str):
        check_tta(tta)
    normalize = data.get("normalize", "card")
    if isinstance(normalize, str) and normalize not in ("card", "scene"):
        raise ValueError(f"--normalize must be card or scene, got {normalize!r}")
    check_band_numbers(data.get("bands"))
    for name in ("simplify", "min_area"):
        value = real_number(data.get(name))
        if value is not None and not (math.isfinite(value) and value >= 0):
            raise ValueError(f"{option_name(name)} must be a non-negative number, got {value}")
    cell = whole_number(data.get("polygon_cell"))
    if cell is not None and cell < 1:
        raise ValueError(f"--polygon-cell must be at least 1 pixel, got {cell}")
