"""Preprocessing, driven by the model card alone: a BGR image becomes the network's input tensor.

Training, evaluation, export parity and the runtime all call these functions, so the network sees
the same tensor for the same image wherever it runs (the way back, logits to a mask, is
``edgeseg.postprocess``). Nothing here imports torch.
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
