"""Descriptive lesion measurements from a mask: size and shape, never a diagnosis.

Area and bounding box cover the whole mask; perimeter and maximum diameter describe the largest
region (its contour). Pixel values become millimetres only when the caller gives ``mm_per_px``
(from the dermatoscope's calibration); edgeseg does not guess a scale.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import cv2
import numpy as np


@dataclass(frozen=True)
class Measurements:
    lesion_present: bool
    regions: int  # connected lesion regions in the mask
    area_px: int
    bbox: tuple[int, int, int, int] | None  # x, y, width, height of the mask, in pixels
    perimeter_px: float  # of the largest region's contour
    max_diameter_px: float  # largest distance between two points of the largest region (Feret diameter)
    mm_per_px: float | None = None
    area_mm2: float | None = None
    perimeter_mm: float | None = None
    max_diameter_mm: float | None = None

    def __repr__(self) -> str:
        if not self.lesion_present:
            return "<Measurements: no lesion>"
        regions = f"{self.regions} region{'s' if self.regions != 1 else ''}"
        text = f"{regions}, area {self.area_px:,} px2, max diameter {self.max_diameter_px:.1f} px"
        if self.max_diameter_mm is not None:
            text += f" ({self.area_mm2:.2f} mm2, {self.max_diameter_mm:.2f} mm)"
        return f"<Measurements lesion: {text}>"

    def to_dict(self) -> dict[str, Any]:
        values = asdict(self)
        values["bbox"] = list(self.bbox) if self.bbox else None
        return values


def max_feret_diameter(contour: np.ndarray) -> float:
    """Largest distance between two contour points; they lie on the convex hull, so only its points are compared."""
    hull = cv2.convexHull(contour).reshape(-1, 2).astype(np.float64)
    if len(hull) < 2:
        return 0.0
    differences = hull[:, None, :] - hull[None, :, :]
    return float(np.sqrt((differences**2).sum(axis=-1).max()))


def measure(mask: np.ndarray, contour: np.ndarray | None, regions: int, mm_per_px: float | None = None) -> Measurements:
    """Measure a boolean mask whose largest region has outer contour ``contour``."""
    area = int(np.count_nonzero(mask))
    if area == 0 or contour is None:
        return Measurements(False, 0, 0, None, 0.0, 0.0, mm_per_px, *((0.0,) * 3 if mm_per_px else (None,) * 3))
    # One region: its contour's box is the mask's box, and far cheaper than scanning the mask.
    x, y, width, height = cv2.boundingRect(contour if regions == 1 else mask.view(np.uint8))
    bbox = (int(x), int(y), int(width), int(height))
    perimeter = float(cv2.arcLength(contour, closed=True))
    diameter = max_feret_diameter(contour)
    millimetres: tuple[float | None, ...] = (None, None, None)
    if mm_per_px:
        millimetres = (area * mm_per_px**2, perimeter * mm_per_px, diameter * mm_per_px)
    return Measurements(True, regions, area, bbox, perimeter, diameter, mm_per_px, *millimetres)
