"""Preprocessing, driven by the model card alone: a BGR image becomes the network's input tensor.

Training, evaluation, export parity and the runtime all call these functions, so the network sees
the same tensor for the same image wherever it runs (the way back, logits to a mask, is
``edgeseg.core.postprocess``). Nothing here imports torch.
"""

from __future__ import annotations

import cv2
import numpy as np

from edgeseg.core.card import ModelCard
from edgeseg.core.errors import EdgesegError

INTERPOLATIONS = {
    "area": cv2.INTER_AREA,
    "linear": cv2.INTER_LINEAR,
    "cubic": cv2.INTER_CUBIC,
    "nearest": cv2.INTER_NEAREST,
}


class FrameError(EdgesegError, ValueError):
    """An image the segmenter cannot take (empty, an unknown layout or a pixel type with no clear scale)."""


def as_bgr8(image: np.ndarray) -> np.ndarray:
    """Any frame a camera, pipeline or caller may hand over, as BGR uint8; the same array when it already is.

    Grey and BGRA become BGR; 16-bit becomes 8-bit by its top byte (0-65535 onto 0-255). Float
    frames are refused: whether they run 0-1 or 0-255 cannot be told from the data.
    """
    if not isinstance(image, np.ndarray):
        raise FrameError(f"expected an image as a numpy array (H, W, 3) BGR uint8, got {type(image).__name__}")
    if image.ndim not in (2, 3) or image.size == 0:
        raise FrameError(f"expected an image of shape (H, W, 3) BGR, got an array of shape {image.shape}")
    if image.dtype == np.uint16:
        image = (image >> 8).astype(np.uint8)
    elif image.dtype != np.uint8:
        raise FrameError(
            f"expected 8- or 16-bit pixels, got {image.dtype}: scale the image to uint8 0-255 first "
            "(e.g. (image * 255).astype(np.uint8) for floats in 0-1)"
        )
    channels = 1 if image.ndim == 2 else image.shape[2]
    if channels == 3:
        return image
    if channels == 1:
        return cv2.cvtColor(image, cv2.COLOR_GRAY2BGR)
    if channels == 4:
        return cv2.cvtColor(image, cv2.COLOR_BGRA2BGR)
    raise FrameError(f"expected 1 (grey), 3 (BGR) or 4 (BGRA) channels, got {channels} (shape {image.shape})")


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
