"""The Segmenter: one BGR image in; probability, mask, contour, measurements and stage timings out.

Preprocessing and thresholding come from ``edgeseg.preprocess`` driven by the model card, so the
runtime feeds the network exactly what training and export fed it.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field

import cv2
import numpy as np

from edgeseg.card import ModelCard
from edgeseg.preprocess import activate, binarize, normalize, probability_at, resize_to_input
from edgeseg.runtime.backends import Backend, open_backend
from edgeseg.runtime.measure import Measurements, largest_contour, measure


@dataclass
class Segmentation:
    probability: np.ndarray  # (H, W) float32 lesion probability at the image's own resolution
    mask: np.ndarray  # (H, W) bool, after post-processing (see Segmenter)
    contour: np.ndarray | None  # outer contour of the largest lesion region (OpenCV points), None if no lesion
    measurements: Measurements
    timings_ms: dict[str, float] = field(default_factory=dict)  # "preprocess", "inference", "postprocess"


class Segmenter:
    """Segment BGR uint8 images with a backend and the model card that belongs to it.

    ``keep_largest`` (default True) keeps only the largest lesion region in the mask (what lies
    inside its outer contour, holes kept): a dermoscopy image frames one lesion, and the small
    islands an imperfect model leaves around it would otherwise flicker in a live overlay and
    inflate the measured area. Set it False to keep every region above the threshold
    (``edgeseg run --all-regions``). The probability map is never altered. ``mm_per_px`` adds
    millimetre values to the measurements.
    """

    def __init__(self, backend: Backend, card: ModelCard, keep_largest: bool = True, mm_per_px: float | None = None) -> None:
        self.backend = backend
        self.card = card
        self.keep_largest = keep_largest
        self.mm_per_px = mm_per_px
        height, width = card.input_size
        self._input = np.empty((1, 3, height, width), dtype=np.float32)  # reused for every frame

    @classmethod
    def from_path(cls, path: str | os.PathLike, backend: str = "auto", keep_largest: bool = True,
                  mm_per_px: float | None = None) -> Segmenter:
        """Open an edgeseg ONNX or TensorRT engine; the card comes from the model file."""
        opened = open_backend(path, backend)
        return cls(opened, opened.card, keep_largest=keep_largest, mm_per_px=mm_per_px)

    def __enter__(self) -> Segmenter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self.backend.close()

    def preprocess(self, bgr: np.ndarray) -> np.ndarray:
        """The network input for ``bgr``, written into the Segmenter's reused buffer."""
        normalize(resize_to_input(bgr, self.card), self.card, out=self._input[0])
        return self._input

    def postprocess(self, logits: np.ndarray, height: int, width: int) -> tuple[np.ndarray, np.ndarray, np.ndarray | None, Measurements]:
        """Logits (1, 1, h, w) -> probability and mask at (height, width), largest contour, measurements."""
        probability = probability_at(activate(logits[0, 0], self.card), height, width, self.card)
        mask = binarize(probability, self.card)
        contour, regions = largest_contour(mask)
        if self.keep_largest and regions > 1:
            mask = inside_contour(mask, contour)
            regions = 1
        return probability, mask, contour, measure(mask, contour, regions, self.mm_per_px)

    def segment(self, bgr: np.ndarray) -> Segmentation:
        if bgr.ndim != 3 or bgr.shape[2] != 3 or bgr.dtype != np.uint8:
            raise ValueError(f"expected a BGR uint8 image (H, W, 3), got {bgr.dtype} {bgr.shape}")
        start = time.perf_counter()
        batch = self.preprocess(bgr)
        preprocessed = time.perf_counter()
        logits = self.backend.infer(batch)
        inferred = time.perf_counter()
        timings = {"preprocess": (preprocessed - start) * 1000, "inference": (inferred - preprocessed) * 1000}
        return self.finish(logits, bgr.shape[:2], timings)

    def finish(self, logits: np.ndarray, image_size: tuple[int, int], timings_ms: dict[str, float]) -> Segmentation:
        """The Segmentation of an image of ``image_size`` (height, width) from its logits; adds the postprocess time."""
        start = time.perf_counter()
        probability, mask, contour, measurements = self.postprocess(logits, *image_size)
        timings = {**timings_ms, "postprocess": (time.perf_counter() - start) * 1000}
        return Segmentation(probability, mask, contour, measurements, timings)


def inside_contour(mask: np.ndarray, contour: np.ndarray) -> np.ndarray:
    """The part of ``mask`` inside ``contour``: the largest region with its holes, the other regions gone."""
    outline = np.zeros(mask.shape, dtype=np.uint8)
    cv2.drawContours(outline, [contour], 0, 1, thickness=cv2.FILLED)
    return mask & outline.view(bool)
