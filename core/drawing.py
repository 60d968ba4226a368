"""The overlay a clinician reads at a glance: translucent lesion fill, crisp contour, and a HUD.

The HUD shows the lesion's size and, on a live feed, speed (FPS, latency) and what runs (backend,
precision); a photo's overlay has the size only. Sizes are descriptive measurements, never a diagnosis.
Buffers are allocated once per frame size and reused. It lives in the core (cv2 and numpy only) so that
the live runtime, `edgeseg run` on photos and ``Segmentation.overlay()`` draw the same picture.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import cv2
import numpy as np

from edgeseg.core.lesion_measurements import Measurements

if TYPE_CHECKING:  # segmenter draws through this module (Segmentation.overlay): a type, not an import
    from edgeseg.core.segmenter import Segmentation

FILL_BGR = (255, 200, 0)  # cyan-blue: far from the browns and pinks of skin and lesions
CONTOUR_BGR = (255, 255, 0)
OUTLINE_BGR = (0, 0, 0)
TEXT_BGR = (255, 255, 255)
FONT = cv2.FONT_HERSHEY_SIMPLEX
JPEG_QUALITY = 92  # an overlay saved as JPEG (a photo's, Segmentation.save's)


@dataclass
class HudInfo:
    fps: float
    latency_ms: float  # capture-to-result time of this frame
    backend: str
    precision: str


def lesion_text(measurements: Measurements) -> str:
    if not measurements.lesion_present:
        return "no lesion found"
    if measurements.max_diameter_mm is not None:
        return f"lesion {measurements.max_diameter_mm:.1f} mm max, {measurements.area_mm2:.1f} mm2"
    return f"lesion {measurements.max_diameter_px:.0f} px max, {measurements.area_px:,} px2"


@dataclass
class _Buffers:
    """The images one frame size needs: the canvas drawn on, the solid fill colour, the blend of the two."""

    canvas: np.ndarray
    solid: np.ndarray
    blend: np.ndarray

    @classmethod
    def of_shape(cls, shape: tuple[int, ...]) -> _Buffers:
        solid = np.empty(shape, dtype=np.uint8)
        solid[:] = FILL_BGR
        return cls(np.empty(shape, dtype=np.uint8), solid, np.empty(shape, dtype=np.uint8))


class OverlayRenderer:
    """Draws the overlay into a canvas it reuses; the returned image is valid until the next render."""

    def __init__(self, alpha: float = 0.35) -> None:
        self.alpha = alpha
        self._buffers: _Buffers | None = None

    def _buffers_for(self, shape: tuple[int, ...]) -> _Buffers:
        if self._buffers is None or self._buffers.canvas.shape != shape:
            self._buffers = _Buffers.of_shape(shape)
        return self._buffers

    def render(self, bgr: np.ndarray, segmentation: Segmentation, hud: HudInfo | None = None) -> np.ndarray:
        """The overlay of ``segmentation`` on ``bgr``; ``hud`` adds the live lines (speed, backend) above the size."""
        buffers = self._buffers_for(bgr.shape)
        canvas = buffers.canvas
        np.copyto(canvas, bgr)
        measurements = segmentation.measurements
        if measurements.lesion_present and measurements.bbox is not None:
            self._fill(buffers, segmentation.mask, measurements.bbox)
            self._draw_contour(canvas, segmentation.contour)
        self._draw_hud(canvas, hud, measurements)
        return canvas

    def _fill(self, buffers: _Buffers, mask: np.ndarray, bbox: tuple[int, int, int, int]) -> None:
        x, y, width, height = bbox
        rows, columns = slice(y, y + height), slice(x, x + width)
        canvas = buffers.canvas
        blend = cv2.addWeighted(
            canvas[rows, columns],
            1.0 - self.alpha,
            buffers.solid[rows, columns],
            self.alpha,
            0.0,
            dst=buffers.blend[rows, columns],
        )
        np.copyto(canvas[rows, columns], blend, where=mask[rows, columns, None])

    def _draw_contour(self, canvas: np.ndarray, contour: np.ndarray | None) -> None:
        if contour is None:
            return
        thickness = max(2, round(canvas.shape[0] / 240))
        # A dark outline under a bright line keeps the edge crisp on light and dark skin alike.
        cv2.drawContours(canvas, [contour], 0, OUTLINE_BGR, thickness + 2, cv2.LINE_AA)
        cv2.drawContours(canvas, [contour], 0, CONTOUR_BGR, thickness, cv2.LINE_AA)

    def _draw_hud(self, canvas: np.ndarray, hud: HudInfo | None, measurements: Measurements) -> None:
        lines = [lesion_text(measurements)]
        if hud is not None:
            lines = [f"{hud.fps:.1f} FPS   {hud.latency_ms:.0f} ms", f"{hud.backend}  {hud.precision}", *lines]
        scale = max(0.45, canvas.shape[0] / 900)
        thickness = max(1, round(scale * 1.6))
        line_height = int(32 * scale) + 6
        margin = int(10 * scale) + 4
        width = max(cv2.getTextSize(line, FONT, scale, thickness)[0][0] for line in lines) + 2 * margin
        height = line_height * len(lines) + margin
        panel = canvas[: min(height, canvas.shape[0]), : min(width, canvas.shape[1])]
        cv2.convertScaleAbs(panel, dst=panel, alpha=0.35)  # darken behind the text so it reads on any image
        for number, line in enumerate(lines, start=1):
            origin = (margin, number * line_height)
            cv2.putText(canvas, line, origin, FONT, scale, TEXT_BGR, thickness, cv2.LINE_AA)


def encode_overlay(path: Path, overlay: np.ndarray) -> bytes:
    """An overlay's file bytes, as ``path``'s suffix asks: PNG for .png, else JPEG."""
    if path.suffix.lower() == ".png":
        ok, encoded = cv2.imencode(".png", overlay)
    else:
        ok, encoded = cv2.imencode(".jpg", overlay, [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])
    if not ok:
        raise OSError(f"{path}: OpenCV could not encode the overlay")
    return encoded.tobytes()
