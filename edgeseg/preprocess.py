"""Preprocessing and postprocessing, driven by the model card alone.

Training, evaluation, export parity and the runtime all call these functions, so the network sees
the same tensor for the same image wherever it runs. Nothing here imports torch.
"""

from __future__ import annotations

import cv2
import numpy as np

from edgeseg.card import ModelCard

INTERPOLATIONS = {
    "area": cv2.INTER_AREA,
    "linear": cv2.INTER_LINEAR,
    "cubic": cv2.INTER_CUBIC,
    "nearest": cv2.INTER_NEAREST,
}


def interpolation_flag(name: str) -> int:
    try:
        return INTERPOLATIONS[name]
    except KeyError:
        raise ValueError(f"unknown interpolation {name!r}; the card may use {sorted(INTERPOLATIONS)}") from None


def resize_to_input(bgr: np.ndarray, card: ModelCard) -> np.ndarray:
    """Resize a BGR uint8 image to the card's input size (the geometric part of preprocessing)."""
    if card.preprocessing.resize != "stretch":
        raise ValueError(f"unsupported resize mode {card.preprocessing.resize!r} in the model card")
    height, width = card.input_size
    if bgr.shape[:2] == (height, width):
        return bgr
    return cv2.resize(bgr, (width, height), interpolation=interpolation_flag(card.preprocessing.interpolation))


def normalize(resized_bgr: np.ndarray, card: ModelCard, out: np.ndarray | None = None) -> np.ndarray:
    """Turn a resized BGR uint8 image (H, W, 3) into the network's float32 CHW tensor.

    ``out`` (3, H, W) float32 may be given to reuse a buffer across frames.
    """
    prep = card.preprocessing
    if resized_bgr.ndim != 3 or resized_bgr.shape[2] != 3:
        raise ValueError(f"expected a 3-channel BGR image, got shape {resized_bgr.shape}")
    channels = resized_bgr[:, :, ::-1] if prep.color_order == "RGB" else resized_bgr
    # One multiply-add per pixel: (x * scale - mean) / std == x * (scale / std) - mean / std.
    gain = (prep.scale / np.asarray(prep.std, dtype=np.float32)).astype(np.float32)
    offset = (np.asarray(prep.mean, dtype=np.float32) / np.asarray(prep.std, dtype=np.float32)).astype(np.float32)
    if out is None:
        out = np.empty((3, *resized_bgr.shape[:2]), dtype=np.float32)
    for channel in range(3):
        np.multiply(channels[:, :, channel], gain[channel], out=out[channel], casting="unsafe")
        out[channel] -= offset[channel]
    return out


def preprocess(bgr: np.ndarray, card: ModelCard) -> np.ndarray:
    """BGR uint8 image of any size -> float32 tensor (1, 3, H, W) at the card's input size."""
    return normalize(resize_to_input(bgr, card), card)[None]


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


def lesion_mask(probability: np.ndarray, card: ModelCard, threshold: float | None = None
                ) -> tuple[np.ndarray, np.ndarray | None, int]:
    """Probability map -> (mask, outer contour of the largest region, region count), as the card says.

    The mask is thresholded and, where the card keeps only the largest region, cut to it. Training's
    validation and threshold analysis, eval, export parity and the runtime all make masks here.
    """
    mask = binarize(probability, card, threshold)
    contour, regions = largest_contour(mask)
    if card.output.keep_largest_region and regions > 1:
        return inside_contour(mask, contour), contour, 1
    return mask, contour, regions
