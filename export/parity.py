"""Parity: the same images through PyTorch fp32 and through each exported form, compared as data.

Every form runs behind the runtime's Segmenter, so preprocessing, the upsampling of the probability
map back to each image's own resolution and the threshold are the card's, identical for all; only the
backend differs. Per image we keep a handful of numbers (never the maps), so any number of forms can
be checked on full-size ISIC images in little memory.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field

import numpy as np

from edgeseg.core.files import read_image, read_mask
from edgeseg.core.metrics import image_scores
from edgeseg.core.progress import progress as track
from edgeseg.core.segmenter import Pending, Segmenter

PRECISIONS = ("fp32", "fp16", "int8")
# A rule on a mean over images (|delta Dice|, |delta thresholded Jaccard|, confident pixels flipped of all)
# judges only from this many images: over a handful, rounding on one image decides it (4 synthetic images
# failed INT8 on an AVX-512 VNNI CPU and passed on an AVX2 one). Below it the rule is reported, not judged;
# the per-image rules and NaN/Inf judge any number of images.
MEAN_RULES_MIN_IMAGES = 20


@dataclass(frozen=True)
class Tolerances:
    """The gate: what a user of the mask would notice, judged per precision (benchmarks/README.md says why).

    fp32 forms must match the reference in probability. Reduced precisions are judged by the mask:
    against the ground truth over all parity images (|delta Dice|, |delta thresholded Jaccard|), per
    image (no image may lose more Dice than ``*_image_dice_loss``), and on the pixels the reference is
    sure of (|p - threshold| >= ``confident_margin``), of which only a tiny share may flip, overall and
    in any one image. Pixels near the threshold that flip are rounding: reported, never failed on alone.
    NaN or Inf anywhere fails every form.
    """

    fp32_max_abs_probability: float = 1e-4
    confident_margin: float = 0.1
    fp16_confident_flips: float = 0.0005
    fp16_image_confident_flips: float = 0.005
    fp16_abs_delta_dice: float = 0.002
    fp16_abs_delta_threshold_jaccard: float = 0.005
    fp16_image_dice_loss: float = 0.02
    int8_confident_flips: float = 0.002
    int8_image_confident_flips: float = 0.05
    int8_abs_delta_dice: float = 0.005
    int8_abs_delta_threshold_jaccard: float = 0.01
    int8_image_dice_loss: float = 0.1

    def to_dict(self) -> dict[str, float]:
        return asdict(self)

    def for_precision(self, precision: str) -> dict[str, float]:
        """The reduced-precision rules of ``precision`` ("fp16" or "int8"), without the prefix."""
        prefix = f"{precision}_"
        return {name[len(prefix) :]: value for name, value in self.to_dict().items() if name.startswith(prefix)}


# What each rule means, for `edgeseg export --help` (one option per field of Tolerances).
TOLERANCE_HELP = {
    "fp32_max_abs_probability": "fp32 forms: the largest |probability difference| to the reference.",
    "confident_margin": "A pixel is confident where |reference probability - threshold| >= this.",
    "confident_flips": "share of all confident pixels (every parity image) whose mask value may flip.",
    "image_confident_flips": "share of one image's confident pixels that may flip.",
    "abs_delta_dice": "|change in mean Dice| against the ground truth.",
    "abs_delta_threshold_jaccard": "|change in mean thresholded Jaccard| against the ground truth.",
    "image_dice_loss": "Dice any one image may lose against the reference.",
}


def tolerance_help(field_name: str) -> str:
    if field_name in TOLERANCE_HELP:
        return TOLERANCE_HELP[field_name]
    precision, rule = field_name.split("_", 1)
    return f"{precision.upper()} forms: {TOLERANCE_HELP[rule]}"


@dataclass(frozen=True)
class ImageComparison:
    """One image: a form's prediction against the reference's, and both against the ground truth."""

    image: str
    max_abs_probability: float
    mean_abs_probability: float
    flipped_fraction: float  # share of pixels whose mask value differs from the reference's
    mask_iou: float  # IoU of the form's mask with the reference's; both empty counts as 1.0
    dice: float
    threshold_jaccard: float
    reference_dice: float
    reference_threshold_jaccard: float
    finite: bool
    empty: bool
    reference_empty: bool
    confident_pixels: int = 0  # pixels with |reference probability - threshold| >= the margin
    confident_flips: int = 0  # of those, the ones whose mask value differs from the reference's

    @property
    def confident_flip_share(self) -> float:
        return self.confident_flips / self.confident_pixels if self.confident_pixels else 0.0


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
    confident_flip_share: float = 0.0  # over every confident pixel of every image
    max_image_confident_flip_share: float = 0.0
    max_image_confident_flip_image: str = ""
    largest_dice_loss: float = 0.0  # the most Dice any one image lost against the reference (0 if none lost)
    largest_dice_loss_image: str = ""
    breaches: list[str] = field(default_factory=list)
    unjudged: list[str] = field(default_factory=list)  # rules on a mean, left unjudged on too few images
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


def compare_image(
    image: str,
    reference_probability: np.ndarray,
    reference_mask: np.ndarray,
    probability: np.ndarray,
    mask: np.ndarray,
    truth: np.ndarray,
    threshold: float = 0.5,
    margin: float = Tolerances.confident_margin,
) -> ImageComparison:
    """Compare a form's probability and mask for one image (at its own resolution) with the reference's."""
    finite = bool(np.isfinite(probability).all())
    difference = np.abs(np.nan_to_num(probability, nan=np.inf) - reference_probability)
    scores = image_scores(truth, mask)
    reference_scores = image_scores(truth, reference_mask)
    confident = np.abs(reference_probability - threshold) >= margin
    return ImageComparison(
        confident_pixels=int(np.count_nonzero(confident)),
        confident_flips=int(np.count_nonzero(confident & (mask != reference_mask))),
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


def summarize(
    form: str, precision: str, rows: Sequence[ImageComparison], tolerances: Tolerances, simulation: bool = False
) -> FormParity:
    """Aggregate per-image comparisons and apply the gate for the form's precision."""
    if precision not in PRECISIONS:
        raise ValueError(f"unknown precision {precision!r}; one of {PRECISIONS}")
    if not rows:
        raise ValueError(f"{form}: no parity images were compared")
    worst_probability = max(rows, key=lambda row: row.max_abs_probability)
    worst_iou = min(rows, key=lambda row: row.mask_iou)
    worst_dice = max(rows, key=lambda row: abs(row.dice - row.reference_dice))
    worst_loss = max(rows, key=lambda row: row.reference_dice - row.dice)
    worst_flips = max(rows, key=lambda row: row.confident_flip_share)
    confident = sum(row.confident_pixels for row in rows)
    dice, reference_dice = _mean(rows, "dice"), _mean(rows, "reference_dice")
    threshold_jaccard, reference_threshold_jaccard = (
        _mean(rows, "threshold_jaccard"),
        _mean(rows, "reference_threshold_jaccard"),
    )
    parity = FormParity(
        form=form,
        precision=precision,
        images=len(rows),
        max_abs_probability=worst_probability.max_abs_probability,
        max_abs_probability_image=worst_probability.image,
        mean_abs_probability=_mean(rows, "mean_abs_probability"),
        flipped_fraction=_mean(rows, "flipped_fraction"),
        mean_mask_iou=_mean(rows, "mask_iou"),
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
        confident_flip_share=sum(row.confident_flips for row in rows) / confident if confident else 0.0,
        max_image_confident_flip_share=worst_flips.confident_flip_share,
        max_image_confident_flip_image=worst_flips.image,
        largest_dice_loss=max(0.0, worst_loss.reference_dice - worst_loss.dice),
        largest_dice_loss_image=worst_loss.image,
        simulation=simulation,
    )
    parity.breaches = breaches(parity, tolerances)
    parity.unjudged = unjudged_rules(parity)
    return parity


def _mean(rows: Sequence[ImageComparison], name: str) -> float:
    return float(np.mean([getattr(row, name) for row in rows]))


@dataclass(frozen=True)
class RuleCheck:
    """One rule of the gate applied to a form: the form's figure against the rule's limit."""

    rule: str  # what the limit bounds ("Dice lost on one image")
    label: str  # the figure, as a verdict line names it ("worst image dDice")
    shown: str  # the figure as shown (signed where the table signs it)
    value: float  # what the rule compares with its limit
    limit: float
    breach: str  # the breach, said in full: the figure, where, and the limit it passed

    @property
    def passed(self) -> bool:
        return self.value <= self.limit  # False for NaN

    @property
    def share_of_limit(self) -> float:
        """How near the figure came to the limit: 1.0 is at it."""
        if self.limit > 0:
            return self.value / self.limit
        return 0.0 if self.value <= 0 else math.inf


def rule_checks(parity: FormParity, tolerances: Tolerances) -> list[RuleCheck]:
    """Every rule the form is judged by (the rules on a mean only from MEAN_RULES_MIN_IMAGES images), applied."""
    if parity.precision == "fp32":
        value, limit = parity.max_abs_probability, tolerances.fp32_max_abs_probability
        return [
            RuleCheck(
                "max |delta probability|",
                "max |dp|",
                f"{value:.3g}",
                value,
                limit,
                f"max |delta probability| {value:.3g} > {limit:g} on {parity.max_abs_probability_image}",
            )
        ]
    rules = tolerances.for_precision(parity.precision)
    margin = f"|p - threshold| >= {tolerances.confident_margin:g}"
    flips, loss = parity.max_image_confident_flip_share, parity.largest_dice_loss
    checks = [
        RuleCheck(
            "confident pixels flipped in one image",
            "worst image confident flips",
            f"{flips:.4f}",
            flips,
            rules["image_confident_flips"],
            f"confident pixels flipped in one image: {flips:.4f} on "
            f"{parity.max_image_confident_flip_image} > {rules['image_confident_flips']:g}",
        ),
        RuleCheck(
            "Dice lost on one image",
            "worst image dDice",
            f"{-loss:.4f}",
            loss,
            rules["image_dice_loss"],
            f"Dice lost on one image {loss:.4f} on {parity.largest_dice_loss_image} > {rules['image_dice_loss']:g}",
        ),
    ]
    if parity.images >= MEAN_RULES_MIN_IMAGES:
        checks += mean_rule_checks(parity, rules, margin)
    return checks


def mean_rule_checks(parity: FormParity, rules: dict[str, float], margin: str) -> list[RuleCheck]:
    """The rules on a mean over the parity images (judged from MEAN_RULES_MIN_IMAGES images)."""
    share, dice, jaccard = parity.confident_flip_share, parity.delta_dice, parity.delta_threshold_jaccard
    return [
        RuleCheck(
            f"confident pixels flipped ({margin}) of all",
            "confident flips",
            f"{share:.5f}",
            share,
            rules["confident_flips"],
            f"confident pixels flipped ({margin}): {share:.5f} of all > {rules['confident_flips']:g}",
        ),
        RuleCheck(
            "|delta Dice| against the truth",
            "dDice",
            f"{dice:+.4f}",
            abs(dice),
            rules["abs_delta_dice"],
            f"|delta Dice| against the truth {abs(dice):.4f} (largest change {parity.largest_dice_change:+.4f} "
            f"on {parity.largest_dice_change_image}) > {rules['abs_delta_dice']:g}",
        ),
        RuleCheck(
            "|delta thresholded Jaccard| against the truth",
            "dThrJ",
            f"{jaccard:+.4f}",
            abs(jaccard),
            rules["abs_delta_threshold_jaccard"],
            f"|delta thresholded Jaccard| against the truth "
            f"{abs(jaccard):.4f} > {rules['abs_delta_threshold_jaccard']:g}",
        ),
    ]


def breaches(parity: FormParity, tolerances: Tolerances) -> list[str]:
    """Every rule the form breaks, each naming the form, the rule, the number and the image behind it."""
    found = []
    if parity.nonfinite_images:
        found.append(
            f"{parity.form}: NaN or Inf in the probability of {len(parity.nonfinite_images)} image(s), "
            f"first {parity.nonfinite_images[0]}"
        )
    return found + [f"{parity.form}: {check.breach}" for check in rule_checks(parity, tolerances) if not check.passed]


def unjudged_rules(parity: FormParity) -> list[str]:
    """The rules on a mean this form was not judged by, because too few images were compared, and why."""
    if parity.precision == "fp32" or parity.images >= MEAN_RULES_MIN_IMAGES:
        return []
    return [
        f"{parity.form}: the rules on a mean over images (confident pixels flipped of all, |delta Dice|, "
        f"|delta thresholded Jaccard|) were not judged: {parity.images} parity image(s), and a mean needs at "
        f"least {MEAN_RULES_MIN_IMAGES}; the per-image rules were. Pass --data DIR with more images."
    ]


def run_parity(
    reference: Segmenter,
    candidates: Mapping[str, tuple[Segmenter, str]],
    samples: Sequence,
    tolerances: Tolerances,
    progress: bool = True,
    simulation: Sequence[str] = (),
) -> dict[str, FormParity]:
    """Segment every sample with the ``reference`` Segmenter and with each candidate's, and compare.

    ``candidates`` maps a form name to (segmenter, precision). Every Segmenter carries the same card,
    so only the backend differs.
    """
    # Parity compares the network of each form; the closer look (refine) is that network again on a crop.
    for segmenter in (reference, *(segmenter for segmenter, _ in candidates.values())):
        segmenter.refine = False
    # The reference on every image first, then the exported forms: alternating PyTorch and onnxruntime
    # per image makes each wait on the other's thread pool (10x slower on a small CPU).
    reference_logits = logits_of_every_image(reference, samples, progress)
    rows: dict[str, list[ImageComparison]] = {name: [] for name in candidates}
    label = "parity: " + ", ".join(candidates)
    for sample, logits in track(
        list(zip(samples, reference_logits, strict=True)), desc=label, unit="image", enabled=progress, leave=False
    ):
        bgr = read_image(sample.image)
        truth = read_truth(sample, bgr.shape[:2])
        expected = reference.finish(Pending(bgr.shape[:2], logits=logits))
        for name, (segmenter, _) in candidates.items():
            got = segmenter.segment(bgr)
            rows[name].append(
                compare_image(
                    sample.id,
                    expected.probability,
                    expected.mask,
                    got.probability,
                    got.mask,
                    truth,
                    reference.card.output.threshold,
                    tolerances.confident_margin,
                )
            )
    return {
        name: summarize(name, precision, rows[name], tolerances, simulation=name in simulation)
        for name, (_, precision) in candidates.items()
    }


def logits_of_every_image(segmenter: Segmenter, samples: Sequence, progress: bool) -> list[np.ndarray]:
    """The network's logits for each sample's image, at network size (small): finished per image later, as
    segment() would."""
    logits = []
    desc = f"parity: reference ({segmenter.backend.name})"
    for sample in track(samples, desc=desc, unit="image", enabled=progress, leave=False):
        pending = segmenter.infer(segmenter.prepare(read_image(sample.image)))
        if pending.logits is None:
            raise RuntimeError(f"{sample.image}: the {segmenter.backend.name} backend gave no logits")
        logits.append(pending.logits.copy())  # a backend may hand back a buffer it reuses
    return logits


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
