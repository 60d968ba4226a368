"""Camera framing: a dermoscopy crop placed inside a full camera frame, as the device's camera sees it.

Most ISIC training images are 512x512 centre crops in which the lesion fills the picture. A
dermatoscope camera gives a whole 4:3 or 3:2 frame in which the lesion may be small and off-centre,
and the runtime stretches that frame to the network's square input. ``place_in_frame`` builds such
a frame from a crop, image and mask alike: the crop sits at a chosen place in a larger frame of a
chosen aspect, and the rest of the frame is the crop's skin, lesion painted out, mirrored outwards: one
lesion in a wider field of skin, and every pixel's label true. (Mirroring the crop as it is would
repeat the lesion across the frame.) A lesion cut by the crop's edge cannot be framed this way:
``touches_border`` tells, and such crops are left as they are.

Training uses it as augmentation (``edgeseg.train.dataset``), and the accuracy benchmark scores a
camera-framed view of the validation images with it, so a model is judged on what the device sees.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from edgeseg.core.preprocess import interpolation_flag

# The frame shapes of dermatoscope cameras (width / height); 1.0 is the square crop itself.
CAMERA_ASPECTS = (1.0, 4 / 3, 3 / 2)


@dataclass(frozen=True)
class Framing:
    """Where a crop sits in a camera frame.

    ``zoom`` is the frame's height over the crop's (1 = as tall as the crop; 2 = the lesion's
    surroundings are twice as tall), ``aspect`` the frame's width over its height, and ``x``, ``y``
    (0..1) where the crop sits in the free space: 0.5, 0.5 is centred, 0, 0 the top left corner.
    """

    zoom: float = 1.0
    aspect: float = 1.0
    x: float = 0.5
    y: float = 0.5

    def __post_init__(self) -> None:
        if self.zoom < 1.0 or self.aspect <= 0 or not (0.0 <= self.x <= 1.0 and 0.0 <= self.y <= 1.0):
            raise ValueError(f"{self}: zoom must be >= 1, aspect > 0, and x, y within 0..1")

    def describe(self) -> str:
        return f"zoom {self.zoom:g}, aspect {self.aspect:.3g}, position ({self.x:g}, {self.y:g})"


def frame_size(height: int, width: int, framing: Framing) -> tuple[int, int]:
    """(height, width) of the frame around a crop of (height, width): never smaller than the crop."""
    frame_height = max(height, round(height * framing.zoom))
    frame_width = max(width, round(frame_height * framing.aspect))
    return frame_height, frame_width


def touches_border(mask: np.ndarray, margin: int = 2) -> bool:
    """True when the lesion reaches the crop's edge (within ``margin`` pixels): it goes on outside the crop."""
    return bool(mask[:margin].any() or mask[-margin:].any() or mask[:, :margin].any() or mask[:, -margin:].any())


def skin_only(image: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """The BGR ``image`` with its lesion painted over by the skin around it (inpainting at quarter size)."""
    if not mask.any():
        return image
    height, width = image.shape[:2]
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (9, 9))
    grown = cv2.dilate(mask.astype(np.uint8), kernel)
    small_size = (max(8, width // 4), max(8, height // 4))
    small_mask = cv2.resize(grown, small_size, interpolation=cv2.INTER_NEAREST)
    small = cv2.inpaint(cv2.resize(image, small_size, interpolation=cv2.INTER_AREA), small_mask, 3, cv2.INPAINT_TELEA)
    painted = cv2.resize(small, (width, height), interpolation=cv2.INTER_LINEAR)
    return np.where(grown[:, :, None] > 0, painted, image)


def place_in_frame(image: np.ndarray, mask: np.ndarray, framing: Framing) -> tuple[np.ndarray, np.ndarray]:
    """The crop ``image`` (H, W, 3) and its ``mask`` (H, W) inside a larger frame of skin."""
    height, width = image.shape[:2]
    frame_height, frame_width = frame_size(height, width, framing)
    top = round((frame_height - height) * framing.y)
    left = round((frame_width - width) * framing.x)
    rows = (top, frame_height - height - top)
    columns = (left, frame_width - width - left)
    # numpy's "reflect" (OpenCV's REFLECT_101) repeats the reflection when the border is wider than the image.
    frame = np.pad(skin_only(image, mask), (rows, columns, (0, 0)), mode="reflect")
    frame[top : top + height, left : left + width] = image
    frame_mask = np.zeros((frame_height, frame_width), dtype=mask.dtype)
    frame_mask[top : top + height, left : left + width] = mask
    return frame, frame_mask


def vignette(image: np.ndarray, strength: float) -> np.ndarray:
    """Darken the corners as a dermoscope's round field of view does; ``strength`` 0 (none) to 1 (black corners)."""
    height, width = image.shape[:2]
    rows = (np.arange(height, dtype=np.float32) - (height - 1) / 2) / (height / 2)
    columns = (np.arange(width, dtype=np.float32) - (width - 1) / 2) / (width / 2)
    radius = np.sqrt(rows[:, None] ** 2 + columns[None, :] ** 2)  # 1 at the middle of each side, 1.41 at corners
    gain = np.clip(1.0 - strength * np.clip((radius - 0.85) / 0.45, 0.0, 1.0), 0.0, 1.0)
    if image.ndim == 3:
        gain = gain[:, :, None]
    return (image.astype(np.float32) * gain).round().astype(image.dtype)


def resize_pair(
    image: np.ndarray, mask: np.ndarray, height: int, width: int, interpolation: str
) -> tuple[np.ndarray, np.ndarray]:
    """Image and mask stretched to (height, width) with the card's ``interpolation``, as the runtime stretches a frame.

    The mask is resized the same way and cut at 0.5, so thin parts are not lost to aliasing.
    """
    size, flag = (width, height), interpolation_flag(interpolation)
    resized_image = cv2.resize(image, size, interpolation=flag)
    resized_mask = cv2.resize(mask.astype(np.float32), size, interpolation=flag) >= 0.5
    return resized_image, resized_mask
