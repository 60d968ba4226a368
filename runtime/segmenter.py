"""The Segmenter: one BGR image in; probability, mask, contour, measurements and stage timings out.

Preprocessing and thresholding come from ``edgeseg.preprocess`` driven by the model card, so the
runtime feeds the network exactly what training and export fed it.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field

import dataclasses

import numpy as np

from edgeseg.card import ModelCard
from edgeseg.preprocess import activate, lesion_mask, normalize, probability_at, resize_to_input
from edgeseg.runtime.backends import Backend, open_backend
from edgeseg.runtime.measure import Measurements, measure


@dataclass
class Segmentation:
    probability: np.ndarray  # (H, W) float32 lesion probability at the image's own resolution
    mask: np.ndarray  # (H, W) bool, after post-processing (see Segmenter)
    contour: np.ndarray | None  # outer contour of the largest lesion region (OpenCV points), None if no lesion
    measurements: Measurements
    timings_ms: dict[str, float] = field(default_factory=dict)  # "preprocess", "inference", "postprocess"


class Segmenter:
    """Segment BGR uint8 images with a backend and the model card that belongs to it.

    Masks are made as the card says (``edgeseg.preprocess.lesion_mask``): by default only the
    largest lesion region is kept. ``keep_largest`` overrides the card (``edgeseg run
    --all-regions`` passes False). The probability map is never altered. ``mm_per_px`` adds
    millimetre values to the measurements.
    """

    def __init__(self, backend: Backend, card: ModelCard, keep_largest: bool | None = None,
                 mm_per_px: float | None = None) -> None:
        if keep_largest is not None:
            card = card.replace(output=dataclasses.replace(card.output, keep_largest_region=keep_largest))
        self.backend = backend
        self.card = card
        self.mm_per_px = mm_per_px
        height, width = card.input_size
        self._input = np.empty((1, 3, height, width), dtype=np.float32)  # reused for every frame

    @classmethod
    def from_path(cls, path: str | os.PathLike, backend: str = "auto", keep_largest: bool | None = None,
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
        mask, contour, regions = lesion_mask(probability, self.card)
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

