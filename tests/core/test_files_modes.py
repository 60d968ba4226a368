"""Every file edgeseg writes gets the permissions the umask gives a new file: 0600 under 077, 0644 under 022.

Patient images (an overlay video, masks) must not be readable by every user of the machine when the user's
umask says so, and a shared model or report must stay readable when it says that.
"""

from __future__ import annotations

import builtins
import os
import stat
from collections.abc import Iterator
from pathlib import Path

import cv2
import numpy as np
import pytest
from click.testing import CliRunner

from edgeseg.cli import main
from edgeseg.core.files import atomic_output, current_umask, new_file_mode, write_mask, write_text_atomic
from edgeseg.core.synthetic import make_sample

UMASKS = [0o077, 0o022]


@pytest.fixture(params=UMASKS, ids=["umask-077", "umask-022"])
def umask(request) -> Iterator[int]:
    """The process's umask set for one test (CliRunner runs the command in this process), then restored."""
    previous = os.umask(request.param)
    try:
        yield request.param
    finally:
        os.umask(previous)


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def files_under(folder: Path) -> list[Path]:
    return sorted(path for path in folder.rglob("*") if path.is_file())


def assert_modes(files: list[Path], umask: int) -> None:
    assert files, "the command wrote nothing"
    wrong = {str(path): oct(mode(path)) for path in files if mode(path) != 0o666 & ~umask}
    assert not wrong, f"not {oct(0o666 & ~umask)} under umask {oct(umask)}: {wrong}"


def test_the_umask_is_read_without_changing_it(umask: int, monkeypatch: pytest.MonkeyPatch) -> None:
    assert current_umask() == umask and new_file_mode() == 0o666 & ~umask
    real_open = builtins.open

    def no_proc(file, *args, **kwargs):  # a system without /proc: the umask is read by setting it and back
        if str(file).startswith("/proc/"):
            raise FileNotFoundError(file)
        return real_open(file, *args, **kwargs)

    monkeypatch.setattr(builtins, "open", no_proc)
    assert current_umask() == umask
    assert os.umask(umask) == umask, "reading the umask must leave it as it was"


def test_atomic_writes_get_the_mode_open_gives_a_new_file(umask: int, tmp_path: Path) -> None:
    with open(tmp_path / "plain.txt", "w") as stream:
        stream.write("made by open()")
    write_text_atomic(tmp_path / "report.json", "{}\n")
    write_mask(tmp_path / "ISIC_0000000_segmentation.png", np.ones((4, 4), dtype=bool))
    with atomic_output(tmp_path / "overlay.mp4") as temporary:
        assert mode(temporary) == 0o600, "a file being written is private until it is complete"
        temporary.write_bytes(b"video")
    assert_modes(files_under(tmp_path), umask)
    assert mode(tmp_path / "report.json") == mode(tmp_path / "plain.txt")


@pytest.fixture
def images(tmp_path: Path) -> Path:
    folder = tmp_path / "images"
    folder.mkdir()
    for index in range(3):
        cv2.imwrite(str(folder / f"ISIC_000000{index}.jpg"), make_sample(0, index, 96)[0])
    return folder


def test_every_output_of_run_follows_the_umask(umask: int, tiny_onnx: Path, images: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    result = CliRunner().invoke(
        main,
        [
            "run",
            str(tiny_onnx),
            "--source",
            str(images),
            "--no-show",
            "--save",
            str(out / "overlay.mp4"),
            "--save-masks",
            str(out / "masks"),
            "--jsonl",
            str(out / "frames.jsonl"),
        ],
    )
    assert result.exit_code == 0, result.output
    written = files_under(out)
    assert {path.name for path in written} >= {"overlay.mp4", "frames.jsonl", "ISIC_0000000_segmentation.png"}
    assert_modes(written, umask)


def test_every_output_of_eval_follows_the_umask(
    umask: int, tiny_onnx: Path, synthetic_dir: Path, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    result = CliRunner().invoke(
        main,
        [
            "eval",
            str(tiny_onnx),
            "--data",
            str(synthetic_dir),
            "--out",
            str(out / "eval"),
            "--json",
            str(out / "eval.json"),
            "--save-masks",
            str(out / "masks"),
        ],
    )
    assert result.exit_code == 0, result.output
    written = files_under(out)
    assert {path.name for path in written} >= {"per-image.csv", "worst-cases.png", "eval.json"}
    assert len(list((out / "masks").iterdir())) > 0
    assert_modes(written, umask)


def test_every_output_of_export_follows_the_umask(
    umask: int, tiny_onnx: Path, synthetic_dir: Path, tmp_path: Path
) -> None:
    pytest.importorskip("onnx")
    out = tmp_path / "export"
    result = CliRunner().invoke(
        main,
        [
            "export",
            str(tiny_onnx),
            "--format",
            "fp16",
            "--out",
            str(out),
            "--parity-data",
            str(synthetic_dir),
            "--parity-n",
            "2",
            "--latency-runs",
            "1",
            "--json",
            str(tmp_path / "export.json"),
        ],
    )
    assert (out / "export-report.json").is_file(), result.output
    written = [*files_under(out), tmp_path / "export.json"]
    assert {path.name for path in written} >= {"model.fp16.onnx", "export-report.md"}
    assert_modes(written, umask)


@pytest.mark.slow
def test_every_output_of_train_follows_the_umask(umask: int, synthetic_dir: Path, tmp_path: Path) -> None:
    pytest.importorskip("torch")
    run = tmp_path / "run"
    result = CliRunner().invoke(
        main,
        [
            "train",
            "--data",
            str(synthetic_dir),
            "--out",
            str(run),
            "--epochs",
            "1",
            "--size",
            "64",
            "--batch-size",
            "4",
            "--decoder-channels",
            "32,32",
            "--encoder-weights",
            "none",
            "--threads",
            "2",
            "--no-progress",
        ],
    )
    assert result.exit_code == 0, result.output
    written = files_under(run)
    assert {path.name for path in written} >= {
        "model.safetensors",
        "card.json",
        "checkpoint-last.pt",
        "config.json",
        "epochs.csv",
        "iterations.csv",
        "loss.png",
    }
    assert_modes(written, umask)
