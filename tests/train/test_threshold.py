"""Threshold analysis: ISIC-exact scores at the image's own resolution, and the choice of threshold."""

from __future__ import annotations

import numpy as np
import pytest

from edgeseg.core.card import ModelCard
from edgeseg.core.metrics import image_scores, mean_scores
from edgeseg.core.postprocess import probability_at

pytest.importorskip("torch")
from edgeseg.train.threshold import THRESHOLDS, choose_threshold, scores_at, sweep_thresholds


def _case():
    card = ModelCard(input_size=(32, 32))
    rng = np.random.default_rng(3)
    truths = [np.zeros((48, 40), bool) for _ in range(4)]
    for truth in truths:
        truth[10:30, 8:28] = True
    probabilities = []
    for truth in truths:
        small = probability_at(truth.astype(np.float32), 32, 32, card)  # a blurred truth at network size
        probabilities.append(np.clip(small * 0.7 + rng.random((32, 32)) * 0.3, 0, 1).astype(np.float32))
    return card, np.stack(probabilities), truths


def test_scores_at_equal_metrics_computed_by_hand():
    card, probabilities, truths = _case()
    expected = mean_scores(
        image_scores(t, probability_at(p, *t.shape, card) > 0.4) for p, t in zip(probabilities, truths, strict=True)
    )
    assert scores_at(probabilities, truths, card, 0.4) == expected


def test_sweep_picks_the_best_thresholded_jaccard():
    card, probabilities, truths = _case()
    sweep = sweep_thresholds(probabilities, truths, card)
    assert sweep.thresholds == THRESHOLDS
    best = max(sweep.means["threshold_jaccard"])
    assert sweep.means["threshold_jaccard"][THRESHOLDS.index(sweep.chosen)] == best
    assert sweep.means["dice"][THRESHOLDS.index(0.4)] == pytest.approx(
        scores_at(probabilities, truths, card, 0.4)["dice"]
    )
    assert sum(sweep.histogram) == probabilities.size


def test_flat_curve_keeps_the_natural_threshold():
    thresholds = (0.3, 0.4, 0.5, 0.6)
    flat = {"threshold_jaccard": [0.8] * 4, "jaccard": [0.8] * 4}
    assert choose_threshold(thresholds, flat) == 0.5
    assert choose_threshold(thresholds, {"threshold_jaccard": [0.8, 0.9, 0.8, 0.8], "jaccard": [0.8] * 4}) == 0.4
