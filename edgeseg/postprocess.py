"""Postprocessing, driven by the model card alone: the network's logits become a probability map and a mask.

The probability is resized back to the image's own resolution and thresholded at the card's
threshold; where the card says so, only the largest region is kept. Training's validation and
threshold analysis, eval, export parity and the runtime all make masks here.
"""

from __future__ import annotations

import cv2
import numpy as np

from edgeseg.card import ModelCard
from edgeseg.preprocess import interpolation_flag


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


def largest_contour(mask: np.ndarray) -> tuple[np.ndarray | None, int]:
    """The outer contour (OpenCV points, (K, 1, 2) int32) of the largest region, and the region count."""
    contours, _ = cv2.findContours(mask.view(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    if not contours:
        return None, 0
    return max(contours, key=cv2.contourArea), len(contours)


def inside_contour(mask: np.ndarray, contour: np.ndarray) -> np.ndarray:
    """The part of ``mask`` inside ``contour``: the largest region with its holes, the other regions gone."""
    outline = np.zeros(mask.shape, dtype=np.uint8)
    cv2.drawContours(outline, [contour], 0, 1, thickness=cv2.FILLED)
    return mask & outline.view(bool)


def filled(mask: np.ndarray) -> np.ndarray:
    """The mask with every hole inside its regions filled: each outer contour drawn filled."""
    contours, _ = cv2.findContours(mask.view(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
    out = np.zeros(mask.shape, dtype=np.uint8)
    cv2.drawContours(out, contours, -1, 1, thickness=cv2.FILLED)
    return out.view(bool)


def lesion_mask(probability: np.ndarray, card: ModelCard, threshold: float | None = None, fill_holes: bool = False
                ) -> tuple[np.ndarray, np.ndarray | None, int]:
    """Probability map -> (mask, outer contour of the largest region, region count), as the card says.

    The mask is thresholded and, where the card keeps only the largest region, cut to it. With
    ``fill_holes`` the holes inside the kept region(s) are filled (the contour and count stay as they
    are). Training's validation and threshold analysis, eval, export parity and the runtime all make masks here.
    """
    mask = binarize(probability, card, threshold)
    contour, regions = largest_contour(mask)
    if card.output.keep_largest_region and regions > 1:
        mask, regions = inside_contour(mask, contour), 1
    return (filled(mask) if fill_holes and regions else mask), contour, regions


def closer_look_box(probability: np.ndarray, height: int, width: int, card: ModelCard) -> tuple[int, int, int, int] | None:
    """Where to look again, closer: (x, y, width, height) of a square of the image around its lesion.

    ``probability`` is the first look at the network's resolution, of a (height, width) image. The
    square is centred on the largest region's bounding box, CLOSER_LOOK_SCALE times its larger side
    (at least the network's input side, so a speck is not blown up), shifted to lie inside the image
    (and cut to it, in a frame narrower than the square). None where there is no lesion, or where the
    square would cover more than CLOSER_LOOK_MAX_SHARE of the image: the lesion already fills the
    frame, as in the training crops.
    """
    contour, _ = largest_contour(binarize(probability, card))
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
