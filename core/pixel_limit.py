"""The most pixels edgeseg decodes from one image file, and how EDGESEG_MAX_PIXELS sets it.

One rule for both places that enforce it: ``edgeseg.core.files.read_image``'s header check and OpenCV's own
limit, which the package's ``__init__`` sets before anything imports cv2. So this module imports no cv2.
"""

from __future__ import annotations

import os

DEFAULT_MAX_PIXELS = 200_000_000  # 200 MP: above the largest dermoscopy camera, far below a decompression bomb
MAX_PIXELS_VARIABLE = "EDGESEG_MAX_PIXELS"


def configured_max_pixels() -> int | None:
    """EDGESEG_MAX_PIXELS as a number of pixels (DEFAULT_MAX_PIXELS when unset); None when it is not one."""
    text = os.environ.get(MAX_PIXELS_VARIABLE, "").strip()
    if not text:
        return DEFAULT_MAX_PIXELS
    return int(text) if text.isascii() and text.isdigit() and int(text) > 0 else None
