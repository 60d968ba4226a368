"""Views of a data set that look like the device's camera, to score a model on what it will see.

- ``camera_framed``: each image placed in a full 4:3 or 3:2 camera frame, its lesion smaller and
  off-centre (``edgeseg.core.framing``), image and mask alike, scored at the frame's resolution. Each image
  gets one of ``FRAMINGS`` in turn, so the view has as many images as the split (less those whose
  lesion is cut by the crop's edge: they cannot be framed truthfully, and are left out).
- ``full_resolution``: the images kept at their original camera resolution (not 512 px crops).
"""

from __future__ import annotations

from collections.abc import Iterator

from edgeseg.core.framing import Framing, place_in_frame, touches_border
from edgeseg.evaluate.accuracy import LabelledImage, read_samples

# Zoom (frame height / crop height), aspect (width / height) and where the crop sits, one per image in turn.
FRAMINGS = (
    Framing(zoom=1.5, aspect=4 / 3, x=0.5, y=0.5),
    Framing(zoom=2.0, aspect=4 / 3, x=0.2, y=0.7),
    Framing(zoom=2.0, aspect=3 / 2, x=0.8, y=0.3),
    Framing(zoom=2.5, aspect=3 / 2, x=0.35, y=0.55),
)
CROP_SIDE = 512  # the shared set's crops; other images are at their camera's own resolution


def camera_framed(samples, framings: tuple[Framing, ...] = FRAMINGS) -> Iterator[LabelledImage]:
    """Each sample whose lesion lies inside the crop, in a camera frame; the others are skipped."""
    framed = 0
    for item in read_samples(samples):
        if touches_border(item.truth):
            continue
        framing = framings[framed % len(framings)]
        image, truth = place_in_frame(item.image, item.truth, framing)
        framed += 1
        yield LabelledImage(item.id, image, truth, f"{item.source} in a frame ({framing.describe()})")


def full_resolution(samples) -> Iterator[LabelledImage]:
    """The samples that are not the 512x512 crops: whole frames at their camera's resolution."""
    for item in read_samples(samples):
        if item.image.shape[:2] != (CROP_SIDE, CROP_SIDE):
            yield item
