"""The model card: what a checkpoint says about its model besides the weights (architecture and
width, bands and their normalisation, nodata, classes and their colours, how label values became
class ids, where the weights came from), and the card's own validation.

Torch-free on purpose (imports neither torch nor safetensors): the products (STAC, quicklook),
``fcnseg query`` and the raster I/O describe outputs by the card without loading a model.
Reading and writing it inside a checkpoint file is ``fcnseg.models.checkpoint``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field, fields
from typing import Any, Literal

__all__ = [
    "ARCHS", "MAX_CLASSES", "OUTSIDE_POLICIES", "Arch", "ClassInfo", "LabelMapping", "ModelCard", "NodataPolicy",
    "Normalization", "RobustStatistics", "STRIDE", "TrainingProvenance", "check_color", "class_count_problem",
    "class_names_problem", "receptive_field",
]

#: The architectures a card may name (``fcnseg.models.fcn`` builds them).
Arch = Literal["fcn32s", "fcn16s", "fcn8s"]
ARCHS: tuple[Arch, ...] = ("fcn32s", "fcn16s", "fcn8s")
#: The output stride of every architecture's backbone: tiles must start on multiples of it. Here,
#: not in ``fcn.py``, so that tiling (``pipeline/tiles.py``) needs no torch.
STRIDE = 32


def receptive_field(arch: str) -> int:
    """Side in pixels of the input region that can influence one output pixel.

    VGG16 to pool5 sees 212 px and fc6's 7x7 at stride 32 adds 192. The final 32x bilinear
    upsampling blends two stride-32 cells (+64); FCN-16s' and FCN-8s' finer fusions reach
    half a cell further on their grids (+16, +8). Measured by perturbing single pixels
    (``tests/test_fcn.py``). Here beside ``STRIDE``, so the default halo (``pipeline.tiles``)
    needs no torch.
    """
    rf = 212 + 6 * STRIDE + 2 * STRIDE
    extra = {"fcn32s": 0, "fcn16s": 16, "fcn8s": 16 + 8}
    return rf + extra[arch]


#: A model has at most this many classes, ids 0..254: 255 is nodata in every output (the uint8
#: label store and everything made from it; ``NodataPolicy.label``). The one place the limit is named.
MAX_CLASSES = 255


def class_count_problem(count: int) -> str | None:
    """Why ``count`` classes make no model (None when they do): with 256 or more, ids reach the
    nodata label, so outputs would say "nodata" where a class was found."""
    if count < 2:
        return f"{count} class{'' if count == 1 else 'es'}; a model needs at least 2"
    if count > MAX_CLASSES:
        return (f"{count} classes; a model has at most {MAX_CLASSES}"
                f" (ids 0..{MAX_CLASSES - 1}: {MAX_CLASSES} is nodata in every output)")
    return None


def class_names_problem(names: Sequence[str]) -> str | None:
    """Why ``names`` cannot name a model's classes (None when they can): an empty name, or one
    used twice, makes the legend, the polygons' class_name and the STAC classes ambiguous."""
    empty = [i for i, name in enumerate(names) if not str(name).strip()]
    if empty:
        return f"class names must not be empty (class {', '.join(map(str, empty))})"
    seen: dict[str, list[int]] = {}
    for i, name in enumerate(names):
        seen.setdefault(str(name).strip(), []).append(i)
    repeated = [f"'{name}' (classes {', '.join(map(str, ids))})" for name, ids in seen.items() if len(ids) > 1]
    if repeated:
        return f"class names repeat {', '.join(repeated)}"
    return None


@dataclass
class ClassInfo:
    name: str
    color: tuple[int, int, int]


@dataclass
class Normalization:
    """Per-band ``(x - mean) / std`` applied to raw pixel values before the model sees them."""

    mean: list[float]
    std: list[float]


@dataclass
class RobustStatistics:
    """Per-band percentiles of the training scene's valid pixels (as stored, before normalisation),
    which a bright pixel or a nodata value missed by the mask moves far less than the mean and std:
    what a scene that differs in radiometry can be compared with, and matched to (its 2-98 % range,
    or median and interquartile range). ``pixels``: how many valid pixels per band they were read from."""

    p2: list[float]
    p25: list[float]
    p50: list[float]
    p75: list[float]
    p98: list[float]
    pixels: int

    def validate(self, bands: int) -> None:
        rows = (self.p2, self.p25, self.p50, self.p75, self.p98)
        if any(len(row) != bands for row in rows):
            raise ValueError(f"statistics have not {bands} values per percentile")
        for band, values in enumerate(zip(*rows, strict=True)):
            if not all(math.isfinite(v) for v in values) or list(values) != sorted(values):
                raise ValueError(f"statistics of band {band + 1}: percentiles {list(values)} are not finite and rising")


@dataclass
class NodataPolicy:
    """How missing data is handled: masked input pixels are set to ``fill`` after normalisation
    (0, the band mean) and never become a class; labels use ``label`` for nodata and unlabelled."""

    input: float | None = None
    label: int = 255
    fill: float = 0.0


#: What vector labels' uncovered pixels become: class 0 ("background"), or unlabelled (255, not scored).
OUTSIDE_POLICIES = ("background", "unlabelled")


@dataclass
class LabelMapping:
    """How the values in label files became class ids in training, so evaluation maps them the same way.

    ``values[i]`` is the source value of class id ``i`` as text (a raster's pixel value, or the
    ``field``'s value of vector labels; ``"1"`` and ``1`` are the same value), ``None`` for a class
    no value stands for (the background of vector labels). ``outside`` is what pixels covered by
    no feature of vector labels are: ``background`` (class 0) or ``unlabelled``. ``field`` is the
    vector labels' class field, ``None`` for rasters and for footprint layers (every feature is
    class 1, the layer's class).
    """

    values: list[str | None]
    field: str | None = None
    outside: str = "unlabelled"
    kind: str = "raster"  # "raster" or "vector": what the training labels were

    def validate(self, num_classes: int) -> None:
        if len(self.values) != num_classes:
            raise ValueError(f"labels.values has {len(self.values)} values for {num_classes} classes")
        if self.outside not in OUTSIDE_POLICIES:
            raise ValueError(f"labels.outside must be one of {', '.join(OUTSIDE_POLICIES)}, got {self.outside!r}")
        known = [v for v in self.values if v is not None]
        if len(set(known)) != len(known):
            raise ValueError("labels.values holds a value twice")


@dataclass(frozen=True, kw_only=True)
class TrainingProvenance:
    """Where a checkpoint's weights came from: the command, its inputs and settings, the history.

    A card records what its writer knew: ``fcnseg train`` every field (built directly), ``init-model``
    only ``init`` ("random"), ``seed`` and ``vgg16_weights`` (built with ``of``), cards of other
    versions more or fewer. A field the card does not hold is named in ``unrecorded`` (its value
    here is None), keys of another version are kept in ``extra``: ``to_json()`` gives back exactly
    the card's JSON (an absent key stays absent, a null stays null), so shipped cards load and
    describe unchanged.
    """

    command: str | None = None  # the command line, when run as ``fcnseg``
    image: str | None = None
    labels: str | None = None
    val_image: str | None = None
    val_labels: str | None = None
    init: str | Mapping[str, str] | None = None  # "random" (init-model), {"path", "sha256"} (train --init)
    vgg16_weights: str | None = None
    steps: int | None = None
    best_step: int | None = None
    chip: int | None = None
    batch_size: int | None = None
    lr: float | None = None
    seed: int | None = None
    optimizer: str | None = None
    device: str | None = None
    started: str | None = None  # ISO 8601
    seconds: float | None = None
    torch: str | None = None
    python: str | None = None
    history: tuple[Mapping[str, float], ...] = ()  # per logged step: loss, and the metrics where it validated
    sampling: str | None = None
    class_weights: Mapping[str, Any] | None = None  # {"method": ..., "max": cap or None, "weights": [...] or None}
    class_pixels: tuple[int, ...] | None = None
    holdout: Mapping[str, Any] | None = None  # {"fraction", "block", "blocks"}; None: no held-out blocks
    read_threads: int | None = None
    augmentation: Mapping[str, float] | None = None  # the photometric settings; None: flips and rotations only
    extra: Mapping[str, Any] = field(default_factory=dict)  # keys of another version, kept as they are
    unrecorded: frozenset[str] = frozenset()  # the fields the card does not hold

    def __post_init__(self) -> None:
        """Sequences as tuples however given, so a record equals the one read back from its JSON."""
        for name in ("history", "class_pixels"):
            value = getattr(self, name)
            if isinstance(value, list):
                object.__setattr__(self, name, tuple(value))

    @classmethod
    def of(cls, **recorded: Any) -> TrainingProvenance:
        """A record of just these fields (``init-model``'s three; none: a card without provenance)."""
        return cls(**recorded, unrecorded=PROVENANCE_KEYS - set(recorded))

    def recorded(self, name: str) -> bool:
        """Whether the card holds ``name`` (a None value may be a recorded null or no record at all)."""
        return (name in PROVENANCE_KEYS and name not in self.unrecorded) or name in self.extra

    def to_json(self) -> dict[str, Any]:
        """The card's ``training`` as written (the keys it records, lists as lists)."""
        names = [f.name for f in fields(self) if f.name in PROVENANCE_KEYS and f.name not in self.unrecorded]
        return {**{name: _json_value(getattr(self, name)) for name in names}, **self.extra}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> TrainingProvenance:
        """A card's ``training``, whatever version wrote it."""
        return cls(**{k: v for k, v in data.items() if k in PROVENANCE_KEYS},
                   extra={k: v for k, v in data.items() if k not in PROVENANCE_KEYS},
                   unrecorded=PROVENANCE_KEYS - set(data))


#: The fields of TrainingProvenance that are keys of a card's ``training`` (not ``extra`` or ``unrecorded``).
PROVENANCE_KEYS = frozenset(f.name for f in fields(TrainingProvenance)) - {"extra", "unrecorded"}


def _json_value(value: Any) -> Any:
    """A field as JSON holds it: tuples as lists, mappings as dicts (copies: the record stays as it is)."""
    if isinstance(value, tuple):
        return [_json_value(v) for v in value]
    return dict(value) if isinstance(value, Mapping) else value


@dataclass
class ModelCard:
    """Everything about a checkpoint except its tensors."""

    arch: str
    width: float
    bands: int
    classes: list[ClassInfo]
    normalization: Normalization
    nodata: NodataPolicy = field(default_factory=NodataPolicy)
    band_names: list[str] | None = None
    #: The label values -> class ids mapping of training; None in checkpoints from before it was recorded (identity).
    labels: LabelMapping | None = None
    training: TrainingProvenance = field(default_factory=TrainingProvenance.of)
    metrics: dict[str, Any] = field(default_factory=dict)
    #: The training scene's robust per-band statistics; None in cards from before them and in init-model's.
    statistics: RobustStatistics | None = None

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def class_names(self) -> list[str]:
        return [c.name for c in self.classes]

    def to_json(self) -> dict[str, Any]:
        card = {**asdict(self), "training": self.training.to_json()}
        if self.statistics is None:  # a card without them is written as before they existed
            del card["statistics"]
        return card

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ModelCard:
        return cls(
            arch=data["arch"],
            width=float(data["width"]),
            bands=int(data["bands"]),
            classes=[ClassInfo(c["name"], tuple(c["color"])) for c in data["classes"]],
            normalization=Normalization(**data["normalization"]),
            nodata=NodataPolicy(**data.get("nodata", {})),
            band_names=data.get("band_names"),
            labels=LabelMapping(**data["labels"]) if data.get("labels") else None,
            training=TrainingProvenance.from_json(data.get("training") or {}),
            metrics=data.get("metrics", {}),
            statistics=RobustStatistics(**data["statistics"]) if data.get("statistics") else None,
        )

    def validate(self) -> None:
        """Raise ValueError when the card contradicts itself or describes a model that cannot give
        meaningful labels (checked on save and on every load)."""
        if self.arch not in ARCHS:
            raise ValueError(f"unknown architecture {self.arch!r}")
        if not (math.isfinite(self.width) and 0 < self.width <= 1):
            raise ValueError(f"width must be in (0, 1], got {self.width}")
        if self.bands < 1:
            raise ValueError(f"needs at least 1 band, got {self.bands}")
        problem = class_count_problem(len(self.classes)) or class_names_problem(self.class_names)
        if problem:
            raise ValueError(problem)
        for i, info in enumerate(self.classes):
            check_color(i, info)
        if len(self.normalization.mean) != self.bands or len(self.normalization.std) != self.bands:
            raise ValueError(f"normalisation has not {self.bands} values per statistic")
        if self.band_names is not None and len(self.band_names) != self.bands:
            raise ValueError(f"band_names has not {self.bands} names")
        self.check_normalization()
        if not math.isfinite(self.nodata.fill):
            raise ValueError(f"nodata fill must be a finite number, got {self.nodata.fill}")
        if self.nodata.label != MAX_CLASSES:
            raise ValueError(f"nodata label must be {MAX_CLASSES} (nodata in every output), got {self.nodata.label}")
        if self.labels is not None:
            self.labels.validate(len(self.classes))
        if self.statistics is not None:
            self.statistics.validate(self.bands)

    def check_normalization(self) -> None:
        """Each band's mean finite and std positive and finite: a NaN passes ``std <= 0`` and makes
        every pixel NaN (then class 0); an infinite std makes every pixel 0."""
        stats = zip(self.normalization.mean, self.normalization.std, strict=True)
        for i, (mean, std) in enumerate(stats):
            band = f"band {i + 1}" + (f" ({self.band_names[i]})" if self.band_names else "")
            if not math.isfinite(mean):
                raise ValueError(f"normalisation of {band}: mean {mean} is not a finite number")
            if not (math.isfinite(std) and std > 0):
                raise ValueError(f"normalisation of {band}: std {std} is not a positive finite number")


def check_color(class_id: int, info: ClassInfo) -> None:
    """A class colour is three whole numbers 0..255 (the COG's colour table, the QGIS style)."""
    color = list(info.color)
    ok = len(color) == 3 and all(
        isinstance(c, (int, float)) and not isinstance(c, bool) and math.isfinite(c) and float(c).is_integer()
        and 0 <= c <= 255 for c in color
    )
    if not ok:
        raise ValueError(f"colour of class {class_id} '{info.name}' must be three whole numbers 0..255, got {color}")
