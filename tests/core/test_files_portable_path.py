"""portable_path and portable_command: paths and command lines as a committed record may hold them."""

from __future__ import annotations

from pathlib import Path

import pytest

from edgeseg.core.files import portable_command, portable_path


@pytest.mark.parametrize("path", ["runs/lite0", "../shared/data/isic2018", "model.onnx", "~/data", "."])
def test_a_relative_path_is_kept_as_given(path: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    assert portable_path(path) == path


def test_an_absolute_path_inside_the_current_directory_becomes_relative_to_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    assert portable_path(tmp_path / "runs" / "lite0") == "runs/lite0"
    assert portable_path(str(tmp_path / "runs" / ".." / "models" / "model.onnx")) == "models/model.onnx"
    assert portable_path(tmp_path) == "."


def test_a_path_typed_through_a_symlink_to_the_current_directory_is_inside_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "checkout").mkdir()
    (tmp_path / "link").symlink_to(tmp_path / "checkout")
    monkeypatch.chdir(tmp_path / "checkout")
    assert portable_path(tmp_path / "link" / "runs" / "lite0") == "runs/lite0"


@pytest.mark.parametrize(
    ("path", "portable"),
    [
        ("/work/shared/data/isic2018", "isic2018"),
        ("/home/ana/data/isic2018/", "isic2018"),
        ("/tmp/bench-cmp/lite0-default.onnx", "lite0-default.onnx"),
        ("/", "/"),
    ],
)
def test_an_absolute_path_outside_the_current_directory_keeps_its_last_component_only(
    path: str, portable: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    assert portable_path(path) == portable


def test_from_the_root_nothing_counts_as_inside(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir("/")
    assert portable_path("/home/ana/data/isic2018") == "isic2018"


def test_a_command_line_names_python_and_each_path_portably(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    argv = [
        str(tmp_path / "benchmarks" / "train_accuracy.py"),
        "--data",
        "/mnt/shared/data/isic2018",
        "--result=/tmp/levers/accuracy.json",
        "--out",
        "runs/my run",
        "--minutes",
        "50",
        "--lr",
        "1e-4",
    ]
    assert portable_command(argv) == (
        "python benchmarks/train_accuracy.py --data isic2018 --result=accuracy.json "
        "--out 'runs/my run' --minutes 50 --lr 1e-4"
    )
