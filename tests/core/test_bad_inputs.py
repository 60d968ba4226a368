"""The standing bad-input suite: broken data and broken models through every command that reads them.

Each case is built on the fly from good files. Every command must end with exit code 1, a message
naming the broken file, no traceback, and no output file left behind (not even a partial one).
"""

from __future__ import annotations

import os
import shutil
import struct
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
from click.testing import CliRunner

from edgeseg.cli import main

IMAGES = "ISIC2018_Task1-2_Training_Input"
MASKS = "ISIC2018_Task1_Training_GroundTruth"


def first_pair(data: Path) -> tuple[Path, Path]:
    image = sorted((data / IMAGES).glob("*.jpg"))[0]
    return image, data / MASKS / f"{image.stem}_segmentation.png"


def truncated_image(data: Path) -> Path:
    image, _ = first_pair(data)
    image.write_bytes(image.read_bytes()[:200])
    return image


def empty_image(data: Path) -> Path:
    image, _ = first_pair(data)
    image.write_bytes(b"")
    return image


def text_as_image(data: Path) -> Path:
    image, _ = first_pair(data)
    image.write_text("this is not a JPEG")
    return image


def missing_mask(data: Path) -> Path:
    _, mask = first_pair(data)
    mask.unlink()
    return mask


def wrong_size_mask(data: Path) -> Path:
    _, mask = first_pair(data)
    cv2.imwrite(str(mask), np.zeros((17, 23), np.uint8))
    return mask


def non_binary_mask(data: Path) -> Path:
    _, mask = first_pair(data)
    height, width = cv2.imread(str(mask), cv2.IMREAD_UNCHANGED).shape[:2]
    cv2.imwrite(str(mask), np.tile(np.arange(width, dtype=np.uint8), (height, 1)))
    return mask


def lossless_webp(width: int, height: int, bgra: tuple[int, int, int, int] = (40, 80, 160, 255)) -> bytes:
    """A real lossless WebP (VP8L) of one colour, 38 bytes whatever its size: each of its five prefix codes
    has a single symbol, so every pixel takes no bits at all. Written by hand: cv2 needs the pixels to write it."""
    bits, count = 0, 0
    for value, width_in_bits in [
        (0x2F, 8),
        (width - 1, 14),
        (height - 1, 14),
        (0, 1),
        (0, 3),  # signature, size,
        (0, 1),
        (0, 1),
        (0, 1),
    ]:  # no alpha hint, version 0; no transform, colour cache, meta codes
        bits, count = bits | value << count, count + width_in_bits
    blue, green, red, alpha = bgra
    for symbol in (green, red, blue, alpha, 0):  # the green, red, blue, alpha and distance codes
        for value, width_in_bits in [(1, 1), (0, 1), (1, 1), (symbol, 8)]:  # simple code, 1 symbol, 8 bits wide
            bits, count = bits | value << count, count + width_in_bits
    payload = bits.to_bytes((count + 7) // 8 + 4, "little")
    payload += b"\0" * (len(payload) % 2)  # RIFF chunks have an even size
    chunk = b"VP8L" + struct.pack("<I", len(payload)) + payload
    return b"RIFF" + struct.pack("<I", 4 + len(chunk)) + b"WEBP" + chunk


def late_size_jpeg(width: int, height: int) -> bytes:
    """A real 8x8 JPEG, its frame header changed to declare width x height and moved past two 64 KiB comments.
    libjpeg decodes it whole (the missing scan data become grey, with a warning): 131 KB on disk."""
    data = cv2.imencode(".jpg", np.full((8, 8, 3), 128, np.uint8))[1].tobytes()
    frame_header = data.index(b"\xff\xc0")
    data = data[: frame_header + 5] + struct.pack(">HH", height, width) + data[frame_header + 9 :]
    comment = b"\xff\xfe" + struct.pack(">H", 65535) + b"\0" * 65533
    return data[:2] + comment + comment + data[2:]


WEBP_BOMB_SIZE, JPEG_BOMB_SIZE = (16383, 16383), (20000, 20000)  # above the default EDGESEG_MAX_PIXELS (2e8)


def webp_bomb(data: Path) -> Path:
    """38 bytes that OpenCV decodes into 0.8 GB (1.8 GB at its peak, measured)."""
    image, _ = first_pair(data)
    image.unlink()
    bomb = image.with_suffix(".webp")
    bomb.write_bytes(lossless_webp(*WEBP_BOMB_SIZE))
    return bomb


def late_size_jpeg_bomb(data: Path) -> Path:
    """131 KB that OpenCV decodes into 1.2 GB (2.3 GB at its peak, measured); its size lies past 128 KiB."""
    image, _ = first_pair(data)
    image.write_bytes(late_size_jpeg(*JPEG_BOMB_SIZE))
    return image


BOMBS = {webp_bomb: WEBP_BOMB_SIZE, late_size_jpeg_bomb: JPEG_BOMB_SIZE}
BROKEN_DATA = [truncated_image, empty_image, text_as_image, missing_mask, wrong_size_mask, non_binary_mask, *BOMBS]


def data_commands(data: Path, model: Path, out: Path) -> dict[str, tuple[list[str], list[Path]]]:
    """Each command on ``data``, and the outputs it must not leave behind."""
    return {
        # Its JSON report is the product: it lists the problems, so it is written.
        "data check": (["data", "check", str(data), "--split", "train", "--json", str(out / "check.json")], []),
        "train": (
            [
                "train",
                "--data",
                str(data),
                "--out",
                str(out / "run"),
                "--epochs",
                "1",
                "--size",
                "64",
                "--encoder-weights",
                "none",
                "--no-progress",
            ],
            [out / "run"],
        ),
        "eval": (
            [
                "eval",
                str(model),
                "--data",
                str(data),
                "--split",
                "train",
                "--out",
                str(out / "eval"),
                "--json",
                str(out / "eval.json"),
            ],
            [out / "eval", out / "eval.json"],
        ),
        "bench": (
            [
                "bench",
                str(model),
                "--data",
                str(data),
                "--split",
                "train",
                "--runs",
                "1",
                "--warmup",
                "0",
                "--json",
                str(out / "bench.json"),
            ],
            [out / "bench.json"],
        ),
    }


def assert_clear_failure(result, named: Path, leftovers: list[Path]) -> None:
    assert result.exit_code == 1, result.output
    assert "Traceback" not in result.output, result.output
    assert "error" in result.output.lower() or f"not measured: {named.name}" in result.output, result.output
    assert named.name in result.output, f"the message does not name {named.name}:\n{result.output}"
    for path in leftovers:
        assert not path.exists(), f"{path} was left behind"


@pytest.mark.slow
@pytest.mark.parametrize("breakage", BROKEN_DATA, ids=lambda f: f.__name__)
@pytest.mark.parametrize("command", ["data check", "train", "eval", "bench"])
def test_broken_data_is_named_by_every_command(command, breakage, synthetic_dir, tiny_onnx, tmp_path):
    data, out = tmp_path / "data", tmp_path / "out"
    shutil.copytree(synthetic_dir, data)
    out.mkdir()
    broken = breakage(data)
    arguments, leftovers = data_commands(data, tiny_onnx, out)[command]
    assert_clear_failure(CliRunner().invoke(main, arguments), broken, leftovers)


def test_the_bombs_are_real_images_that_opencv_decodes_at_the_size_they_declare():
    for image in (lossless_webp(640, 480), late_size_jpeg(640, 480)):
        decoded = cv2.imdecode(np.frombuffer(image, np.uint8), cv2.IMREAD_COLOR)
        assert decoded is not None and decoded.shape == (480, 640, 3)
    assert len(lossless_webp(*WEBP_BOMB_SIZE)) < 100 and len(late_size_jpeg(*JPEG_BOMB_SIZE)) < 140_000


# Runs the command and writes the peak resident memory of its children. A child's peak counts the memory
# of the process it was started from (Linux keeps the high-water mark across exec), so the command is
# started from this small interpreter, never from pytest's, which may already hold a gigabyte of torch.
MEASURING_LAUNCHER = """import resource, subprocess, sys
code = subprocess.call(sys.argv[2:], timeout=600)
with open(sys.argv[1], "w") as peak:
    peak.write(str(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024))
sys.exit(code)
"""


def run_edgeseg(arguments: list[str], folder: Path) -> tuple[int, str, int]:
    """Run ``python -m edgeseg ARGUMENTS`` with the default pixel limit: its exit code, its output (stdout
    and stderr), and its peak resident memory in bytes."""
    environment = {
        name: value
        for name, value in os.environ.items()
        if name not in ("EDGESEG_MAX_PIXELS", "OPENCV_IO_MAX_IMAGE_PIXELS")
    }
    peak = folder / "peak_bytes"
    result = subprocess.run(
        [sys.executable, "-c", MEASURING_LAUNCHER, str(peak), sys.executable, "-m", "edgeseg", *arguments],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=environment,
    )
    return result.returncode, result.stdout, int(peak.read_text())


def bomb_command(command: str, data: Path, model: Path, out: Path) -> tuple[list[str], list[Path]]:
    """The command, and the outputs it must not leave behind; `run` on the folder of images."""
    if command == "run":
        return ["run", str(model), "--source", str(data / IMAGES), "--no-show", "--save-masks", str(out / "masks")], []
    return data_commands(data, model, out)[command]


CLEAN_PEAK_BYTES: dict[str, int] = {}  # each command's peak on the good data, measured once


def clean_peak_bytes(command: str, synthetic_dir: Path, model: Path, folder: Path) -> int:
    if command not in CLEAN_PEAK_BYTES:
        data, out = folder / "data", folder / "out"
        shutil.copytree(synthetic_dir, data)
        out.mkdir()
        exit_code, output, CLEAN_PEAK_BYTES[command] = run_edgeseg(bomb_command(command, data, model, out)[0], folder)
        assert exit_code == 0, output
    return CLEAN_PEAK_BYTES[command]


@pytest.mark.slow
@pytest.mark.parametrize("bomb", BOMBS, ids=lambda f: f.__name__)
@pytest.mark.parametrize("command", ["data check", "train", "eval", "run"])
def test_a_decompression_bomb_is_refused_by_every_command_without_being_decoded(
    command, bomb, synthetic_dir, tiny_onnx, tmp_path
):
    data, out = tmp_path / "data", tmp_path / "out"
    shutil.copytree(synthetic_dir, data)
    out.mkdir()
    broken = bomb(data)
    width, height = BOMBS[bomb]
    arguments, leftovers = bomb_command(command, data, tiny_onnx, out)
    exit_code, output, peak_bytes = run_edgeseg(arguments, tmp_path)

    assert "Traceback" not in output, output
    assert broken.name in output and f"declares {width}x{height} = {width * height:,} pixels" in output, output
    assert "EDGESEG_MAX_PIXELS" in output, output
    # Decoding it would add at least width x height x 3 bytes (BGR) to what the command needs anyway.
    clean_peak = clean_peak_bytes(command, synthetic_dir, tiny_onnx, tmp_path / "clean")
    assert peak_bytes < clean_peak + width * height * 3 // 2, (
        f"{command} peaked at {peak_bytes / 2**20:.0f} MiB, {clean_peak / 2**20:.0f} MiB on the good data"
    )
    if command == "run":
        # As for any unreadable image in a folder: named and skipped, the others processed.
        images = len(list((data / IMAGES).iterdir()))
        assert exit_code == 0 and f"skipped {broken}: its" in output, output
        assert len(list((out / "masks").iterdir())) == images - 1
    else:
        assert exit_code == 1, output
        for path in leftovers:
            assert not path.exists(), f"{path} was left behind"


def random_bytes_onnx(folder: Path, good: Path) -> Path:
    path = folder / "model.onnx"
    path.write_bytes(np.random.default_rng(0).bytes(4096))
    return path


def truncated_onnx(folder: Path, good: Path) -> Path:
    path = folder / "model.onnx"
    path.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    return path


def foreign_onnx(folder: Path, good: Path) -> Path:
    """A valid ONNX that edgeseg did not export: no model card in its metadata."""
    import onnx

    model = onnx.load(str(good))
    del model.metadata_props[:]
    path = folder / "model.onnx"
    onnx.save(model, str(path))
    return path


def engine_without_sidecar(folder: Path, good: Path) -> Path:
    path = folder / "model.trt10.3.sm87.fp16.engine"
    path.write_bytes(b"\x00" * 64)
    return path


BROKEN_MODELS = [random_bytes_onnx, truncated_onnx, foreign_onnx, engine_without_sidecar]


def model_commands(model: Path, data: Path, out: Path) -> dict[str, tuple[list[str], list[Path]]]:
    return {
        "eval": (
            ["eval", str(model), "--data", str(data), "--out", str(out / "eval"), "--json", str(out / "eval.json")],
            [out / "eval", out / "eval.json"],
        ),
        "run": (
            [
                "run",
                str(model),
                "--source",
                str(data / IMAGES),
                "--no-show",
                "--save-masks",
                str(out / "masks"),
                "--jsonl",
                str(out / "frames.jsonl"),
                "--save",
                str(out / "overlay.mp4"),
            ],
            [out / "masks", out / "frames.jsonl", out / "overlay.mp4"],
        ),
        # bench reports every form it was given, measured or not: its report is written, naming the failure.
        "bench": (["bench", str(model), "--runs", "1", "--warmup", "0", "--json", str(out / "bench.json")], []),
        "export": (["export", str(model), "--out", str(out / "export"), "--fp16"], [out / "export"]),
    }


@pytest.mark.slow
@pytest.mark.parametrize("breakage", BROKEN_MODELS, ids=lambda f: f.__name__)
@pytest.mark.parametrize("command", ["eval", "run", "bench", "export"])
def test_broken_models_are_named_by_every_command(command, breakage, synthetic_dir, tiny_onnx, tmp_path):
    models, out = tmp_path / "models", tmp_path / "out"
    models.mkdir()
    out.mkdir()
    broken = breakage(models, tiny_onnx)
    arguments, leftovers = model_commands(broken, synthetic_dir, out)[command]
    assert_clear_failure(CliRunner().invoke(main, arguments), broken, leftovers)


@pytest.mark.parametrize("content", [b"", b"RIFF\x00\x00\x00\x00AVI garbage" * 10], ids=["empty", "garbage"])
def test_a_broken_video_is_named_by_run(content, tiny_onnx, tmp_path):
    video = tmp_path / "clinic.mp4"
    video.write_bytes(content)
    out = tmp_path / "overlay.mp4"
    result = CliRunner().invoke(main, ["run", str(tiny_onnx), "--source", str(video), "--no-show", "--save", str(out)])
    assert_clear_failure(result, video, [out])
