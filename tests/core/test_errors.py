"""One error boundary: a user's error is `Error: ...` with exit 1 in every command; a bug is reported as a bug."""

from __future__ import annotations

import pytest
from click.testing import CliRunner

from edgeseg.cli import main
from edgeseg.core.errors import EXIT_BUG, EdgesegError


@pytest.mark.parametrize(
    "arguments",
    [
        ["eval", "{onnx}", "--data", "{empty}"],  # a folder with no data
        ["bench", "{onnx}", "--data", "{empty}"],  # a data folder with no data
        ["export", "{not_onnx}"],  # neither a run directory nor an ONNX
        ["run", "{onnx}", "--source", "{empty}", "--no-show"],  # a folder without images
        ["data", "check", "{empty}"],
    ],
)
def test_user_errors_are_one_line_with_exit_1(arguments, tiny_onnx, tmp_path):
    (tmp_path / "empty").mkdir()
    (tmp_path / "model.txt").write_text("not a model")
    values = {"onnx": str(tiny_onnx), "empty": str(tmp_path / "empty"), "not_onnx": str(tmp_path / "model.txt")}
    result = CliRunner().invoke(main, [argument.format(**values) for argument in arguments])
    assert result.exit_code == 1, result.output
    assert "Traceback" not in result.output and "Error" in result.output


def test_run_names_a_file_that_is_neither_model_nor_image(tmp_path):
    (tmp_path / "model.txt").write_text("not a model")
    result = CliRunner().invoke(main, ["run", str(tmp_path / "model.txt"), "--no-show"])
    assert result.exit_code == 2 and "Traceback" not in result.output
    assert "model.txt: not a model" in result.output


def test_every_edgeseg_error_derives_from_the_one_base():
    from edgeseg.core.card import CardError
    from edgeseg.core.data import DataError
    from edgeseg.core.files import ImageReadError
    from edgeseg.core.names import DefaultModelMissing
    from edgeseg.core.segmenter import BackendUnavailable
    from edgeseg.export.export_run import ExportError
    from edgeseg.export.tensorrt_export import EngineUnavailable
    from edgeseg.loading.open import ModelPathError
    from edgeseg.runtime.loaders import RuntimeModelError
    from edgeseg.runtime.run_loop import OutputError
    from edgeseg.runtime.sources import SourceError

    for kind in (
        CardError,
        DataError,
        ModelPathError,
        ExportError,
        EngineUnavailable,
        ImageReadError,
        DefaultModelMissing,
        RuntimeModelError,
        OutputError,
        SourceError,
        BackendUnavailable,
    ):
        assert issubclass(kind, EdgesegError), kind


def test_a_bug_is_shown_as_a_bug_and_debug_shows_any_traceback(monkeypatch, tmp_path):
    import edgeseg.core.data

    def broken(*args, **kwargs):
        raise ZeroDivisionError("an injected bug")

    monkeypatch.setattr(edgeseg.core.data, "check_dataset", broken)
    result = CliRunner().invoke(main, ["data", "check", str(tmp_path)])
    assert result.exit_code == EXIT_BUG
    assert "ZeroDivisionError: an injected bug" in result.output and "bug in edgeseg" in result.output

    monkeypatch.setattr(
        edgeseg.core.data, "check_dataset", lambda *a, **k: (_ for _ in ()).throw(EdgesegError("fixable"))
    )
    assert CliRunner().invoke(main, ["data", "check", str(tmp_path)]).output.strip() == "Error: fixable"
    debug = CliRunner().invoke(main, ["--debug", "data", "check", str(tmp_path)])
    assert isinstance(debug.exception, EdgesegError)


def bomb_png(width: int = 100_000, height: int = 100_000) -> bytes:
    """A PNG whose header claims width x height pixels, followed by a tiny, meaningless body."""
    import struct
    import zlib

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")
    )


def test_image_headers_are_read_without_decoding():
    import cv2
    import numpy as np

    from edgeseg.core.files import header_size

    image = np.zeros((37, 53, 3), np.uint8)
    for suffix in (".png", ".jpg"):
        assert header_size(cv2.imencode(suffix, image)[1].tobytes()) == (53, 37)
    assert header_size(bomb_png()) == (100_000, 100_000)
    assert header_size(b"not an image") is None


@pytest.mark.parametrize("command", ["data", "train", "eval"])
def test_a_decompression_bomb_is_refused_by_name_before_decoding(command, synthetic_dir, tiny_onnx, tmp_path):
    import shutil

    data = tmp_path / "data"
    shutil.copytree(synthetic_dir, data)
    victim = sorted((data / "ISIC2018_Task1-2_Training_Input").iterdir())[0]
    bomb = victim.with_suffix(".png")
    victim.unlink()
    bomb.write_bytes(bomb_png())
    arguments = {
        "data": ["data", "check", str(data)],
        "train": [
            "train",
            "--data",
            str(data),
            "--out",
            str(tmp_path / "run"),
            "--epochs",
            "1",
            "--size",
            "64",
            "--encoder-weights",
            "none",
            "--no-progress",
        ],
        "eval": ["eval", str(tiny_onnx), "--data", str(data), "--split", "all"],
    }[command]
    result = CliRunner().invoke(main, arguments)
    assert result.exit_code == 1, result.output
    assert "Traceback" not in result.output
    assert bomb.name in result.output and "decompression bomb" in result.output
