"""Threshold analysis (the paper's section 5.1): how Dice and thresholded Jaccard move with the threshold.

Every score here is ISIC-exact: the probability map is resized back to the image's own resolution
and turned into a mask as the runtime does it (``edgeseg.core.postprocess.probability_at`` and
``lesion_mask``: threshold, then the card's largest-region rule), and scored per image with
``edgeseg.core.metrics``; means are over images.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from edgeseg.core.card import ModelCard
from edgeseg.core.metrics import METRIC_NAMES, image_scores, mean_scores
from edgeseg.core.postprocess import lesion_mask, probability_at

THRESHOLDS = tuple(round(0.05 * step, 2) for step in range(1, 20))  # 0.05 .. 0.95
HISTOGRAM_BINS = 50


@dataclass(frozen=True)
class ThresholdSweep:
    thresholds: tuple[float, ...]
    means: dict[str, list[float]]  # metric name -> mean over images at each threshold
    histogram: list[int]  # counts of predicted probabilities (network resolution) in HISTOGRAM_BINS equal bins
    chosen: float

    def rows(self) -> list[dict[str, float]]:
        return [
            {"threshold": threshold, **{name: values[index] for name, values in self.means.items()}}
            for index, threshold in enumerate(self.thresholds)
        ]


def at_truth_size(probability: np.ndarray, truth: np.ndarray, card: ModelCard) -> np.ndarray:
    """The probability map resized to its (h, w) truth mask's own resolution."""
    height, width = truth.shape
    return probability_at(probability, height, width, card)


def scores_at(
    probabilities: np.ndarray, truths: list[np.ndarray], card: ModelCard, threshold: float
) -> dict[str, float]:
    """Mean ISIC metrics of (N, h, w) probability maps at network resolution against truths at their own."""
    per_image = [
        image_scores(truth, lesion_mask(at_truth_size(probability, truth, card), card, threshold)[0])
        for probability, truth in zip(probabilities, truths, strict=True)
    ]
    return mean_scores(per_image)


def sweep_thresholds(
    probabilities: np.ndarray, truths: list[np.ndarray], card: ModelCard, thresholds: tuple[float, ...] = THRESHOLDS
) -> ThresholdSweep:
    per_threshold: list[list[dict[str, float]]] = [[] for _ in thresholds]
    for probability, truth in zip(probabilities, truths, strict=True):
        upsampled = at_truth_size(probability, truth, card)  # once per image, not per threshold
        for index, threshold in enumerate(thresholds):
            per_threshold[index].append(image_scores(truth, lesion_mask(upsampled, card, threshold)[0]))
    means_by_threshold = [mean_scores(scores) for scores in per_threshold]
    means = {name: [means[name] for means in means_by_threshold] for name in METRIC_NAMES}
    histogram, _ = np.histogram(probabilities, bins=HISTOGRAM_BINS, range=(0.0, 1.0))
    return ThresholdSweep(tuple(thresholds), means, histogram.tolist(), choose_threshold(tuple(thresholds), means))


def choose_threshold(thresholds: tuple[float, ...], means: dict[str, list[float]]) -> float:
    """The threshold of the best mean thresholded Jaccard (ISIC 2018's ranking metric); then Jaccard;
    then the one nearest 0.5, so a flat curve keeps the natural threshold."""
    best = max(
        range(len(thresholds)),
        key=lambda i: (
            round(means["threshold_jaccard"][i], 6),
            round(means["jaccard"][i], 6),
            -abs(thresholds[i] - 0.5),
        ),
    )
    return float(thresholds[best])
