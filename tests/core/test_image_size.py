"""The image size guard: headers read without decoding, every format edgeseg reads, and OpenCV's own limit.

The decompression bombs themselves (a WebP and a JPEG whose size marker lies past 128 KiB) go through
every command in tests/core/test_bad_inputs.py.
"""

from __future__ import annotations

import os
import struct
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from edgeseg.core.errors import EdgesegError
from edgeseg.core.files import DEFAULT_MAX_PIXELS, ImageReadError, header_refusal, header_size, read_image
from edgeseg.core.names import IMAGE_SUFFIXES

WIDTH, HEIGHT = 53, 37
RANDOM = np.random.default_rng(0)
COLOUR = RANDOM.integers(0, 256, (HEIGHT, WIDTH, 3), dtype=np.uint8)
GREY = COLOUR[:, :, 1].copy()
WITH_ALPHA = np.dstack([COLOUR, GREY])

# How cv2 writes each suffix, with the variants that change the header: lossy VP8, lossless VP8L and
# extended VP8X WebP; grey, colour, alpha and 16-bit PNG and TIFF; progressive JPEG.
WRITTEN = {
    ".jpg": [(COLOUR, []), (GREY, []), (COLOUR, [cv2.IMWRITE_JPEG_PROGRESSIVE, 1])],
    ".jpeg": [(COLOUR, [])],
    ".png": [(COLOUR, []), (GREY, []), (WITH_ALPHA, []), (GREY.astype(np.uint16) * 257, [])],
    ".bmp": [(COLOUR, []), (GREY, [])],
    ".tif": [(COLOUR, []), (GREY.astype(np.uint16) * 257, [])],
    ".tiff": [(COLOUR, [])],
    ".webp": [
        (COLOUR, [cv2.IMWRITE_WEBP_QUALITY, 80]),
        (COLOUR, [cv2.IMWRITE_WEBP_QUALITY, 101]),
        (WITH_ALPHA, [cv2.IMWRITE_WEBP_QUALITY, 80]),
    ],
}


def written(suffix: str) -> list[bytes]:
    return [cv2.imencode(suffix, image, parameters)[1].tobytes() for image, parameters in WRITTEN[suffix]]


def test_every_suffix_edgeseg_reads_is_covered_here():
    assert set(WRITTEN) == set(IMAGE_SUFFIXES)


@pytest.mark.parametrize("suffix", IMAGE_SUFFIXES)
def test_the_header_of_every_image_cv2_writes_gives_its_true_size(suffix, tmp_path):
    for number, data in enumerate(written(suffix)):
        assert header_size(data) == (WIDTH, HEIGHT), f"{suffix} variant {number}: {data[:32]!r}"
        assert header_refusal(data) is None
        path = tmp_path / f"image{number}{suffix}"
        path.write_bytes(data)
        assert read_image(path).shape == (HEIGHT, WIDTH, 3)


def test_the_webp_variants_are_the_three_kinds_of_header():
    assert [data[12:16] for data in written(".webp")] == [b"VP8 ", b"VP8L", b"VP8X"]


def tiff(width: int, height: int, byteorder: str, big: bool) -> bytes:
    """An uncompressed 8-bit grey TIFF of one strip, classic or BigTIFF, in either byte order."""
    prefix = "<" if byteorder == "little" else ">"
    order = b"II" if byteorder == "little" else b"MM"
    value_format = "Q" if big else "I"
    pixels = bytes(range(256)) * (width * height // 256 + 1)
    # tag, type (3 SHORT, 4 LONG), value: width, height, bits, compression, photometric, strip offset,
    # samples per pixel, rows per strip, strip byte count
    directory_at = 16 if big else 8
    count = 9
    directory_size = (8 + count * 20 + 8) if big else (2 + count * 12 + 4)
    entries = [
        (256, 4, width),
        (257, 4, height),
        (258, 3, 8),
        (259, 3, 1),
        (262, 3, 1),
        (273, 4, directory_at + directory_size),
        (277, 3, 1),
        (278, 4, height),
        (279, 4, width * height),
    ]
    if big:
        header = order + struct.pack(prefix + "HHHQ", 43, 8, 0, 16)
        directory = struct.pack(prefix + "Q", count)
    else:
        header = order + struct.pack(prefix + "HI", 42, 8)
        directory = struct.pack(prefix + "H", count)
    for tag, kind, value in entries:
        field = struct.pack(prefix + ("H" if kind == 3 else "I"), value).ljust(8 if big else 4, b"\0")
        directory += struct.pack(prefix + "HH" + value_format, tag, kind, 1) + field
    directory += struct.pack(prefix + value_format, 0)  # no next directory
    return header + directory + pixels[: width * height]


@pytest.mark.parametrize("byteorder", ["little", "big"])
@pytest.mark.parametrize("big", [False, True], ids=["classic", "bigtiff"])
def test_tiff_headers_in_either_byte_order_classic_or_big_agree_with_opencv(byteorder, big):
    data = tiff(WIDTH, HEIGHT, byteorder, big)
    assert header_size(data) == (WIDTH, HEIGHT)
    decoded = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
    assert decoded is not None and decoded.shape == (HEIGHT, WIDTH)


def test_a_top_down_bmp_has_its_size_as_a_positive_height():
    data = bytearray(written(".bmp")[0])
    data[22:26] = struct.pack("<i", -HEIGHT)
    assert header_size(bytes(data)) == (WIDTH, HEIGHT)
    assert cv2.imdecode(np.frombuffer(bytes(data), np.uint8), cv2.IMREAD_COLOR).shape == (HEIGHT, WIDTH, 3)


def test_an_os2_bmp_header_gives_its_16_bit_size():
    header = (
        b"BM"
        + struct.pack("<IHHI", 26 + 3 * WIDTH * HEIGHT, 0, 0, 26)
        + struct.pack("<IHHHH", 12, WIDTH, HEIGHT, 1, 24)
    )
    assert header_size(header) == (WIDTH, HEIGHT)


def test_a_jpeg_frame_header_is_found_after_large_segments_fill_bytes_and_stray_bytes():
    data = written(".jpg")[0]
    comment = b"\xff\xfe" + struct.pack(">H", 65535) + b"\xff" * 65533  # a payload of 0xFF must be skipped, not read
    late = data[:2] + comment * 3 + b"\x00\x13\x37" + b"\xff\xff\xff" + data[2:]  # stray bytes, then fill bytes
    assert header_size(late) == (WIDTH, HEIGHT)
    assert cv2.imdecode(np.frombuffer(late, np.uint8), cv2.IMREAD_COLOR).shape == (HEIGHT, WIDTH, 3)


@pytest.mark.parametrize("suffix", IMAGE_SUFFIXES)
def test_a_header_cut_short_or_scrambled_gives_none_or_a_size_never_an_exception(suffix):
    for data in written(suffix):
        for length in range(len(data)):
            size = header_size(data[:length])
            assert size is None or size == (WIDTH, HEIGHT), (length, size)
        for _ in range(300):
            scrambled = bytearray(data[:96])
            spot = int(RANDOM.integers(2, len(scrambled)))
            scrambled[spot] = int(RANDOM.integers(0, 256))
            size = header_size(bytes(scrambled))
            assert size is None or all(isinstance(side, int) and side >= 0 for side in size)


@pytest.mark.parametrize("suffix", [".gif", ".ppm", ".pfm", ".hdr", ".ras"])
def test_a_format_edgeseg_does_not_read_is_refused_by_content_though_opencv_decodes_it(suffix, tmp_path):
    data = cv2.imencode(suffix, COLOUR.astype(np.float32) if suffix in (".pfm", ".hdr") else COLOUR)[1].tobytes()
    assert cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR) is not None
    disguised = tmp_path / "lesion.jpg"
    disguised.write_bytes(data)
    with pytest.raises(ImageReadError, match=r"lesion\.jpg: not a JPEG, PNG, BMP, TIFF or WebP file"):
        read_image(disguised)


def test_an_empty_file_and_a_header_without_a_size_are_refused():
    assert header_refusal(b"").reason == "the file is empty"
    no_frame_header = written(".jpg")[0][:20]
    assert "JPEG header is cut short or corrupt" in header_refusal(no_frame_header).reason


def test_the_refusal_names_the_declared_size_the_limit_and_the_fix(tmp_path, monkeypatch):
    path = tmp_path / "lesion.png"
    path.write_bytes(written(".png")[0])
    monkeypatch.setenv("EDGESEG_MAX_PIXELS", str(WIDTH * HEIGHT - 1))
    with pytest.raises(ImageReadError) as refused:
        read_image(path)
    message = str(refused.value)
    assert message.startswith(f"{path}: its PNG header declares {WIDTH}x{HEIGHT} = {WIDTH * HEIGHT:,} pixels")
    assert f"more than the {WIDTH * HEIGHT - 1:,} edgeseg decodes" in message and "decompression bomb" in message
    assert f"EDGESEG_MAX_PIXELS={WIDTH * HEIGHT}" in message
    monkeypatch.setenv("EDGESEG_MAX_PIXELS", str(WIDTH * HEIGHT))
    assert read_image(path).shape == (HEIGHT, WIDTH, 3)


@pytest.mark.parametrize("value", ["abc", "0", "-5", "2e8", "1_000"])
def test_a_limit_that_is_not_a_number_of_pixels_is_named(value, tmp_path, monkeypatch):
    path = tmp_path / "lesion.png"
    path.write_bytes(written(".png")[0])
    monkeypatch.setenv("EDGESEG_MAX_PIXELS", value)
    with pytest.raises(EdgesegError, match=f"EDGESEG_MAX_PIXELS='{value}' is not a number of pixels"):
        read_image(path)


def python(arguments: list[str], **environment: str) -> subprocess.CompletedProcess:
    """Run a fresh interpreter with ``arguments``, EDGESEG_MAX_PIXELS and OPENCV_IO_MAX_IMAGE_PIXELS as given
    (else unset)."""
    env = {
        name: value
        for name, value in os.environ.items()
        if name not in ("EDGESEG_MAX_PIXELS", "OPENCV_IO_MAX_IMAGE_PIXELS")
    }
    return subprocess.run(
        [sys.executable, *arguments], capture_output=True, text=True, env={**env, **environment}, timeout=120
    )


DECODE = "import cv2, sys; image = cv2.imread(sys.argv[1]); print('decoded' if image is not None else 'none')"


@pytest.fixture
def small_png(tmp_path) -> Path:
    path = tmp_path / "small.png"
    path.write_bytes(written(".png")[0])
    return path


@pytest.mark.parametrize("first", ["import edgeseg", "import edgeseg.runtime", "import edgeseg.core.files"])
def test_importing_edgeseg_gives_every_opencv_decoder_its_limit(first, small_png):
    limited = python(["-c", f"{first}\n{DECODE}", str(small_png)], EDGESEG_MAX_PIXELS=str(WIDTH * HEIGHT - 1))
    assert limited.returncode != 0 and "CV_IO_MAX_IMAGE_PIXELS" in limited.stderr, limited.stderr
    allowed = python(["-c", f"{first}\n{DECODE}", str(small_png)], EDGESEG_MAX_PIXELS=str(WIDTH * HEIGHT))
    assert allowed.stdout.strip() == "decoded", allowed.stderr


def test_the_default_limit_is_given_to_opencv_and_a_wrong_one_leaves_the_default():
    show = "import edgeseg, os; print(os.environ['OPENCV_IO_MAX_IMAGE_PIXELS'])"
    assert python(["-c", show]).stdout.strip() == str(DEFAULT_MAX_PIXELS)
    assert python(["-c", show], EDGESEG_MAX_PIXELS="lots").stdout.strip() == str(DEFAULT_MAX_PIXELS)
    assert python(["-c", show], EDGESEG_MAX_PIXELS="0300").stdout.strip() == "300"


def test_python_dash_m_edgeseg_imports_the_package_before_opencv():
    timings = python(["-X", "importtime", "-m", "edgeseg", "data", "check", "--help"]).stderr
    finished = [line.rsplit("|", 1)[-1].strip() for line in timings.splitlines() if line.startswith("import time:")]
    assert "cv2" in finished, "the command no longer imports cv2: this test no longer shows the order"
    assert finished.index("edgeseg") < finished.index("cv2")


def test_when_cv2_was_imported_first_the_header_check_still_refuses(small_png):
    code = (
        "import cv2, sys\nimport edgeseg.runtime\nfrom edgeseg.core.files import read_image\n"
        "print('opencv decodes it' if cv2.imread(sys.argv[1]) is not None else 'opencv refuses it')\n"
        "try:\n    read_image(sys.argv[1])\nexcept Exception as error:\n    print(type(error).__name__, error)\n"
    )
    result = python(["-c", code, str(small_png)], EDGESEG_MAX_PIXELS=str(WIDTH * HEIGHT - 1))
    lines = result.stdout.splitlines()
    assert lines[0] == "opencv decodes it", result.stdout + result.stderr  # too late for OpenCV's limit
    assert lines[1].startswith("ImageReadError") and "header declares" in lines[1], result.stdout + result.stderr
