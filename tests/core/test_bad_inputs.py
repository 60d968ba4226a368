"""The standing bad-input suite: broken data and broken models through every command that reads them.

Each case is built on the fly from good files. Every command must end with exit code 1, a message
naming the broken file, no traceback, and no output file left behind (not even a partial one).
"""

from __future__ import annotations

import shutil
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


BROKEN_DATA = [truncated_image, empty_image, text_as_image, missing_mask, wrong_size_mask, non_binary_mask]


def data_commands(data: Path, model: Path, out: Path) -> dict[str, tuple[list[str], list[Path]]]:
    """Each command on ``data``, and the outputs it must not leave behind."""
    return {
        # Its JSON report is the product: it lists the problems, so it is written.
        "data check": (["data", "check", str(data), "--split", "train", "--json", str(out / "check.json")], []),
        "train": (["train", "--data", str(data), "--out", str(out / "run"), "--epochs", "1", "--size", "64",
                   "--encoder-weights", "none", "--no-progress"], [out / "run"]),
        "eval": ([ "eval", str(model), "--data", str(data), "--split", "train", "--out", str(out / "eval"),
                  "--json", str(out / "eval.json")], [out / "eval", out / "eval.json"]),
        "bench": (["bench", str(model), "--data", str(data), "--split", "train", "--runs", "1", "--warmup", "0",
                   "--json", str(out / "bench.json")], [out / "bench.json"]),
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
        "eval": (["eval", str(model), "--data", str(data), "--out", str(out / "eval"), "--json", str(out / "eval.json")],
                 [out / "eval", out / "eval.json"]),
        "run": (["run", str(model), "--source", str(data / IMAGES), "--no-show", "--save-masks", str(out / "masks"),
                 "--jsonl", str(out / "frames.jsonl"), "--save", str(out / "overlay.mp4")],
                [out / "masks", out / "frames.jsonl", out / "overlay.mp4"]),
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
