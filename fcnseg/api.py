"""The library's face: what ``import fcnseg`` offers (``fcnseg/__init__.py`` loads this on first use).

Thin on purpose: each function is the command line's command of the same name as one call, with
the same defaults and the same one-line errors (``fcnseg.errors``), over the functions that
command runs. Heavy imports (torch, Dask, rasterio) happen inside the functions, so that
``import fcnseg`` and ``help(fcnseg.segment)`` stay instant.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import numpy as np
    import torch
    import xarray as xr
    from distributed import Client

    from fcnseg.models.card import ModelCard
    from fcnseg.models.fcn import FCNBase
    from fcnseg.models.metrics import Metrics
    from fcnseg.pipeline.analysis.features import FeatureClassArea
    from fcnseg.pipeline.analysis.query import QueryResult
    from fcnseg.pipeline.output.record import RunReport
    from fcnseg.pipeline.segment_options import SegmentOptions
    from fcnseg.pipeline.training.train import TrainResult

__all__ = ["Model", "evaluate", "load_model", "open_labels", "predict_array", "query", "segment", "train"]

#: The name that stands for the demo model shipped with fcnseg (``fcnseg.models.DEMO_MODEL``).
DEMO = "demo"


def model_path(model: Model | str | Path | None) -> Path:
    """The checkpoint a ``model`` argument names: None or ``"demo"`` is the shipped demo FCN-8s;
    a loaded ``Model``, the file it was loaded from."""
    from fcnseg.models import DEMO_MODEL

    if isinstance(model, Model):
        return model.path
    return DEMO_MODEL if model is None or str(model) == DEMO else Path(model)


def checked_fields(function: str, record: type, fields: Mapping[str, Any]) -> None:
    """TypeError naming a keyword that is no field of ``record``: a typo never passes unnoticed."""
    known = list(record.model_fields)
    unknown = [name for name in fields if name not in known]
    if unknown:
        raise TypeError(f"{function}() got an unexpected keyword argument {unknown[0]!r} "
                        f"(its options: {', '.join(known)})")


def segment_options(options: SegmentOptions | None, fields: Mapping[str, Any]) -> SegmentOptions:
    """``options`` (default: the CLI's defaults) with ``fields`` changed; validated."""
    from fcnseg.pipeline.segment_options import SegmentOptions

    checked_fields("segment", SegmentOptions, fields)
    return SegmentOptions(**fields) if options is None else options.replace(**fields)


def segment(
    input: str | Path,
    out: str | Path,
    model: Model | str | Path | None = None,
    *,
    options: SegmentOptions | None = None,
    overwrite: bool = False,
    progress: bool = False,
    client: Client | None = None,
    scheduler: str | None = None,
    cluster_spec: str | Path | None = None,
    workers: int | None = None,
    **option_fields: Any,
) -> RunReport:
    """Segment a raster into an output folder: labels.zarr, labels.tif, polygons, quicklook, STAC item, run.json.

    What ``fcnseg segment INPUT --out OUT`` does, with the same guarantees: a rerun of a complete
    output does nothing (``report.skipped``), an interrupted one resumes from its finished chunks,
    and an error is one line naming the file or option (``fcnseg.errors.FcnsegError``).

    Parameters
    ----------
    input : any path or URI rasterio opens.
    out : a folder, or ``s3://bucket/prefix``.
    model : a checkpoint (.safetensors) or a loaded ``Model``; None or ``"demo"``: the demo model
        shipped with fcnseg.
    options : a ``SegmentOptions``; the keyword options below change its fields.
    overwrite : replace an output made with another model or other parameters.
    progress : a progress bar (on a terminal) or log lines.
    client : a ``distributed.Client`` to compute on (left running); default: the current client
        of this process, else in this process for a small scene, else a local cluster.
    scheduler, cluster_spec, workers : a scheduler address, a cluster spec (``deploy/clusters/``)
        or a number of local worker processes, instead of a client.
    **option_fields : any field of ``SegmentOptions``, as the CLI options of the same names:
        tile, halo, stitch ("crop" or "blend"), batch_size, device, probabilities, tta ("none",
        "flip" or "d4"), normalize ("card" or "scene": the card's normalisation matched to the
        input's own statistics), bands, cog, polygons, simplify, min_area, polygon_cell, quicklook, stac.

    Returns
    -------
    RunReport : chunks, seconds per stage, files, class areas, polygons, execution ...

    Example
    -------
    >>> report = fcnseg.segment("scene.tif", "out", stitch="blend")
    >>> report.files
    >>> [(a.class_name, a.area_m2) for a in report.class_areas]
    """
    from fcnseg.pipeline.orchestrator import segment as segment_run

    return segment_run(input, model_path(model), out, segment_options(options, option_fields), client=client,
                       scheduler=scheduler, cluster_spec=cluster_spec, workers=workers, overwrite=overwrite,
                       progress=progress)


@dataclass(frozen=True, eq=False)
class Model:
    """A checkpoint loaded for inference on a device: the network, its card, where it runs.

    ``card`` holds the classes (``card.class_names``), bands, normalisation and nodata policy;
    ``path`` the checkpoint's file. Made by ``load_model``; ``predict_array`` takes it.
    """

    network: FCNBase
    card: ModelCard
    device: torch.device
    path: Path

    @property
    def class_names(self) -> list[str]:
        return list(self.card.class_names)

    def __repr__(self) -> str:
        return (f"Model({self.card.arch}, width {self.card.width}, {self.card.bands} bands, "
                f"classes {self.class_names}, on {self.device}, from {self.path})")


def load_model(model: str | Path | None = DEMO, device: str = "auto") -> Model:
    """Load a checkpoint for inference, checked byte for byte, on a device ready to predict.

    Parameters
    ----------
    model : a checkpoint (.safetensors), or ``"demo"`` (None): the demo FCN-8s shipped with fcnseg.
    device : ``"auto"`` (CUDA when present, else the CPU), ``"cpu"``, ``"cuda"`` or ``"cuda:N"``;
        it computes there as ``segment`` does (bf16 or fp16 on GPUs, fp32 on the CPU).

    Returns
    -------
    Model : ``.network`` (a torch module in eval mode), ``.card``, ``.device``, ``.path``.

    Example
    -------
    >>> model = fcnseg.load_model("demo")
    >>> model.class_names
    >>> labels = fcnseg.predict_array(model, pixels)
    """
    from fcnseg.models.inference import load_for_inference, resolve_device

    path = model_path(model)
    target = resolve_device(device)
    network, card = load_for_inference(path, target)
    return Model(network, card, target, path)


def _loaded(model: Model | str | Path | None, device: str) -> Model:
    """``model`` ready on ``device``: a ``Model`` as it is (``device`` "auto") or moved by loading
    its checkpoint there; a path or ``"demo"`` loaded."""
    if isinstance(model, Model):
        if device == "auto":
            return model
        from fcnseg.models.inference import resolve_device

        return model if resolve_device(device) == model.device else load_model(model.path, device)
    return load_model(model, device)


def predict_array(
    model: Model | str | Path | None,
    array: Any,
    *,
    tile: int | None = None,
    halo: int | None = None,
    stitch: str = "crop",
    batch_size: int | None = None,
    nodata: float | Sequence[float | None] | None = None,
    probabilities: bool = False,
    device: str = "auto",
    tta: str = "none",
    normalize: str = "card",
) -> Any:
    """Segment an array in memory: numpy (bands, rows, cols) or (rows, cols), or an xarray DataArray.

    The same tiles, halo, nodata rule, normalisation and stitching as ``segment``, so the labels
    equal what ``segment`` writes to labels.zarr for the same pixels (on the CPU it computes with
    the torch threads a local segment run's workers get). Memory follows the tile and batch size:
    tiles are cut from ``array`` as they are needed (a lazily read or dask-backed DataArray reads
    only those windows).

    Parameters
    ----------
    model : a ``Model`` (``load_model``), or a checkpoint path or ``"demo"`` to load.
    array : the model's bands first. A DataArray keeps its coordinates, attributes and rio
        CRS/transform; its nodata is ``.rio.nodata`` (else ``attrs["_FillValue"]``).
    tile, halo, batch_size : as ``segment``'s (None: what it would choose on this device).
    stitch : ``"crop"`` (each tile keeps its core) or ``"blend"`` (cross-faded across tile borders).
    nodata : the input's nodata value, one for all bands or one per band (None: none, or the
        DataArray's); a pixel is nodata when all its bands are (GDAL's rule); NaN always is.
    probabilities : also return the class probabilities, as labels.zarr stores them (uint8,
        p x 254, 255 = nodata).
    device : where to load ``model`` when it is a path (a ``Model`` runs on its own device).
    tta : test-time augmentation, as ``segment``'s: each tile's logits averaged over ``"none"``,
        ``"flip"`` (4 flips) or ``"d4"`` (the 8 flips and rotations by 90°), before stitching.
    normalize : ``"card"`` (the training scene's mean and std) or ``"scene"`` (``segment --normalize
        scene``: those matched to the array's own per-band median and interquartile range, read from
        the same random windows ``segment`` reads of a file of these pixels).

    Returns
    -------
    labels, uint8 (rows, cols), 255 = nodata, as the input's type (a DataArray has the class
    names and colours in ``attrs``); with ``probabilities``, ``(labels, probabilities)``, the
    latter (classes, rows, cols).

    Example
    -------
    >>> model = fcnseg.load_model("demo")
    >>> image = rioxarray.open_rasterio("scene.tif")
    >>> labels = fcnseg.predict_array(model, image, stitch="blend")
    """
    from fcnseg.pipeline.segment.array import predict_pixels
    from fcnseg.pipeline.segment.array_frame import array_nodata, bands_first, on_input_grid
    from fcnseg.pipeline.segment.memory_source import nodata_values

    model = _loaded(model, device)
    pixels, frame = bands_first(array)
    values = nodata_values(nodata if nodata is not None else array_nodata(array), pixels.shape[0])
    labels, probs = predict_pixels(model.network, model.card, model.device, pixels, tile=tile, halo=halo,
                                   stitch=stitch, batch_size=batch_size, nodata=values, probabilities=probabilities,
                                   tta=tta, normalize=normalize, model_name=str(model.path))
    if frame is not None:
        labels, probs = on_input_grid(frame, model.card, labels, probs)
    return (labels, probs) if probabilities else labels


def open_labels(out: str | Path, *, partial: bool = False) -> xr.DataArray:
    """Open an output's labels as an ``xarray.DataArray`` (y, x), lazily, with CRS, transform, nodata and classes.

    Parameters
    ----------
    out : a segment output folder (or its labels.zarr).
    partial : open a store whose run was interrupted, as it is (as ``fcnseg query --partial``).

    Returns
    -------
    DataArray of uint8 class ids backed by dask over the store's chunks (nothing loaded):
    ``.rio.crs`` and ``.rio.transform()`` as labels.tif's (no CRS for an input without one),
    ``.rio.nodata`` and ``attrs["_FillValue"]`` 255, ``attrs["class_names"]`` and ``["class_colors"]``.

    Example
    -------
    >>> labels = fcnseg.open_labels("out")
    >>> water = (labels == labels.attrs["class_names"].index("water")).sum().compute()
    >>> labels.rio.crs, labels.rio.transform()
    """
    from fcnseg.pipeline.analysis.label_array import open_label_array
    from fcnseg.pipeline.output.layout import store_of

    return open_label_array(store_of(out), allow_partial=partial, folder=out)


def query(
    raster: str | Path,
    *,
    bbox: Sequence[float] | None = None,
    crs: str | None = None,
    aoi: str | Path | None = None,
    point: Sequence[float] | None = None,
    partial: bool = False,
    by: str | None = None,
) -> QueryResult | list[FeatureClassArea]:
    """How much of each class is in a box, an area of interest, each of its features, at a point, or everywhere (``fcnseg query``).

    Parameters
    ----------
    raster : a segment output folder (its labels.zarr), labels.tif, labels.zarr, or any
        single-band class raster with nodata.
    bbox : MINX MINY MAXX MAXY, in ``crs`` (default: the raster's).
    crs : the CRS of ``bbox`` or ``point``, e.g. ``"EPSG:4326"``.
    aoi : a vector file in any CRS (pixel centres inside its polygons count).
    point : X Y: the class of the pixel there.
    partial : read a label store whose run was interrupted, as it is.
    by : with ``aoi``, one answer per feature, identified by this field (``fcnseg query --by``);
        without it the features' union is counted.

    Returns
    -------
    QueryResult : ``classes`` (class_id, class_name, pixels, area_m2, share), ``valid_pixels``,
    ``nodata_pixels``, ``area_m2``; ``to_dict()`` is ``fcnseg query --json``'s object.
    With ``by``: a list of FeatureClassArea, one per feature and class in file order (``feature``,
    the ClassArea fields with ``share`` of the feature's valid pixels, ``valid_pixels``,
    ``nodata_pixels``); a feature outside the raster, over nodata or with an empty geometry has
    zero valid pixels, overlapping features are each counted in full.

    Example
    -------
    >>> result = fcnseg.query("out", bbox=(15.0, 48.74, 15.01, 48.75), crs="EPSG:4326")
    >>> [(c.class_name, c.area_m2) for c in result.classes]
    >>> result.valid_pixels
    >>> rows = fcnseg.query("out", aoi="parcels.gpkg", by="parcel_id")
    >>> {r.feature: r.area_m2 for r in rows if r.class_name == "forest"}
    """
    from fcnseg.pipeline.analysis.query import query_classes

    given = [name for name, value in (("bbox", bbox), ("aoi", aoi), ("point", point)) if value is not None]
    if len(given) > 1:
        raise ValueError(f"{' and '.join(given)} are mutually exclusive: choose one selection")
    if crs is not None and bbox is None and point is None:
        raise ValueError("crs applies to bbox or point; give one of them")
    from fcnseg.pipeline.output.layout import labels_in

    target = labels_in(raster)
    if by is not None:
        if aoi is None or bbox is not None or point is not None:
            raise ValueError("by applies to aoi alone: give aoi=FILE with by=FIELD")
        from fcnseg.pipeline.analysis.features import query_features

        return query_features(target, aoi, by, allow_partial=partial)
    return query_classes(target, bbox=bbox, bbox_crs=crs, aoi=aoi, point=point, point_crs=crs, allow_partial=partial)


def train(image: str | Path, labels: str | Path, out: str | Path, *, progress: bool = False,
          **fields: Any) -> tuple[Path, TrainResult, ModelCard]:
    """Train an FCN on random chips of a labelled raster and write the best checkpoint (``fcnseg train``).

    Parameters
    ----------
    image : the training image (any raster rasterio opens).
    labels : a class raster on the image's grid, or vector labels (GeoPackage, GeoJSON, GeoParquet ...).
    out : the checkpoint to write (.safetensors).
    progress : a progress bar (on a terminal) or log lines.
    **fields : any ``fcnseg train`` option by its field name, with the CLI's defaults: val_image,
        val_labels, arch ("fcn8s"), width (0.125), init, vgg16_weights, steps (2000), chip (256),
        batch_size (8), lr (1e-3), seed (0), device ("auto"), label_field, label_layer, classes,
        outside, class_name, bands, val_every (250), sampling ("labelled"), class_weights
        ("median"), max_class_weight (None), holdout (0.2), read_threads (4), augment_gain (0.3), augment_offset
        (0.75), augment_gamma (0.3), augment_noise (0.05), augment_blur (1.0; all five 0: off), overwrite (False).

    Returns
    -------
    (path, TrainResult, ModelCard) : the checkpoint, its training (``best_metrics``, ``best_step``,
    ``history``, ``seconds``) and its card.

    Example
    -------
    >>> path, result, card = fcnseg.train("scene/image.tif", "scene/labels.tif", "m.safetensors", steps=500)
    >>> result.best_metrics["mean_iou"]
    >>> model = fcnseg.load_model(path)
    """
    from fcnseg.pipeline.training.train import TrainRequest, train_model

    checked_fields("train", TrainRequest, fields)
    paths = {name: Path(value) for name, value in fields.items()
             if name in ("val_image", "val_labels", "init", "vgg16_weights") and value is not None}
    request = TrainRequest(image=Path(image), labels=Path(labels), out=Path(out), progress=progress,
                           **{**fields, **paths})
    return train_model(request)


def evaluate(
    model: Model | str | Path | None,
    image: str | Path,
    labels: str | Path,
    *,
    label_field: str | None = None,
    label_layer: str | None = None,
    outside: str | None = None,
    bands: Sequence[int] | None = None,
    tile: int | None = None,
    halo: int | None = None,
    batch_size: int | None = None,
    device: str = "auto",
    progress: bool = False,
    tta: str = "none",
    normalize: str = "card",
) -> Metrics:
    """Score a model on a labelled raster, tile by tile as ``segment`` runs it (``fcnseg evaluate``).

    Parameters
    ----------
    model : a ``Model``, a checkpoint path, or ``"demo"``.
    image : the image to segment; ``labels``: its reference classes (a raster or vector labels,
        mapped to classes as in training).
    label_field, label_layer, outside : for vector labels (default: as the model was trained).
    bands, tile, halo, batch_size : as ``segment``'s (None: the model's bands, the device's tiling).
    device : where to load ``model`` when it is a path.
    progress : a progress bar (on a terminal) or log lines.
    tta : test-time augmentation, as ``segment``'s (``"none"``, ``"flip"`` or ``"d4"``).
    normalize : ``"card"`` (the card's mean and std) or ``"scene"`` (matched to this image's own
        statistics, as ``segment``'s ``normalize="scene"``; the model's card must hold statistics).

    Returns
    -------
    dict : ``pixel_acc``, ``mean_acc``, ``mean_iou``, ``fw_iou``, ``per_class_iou``, ``confusion``.

    Example
    -------
    >>> metrics = fcnseg.evaluate("demo", "test/image.tif", "test/labels.tif")
    >>> metrics["mean_iou"]
    >>> metrics["per_class_iou"]
    """
    from fcnseg.pipeline.training.evaluate import evaluate_raster

    model = _loaded(model, device)
    return evaluate_raster(model.network, model.card, image, labels, device=model.device, label_field=label_field,
                           outside=outside, label_layer=label_layer, bands=bands, tile=tile, halo=halo,
                           batch_size=batch_size, progress=progress, tta=tta,
                           normalize=normalize, model_name=str(model.path))
