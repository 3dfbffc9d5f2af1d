"""The paper's four metrics, checked against hand-computed values."""

import numpy as np
import pytest

from fcnseg.models.metrics import confusion_matrix, metrics_from_confusion


def test_confusion_ignores_nodata_and_counts_true_by_predicted():
    target = np.array([[0, 0, 1], [1, 2, 255]])
    predicted = np.array([[0, 1, 1], [1, 1, 0]])
    conf = confusion_matrix(predicted, target, 3)
    assert conf.tolist() == [[1, 1, 0], [0, 2, 0], [0, 1, 0]]


def test_metrics_match_hand_computation():
    conf = np.array([[1, 1, 0], [0, 2, 0], [0, 1, 0]])
    m = metrics_from_confusion(conf)
    assert m["pixel_acc"] == pytest.approx(3 / 5)
    assert m["mean_acc"] == pytest.approx((1 / 2 + 2 / 2 + 0 / 1) / 3)
    iou = [1 / 2, 2 / 4, 0 / 1]
    assert m["per_class_iou"] == pytest.approx(iou)
    assert m["mean_iou"] == pytest.approx(sum(iou) / 3)
    assert m["fw_iou"] == pytest.approx((2 * iou[0] + 2 * iou[1] + 1 * iou[2]) / 5)
    assert m["confusion"] == conf.tolist()


def test_perfect_prediction_scores_one_and_absent_classes_are_left_out():
    labels = np.array([0, 0, 2, 2, 2])
    m = metrics_from_confusion(confusion_matrix(labels, labels, 4))
    assert m["pixel_acc"] == m["mean_acc"] == m["mean_iou"] == m["fw_iou"] == 1.0
    assert m["per_class_iou"] == [1.0, None, 1.0, None]


def test_confusion_adds_up_over_tiles():
    rng = np.random.default_rng(0)
    target, predicted = rng.integers(0, 4, (2, 64, 64))
    whole = confusion_matrix(predicted, target, 4)
    tiles = confusion_matrix(predicted[:32], target[:32], 4) + confusion_matrix(predicted[32:], target[32:], 4)
    assert np.array_equal(whole, tiles)
