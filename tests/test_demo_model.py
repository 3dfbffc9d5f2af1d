"""The shipped demo model: small, loadable, and accurate on a scene of a seed it never saw."""

from __future__ import annotations

import torch

from fcnseg.models import DEMO_MODEL
from fcnseg.models.checkpoint import load_checkpoint
from fcnseg.pipeline import synth
from fcnseg.pipeline.training.evaluate import evaluate_raster


def test_demo_model_is_small_and_describes_itself():
    assert DEMO_MODEL.stat().st_size < 20 * 1024 * 1024
    _, card = load_checkpoint(DEMO_MODEL)
    assert card.arch == "fcn8s"
    assert card.class_names == [c.name for c in synth.CLASSES]
    assert [tuple(c.color) for c in card.classes] == [c.color for c in synth.CLASSES]
    assert card.band_names == list(synth.BAND_NAMES)
    assert card.training.steps > 0 and card.metrics["mean_iou"] >= 0.85


def test_demo_model_segments_an_unseen_scene(tmp_path):
    image, labels = synth.write_scene(tmp_path, 512, seed=4242)
    model, card = load_checkpoint(DEMO_MODEL)
    metrics = evaluate_raster(model, card, image, labels, device=torch.device("cpu"))
    # 0.85 is the bar on 1024 px scenes (README); a 512 px crop has fewer pixels per class
    assert metrics["mean_iou"] >= 0.8, metrics
    assert metrics["pixel_acc"] >= 0.9, metrics


def test_evaluate_batches_tiles_like_segment(scene):
    """evaluate runs segment's batched tile loop: the batch size never changes the confusion."""
    image, labels = scene
    model, card = load_checkpoint(DEMO_MODEL)
    one, four = (
        evaluate_raster(model, card, image, labels, device=torch.device("cpu"), tile=128, batch_size=b)
        for b in (1, 4)
    )
    assert one["confusion"] == four["confusion"]
    assert sum(map(sum, one["confusion"])) > 0.9 * 384 * 384
