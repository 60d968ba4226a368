"""The Segmenter and the Backend it drives: one BGR image in; probability, mask, contour, measurements out.

A Backend is anything with ``infer(batch) -> logits`` for one model form: onnxruntime or TensorRT
(``edgeseg.runtime``), or PyTorch (``edgeseg.train.torch_backend``). The Segmenter wraps one with the
model card's preprocessing and postprocessing, so every form is fed and read the same way.

It works in three stages, each timed by the Segmenter itself:

    pending = segmenter.prepare(bgr)       # preprocess: resize and normalise into a reused buffer
    segmenter.infer(pending)               # inference: the backend
    result = segmenter.finish(pending)     # postprocess: probability at the image's size, mask, measurements

``segment(bgr)`` runs all three. The stages are separate so that callers can overlap them (the live
runtime finishes frame N on another thread while the backend infers frame N+1), or keep a form's
logits and finish them later (export parity), without reaching into the Segmenter.
"""

from __future__ import annotations

import dataclasses
import os
import time
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

from edgeseg.card import ModelCard
from edgeseg.errors import EdgesegError
from edgeseg.lesion_measurements import Measurements, measure
from edgeseg.postprocess import activate, lesion_mask, probability_at
from edgeseg.preprocess import as_bgr8, normalize, resize_to_input


class BackendUnavailable(EdgesegError, RuntimeError):
    """A backend that cannot run on this host; the message says why and what to install."""


class Backend(Protocol):
    """One model form on one engine: a context manager with one ``infer()``.

    ``name`` is one of ``edgeseg.names.BACKENDS``; ``precision`` is "fp32", "fp16" or "int8";
    ``card`` is the model card that belongs to the weights. ``infer`` takes float32 (N, 3, H, W)
    at the card's input size and returns float32 logits (N, 1, H, W).
    """

    name: str
    precision: str
    card: ModelCard

    def infer(self, batch: np.ndarray) -> np.ndarray: ...

    def close(self) -> None: ...

    def __enter__(self) -> Backend: ...

    def __exit__(self, *exc: object) -> None: ...


@dataclass
class Segmentation:
    probability: np.ndarray  # (H, W) float32 lesion probability at the image's own resolution
    mask: np.ndarray  # (H, W) bool, after post-processing (see Segmenter)
    contour: np.ndarray | None  # outer contour of the largest lesion region (OpenCV points), None if no lesion
    measurements: Measurements
    timings_ms: dict[str, float] = field(default_factory=dict)  # "preprocess", "inference", "postprocess"


@dataclass
class Pending:
    """One image between the Segmenter's stages.

    ``batch`` is the network input (the Segmenter's reused buffer: valid until the next
    ``prepare``), ``logits`` the network output once inferred; ``timings_ms`` gathers each stage's time.
    """

    image_size: tuple[int, int]  # (height, width) of the original image
    batch: np.ndarray | None = None
    logits: np.ndarray | None = None
    timings_ms: dict[str, float] = field(default_factory=dict)


class Segmenter:
    """Segment BGR uint8 images with a backend and the model card that belongs to it.

    Masks are made as the card says (``edgeseg.postprocess.lesion_mask``): by default only the
    largest lesion region is kept. ``keep_largest`` overrides the card (``edgeseg run
    --all-regions`` passes False). The probability map is never altered. ``mm_per_px`` adds
    millimetre values to the measurements.
    """

    def __init__(self, backend: Backend, card: ModelCard | None = None, keep_largest: bool | None = None,
                 mm_per_px: float | None = None) -> None:
        card = backend.card if card is None else card
        if keep_largest is not None:
            card = card.replace(output=dataclasses.replace(card.output, keep_largest_region=keep_largest))
        self.backend = backend
        self.card = card
        self.mm_per_px = mm_per_px
        height, width = card.input_size
        self._input = np.empty((1, 3, height, width), dtype=np.float32)  # reused for every image

    def __enter__(self) -> Segmenter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self.backend.close()

    def prepare(self, bgr: np.ndarray) -> Pending:
        """Stage 1: the network input for a BGR uint8 image (grey, BGRA, 16-bit converted), written into a reused buffer."""
        started = time.perf_counter()
        bgr = as_bgr8(bgr)
        normalize(resize_to_input(bgr, self.card), self.card, out=self._input[0])
        return Pending(bgr.shape[:2], self._input, timings_ms={"preprocess": _ms_since(started)})

    def infer(self, pending: Pending) -> Pending:
        """Stage 2: the backend's logits for the prepared input."""
        started = time.perf_counter()
        pending.logits = self.backend.infer(pending.batch)
        pending.timings_ms["inference"] = _ms_since(started)
        return pending

    def finish(self, pending: Pending) -> Segmentation:
        """Stage 3: probability and mask at the image's own size, its largest contour and measurements."""
        started = time.perf_counter()
        height, width = pending.image_size
        probability = probability_at(activate(pending.logits[0, 0], self.card), height, width, self.card)
        mask, contour, regions = lesion_mask(probability, self.card)
        measurements = measure(mask, contour, regions, self.mm_per_px)
        timings = {**pending.timings_ms, "postprocess": _ms_since(started)}
        return Segmentation(probability, mask, contour, measurements, timings)

    def segment(self, bgr: np.ndarray) -> Segmentation:
        """All three stages for one image."""
        return self.finish(self.infer(self.prepare(bgr)))

    def segment_file(self, path: str | os.PathLike) -> Segmentation:
        """Segment an image file (read as the data and the runtime read it); ImageReadError names a bad file."""
        from edgeseg.files import read_image

        return self.segment(read_image(path))


def _ms_since(started: float) -> float:
    return (time.perf_counter() - started) * 1000.0
