"""`edgeseg train`'s names: --backend as eval and bench say it (the old --device still taken, with a note),
-q/--quiet (the old --no-progress too), and a help whose defaults are TrainConfig's, not a copy."""

from __future__ import annotations

import dataclasses
import re

import pytest
from click.testing import CliRunner

pytest.importorskip("torch")

from edgeseg.cli import main
from edgeseg.train.config import TrainConfig

DEVICE_NOTE = "note: --device of `train` is now spelled --backend"
NO_PROGRESS_NOTE = "note: --no-progress is now spelled -q/--quiet"


def train(tmp_path, *flags: str):
    return CliRunner().invoke(main, ["train", "-d", str(tmp_path), "-o", str(tmp_path / "run"), *flags])


@pytest.mark.parametrize(
    "flags, device, note",
    [
        ([], "auto", None),
        (["--backend", "torch-cpu"], "cpu", None),
        (["-b", "torch-cuda"], "cuda", None),
        (["--backend", "cuda"], "cuda", "note: --backend cuda is now spelled --backend torch-cuda"),
        (["--device", "cpu"], "cpu", DEVICE_NOTE),
        (["--device", "cuda:1"], "cuda:1", DEVICE_NOTE),
    ],
)
def test_backend_names_the_device_and_the_old_device_still_works(started, tmp_path, flags, device, note):
    result = train(tmp_path, *flags)
    assert result.exit_code == 0, result.output
    assert started[-1].device == device
    assert (note in result.stderr) if note else ("note:" not in result.stderr)


def test_backend_and_device_together_are_refused(started, tmp_path):
    result = train(tmp_path, "--backend", "torch-cpu", "--device", "cpu")
    assert result.exit_code == 2 and "--device is the old spelling of --backend" in result.output and not started


def test_quiet_and_the_old_no_progress_turn_progress_off(started, tmp_path):
    for flags, note in (([], None), (["-q"], None), (["--no-progress"], NO_PROGRESS_NOTE)):
        result = train(tmp_path, *flags)
        assert result.exit_code == 0, result.output
        assert started[-1].progress is (not flags)
        assert (note in result.stderr) if note else ("note:" not in result.stderr)


def test_only_typed_options_reach_the_run(started, tmp_path):
    """The help's defaults are shown, not passed: a preset's settings are not overridden by them."""
    assert train(tmp_path, "--preset", "paper", "--epochs", "3").exit_code == 0
    config = started[-1]
    assert config.epochs == 3 and config.encoder == "se_resnext50_32x4d" and config.lr == 1e-4


def test_help_shows_trainconfig_defaults():
    shown = " ".join(CliRunner().invoke(main, ["train", "-h"]).output.split())
    defaults = {field.name: field.default for field in dataclasses.fields(TrainConfig)}
    for flag, name in (
        ("--epochs", "epochs"),
        ("--batch-size", "batch_size"),
        ("--lr", "lr"),
        ("--encoder-weights", "encoder_weights"),
    ):
        match = re.search(re.escape(flag) + r" .*?\[default: ([^;\]]+)", shown)
        assert match and match[1] == str(defaults[name]), (flag, match and match[1])
    assert "[default: 256;" in shown or "[default: 256]" in shown  # --size, as typed
    assert "[default: auto]" in shown  # --backend, as typed (TrainConfig's device "auto")
    assert "[40]" not in shown and "[8]" not in shown  # no default written by hand
