"""Postprocessing, driven by the model card alone: the network's logits become a probability map and a mask.

The probability is resized back to the image's own resolution and thresholded at the card's
threshold; where the card says so, only the lesion's region is kept (the largest; of near-equal ones, the most
central: ``lesion_contour``). Training's validation and
threshold analysis, eval, export parity and the runtime all make masks here.
"""

from __future__ import annotations

import cv2
import numpy as np

from edgeseg.core.card import ModelCard
from edgeseg.core.preprocess import interpolation_flag

# Two regions this near in area (the smaller at least this share of the larger) are a near tie, and which is
# larger is for rounding to decide: an INT8 form or another CPU's kernels can swap them. Rather than follow that
# coin toss, the lesion is the one nearer the image's centre, where a dermatoscope frames it; a centre moves by
# a pixel where rounding moves an area by a few percent. On the lite2 default's val image ISIC_0013306 two
# regions 0.89 apart in area swapped under INT8: a 0.77 Dice swing for a form that was otherwise faithful.
NEAR_TIE_AREA_SHARE = 0.75
# The closer look (the Segmenter's ``refine``): a square around the lesion, this many times its larger side...
CLOSER_LOOK_SCALE = 2.0
# ...taken only where that square covers at most this share of the frame (else the lesion already fills it).
CLOSER_LOOK_MAX_SHARE = 0.5


def activate(logits: np.ndarray, card: ModelCard) -> np.ndarray:
    """Network logits -> probabilities, as the card says."""
    if card.output.activation != "sigmoid":
        raise ValueError(f"unsupported output activation {card.output.activation!r} in the model card")
    logits = np.asarray(logits, dtype=np.float32)
    return 1.0 / (1.0 + np.exp(-logits))


def probability_at(probability: np.ndarray, height: int, width: int, card: ModelCard) -> np.ndarray:
    """Resize a (h, w) probability map back to an image's own resolution."""
    if probability.shape == (height, width):
        return probability
    return cv2.resize(probability, (width, height), interpolation=interpolation_flag(card.output.upsample))


def binarize(probability: np.ndarray, card: ModelCard, threshold: float | None = None) -> np.ndarray:
    """Probability map -> boolean mask of the pixels above the card's threshold (or ``threshold``)."""
    return probability > (card.output.threshold if threshold is None else threshold)


def lesion_contour(mask: np.ndarray) -> tuple[np.ndarray | None, int]:
    """The outer contour (OpenCV points, (K, 1, 2) int32) of the lesion's region, and the region count.

    The lesion is the largest region, unless others come near it in area (at least NEAR_TIE_AREA_SHARE of
    it): then it is the one of those whose box is centred nearest the image's centre.
    """
    contours, _ = cv2.findContours(mask.view(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    if not contours:
        return None, 0
    areas = [cv2.contourArea(contour) for contour in contours]
    near_tie = [
        contour for contour, area in zip(contours, areas, strict=True) if area >= NEAR_TIE_AREA_SHARE * max(areas)
    ]
    return min(near_tie, key=lambda contour: distance_to_centre(contour, mask.shape)), len(contours)


def distance_to_centre(contour: np.ndarray, shape: tuple[int, ...]) -> float:
    """Pixels from the centre of the contour's bounding box to the centre of an image of ``shape``."""
    x, y, width, height = cv2.boundingRect(contour)
    return float(np.hypot(x + width / 2 - shape[1] / 2, y + height / 2 - shape[0] / 2))


def inside_contour(mask: np.ndarray, contour: np.ndarray) -> np.ndarray:
    """The part of ``mask`` inside ``contour``: the lesion's region with its holes, the other regions gone."""
    outline = np.zeros(mask.shape, dtype=np.uint8)
    cv2.drawContours(outline, [contour], 0, 1, thickness=cv2.FILLED)
    return mask & outline.view(bool)


def filled(mask: np.ndarray) -> np.ndarray:
    """The mask with every hole inside its regions filled: each outer contour drawn filled."""
    contours, _ = cv2.findContours(mask.view(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
    out = np.zeros(mask.shape, dtype=np.uint8)
    cv2.drawContours(out, contours, -1, 1, thickness=cv2.FILLED)
    return out.view(bool)


def lesion_mask(
    probability: np.ndarray, card: ModelCard, threshold: float | None = None, fill_holes: bool = False
) -> tuple[np.ndarray, np.ndarray | None, int]:
    """Probability map -> (mask, outer contour of the lesion's region, region count), as the card says.

    The mask is thresholded and, where the card keeps only the largest region, cut to the lesion's region
    (``lesion_contour``: the largest, or of near-equal ones the most central). With
    ``fill_holes`` the holes inside the kept region(s) are filled (the contour and count stay as they
    are). Training's validation and threshold analysis, eval, export parity and the runtime all make masks here.
    """
    mask = binarize(probability, card, threshold)
    contour, regions = lesion_contour(mask)
    if card.output.keep_largest_region and contour is not None and regions > 1:
        mask, regions = inside_contour(mask, contour), 1
    return (filled(mask) if fill_holes and regions else mask), contour, regions


def closer_look_box(
    probability: np.ndarray, height: int, width: int, card: ModelCard
) -> tuple[int, int, int, int] | None:
    """Where to look again, closer: (x, y, width, height) of a square of the image around its lesion.

    ``probability`` is the first look at the network's resolution, of a (height, width) image. The
    square is centred on the lesion region's bounding box (``lesion_contour``), CLOSER_LOOK_SCALE times its larger side
    (at least the network's input side, so a speck is not blown up), shifted to lie inside the image
    (and cut to it, in a frame narrower than the square). None where there is no lesion, or where the
    square would cover more than CLOSER_LOOK_MAX_SHARE of the image: the lesion already fills the
    frame, as in the training crops.
    """
    contour, _ = lesion_contour(binarize(probability, card))
    if contour is None:
        return None
    x, y, box_width, box_height = cv2.boundingRect(contour)
    scale_y, scale_x = height / probability.shape[0], width / probability.shape[1]
    side = max(max(box_width * scale_x, box_height * scale_y) * CLOSER_LOOK_SCALE, *card.input_size)
    if side * side > CLOSER_LOOK_MAX_SHARE * height * width:
        return None
    crop_width, crop_height = min(round(side), width), min(round(side), height)
    centre_x, centre_y = (x + box_width / 2) * scale_x, (y + box_height / 2) * scale_y
    left = round(min(max(centre_x - crop_width / 2, 0), width - crop_width))
    top = round(min(max(centre_y - crop_height / 2, 0), height - crop_height))
    return left, top, crop_width, crop_height
