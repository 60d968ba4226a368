"""Parity: the same images through PyTorch fp32 and through each exported form, compared as data.

Every form runs behind the runtime's Segmenter, so preprocessing, the upsampling of the probability
map back to each image's own resolution and the threshold are the card's, identical for all; only the
backend differs. Per image we keep a handful of numbers (never the maps), so any number of forms can
be checked on full-size ISIC images in little memory.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field

import numpy as np

from edgeseg.files import read_image, read_mask
from edgeseg.metrics import image_scores
from edgeseg.segmenter import Pending, Segmenter

PRECISIONS = ("fp32", "fp16", "int8")


@dataclass(frozen=True)
class Tolerances:
    """The gate. fp32 forms must match PyTorch in probability; reduced precisions in masks and Dice."""

    fp32_max_abs_probability: float = 1e-4
    fp16_mean_mask_iou: float = 0.995
    fp16_min_mask_iou: float = 0.98
    fp16_abs_delta_dice: float = 0.002
    int8_mean_mask_iou: float = 0.98
    int8_abs_delta_dice: float = 0.01

    def to_dict(self) -> dict[str, float]:
        return asdict(self)


@dataclass(frozen=True)
class ImageComparison:
    """One image: a form's prediction against PyTorch's, and both against the ground truth."""

    image: str
    max_abs_probability: float
    mean_abs_probability: float
    flipped_fraction: float  # share of pixels whose mask value differs from PyTorch's
    mask_iou: float  # IoU of the form's mask with PyTorch's; both empty counts as 1.0
    dice: float
    threshold_jaccard: float
    reference_dice: float
    reference_threshold_jaccard: float
    finite: bool
    empty: bool
    reference_empty: bool


@dataclass
class FormParity:
    """A form's parity statistics over all images, and the gate's verdict."""

    form: str
    precision: str
    images: int
    max_abs_probability: float
    max_abs_probability_image: str
    mean_abs_probability: float
    flipped_fraction: float
    mean_mask_iou: float
    min_mask_iou: float
    min_mask_iou_image: str
    dice: float
    threshold_jaccard: float
    reference_dice: float
    reference_threshold_jaccard: float
    delta_dice: float
    delta_threshold_jaccard: float
    largest_dice_change: float
    largest_dice_change_image: str
    nonfinite_images: list[str]
    empty_masks: list[str]
    reference_empty_masks: int
    breaches: list[str] = field(default_factory=list)
    simulation: bool = False

    @property
    def passed(self) -> bool:
        return not self.breaches

    def to_dict(self) -> dict:
        data = asdict(self)
        data["passed"] = self.passed
        return data


def mask_iou(a: np.ndarray, b: np.ndarray) -> float:
    union = np.count_nonzero(a | b)
    if union == 0:
        return 1.0
    return np.count_nonzero(a & b) / union


def compare_image(image: str, reference_probability: np.ndarray, reference_mask: np.ndarray,
                  probability: np.ndarray, mask: np.ndarray, truth: np.ndarray) -> ImageComparison:
    """Compare a form's probability and mask for one image (at its own resolution) with PyTorch's."""
    finite = bool(np.isfinite(probability).all())
    difference = np.abs(np.nan_to_num(probability, nan=np.inf) - reference_probability)
    scores = image_scores(truth, mask)
    reference_scores = image_scores(truth, reference_mask)
    return ImageComparison(
        image=image,
        max_abs_probability=float(difference.max()),
        mean_abs_probability=float(difference.mean()),
        flipped_fraction=float(np.count_nonzero(mask != reference_mask) / mask.size),
        mask_iou=float(mask_iou(mask, reference_mask)),
        dice=scores["dice"],
        threshold_jaccard=scores["threshold_jaccard"],
        reference_dice=reference_scores["dice"],
        reference_threshold_jaccard=reference_scores["threshold_jaccard"],
        finite=finite,
        empty=not mask.any(),
        reference_empty=not reference_mask.any(),
    )


def summarize(form: str, precision: str, rows: Sequence[ImageComparison], tolerances: Tolerances,
              simulation: bool = False) -> FormParity:
    """Aggregate per-image comparisons and apply the gate for the form's precision."""
    if precision not in PRECISIONS:
        raise ValueError(f"unknown precision {precision!r}; one of {PRECISIONS}")
    if not rows:
        raise ValueError(f"{form}: no parity images were compared")
    worst_probability = max(rows, key=lambda row: row.max_abs_probability)
    worst_iou = min(rows, key=lambda row: row.mask_iou)
    worst_dice = max(rows, key=lambda row: abs(row.dice - row.reference_dice))
    dice = float(np.mean([row.dice for row in rows]))
    reference_dice = float(np.mean([row.reference_dice for row in rows]))
    threshold_jaccard = float(np.mean([row.threshold_jaccard for row in rows]))
    reference_threshold_jaccard = float(np.mean([row.reference_threshold_jaccard for row in rows]))
    parity = FormParity(
        form=form,
        precision=precision,
        images=len(rows),
        max_abs_probability=worst_probability.max_abs_probability,
        max_abs_probability_image=worst_probability.image,
        mean_abs_probability=float(np.mean([row.mean_abs_probability for row in rows])),
        flipped_fraction=float(np.mean([row.flipped_fraction for row in rows])),
        mean_mask_iou=float(np.mean([row.mask_iou for row in rows])),
        min_mask_iou=worst_iou.mask_iou,
        min_mask_iou_image=worst_iou.image,
        dice=dice,
        threshold_jaccard=threshold_jaccard,
        reference_dice=reference_dice,
        reference_threshold_jaccard=reference_threshold_jaccard,
        delta_dice=dice - reference_dice,
        delta_threshold_jaccard=threshold_jaccard - reference_threshold_jaccard,
        largest_dice_change=worst_dice.dice - worst_dice.reference_dice,
        largest_dice_change_image=worst_dice.image,
        nonfinite_images=[row.image for row in rows if not row.finite],
        empty_masks=[row.image for row in rows if row.empty],
        reference_empty_masks=sum(row.reference_empty for row in rows),
        simulation=simulation,
    )
    parity.breaches = breaches(parity, tolerances)
    return parity


def breaches(parity: FormParity, tolerances: Tolerances) -> list[str]:
    """Every tolerance the form breaks, each naming the form, the number and the image behind it."""
    name = parity.form
    found = []
    if parity.nonfinite_images:
        found.append(f"{name}: NaN or Inf in the probability of {len(parity.nonfinite_images)} image(s), "
                     f"first {parity.nonfinite_images[0]}")
    worst_iou = f"lowest {parity.min_mask_iou:.4f} on {parity.min_mask_iou_image}"
    worst_dice = f"largest change {parity.largest_dice_change:+.4f} on {parity.largest_dice_change_image}"
    if parity.precision == "fp32":
        if not parity.max_abs_probability <= tolerances.fp32_max_abs_probability:
            found.append(f"{name}: max |delta probability| {parity.max_abs_probability:.3g} > "
                         f"{tolerances.fp32_max_abs_probability:g} on {parity.max_abs_probability_image}")
        return found
    if parity.precision == "fp16":
        mean_iou, min_iou, delta_dice = (tolerances.fp16_mean_mask_iou, tolerances.fp16_min_mask_iou,
                                         tolerances.fp16_abs_delta_dice)
    else:
        mean_iou, min_iou, delta_dice = tolerances.int8_mean_mask_iou, None, tolerances.int8_abs_delta_dice
    if not parity.mean_mask_iou >= mean_iou:
        found.append(f"{name}: mean mask IoU with the reference {parity.mean_mask_iou:.4f} < {mean_iou:g} ({worst_iou})")
    if min_iou is not None and not parity.min_mask_iou >= min_iou:
        found.append(f"{name}: min mask IoU with the reference {parity.min_mask_iou:.4f} < {min_iou:g} "
                     f"on {parity.min_mask_iou_image}")
    if not abs(parity.delta_dice) <= delta_dice:
        found.append(f"{name}: |delta Dice| {abs(parity.delta_dice):.4f} > {delta_dice:g} ({worst_dice})")
    return found


def run_parity(reference: Segmenter, candidates: Mapping[str, tuple[Segmenter, str]], samples: Sequence,
               tolerances: Tolerances, progress: bool = True, simulation: Sequence[str] = ()) -> dict[str, FormParity]:
    """Segment every sample with the ``reference`` Segmenter and with each candidate's, and compare.

    ``candidates`` maps a form name to (segmenter, precision). Every Segmenter carries the same card,
    so only the backend differs.
    """
    from tqdm import tqdm

    # The reference on every image first, then the exported forms: alternating PyTorch and onnxruntime
    # per image makes each wait on the other's thread pool (10x slower on a small CPU). The reference
    # is kept as logits at network size (small) and finished per image below, as segment() would.
    reference_logits = [
        reference.infer(reference.prepare(read_image(sample.image))).logits.copy()
        for sample in tqdm(samples, desc=f"parity: reference ({reference.backend.name})", unit="image",
                           disable=not progress, file=sys.stderr, leave=False)
    ]
    rows: dict[str, list[ImageComparison]] = {name: [] for name in candidates}
    label = "parity: " + ", ".join(candidates)
    for sample, logits in tqdm(list(zip(samples, reference_logits)), desc=label, unit="image", disable=not progress,
                               file=sys.stderr, leave=False):
        bgr = read_image(sample.image)
        truth = read_truth(sample, bgr.shape[:2])
        expected = reference.finish(Pending(bgr.shape[:2], logits=logits))
        for name, (segmenter, _) in candidates.items():
            got = segmenter.segment(bgr)
            rows[name].append(compare_image(sample.id, expected.probability, expected.mask, got.probability, got.mask, truth))
    return {
        name: summarize(name, precision, rows[name], tolerances, simulation=name in simulation)
        for name, (_, precision) in candidates.items()
    }


def read_truth(sample, shape: tuple[int, int]) -> np.ndarray:
    truth = read_mask(sample.mask)
    if truth.shape != tuple(shape):
        raise ValueError(
            f"{sample.mask}: mask is {truth.shape[1]}x{truth.shape[0]} but its image {sample.image.name} is "
            f"{shape[1]}x{shape[0]}; masks must match their image's size (check with `edgeseg data check`)"
        )
    return truth


def finite_or_none(value: float) -> float | None:
    """JSON has no NaN or Infinity: write null for them."""
    return value if isinstance(value, (int, float)) and math.isfinite(value) else None
