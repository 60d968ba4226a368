"""Lesion-segmentation metrics exactly as the official ISIC challenge scorer computes them.

The scorer (PyPI `isic-challenge-scoring`, `SegmentationScore`) binarises both masks at > 128,
counts one confusion matrix per image at the image's own resolution, scores each image, and
reports the plain mean over images (the macro average). Where a ratio has a zero denominator the
scorer gives the image a "freebie" 1.0: an empty prediction for an empty truth is perfect.

Typical use, with boolean masks at the original image size:

    scores = [image_scores(truth, prediction) for truth, prediction in pairs]
    mean_scores(scores)["threshold_jaccard"]   # the ISIC 2018 Task 1 ranking metric
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import numpy as np

# The scorer's names and order.
METRIC_NAMES = ("accuracy", "sensitivity", "specificity", "jaccard", "threshold_jaccard", "dice")
THRESHOLD_JACCARD = 0.65


@dataclass(frozen=True)
class Confusion:
    """Pixel counts of one image: true/false positives/negatives (lesion is positive)."""

    tp: int
    tn: int
    fp: int
    fn: int


def confusion(truth: np.ndarray, prediction: np.ndarray) -> Confusion:
    """Count the confusion matrix of two boolean masks of the same shape.

    Binarise first (the scorer reads pixels above 128 as lesion; `edgeseg.core.files.read_mask` does the
    same) and bring the prediction back to the truth's resolution.
    """
    for name, mask in (("truth", truth), ("prediction", prediction)):
        if mask.dtype != np.bool_:
            raise TypeError(f"{name} must be a boolean mask, got dtype {mask.dtype}; binarise it first (mask > 128)")
    if truth.shape != prediction.shape:
        raise ValueError(
            f"truth {truth.shape} and prediction {prediction.shape} differ in shape; resize the prediction "
            "to the image's own resolution before scoring"
        )
    tp = int(np.count_nonzero(truth & prediction))
    truth_positive = int(np.count_nonzero(truth))
    predicted_positive = int(np.count_nonzero(prediction))
    fn = truth_positive - tp
    fp = predicted_positive - tp
    tn = truth.size - tp - fn - fp
    return Confusion(tp=tp, tn=tn, fp=fp, fn=fn)


def accuracy(c: Confusion) -> float:
    return (c.tp + c.tn) / (c.tp + c.tn + c.fp + c.fn)


def sensitivity(c: Confusion) -> float:
    if c.tp + c.fn == 0:  # no lesion in the truth: undefined, the scorer's freebie
        return 1.0
    return c.tp / (c.tp + c.fn)


def specificity(c: Confusion) -> float:
    if c.tn + c.fp == 0:  # the truth is all lesion: undefined, the scorer's freebie
        return 1.0
    return c.tn / (c.tn + c.fp)


def jaccard(c: Confusion) -> float:
    if c.tp + c.fp + c.fn == 0:  # empty truth and empty prediction: perfect
        return 1.0
    return c.tp / (c.tp + c.fp + c.fn)


def threshold_jaccard(c: Confusion, threshold: float = THRESHOLD_JACCARD) -> float:
    """Jaccard when it reaches the threshold, else 0: ISIC 2018's "thresholded Jaccard"."""
    value = jaccard(c)
    return value if value >= threshold else 0.0


def dice(c: Confusion) -> float:
    if c.tp + c.fp + c.fn == 0:  # empty truth and empty prediction: perfect
        return 1.0
    return 2 * c.tp / (2 * c.tp + c.fp + c.fn)


def confusion_scores(c: Confusion) -> dict[str, float]:
    """Every metric of one image's confusion matrix, keyed by the scorer's names."""
    return {
        "accuracy": accuracy(c),
        "sensitivity": sensitivity(c),
        "specificity": specificity(c),
        "jaccard": jaccard(c),
        "threshold_jaccard": threshold_jaccard(c),
        "dice": dice(c),
    }


def image_scores(truth: np.ndarray, prediction: np.ndarray) -> dict[str, float]:
    """Every metric of one image, from boolean masks at the image's own resolution."""
    return confusion_scores(confusion(truth, prediction))


def mean_scores(per_image: Iterable[Mapping[str, float]]) -> dict[str, float]:
    """The macro average: each metric's plain mean over images, as the scorer reports it."""
    per_image = list(per_image)
    if not per_image:
        raise ValueError("no images to average")
    return {name: float(np.mean([scores[name] for scores in per_image])) for name in METRIC_NAMES}


# --- intervals --------------------------------------------------------------------------------------

BOOTSTRAP_RESAMPLES = 2000
BOOTSTRAP_SEED = 0  # the same interval for the same scores, every run


@dataclass(frozen=True)
class Interval:
    """A mean over images and its 95% percentile-bootstrap interval (images resampled with replacement)."""

    mean: float
    low: float
    high: float
    images: int

    @property
    def excludes_zero(self) -> bool:
        return self.low > 0 or self.high < 0

    def to_dict(self) -> dict[str, float | int]:
        return {"mean": self.mean, "low": self.low, "high": self.high, "images": self.images}

    def __str__(self) -> str:
        return f"{self.mean:+.4f} [{self.low:+.4f}, {self.high:+.4f}]"


def bootstrap_interval(
    values: Iterable[float], resamples: int = BOOTSTRAP_RESAMPLES, seed: int = BOOTSTRAP_SEED
) -> Interval:
    """The mean of per-image ``values`` and the 2.5th and 97.5th percentiles of the means of ``resamples``
    resamples of the images. For a paired comparison, pass each image's difference between two models."""
    values = np.asarray(list(values), dtype=np.float64)
    if values.size == 0:
        raise ValueError("an interval needs at least one image")
    rng = np.random.default_rng(seed)
    means = values[rng.integers(0, values.size, size=(resamples, values.size))].mean(axis=1)
    low, high = np.percentile(means, [2.5, 97.5])
    return Interval(float(values.mean()), float(low), float(high), int(values.size))


def paired_differences(
    first: Mapping[str, Mapping[str, float]],
    second: Mapping[str, Mapping[str, float]],
    metrics: Iterable[str] = METRIC_NAMES,
) -> dict[str, Interval]:
    """Per metric: the mean over images of (second - first) and its bootstrap interval, on the images both scored.

    ``first`` and ``second`` map an image id to its scores; they must score the same images.
    """
    if set(first) != set(second):
        only = sorted(set(first) ^ set(second))
        raise ValueError(
            f"a paired comparison needs the same images on both sides; {len(only)} differ, e.g. {only[:3]}"
        )
    ids = sorted(first)
    return {name: bootstrap_interval(second[i][name] - first[i][name] for i in ids) for name in metrics}
