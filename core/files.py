"""Reading images and writing files safely: the small file helpers every part shares."""

from __future__ import annotations

import errno
import fnmatch
import glob
import logging
import os
import re
import shlex
import shutil
import sys
import tempfile
import threading
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import cv2
import numpy as np

from edgeseg.core.errors import EdgesegError
from edgeseg.core.pixel_limit import DEFAULT_MAX_PIXELS, MAX_PIXELS_VARIABLE, configured_max_pixels

if sys.platform != "win32":
    import fcntl
else:  # Windows has no fcntl: writes go unlocked there
    fcntl = None

log = logging.getLogger("edgeseg")

# What atomic_output's mkstemp names look like: .STEM.XXXXXXXX.tmpSUFFIX (for the file STEMSUFFIX)
TEMPORARY_NAME = re.compile(r"^\.(?P<stem>.+)\.[a-z0-9_]{8}\.tmp(?P<suffix>\.[^.]+)?$")


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


_UMASK_LOCK = threading.Lock()


def current_umask() -> int:
    """The process's umask, read without changing it where the system allows (Linux: /proc/self/status)."""
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    # Elsewhere the umask is read by setting it, for the whole process. A file another thread creates in that
    # instant gets 077: private to its owner, never more open than meant.
    with _UMASK_LOCK:
        umask = os.umask(0o077)
        os.umask(umask)
    return umask


def new_file_mode() -> int:
    """The permissions open() gives a new file under the current umask (0644 under 022, 0600 under 077)."""
    return 0o666 & ~current_umask()


@contextmanager
def atomic_output(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; it replaces ``path`` only if the block succeeds.

    A reader (or a run that was killed half-way) sees either the old file or the whole new one.
    The temporary file keeps the suffix, so writers that choose a format by extension still work.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary_name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.stem}.", suffix=f".tmp{path.suffix}")
    lock = hold_write_lock(handle)  # while it is written: remove_stale_temporaries leaves a live write's file alone
    temporary = Path(temporary_name)
    try:
        yield temporary
        with open(temporary, "rb") as stream:
            os.fsync(stream.fileno())
        os.chmod(temporary, new_file_mode())  # mkstemp makes 0600: the finished file gets what open() would give it
        os.replace(temporary, path)
    except Exception as error:
        if not isinstance(error, EdgesegError) and is_disk_full(error, path.parent):
            kept = f"the earlier {path.name} is kept" if path.exists() else "nothing was overwritten"
            raise DiskFullError(
                f"{path.parent}: no space left on its device while writing {path.name} ({kept}); free some space "
                "there, or choose another folder, and run the command again (training: --resume RUN_DIR)"
            ) from error
        raise
    finally:
        temporary.unlink(missing_ok=True)
        if lock is not None:
            os.close(lock)


def hold_write_lock(handle: int) -> int | None:
    """Lock a new temporary (open as ``handle``) as being written: the lock lasts until the writer closes it, or
    dies. Returns the handle to close at the end; None (closed now) where there are no advisory locks (Windows),
    and a temporary is judged by its name alone."""
    if fcntl is None:
        os.close(handle)
        return None
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:  # a file system without locks: the temporary is judged by its name alone
        pass
    return handle


def remove_if_abandoned(path: Path) -> bool:
    """Remove a temporary unless a live writer holds its lock; whether it was removed."""
    if fcntl is None:
        path.unlink(missing_ok=True)
        return True
    try:
        handle = os.open(path, os.O_RDONLY)
    except OSError:
        return False
    try:
        if write_locked(handle):
            return False
        path.unlink(missing_ok=True)
        return True
    finally:
        os.close(handle)


def write_locked(handle: int) -> bool:
    """Whether a live writer holds the lock of the temporary open as ``handle`` (if not, this takes it)."""
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    except OSError:  # a file system without locks: the temporary is judged by its name alone
        return False
    return False


def remove_stale_temporaries(folder: str | os.PathLike, of: str = "*") -> list[Path]:
    """Remove the temporaries a killed atomic write left in ``folder`` (never a finished file): of every
    file, or of the files whose names match the glob ``of``.

    Called by the command that owns the folder (train on its run directory, export on its output
    folder, run on its masks folder) before it writes there, so repeated kills leave nothing behind;
    in a folder it does not own, only for the names of its own outputs (``prepare_outputs``).
    """
    folder = Path(folder)
    if not folder.is_dir():
        return []
    candidates = [path for path in folder.iterdir() if path.is_file() and is_temporary_of(path.name, of)]
    stale = [path for path in candidates if remove_if_abandoned(path)]
    if stale:
        log.info(
            "removed %d unfinished file(s) an interrupted run left in %s: %s",
            len(stale),
            folder,
            ", ".join(p.name for p in stale),
        )
    return stale


def is_temporary_of(name: str, of: str) -> bool:
    """Whether ``name`` is an atomic write's temporary for a file whose name matches the glob ``of``."""
    match = TEMPORARY_NAME.match(name)
    return match is not None and fnmatch.fnmatchcase(match["stem"] + (match["suffix"] or ""), of)


class OutputExistsError(EdgesegError, FileExistsError):
    """An output that is there already: edgeseg replaces one only when the command is given --overwrite."""


def output_exists(path: Path) -> bool:
    """A file output exists when anything is at its path; a folder of outputs (masks) when it holds anything."""
    if path.is_dir():
        return any(path.iterdir())
    return path.exists() or path.is_symlink()


def prepare_outputs(outputs: Iterable[tuple[str, str | os.PathLike | None]], overwrite: bool) -> None:
    """The overwrite rule of every command, applied before it writes anything. First what a killed run left
    half-written of each output is removed (an atomic write's hidden temporary beside it, or inside a folder of
    outputs); then an output that exists is refused, each named, unless ``overwrite`` (--overwrite) is given.

    ``outputs`` pairs what names each output for the user (its option, e.g. "--jsonl") with its path: a file,
    or a folder of outputs (masks). None and '-' (stdout) name no file.
    """
    paths = [(label, Path(path)) for label, path in outputs if path is not None and str(path) != "-"]
    for _, path in paths:
        if path.is_dir():
            remove_stale_temporaries(path)
        else:
            remove_stale_temporaries(path.parent, of=glob.escape(path.name))
    existing = [(label, path) for label, path in paths if output_exists(path)]
    if existing and not overwrite:
        names = ", ".join(
            f"{path}{os.sep} ({label}: not empty)" if path.is_dir() else f"{path} ({label})" for label, path in existing
        )
        several = len(existing) > 1
        in_folders = " (in a folder, the files of the same names)" if any(path.is_dir() for _, path in existing) else ""
        raise OutputExistsError(
            f"{names} {'exist' if several else 'exists'} already, and edgeseg writes over an output only when told: "
            f"pass --overwrite to replace {'them' if several else 'it'}{in_folders}, or choose "
            f"{'other paths' if several else 'another path'}"
        )


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


READ_FORMATS = "JPEG, PNG, BMP, TIFF or WebP"  # by content; every other decoder OpenCV has is refused
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
TIFF_SIGNATURES = (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+")  # classic and BigTIFF, either byte order
JPEG_FRAME_MARKERS = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}  # SOF0..SOF15 (not DHT, JPG, DAC)
JPEG_STANDALONE_MARKERS = frozenset([0x01, 0xD8, *range(0xD0, 0xD8)])  # TEM, SOI, RST0..7: no length field
JPEG_START_OF_SCAN, JPEG_END_OF_IMAGE = 0xDA, 0xD9
TIFF_WIDTH_TAG, TIFF_HEIGHT_TAG = 256, 257
ByteOrder = Literal["little", "big"]
TIFF_TYPE_SIZES = {3: 2, 4: 4, 16: 8}  # SHORT, LONG, LONG8 (BigTIFF): the types a width or height may have


def max_pixels() -> int:
    """The most pixels edgeseg decodes from one image file: EDGESEG_MAX_PIXELS, or 200 million.

    The package's __init__ gives OpenCV the same limit (OPENCV_IO_MAX_IMAGE_PIXELS) by the same rule
    (``edgeseg.core.pixel_limit``).
    """
    limit = configured_max_pixels()
    if limit is None:
        text = os.environ[MAX_PIXELS_VARIABLE].strip()
        raise EdgesegError(
            f"{MAX_PIXELS_VARIABLE}={text!r} is not a number of pixels: set it to a whole number written "
            f"in digits, e.g. {MAX_PIXELS_VARIABLE}=300000000, or unset it for the default {DEFAULT_MAX_PIXELS}"
        )
    return limit


def image_format(data: bytes) -> str | None:
    """The format of an image file judged by its first bytes, as OpenCV picks its decoder: one edgeseg reads, or
    None."""
    if data.startswith(PNG_SIGNATURE):
        return "PNG"
    if data.startswith(b"\xff\xd8"):
        return "JPEG"
    if data.startswith(b"BM"):
        return "BMP"
    if data[:4] in TIFF_SIGNATURES:
        return "TIFF"
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "WebP"
    return None


def unsigned(data: bytes, start: int, length: int, byteorder: ByteOrder = "little") -> int | None:
    """The unsigned integer stored in data[start:start + length], or None where the data ends before it."""
    if start < 0 or start + length > len(data):
        return None
    return int.from_bytes(data[start : start + length], byteorder)


def png_size(data: bytes) -> tuple[int, int] | None:
    if len(data) < 24 or data[12:16] != b"IHDR":  # IHDR must be the first chunk
        return None
    return int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")


def jpeg_size(data: bytes) -> tuple[int, int] | None:
    """Walk every segment from SOI to the first frame header (SOF), however far into the file it lies.

    Stray bytes between segments are skipped as libjpeg skips them (with a warning), so this finds the
    frame header libjpeg would use. Each step moves forward, so the walk ends within the file.
    """
    position = 2
    while True:
        position = data.find(b"\xff", position)
        if position < 0 or position + 1 >= len(data):
            return None
        marker = data[position + 1]
        if marker in (0x00, 0xFF):  # a stuffed zero or a fill byte: the marker is further on
            position += 1
            continue
        position += 2
        if marker in JPEG_STANDALONE_MARKERS:
            continue
        if marker in (JPEG_START_OF_SCAN, JPEG_END_OF_IMAGE):
            return None  # image data before any frame header: libjpeg refuses the file too
        if marker in JPEG_FRAME_MARKERS:
            # SOF: length (2 bytes), sample precision (1), height (2), width (2)
            height, width = unsigned(data, position + 3, 2, "big"), unsigned(data, position + 5, 2, "big")
            return None if width is None or height is None else (width, height)
        length = unsigned(data, position, 2, "big")  # counts its own two bytes
        if length is None or length < 2:
            return None
        position += length


def bmp_size(data: bytes) -> tuple[int, int] | None:
    if unsigned(data, 14, 4) == 12:  # an OS/2 BITMAPCOREHEADER: 16-bit sizes
        width, height = unsigned(data, 18, 2), unsigned(data, 20, 2)
        return None if width is None or height is None else (width, height)
    if len(data) < 26:
        return None
    # BITMAPINFOHEADER and its successors: signed 32-bit sizes; a negative height stores the rows top-down
    width, height = (int.from_bytes(data[start : start + 4], "little", signed=True) for start in (18, 22))
    return abs(width), abs(height)


def tiff_size(data: bytes) -> tuple[int, int] | None:
    """The size its first image file directory (the page OpenCV decodes) declares; classic TIFF or BigTIFF."""
    order: ByteOrder = "little" if data[:2] == b"II" else "big"
    big = data[2:4] in (b"+\x00", b"\x00+")
    # (directory offset at, entry count size, entry size, value field size): BigTIFF widens them all
    offset_at, count_size, entry_size, value_size = (8, 8, 20, 8) if big else (4, 2, 12, 4)
    directory = unsigned(data, offset_at, value_size, order)
    count = unsigned(data, directory, count_size, order) if directory is not None else None
    if directory is None or count is None:
        return None
    found: dict[int, int | None] = {}
    for index in range(count):
        entry = directory + count_size + index * entry_size
        tag, kind = unsigned(data, entry, 2, order), unsigned(data, entry + 2, 2, order)
        if tag is None or kind is None:
            return None
        if tag in (TIFF_WIDTH_TAG, TIFF_HEIGHT_TAG) and kind in TIFF_TYPE_SIZES:
            found[tag] = unsigned(data, entry + 4 + value_size, TIFF_TYPE_SIZES[kind], order)
        width, height = found.get(TIFF_WIDTH_TAG), found.get(TIFF_HEIGHT_TAG)
        if width is not None and height is not None:
            return width, height
    return None


def webp_size(data: bytes) -> tuple[int, int] | None:
    """The size its first chunk declares: the canvas (VP8X, extended: alpha, animation, metadata; libwebp
    holds every frame to it), a lossless (VP8L) or a lossy (VP8) bitstream."""
    chunk = data[12:16]
    if chunk == b"VP8X" and len(data) >= 30:
        return 1 + int.from_bytes(data[24:27], "little"), 1 + int.from_bytes(data[27:30], "little")
    if chunk == b"VP8L" and len(data) >= 25 and data[20] == 0x2F:
        bits = int.from_bytes(data[21:25], "little")
        return 1 + (bits & 0x3FFF), 1 + (bits >> 14 & 0x3FFF)
    if chunk == b"VP8 " and len(data) >= 30 and data[23:26] == b"\x9d\x01\x2a":
        return int.from_bytes(data[26:28], "little") & 0x3FFF, int.from_bytes(data[28:30], "little") & 0x3FFF
    return None


HEADER_READERS = {"PNG": png_size, "JPEG": jpeg_size, "BMP": bmp_size, "TIFF": tiff_size, "WebP": webp_size}


def header_size(data: bytes) -> tuple[int, int] | None:
    """(width, height) as the header of a JPEG, PNG, BMP, TIFF or WebP file declares it, read without decoding
    anything; None for another format, or a header cut short or corrupt. ``data`` is the whole file."""
    read_format = image_format(data)
    return HEADER_READERS[read_format](data) if read_format else None


@dataclass(frozen=True)
class HeaderRefusal:
    """Why an image file is not decoded, judged from its header alone, and what the user can do."""

    reason: str
    fix: str


def header_refusal(data: bytes) -> HeaderRefusal | None:
    """Why the image file ``data`` (all of it) must not be decoded, or None if it may be: it is empty, not a
    format edgeseg reads, its header declares no size, or more pixels than ``max_pixels()``."""
    if not data:
        return HeaderRefusal("the file is empty", "copy or download the file again")
    read_format = image_format(data)
    if read_format is None:
        return HeaderRefusal(
            f"not a {READ_FORMATS} file (judged by its content, whatever its name)",
            "convert it to JPEG or PNG, or copy it again if it is damaged",
        )
    size = header_size(data)
    if size is None:
        return HeaderRefusal(
            f"its {read_format} header is cut short or corrupt: it declares no image size",
            "copy or download the file again",
        )
    width, height = size
    limit = max_pixels()
    if width * height <= limit:
        return None
    return HeaderRefusal(
        f"its {read_format} header declares {width}x{height} = {width * height:,} pixels, more than "
        f"the {limit:,} edgeseg decodes: a decompression bomb or a corrupt header",
        f"replace the file; if the image is real, downscale it, or allow it with "
        f"{MAX_PIXELS_VARIABLE}={width * height}",
    )


def read_image(path: str | os.PathLike, flags: int = cv2.IMREAD_COLOR | cv2.IMREAD_IGNORE_ORIENTATION) -> np.ndarray:
    """Decode an image file (BGR for colour), raising ImageReadError that names the file.

    EXIF orientation is ignored: ISIC masks are drawn on the stored pixel grid, and the checker,
    training and the runtime must all see the same grid. The header is checked before anything is
    decoded (``header_refusal``): a format edgeseg does not read, or more pixels than ``max_pixels()``,
    is refused.
    """
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as error:
        raise ImageReadError(f"{path}: cannot read the file ({error.strerror or error})") from None
    refusal = header_refusal(data)
    if refusal:
        raise ImageReadError(f"{path}: {refusal.reason}; {refusal.fix}")
    try:
        image = cv2.imdecode(np.frombuffer(data, np.uint8), flags)
    except cv2.error as error:
        raise ImageReadError(f"{path}: OpenCV refused to decode it ({str(error).strip().splitlines()[-1]})") from None
    if image is None:
        raise ImageReadError(f"{path}: not a readable image (corrupt); copy or download the file again")
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


class SettingsFileError(EdgesegError, ValueError):
    """A settings file (`--config FILE.toml`) that cannot be read or holds wrong settings; the message says which."""


def read_toml(path: Path, example: str) -> dict:
    """The table of a TOML file; SettingsFileError naming the file (and ``example``, a line of a good one)."""
    if sys.version_info >= (3, 11):
        import tomllib
    else:  # Python 3.10: tomli, which the train extra (and so export) installs there
        try:
            import tomli as tomllib
        except ModuleNotFoundError:
            raise SettingsFileError(f"{path}: reading TOML on Python 3.10 needs tomli: pip install tomli") from None
    try:
        with open(path, "rb") as stream:
            return tomllib.load(stream)
    except OSError as error:
        raise SettingsFileError(f"{path}: cannot be read ({error.strerror})") from None
    except ValueError as error:  # TOMLDecodeError, or bytes that are not UTF-8
        message = f"{path}: not a TOML file ({error}); write one setting a line, e.g. {example}"
        raise SettingsFileError(message) from None
