"""Reading images and writing files safely: the small file helpers every part shares."""

from __future__ import annotations

import errno
import logging
import os
import re
import shlex
import shutil
import tempfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import cv2
import numpy as np

from edgeseg.errors import EdgesegError

log = logging.getLogger("edgeseg")

# What atomic_output's mkstemp names look like: .STEM.XXXXXXXX.tmpSUFFIX
TEMPORARY_NAME = re.compile(r"^\..+\.[a-z0-9_]{8}\.tmp(\.[^.]+)?$")


class ImageReadError(EdgesegError, ValueError):
    """An image file that cannot be decoded."""


class DiskFullError(EdgesegError, OSError):
    """An output could not be written because its folder's device is full (the earlier file is kept)."""


FULL_DISK_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG}
NEARLY_FULL_BYTES = 1 << 20


def is_disk_full(error: BaseException, folder: Path) -> bool:
    """Whether a failed write failed for want of space. torch and safetensors wrap the OS error in their
    own exception without its errno, so a device left with under 1 MiB free counts as full too."""
    cause: BaseException | None = error
    while cause is not None:
        if isinstance(cause, OSError) and cause.errno in FULL_DISK_ERRNOS:
            return True
        cause = cause.__cause__ or cause.__context__
    try:
        return shutil.disk_usage(folder).free < NEARLY_FULL_BYTES
    except OSError:
        return False


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
    except Exception as error:
        if not isinstance(error, EdgesegError) and is_disk_full(error, path.parent):
            kept = f"the earlier {path.name} is kept" if path.exists() else "nothing was overwritten"
            raise DiskFullError(f"{path.parent}: no space left on its device while writing {path.name} ({kept}); "
                                "free some space there, or choose another folder, and run the command again (training: --resume RUN_DIR)") from error
        raise
    finally:
        temporary.unlink(missing_ok=True)


def remove_stale_temporaries(folder: str | os.PathLike) -> list[Path]:
    """Remove the temporaries a killed atomic write left in ``folder`` (never a finished file).

    Called by the command that owns the folder (train on its run directory, export on its output
    folder) before it writes there, so repeated kills leave nothing behind.
    """
    folder = Path(folder)
    if not folder.is_dir():
        return []
    stale = [path for path in folder.iterdir() if path.is_file() and TEMPORARY_NAME.match(path.name)]
    for path in stale:
        path.unlink(missing_ok=True)
    if stale:
        log.info("removed %d unfinished file(s) an interrupted run left in %s: %s", len(stale), folder, ", ".join(p.name for p in stale))
    return stale


def write_bytes_atomic(path: str | os.PathLike, data: bytes) -> Path:
    with atomic_output(path) as temporary:
        temporary.write_bytes(data)
    return Path(path)


def write_text_atomic(path: str | os.PathLike, text: str) -> Path:
    return write_bytes_atomic(path, text.encode("utf-8"))


def portable_path(path: str | os.PathLike) -> str:
    """A path as a committed record or a shipped file may hold it: naming nothing of the machine that wrote it.

    - A relative path is kept as given: it is what the user typed.
    - An absolute path inside the current directory becomes relative to it, as the user would type it there
      (``/home/ana/edgeseg/runs/lite0`` run from ``/home/ana/edgeseg`` -> ``runs/lite0``).
    - Any other absolute path keeps only its last component (``/mnt/shared/data/isic2018`` -> ``isic2018``,
      ``/tmp/tmpab12/model.onnx`` -> ``model.onnx``): the folders above it name the machine (a user, a mount,
      a temporary folder), the last one names the thing (a data set, a run, a file).

    When the current directory is the root, nothing counts as inside it: ``home/ana/...`` would still name a user.
    """
    text = os.fspath(path)
    if not os.path.isabs(text):
        return text
    absolute = Path(os.path.normpath(text))
    current = Path.cwd()
    # The path as typed first, then both resolved: a path typed through a symlink still lies inside.
    for inside, folder in ((absolute, current), (absolute.resolve(), current.resolve())):
        if folder != Path(folder.anchor) and inside.is_relative_to(folder):
            return str(inside.relative_to(folder))
    return absolute.name or text


def portable_argument(argument: str) -> str:
    """One command-line word with its path made portable: the word itself, or PATH in ``--option=PATH``."""
    option, equals, value = argument.partition("=")
    if equals and option.startswith("-") and os.path.isabs(value):
        return f"{option}={portable_path(value)}"
    return portable_path(argument)


def portable_command(argv: Sequence[str]) -> str:
    """A command line as a committed record may hold it: ``python``, then ``argv`` (``sys.argv``, the script
    first) with each absolute path made portable, shell-quoted so that it can be run again."""
    return shlex.join(["python", *(portable_argument(argument) for argument in argv)])


DEFAULT_MAX_PIXELS = 200_000_000  # 200 MP: above the largest dermoscopy camera, far below a decompression bomb
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
JPEG_FRAME_MARKERS = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}  # SOF0..SOF15 (not DHT, JPG, DAC)


def max_pixels() -> int:
    """The most pixels edgeseg decodes from one image file: EDGESEG_MAX_PIXELS, or 200 million."""
    return int(os.environ.get("EDGESEG_MAX_PIXELS", DEFAULT_MAX_PIXELS))


def header_size(data: bytes) -> tuple[int, int] | None:
    """(width, height) as a PNG or JPEG header states it, read before any decoding; None if not found."""
    if data[:8] == PNG_SIGNATURE and data[12:16] == b"IHDR" and len(data) >= 24:
        return int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")
    if data[:2] != b"\xff\xd8":
        return None
    position = 2
    while position + 9 <= len(data) and data[position] == 0xFF:
        marker = data[position + 1]
        if marker in JPEG_FRAME_MARKERS:
            return int.from_bytes(data[position + 7:position + 9], "big"), int.from_bytes(data[position + 5:position + 7], "big")
        position += 2 + int.from_bytes(data[position + 2:position + 4], "big")
    return None


def pixel_limit_problem(data: bytes) -> str | None:
    """Why an image file must not be decoded (its header claims too many pixels), or None."""
    size = header_size(data)
    limit = max_pixels()
    if size is None or size[0] * size[1] <= limit:
        return None
    return (f"its header claims {size[0]}x{size[1]} pixels ({size[0] * size[1] / 1e6:.0f} MP), more than edgeseg "
            f"decodes ({limit / 1e6:.0f} MP): a decompression bomb or a corrupt header. If the image is real, "
            f"downscale it or raise EDGESEG_MAX_PIXELS")


def read_image(path: str | os.PathLike, flags: int = cv2.IMREAD_COLOR | cv2.IMREAD_IGNORE_ORIENTATION) -> np.ndarray:
    """Decode an image file (BGR for colour), raising ImageReadError that names the file.

    EXIF orientation is ignored: ISIC masks are drawn on the stored pixel grid, and the checker,
    training and the runtime must all see the same grid. The header's size is checked against
    ``max_pixels()`` before anything is decoded.
    """
    path = Path(path)
    try:
        data = np.fromfile(path, dtype=np.uint8)
    except OSError as error:
        raise ImageReadError(f"{path}: cannot read the file ({error.strerror or error})") from None
    problem = pixel_limit_problem(data[:65536].tobytes())
    if problem:
        raise ImageReadError(f"{path}: {problem}")
    try:
        image = cv2.imdecode(data, flags) if data.size else None
    except cv2.error as error:
        raise ImageReadError(f"{path}: OpenCV refused to decode it ({str(error).strip().splitlines()[-1]})") from None
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
