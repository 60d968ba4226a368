"""Reading images and writing files safely: the small file helpers every part shares."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import cv2
import numpy as np

from edgeseg.errors import EdgesegError


class ImageReadError(EdgesegError, ValueError):
    """An image file that cannot be decoded."""


@contextmanager
def atomic_output(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; it replaces ``path`` only if the block succeeds.

    A reader (or a run that was killed half-way) sees either the old file or the whole new one.
    The temporary file keeps the suffix, so writers that choose a format by extension still work.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.stem}.", suffix=f".tmp{path.suffix}")
    os.close(handle)
    temporary = Path(temporary)
    try:
        yield temporary
        with open(temporary, "rb") as stream:
            os.fsync(stream.fileno())
        os.chmod(temporary, 0o644)  # mkstemp makes 0600; a model or report is meant to be shared
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)


def write_bytes_atomic(path: str | os.PathLike, data: bytes) -> Path:
    with atomic_output(path) as temporary:
        temporary.write_bytes(data)
    return Path(path)


def write_text_atomic(path: str | os.PathLike, text: str) -> Path:
    return write_bytes_atomic(path, text.encode("utf-8"))


def read_image(path: str | os.PathLike, flags: int = cv2.IMREAD_COLOR | cv2.IMREAD_IGNORE_ORIENTATION) -> np.ndarray:
    """Decode an image file (BGR for colour), raising ImageReadError that names the file.

    EXIF orientation is ignored: ISIC masks are drawn on the stored pixel grid, and the checker,
    training and the runtime must all see the same grid.
    """
    path = Path(path)
    try:
        data = np.fromfile(path, dtype=np.uint8)
    except OSError as error:
        raise ImageReadError(f"{path}: cannot read the file ({error.strerror or error})") from None
    image = cv2.imdecode(data, flags) if data.size else None
    if image is None:
        raise ImageReadError(f"{path}: not a readable image (empty, corrupt or of an unknown format)")
    return image


def read_mask(path: str | os.PathLike) -> np.ndarray:
    """Read a lesion mask as a boolean array: pixels above 128 are lesion, as the ISIC scorer reads them."""
    return read_image(path, cv2.IMREAD_GRAYSCALE | cv2.IMREAD_IGNORE_ORIENTATION) > 128


def write_mask(path: str | os.PathLike, mask: np.ndarray) -> Path:
    """Write a boolean mask as a 0/255 single-channel PNG, atomically."""
    ok, encoded = cv2.imencode(".png", np.where(mask, 255, 0).astype(np.uint8))
    if not ok:
        raise OSError(f"{path}: OpenCV could not encode the mask as PNG")
    return write_bytes_atomic(path, encoded.tobytes())
