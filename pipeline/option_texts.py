"""What each option means, in one place: the descriptions of ``SegmentOptions``' and ``TrainRequest``'s
fields and of the flows' other parameters, and the command line's ``--help`` texts, which are the
same words (``tests/test_option_sets.py`` compares the two sets).

A module of strings only: the command line reads it when it starts (Typer wants each help text when
a command is declared), and importing the option models themselves would bring pydantic, torch and
GDAL into every command, ``fcnseg --help`` included.
"""

from __future__ import annotations

#: ``fcnseg segment``'s options of ``SegmentOptions`` (the ``segment-scene`` flow's ``options``).
SEGMENT_HELP: dict[str, str] = {
    "tile": "Core chunk size in pixels (multiple of 32); default: 2048 where the device's memory holds it.",
    "halo": "Context around each tile (multiple of 32); default from the model.",
    "stitch": "crop (keep each tile's core) or blend (cross-fade across borders).",
    "batch_size": "Tiles per forward pass; default: 1 on the CPU, as many as half a GPU's memory holds (at most 8).",
    "device": "auto, cpu or cuda.",
    "probabilities": "Also store class probabilities.",
    "confidence": ("Also store each pixel's confidence (its class's probability, uint8 p x 254), and write"
                   " confidence.tif (with --cog) and confidence.png (with --quicklook)."),
    "tta": ("Test-time augmentation: each tile's logits averaged over none, flip (4 flips) or d4 (8 flips and"
            " rotations by 90°); d4 costs 8 forward passes."),
    "normalize": ("card (the model card's mean and std) or scene (those matched to this input: its own median and"
                  " interquartile range mapped onto the training scene's, for a scene of other radiometry)."),
    "bands": "1-based bands to feed the model, comma separated.",
    "cog": "Write labels.tif (and probabilities.tif, confidence.tif) as Cloud-Optimized GeoTIFF.",
    "polygons": "Write polygons.parquet and polygons.gpkg (regions merged across chunks).",
    "simplify": "Simplify polygons as a coverage (shared edges stay shared) by this tolerance, CRS units; 0 = exact pixel edges.",
    "min_area": "Merge regions smaller than this, m², into their largest neighbour.",
    "polygon_cell": ("Side in pixels of the cells polygonised apart: a region crossing cells is one polygon per cell,"
                     " all with one region_id (default 2048)."),
    "quicklook": "Write quicklook.png (image, labels, legend).",
    "stac": "Write item.json (a STAC Item of the outputs).",
}

#: ``fcnseg segment``'s options about the run rather than its result (the flow's own parameters).
RUN_HELP: dict[str, str] = {
    "model": "Checkpoint (default: the shipped demo model).",
    "workers": "Local Dask workers (default: from the machine).",
    "scheduler": "Existing Dask scheduler, tcp://HOST:PORT.",
    "cluster_spec": "Dask cluster to start: deploy/clusters/NAME.yaml or a path.",
    "overwrite": "Replace a run with another model or parameters.",
}

LAYER_HELP = "Layer of vector labels, where the file holds several layers with geometries."
OUTSIDE_HELP = ("Vector labels' pixels outside every feature: 'background' (class 0) or 'unlabelled' (not trained"
                " on or scored). Default: background for a layer without --label-field, unlabelled with one.")
CHECKPOINT_OVERWRITE_HELP = (
    "Replace a file at the checkpoint's path that is not an fcnseg checkpoint, or a read-only one. An fcnseg"
    " checkpoint is replaced without it; an input of this command never, not even with it.")

#: ``fcnseg train``'s options: the fields of ``TrainRequest`` (the ``train-fcn`` flow's ``request``).
TRAIN_HELP: dict[str, str] = {
    "image": "Training image (any raster rasterio opens).",
    "labels": ("Class raster on the image's grid, or vector labels (any format OGR reads: GeoPackage, SpatiaLite,"
               " FlatGeobuf, GML, KML, Shapefile, GeoJSON; or GeoParquet)."),
    "out": ("Checkpoint to write (.safetensors); an fcnseg checkpoint there is replaced (retraining to the same"
            " --out), anything else only with --overwrite, an input of this command never."),
    "val_image": "Validation image.",
    "val_labels": "Validation labels.",
    "arch": "fcn32s, fcn16s or fcn8s.",
    "width": "Channel width multiplier (1.0 = the paper's VGG16).",
    "init": ("Start from this checkpoint (staged training); label values map to classes as in its training unless"
             " --classes is given."),
    "vgg16_weights": "ImageNet VGG16 state dict (torchvision layout), width 1.0 only.",
    "steps": "Optimisation steps.",
    "chip": "Chip side in pixels.",
    "batch_size": "Chips per step.",
    "lr": "Peak learning rate.",
    "seed": "Random seed.",
    "device": "auto, cpu or cuda.",
    "label_field": ("Class field of vector labels (integers: the class ids; text: classes in --classes order, else"
                    " sorted). Without it a vector layer is footprints: every feature one class."),
    "label_layer": LAYER_HELP,
    "classes": "Class names, comma separated, in id order.",
    "outside": OUTSIDE_HELP,
    "class_name": "Class name of a footprint layer (no --label-field); default: the layer's name.",
    "bands": "1-based bands to use, comma separated (default: all).",
    "val_every": "Validate every N steps.",
    "sampling": ("Where chips are centred: on labelled pixels, each class with equal chance (labelled), or anywhere"
                 " with at least 5 % labelled pixels (uniform, the old sampler)."),
    "class_weights": ("Class weights in the loss: median frequency balancing of the pixels training sees (median),"
                      " its square root (sqrt), or equal (none)."),
    "max_class_weight": ("Cap on any class's loss weight (the median class weighs 1); default: none. A class of a few"
                         " dozen labelled pixels otherwise weighs tens of times the others."),
    "holdout": ("Without --val-image: share of each class's labelled pixels held out in blocks of the scene to"
                " validate on and keep the best mean IU (dropped, with a warning, where a class has too few labels"
                " to split); 0 turns it off."),
    "read_threads": "Threads reading the next batch's chips while the model trains (0: in the training thread).",
    "augment_gain": ("Photometric augmentation: per-band gain of each chip, x (1 + G) ** u with u uniform in -1..1"
                     " (0.2: 0.83x to 1.2x); 0 turns it off. Up to 1."),
    "augment_offset": "Photometric augmentation: per-band offset, uniform within +-N band standard deviations. Up to 2.",
    "augment_gamma": ("Photometric augmentation: per-band gamma (1 + G) ** u over the scene's 2-98 % range"
                      " (0.3: 0.77 to 1.3). Up to 1."),
    "augment_noise": ("Photometric augmentation: Gaussian noise of a standard deviation drawn per chip from 0 to N"
                      " band standard deviations. Up to 1."),
    "augment_blur": "Photometric augmentation: Gaussian blur of a sigma drawn per chip from 0 to N pixels. Up to 4.",
    "overwrite": CHECKPOINT_OVERWRITE_HELP,
}
