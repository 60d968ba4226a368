"""A full disk: training and export fail with "no space left" naming the folder, and keep what was there.

The folder is a small tmpfs mounted for the test (root with CAP_SYS_ADMIN, as on this project's
machines and CI); where none can be mounted, the test skips and says why.
"""

from __future__ import annotations

import hashlib
import shutil
import subprocess
from pathlib import Path

import pytest
from click.testing import CliRunner

torch = pytest.importorskip("torch")

from edgeseg.cli import main
from edgeseg.train.loop import CHECKPOINT_FILENAME

TINY = [
    "--size",
    "64",
    "--batch-size",
    "4",
    "--decoder-channels",
    "32,32",
    "--encoder-weights",
    "none",
    "--seed",
    "3",
    "--threads",
    "2",
    "--no-progress",
]


@pytest.fixture
def small_disk(tmp_path: Path):
    """A 256 MiB tmpfs: room for a tiny run or export, until the test fills it."""
    folder = tmp_path / "disk"
    folder.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=256m", "tmpfs", str(folder)], capture_output=True, text=True
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here ({mounted.stderr.strip() or 'mount failed'}); needs root")
    yield folder
    subprocess.run(["umount", "-l", str(folder)], check=False)


def fill(folder: Path, leave_bytes: int = 256 << 10) -> None:
    """Fill the device holding ``folder`` until about ``leave_bytes`` are free."""
    free = shutil.disk_usage(folder).free
    with open(folder / "filler.bin", "wb") as stream:
        stream.truncate(0)
        chunk = b"\0" * (1 << 20)
        while free - stream.tell() > leave_bytes + len(chunk):
            stream.write(chunk)
        stream.write(b"\0" * max(0, free - stream.tell() - leave_bytes))


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def assert_no_space_error(result, folder: Path) -> None:
    assert result.exit_code == 1, result.output
    assert "no space left" in result.output and str(folder) in result.output, result.output
    assert "Traceback" not in result.output
    assert not list(folder.glob(".*.tmp*")), "a temporary was left behind"


def test_training_on_a_full_disk_fails_clearly_and_keeps_the_checkpoint(small_disk: Path, synthetic_dir: Path):
    run = small_disk / "run"
    first = CliRunner().invoke(
        main,
        ["train", "--data", str(synthetic_dir), "--out", str(run), "--epochs", "2", "--stop-after-epochs", "1", *TINY],
    )
    assert first.exit_code == 0, first.output
    checkpoint = sha256(run / CHECKPOINT_FILENAME)
    fill(small_disk)
    result = CliRunner().invoke(main, ["train", "--resume", str(run), "--data", str(synthetic_dir), "--no-progress"])
    assert_no_space_error(result, run)
    assert sha256(run / CHECKPOINT_FILENAME) == checkpoint
    (small_disk / "filler.bin").unlink()
    resumed = CliRunner().invoke(main, ["train", "--resume", str(run), "--data", str(synthetic_dir), "--no-progress"])
    assert resumed.exit_code == 0, resumed.output


def test_export_on_a_full_disk_fails_clearly_and_keeps_the_model(
    small_disk: Path, trained_run_dir: Path, synthetic_dir: Path
):
    out = small_disk / "export"
    arguments = [
        "export",
        str(trained_run_dir),
        "--out",
        str(out),
        "--format",
        "onnx",
        "--parity-data",
        str(synthetic_dir),
        "--parity-n",
        "4",
        "--latency-runs",
        "2",
    ]
    first = CliRunner().invoke(main, arguments)
    assert first.exit_code == 0, first.output
    model = sha256(out / "model.onnx")
    fill(small_disk)
    result = CliRunner().invoke(
        main, [*arguments, "--overwrite"]
    )  # the same export again: a new model.onnx that does not fit
    assert_no_space_error(result, out)
    assert sha256(out / "model.onnx") == model
