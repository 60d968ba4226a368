"""The Segmenter and the Backend it drives: one BGR image in; probability, mask, contour, measurements out.

A Backend is anything with ``infer(batch) -> logits`` for one model form: onnxruntime or TensorRT
(``edgeseg.runtime``), or PyTorch (``edgeseg.train.torch_backend``). The Segmenter wraps one with the
model card's preprocessing and postprocessing, so every form is fed and read the same way.

It works in three stages, each timed by the Segmenter itself:

    pending = segmenter.prepare(bgr)       # preprocess: resize and normalise into a reused buffer
    segmenter.infer(pending)               # inference: the backend
    result = segmenter.finish(pending)     # postprocess: probability at the image's size, mask, measurements

Flip test-time augmentation (``tta``: one of ``TTA_MODES``) is done inside these stages: ``prepare``
writes the image and its flips into one batch, ``infer`` runs it (one call where the backend takes a
batch, else one call per view), and ``finish`` flips each probability map back and averages them
(in probability space, after the sigmoid) before the mask is made.

The closer look (``refine``) is done inside them too: ``infer`` finds the lesion in the first look's
output and, where it is small in the frame (``edgeseg.core.postprocess.closer_look_box``), runs the network
again on a square crop around it, at the network's full input; ``finish`` averages that crop's
probability with the first look's there (averaging beat replacing on val and camera-framed val,
benchmarks/results/levers-postprocess-cpu.md). A camera frame's small, off-centre lesion is then also
seen as the training crops show one. Both backend calls happen in ``infer``, on the caller's thread.

``segment(image)`` runs all three, on an image file's path, a numpy array (BGR as OpenCV gives, or RGB
with ``rgb=True``) or a PIL image. The stages are separate so that callers can overlap them (the live
runtime finishes frame N on another thread while the backend infers frame N+1), or keep a form's
logits and finish them later (export parity), without reaching into the Segmenter.

The result, a ``Segmentation``, keeps the image it was made from (a reference, not a copy), so
``result.overlay()`` draws the overlay and ``result.save(folder)`` writes it with the mask.
"""

from __future__ import annotations

import dataclasses
import numbers
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from edgeseg.core.card import ModelCard
from edgeseg.core.drawing import OverlayRenderer, encode_overlay
from edgeseg.core.errors import EdgesegError
from edgeseg.core.lesion_measurements import Measurements, measure
from edgeseg.core.postprocess import activate, closer_look_box, lesion_mask, probability_at
from edgeseg.core.preprocess import FrameError, as_bgr8, normalize, resize_to_input

# Test-time augmentation: the flips (axes of an (..., H, W) array) whose predictions are averaged.
TTA_FLIPS: dict[str, tuple[tuple[int, ...], ...]] = {
    "none": ((),),
    "hflip": ((), (-1,)),
    "hvflip": ((), (-1,), (-2,), (-2, -1)),
}
TTA_MODES = tuple(TTA_FLIPS)
# Off by default: it helps a little on val, not on camera frames' thresholded Jaccard, and costs 2 or 4
# network runs a frame (benchmarks/results/levers-postprocess-lite2-cpu.md); `edgeseg eval --tta` and
# `edgeseg run --tta` turn it on.
TTA_DEFAULT = "none"
# Holes inside the kept lesion region are left as the network drew them: on the default model filling
# them changed 6 of 232 val masks and no camera-framed one, no measurable gain (levers-postprocess-cpu.md).
FILL_HOLES_DEFAULT = False
# The closer look: see the module docstring and benchmarks/results/levers-postprocess-cpu.md for its figures.
REFINE_DEFAULT = True


class BackendUnavailable(EdgesegError, RuntimeError):
    """A backend that cannot run on this host; the message says why and what to install."""


class ImageTypeError(FrameError, TypeError):
    """``segment()`` was given something that is not an image: not a path, a numpy array or a PIL image."""


def check_settings(tta: str = TTA_DEFAULT, mm_per_px: float | None = None) -> None:
    """ValueError, saying what is accepted, for a test-time augmentation or scale the Segmenter cannot use."""
    if tta not in TTA_FLIPS:
        raise ValueError(f"unknown test-time augmentation {tta!r}: use one of {', '.join(TTA_MODES)}")
    if mm_per_px is not None and not (isinstance(mm_per_px, numbers.Real) and mm_per_px > 0):
        raise ValueError(
            f"mm_per_px {mm_per_px!r}: give the scale as a positive number of millimetres per pixel, "
            "or None for measurements in pixels only"
        )


class Backend(Protocol):
    """One model form on one engine: a context manager with one ``infer()``.

    ``name`` is one of ``edgeseg.core.names.BACKENDS``; ``precision`` is "fp32", "fp16" or "int8";
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
    """One image's result: probability, mask, the lesion's contour and measurements, and each stage's time.

    ``image`` is the BGR image it was made from (the caller's own array where that was BGR uint8: not a
    copy; None where a caller finished logits without it), ``name`` the file's stem where it came from a
    file. ``overlay()`` draws the lesion on the image; ``save(folder)`` writes that and the mask.
    """

    probability: np.ndarray  # (H, W) float32 lesion probability at the image's own resolution
    mask: np.ndarray  # (H, W) bool, after post-processing (see Segmenter)
    contour: np.ndarray | None  # outer contour of the lesion's region (OpenCV points), None if no lesion
    measurements: Measurements
    timings_ms: dict[str, float] = field(default_factory=dict)  # "preprocess", "inference", "postprocess"
    image: np.ndarray | None = None
    name: str | None = None

    def __repr__(self) -> str:
        height, width = self.mask.shape[:2]
        named = f" {self.name!r}" if self.name else ""
        found = self.measurements
        if not found.lesion_present:
            return f"<Segmentation{named} {width}x{height}: no lesion>"
        diameter = f"{found.max_diameter_px:.1f} px"
        if found.max_diameter_mm is not None:
            diameter += f" ({found.max_diameter_mm:.2f} mm)"
        share = found.area_px / (height * width)
        return f"<Segmentation{named} {width}x{height}: lesion in {share:.1%} of the image, max diameter {diameter}>"

    def overlay(self) -> np.ndarray:
        """The BGR overlay of the lesion on the image (a new array): the fill, the contour and the size line."""
        if self.image is None:
            raise ValueError(
                "this Segmentation has no image to draw on (its logits were finished without one): "
                "draw it with edgeseg.core.drawing.OverlayRenderer().render(image, segmentation)"
            )
        return OverlayRenderer().render(self.image, self)

    def save(self, folder: str | os.PathLike) -> list[Path]:
        """Write NAME_overlay.jpg and the mask NAME_segmentation.png (0/255, ISIC naming) into ``folder``.

        NAME is the image file's stem, or "image". The folder is made if need be; files of the same
        names are replaced, each atomically. Returns the paths written: the overlay's, then the mask's.
        """
        from edgeseg.core.files import write_bytes_atomic, write_mask
        from edgeseg.core.names import MASK_SUFFIX, OVERLAY_SUFFIX

        folder = Path(folder)
        stem = self.name or "image"
        overlay_path = folder / (stem + OVERLAY_SUFFIX)
        overlay = encode_overlay(overlay_path, self.overlay())
        folder.mkdir(parents=True, exist_ok=True)
        return [write_bytes_atomic(overlay_path, overlay), write_mask(folder / (stem + MASK_SUFFIX), self.mask)]


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
    image: np.ndarray | None = None  # the BGR image, for the closer look
    crop: tuple[int, int, int, int] | None = None  # the closer look's (x, y, width, height), where one was taken
    crop_logits: np.ndarray | None = None
    first_look: np.ndarray | None = (
        None  # the views' averaged probability at network size, once the closer look needed it
    )


def _stage_input(value: np.ndarray | None, what: str) -> np.ndarray:
    """What a stage needs from the Pending the stage before made."""
    if value is None:
        raise ValueError(f"this Pending has no {what}: run the stages in order (prepare, infer, finish)")
    return value


class Segmenter:
    """Segment BGR uint8 images with a backend and the model card that belongs to it.

    Masks are made as the card says (``edgeseg.core.postprocess.lesion_mask``): by default only the
    largest lesion region is kept. ``keep_largest`` overrides the card (``edgeseg run
    --all-regions`` passes False). ``fill_holes`` fills the holes inside the kept region(s).
    ``tta`` averages the predictions of the image and its flips (one of ``TTA_MODES``); both may
    also be set on the attribute of an open Segmenter, as may ``refine`` (the closer look at a lesion
    that is small in the frame). The probability map is never altered after averaging and the closer
    look. ``mm_per_px`` adds millimetre values to the measurements. ``model_path`` is where the
    model came from, for the repr.
    """

    def __init__(
        self,
        backend: Backend,
        card: ModelCard | None = None,
        keep_largest: bool | None = None,
        mm_per_px: float | None = None,
        fill_holes: bool = FILL_HOLES_DEFAULT,
        tta: str = TTA_DEFAULT,
        refine: bool = REFINE_DEFAULT,
        model_path: str | os.PathLike | None = None,
    ) -> None:
        check_settings(tta, mm_per_px)
        card = backend.card if card is None else card
        if keep_largest is not None:
            card = card.replace(output=dataclasses.replace(card.output, keep_largest_region=keep_largest))
        self.backend = backend
        self.card = card
        self.mm_per_px = mm_per_px
        self.fill_holes = fill_holes
        self.refine = refine
        self.model_path = None if model_path is None else Path(model_path)
        self._batched: bool | None = None  # whether the backend takes a batch of views: learnt on first use
        self.tta = tta

    def __repr__(self) -> str:
        model = self.model_path.name if self.model_path else f"{self.card.architecture}/{self.card.encoder}"
        height, width = self.card.input_size
        scale = f", {self.mm_per_px} mm/px" if self.mm_per_px else ""
        return (
            f"<Segmenter {model} on {self.backend.name} ({self.backend.precision}): input {height}x{width}, "
            f"threshold {self.card.output.threshold}, tta {self._tta!r}, refine {self.refine}{scale}>"
        )

    @property
    def tta(self) -> str:
        return self._tta

    @tta.setter
    def tta(self, mode: str) -> None:
        check_settings(tta=mode)
        self._tta = mode
        height, width = self.card.input_size
        self._input = np.empty((len(TTA_FLIPS[mode]), 3, height, width), dtype=np.float32)  # reused for every image
        self._crop_input = np.empty_like(self._input)

    def __enter__(self) -> Segmenter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self.backend.close()

    def prepare(self, bgr: np.ndarray) -> Pending:
        """Stage 1: the network input for a BGR uint8 image (grey, BGRA, 16-bit converted), written into a reused
        buffer.

        With test-time augmentation the buffer holds the image and then each of its flips.
        """
        started = time.perf_counter()
        bgr = as_bgr8(bgr)
        self._prepare_views(bgr, self._input)
        return Pending(bgr.shape[:2], self._input, timings_ms={"preprocess": _ms_since(started)}, image=bgr)

    def _prepare_views(self, bgr: np.ndarray, views: np.ndarray) -> None:
        normalize(resize_to_input(bgr, self.card), self.card, out=views[0])
        for view, axes in enumerate(TTA_FLIPS[self._tta][1:], start=1):
            views[view] = np.flip(views[0], axis=axes)

    def infer(self, pending: Pending) -> Pending:
        """Stage 2: the backend's logits for the prepared input (one per view with test-time augmentation),
        then, with ``refine``, for the closer look at a lesion that is small in the frame."""
        started = time.perf_counter()
        pending.logits = self._run_backend(_stage_input(pending.batch, "network input"))
        if self.refine and pending.image is not None:
            height, width = pending.image_size
            pending.first_look = self._averaged_views(pending.logits)
            pending.crop = closer_look_box(pending.first_look, height, width, self.card)
            if pending.crop is not None:
                left, top, crop_width, crop_height = pending.crop
                crop = pending.image[top : top + crop_height, left : left + crop_width]
                self._prepare_views(crop, self._crop_input)
                pending.crop_logits = self._run_backend(self._crop_input)
        pending.timings_ms["inference"] = _ms_since(started)
        return pending

    def _run_backend(self, batch: np.ndarray) -> np.ndarray:
        """One call for the whole batch where the backend takes it (tried once), else one call per view."""
        if len(batch) > 1 and self._batched is not False:
            try:
                logits = self.backend.infer(batch)
                self._batched = logits.shape[0] == len(batch)
            except Exception:  # a static batch of 1 (most exported models): run the views one by one
                self._batched = False
            if self._batched:
                return logits
        if len(batch) == 1:
            return self.backend.infer(batch)
        return np.concatenate([self.backend.infer(batch[view : view + 1]) for view in range(len(batch))])

    def finish(self, pending: Pending) -> Segmentation:
        """Stage 3: probability and mask at the image's own size, the lesion's contour and measurements."""
        started = time.perf_counter()
        height, width = pending.image_size
        first_look = pending.first_look
        if first_look is None:
            first_look = self._averaged_views(_stage_input(pending.logits, "logits"))
        probability = probability_at(first_look, height, width, self.card)
        if pending.crop is not None:
            left, top, crop_width, crop_height = pending.crop
            crop_logits = _stage_input(pending.crop_logits, "logits of the closer look")
            closer = probability_at(self._averaged_views(crop_logits), crop_height, crop_width, self.card)
            inside = probability[top : top + crop_height, left : left + crop_width]
            inside += closer
            inside *= np.float32(0.5)
        mask, contour, regions = lesion_mask(probability, self.card, fill_holes=self.fill_holes)
        measurements = measure(mask, contour, regions, self.mm_per_px)
        timings = {**pending.timings_ms, "postprocess": _ms_since(started)}
        return Segmentation(probability, mask, contour, measurements, timings, image=pending.image)

    def _averaged_views(self, logits: np.ndarray) -> np.ndarray:
        """The (h, w) probability: each view's sigmoid flipped back, then the mean (probability space)."""
        flips = TTA_FLIPS[self._tta] if len(logits) > 1 else TTA_FLIPS["none"]
        if len(logits) != len(flips):
            raise ValueError(
                f"{len(logits)} logit maps for test-time augmentation {self._tta!r}, which makes {len(flips)}"
            )
        probability = activate(logits[0, 0], self.card)
        for view, axes in enumerate(flips[1:], start=1):
            probability = probability + np.flip(activate(logits[view, 0], self.card), axis=axes)
        return probability / np.float32(len(flips)) if len(flips) > 1 else probability

    def segment(self, image: str | os.PathLike | np.ndarray | Any, rgb: bool = False) -> Segmentation:
        """All three stages for one image: a file's path, a numpy array or a PIL image.

        An array is BGR, as OpenCV gives it; pass ``rgb=True`` for an RGB (or RGBA) array, as PIL,
        matplotlib or imageio give. Grey, 4-channel and 16-bit arrays are taken too (``as_bgr8``). A
        file is read as the data and the runtime read it (ImageReadError names a bad one), and a PIL
        image by its own mode; ``rgb`` concerns arrays only.
        """
        bgr, name = image_as_bgr(image, rgb)
        result = self.finish(self.infer(self.prepare(bgr)))
        result.name = name
        return result

    def segment_file(self, path: str | os.PathLike) -> Segmentation:
        """Segment an image file (read as the data and the runtime read it); ImageReadError names a bad file."""
        return self.segment(Path(path))


def image_as_bgr(image: str | os.PathLike | np.ndarray | Any, rgb: bool = False) -> tuple[np.ndarray, str | None]:
    """(BGR uint8 image, the file's stem or None) for whatever ``Segmenter.segment`` takes."""
    if isinstance(image, str | os.PathLike):
        from edgeseg.core.files import read_image

        return read_image(image), Path(image).stem
    if isinstance(image, np.ndarray):
        bgr = as_bgr8(image)  # a 4-channel array loses its 4th channel: RGBA becomes RGB
        return (np.ascontiguousarray(bgr[..., ::-1]) if rgb else bgr), None
    if hasattr(image, "mode") and hasattr(image, "convert"):  # a PIL image, told by its look: PIL is no dependency
        return pil_as_bgr(image), None
    raise ImageTypeError(
        f"segment() takes an image file's path (str or os.PathLike), a numpy array (H, W, 3) BGR as "
        f"OpenCV gives it (rgb=True for RGB), or a PIL image; got {type(image).__name__}"
    )


def pil_as_bgr(image: Any) -> np.ndarray:
    """A PIL image as BGR uint8: 16-bit grey by its top byte (as ``as_bgr8``), every 8-bit mode through RGB."""
    if image.mode.startswith("I;16"):
        return as_bgr8(np.asarray(image).astype(np.uint16))
    if image.mode in ("I", "F"):
        return as_bgr8(np.asarray(image))  # 32-bit pixels have no clear scale: FrameError says what to do
    return np.ascontiguousarray(np.asarray(image.convert("RGB"))[..., ::-1])


def _ms_since(started: float) -> float:
    return (time.perf_counter() - started) * 1000.0
