"""`edgeseg train --config FILE.toml`: settings from a file, flags over it, errors that name the key, the run's own
config.toml that runs it again, few flags (the moved ones still taken, with a note), and no import circle."""

from __future__ import annotations

import ast
import dataclasses
import json
import subprocess
import sys
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

pytest.importorskip("torch")

from edgeseg.cli import main
from edgeseg.train.cli import train_command
from edgeseg.train.config import (
    CONFIG_TOML_FILENAME,
    FILE_ONLY_SETTINGS,
    TrainConfig,
    default_of,
    file_fields,
    read_settings,
    settings_toml,
    toml_value,
)

TRAIN_DIR = Path(__file__).resolve().parents[2] / "train"
MOST_OPTIONS = 18


def write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def train(*args: str):
    return CliRunner().invoke(main, ["train", *args])


def test_config_sets_the_values_it_names(started, tmp_path):
    settings = write(
        tmp_path / "settings.toml",
        'epochs = 3\nloss = "lovasz"\ndecoder_channels = [32, 16]\nsize = [64, 96]\naugment = false\n'
        'camera_framing = 0.5\nseed = 7\ndevice = "cpu"\ntime_budget_minutes = 2\nlr = 1\n',
    )
    result = train("-d", str(tmp_path), "-o", str(tmp_path / "run"), "--config", str(settings))
    assert result.exit_code == 0, result.output
    config = started[-1]
    assert (config.epochs, config.loss, config.decoder_channels, config.size) == (3, "lovasz", (32, 16), (64, 96))
    assert (config.augment, config.camera_framing, config.seed, config.device) == (False, 0.5, 7, "cpu")
    assert config.time_budget_minutes == 2.0 and config.lr == 1.0 and isinstance(config.lr, float)
    assert config.batch_size == default_of("batch_size")  # what the file leaves out keeps its default
    assert "note:" not in result.stderr


def test_a_flag_given_overrides_the_file_and_the_file_the_preset(started, tmp_path):
    settings = write(
        tmp_path / "settings.toml", f"data = {toml_value(str(tmp_path))}\nout = 'x'\nepochs = 3\nlr = 0.01\n"
    )
    result = train("--config", str(settings), "-o", str(tmp_path / "run"), "--epochs", "5", "--preset", "paper")
    assert result.exit_code == 0, result.output
    config = started[-1]
    assert (config.data, config.out) == (str(tmp_path), str(tmp_path / "run"))  # data from the file, out typed
    assert config.epochs == 5 and config.lr == 0.01  # the typed flag, then the file, over the preset's 20 and 1e-4
    assert config.encoder == "se_resnext50_32x4d"  # what neither names comes from the preset


@pytest.mark.parametrize(
    ("text", "key", "says"),
    [
        ("time_budget = 60\n", "time_budget", "did you mean 'time_budget_minutes'?"),
        ("[train]\nepochs = 3\n", "train", "no [sections]"),
        ('epochs = "forty"\n', "epochs", "takes a whole number (for example epochs = 40)"),
        ("augment = 1\n", "augment", "takes true or false"),
        ('loss = "l2"\n', "loss", "'l2' is not one of 'dice', 'dice+bce', 'lovasz'"),
        ("size = 250\n", "size", "Consider 256x256"),
        ("decoder_channels = [32]\n", "decoder_channels", "two whole numbers above 0"),
        ('device = "gpu"\n', "device", '"auto", "cpu", "cuda" or "cuda:N"'),
        ("workers = -1\n", "workers", "-1 is not in the range x>=0"),
    ],
)
def test_a_bad_key_or_value_names_the_file_the_key_and_the_fix(started, tmp_path, text, key, says):
    settings = write(tmp_path / "settings.toml", text)
    result = train("-d", str(tmp_path), "-o", str(tmp_path / "run"), "--config", str(settings))
    assert result.exit_code == 1 and not started, result.output
    assert f"Error: {settings}: key '{key}'" in result.output and says in result.output, result.output
    assert "Traceback" not in result.output
    if "not a setting" in result.output:
        assert "The keys are: data, out, split_dir, epochs" in result.output  # every valid key listed


def test_a_file_that_is_not_toml_says_so(started, tmp_path):
    settings = write(tmp_path / "settings.toml", "epochs: 3\n")
    result = train("-d", str(tmp_path), "-o", str(tmp_path / "run"), "--config", str(settings))
    assert result.exit_code == 1 and f"Error: {settings}: not a TOML file" in result.output and not started


def test_resume_refuses_a_config_file(started, tmp_path):
    settings = write(tmp_path / "settings.toml", "epochs = 3\n")
    result = train("--resume", str(tmp_path), "-d", str(tmp_path), "--config", str(settings))
    assert result.exit_code == 2 and "--config: a resumed run keeps the settings it was started with" in result.output


def test_settings_toml_round_trips_every_kind_of_value(tmp_path):
    config = TrainConfig(
        data='folder "quoted" \\ back\tslash, ünïcode, \x7f and a newline\n',
        out="runs/x",
        size=(64, 96),
        lr=1e-5,
        camera_framing=1 / 3,
        augment=False,
        time_budget_minutes=0.5,
        device="cuda:1",
        threads=None,  # unset: left out of the file, and so unset again
    )
    text = settings_toml(config)
    assert "threads" not in text and "progress" not in text
    settings = read_settings(write(tmp_path / CONFIG_TOML_FILENAME, text))
    assert TrainConfig(**settings) == config


@pytest.fixture(scope="module")
def configured_run(synthetic_dir, tmp_path_factory) -> Path:
    """A tiny real run whose settings come from a --config file."""
    folder = tmp_path_factory.mktemp("configured")
    settings = write(
        folder / "tiny.toml",
        'size = 64\nbatch_size = 4\ndecoder_channels = [32, 32]\nencoder_weights = "none"\nseed = 3\nthreads = 2\n'
        "epochs = 2\n",
    )
    out = folder / "run"
    flags = ["-d", str(synthetic_dir), "-o", str(out), "--config", str(settings), "-q", "--stop-after-epochs", "1"]
    result = CliRunner().invoke(main, ["train", *flags], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return out


def test_the_run_writes_its_settings_as_a_config_file_that_reads_back(configured_run, synthetic_dir):
    recorded = json.loads((configured_run / "config.json").read_text())  # what the run ran, as before
    assert (recorded["size"], recorded["decoder_channels"], recorded["threads"]) == ([64, 64], [32, 32], 2)
    written = read_settings(configured_run / CONFIG_TOML_FILENAME)
    assert TrainConfig(**written, progress=False) == TrainConfig.from_dict(recorded)
    assert written["data"] == str(synthetic_dir) and "stop_after_epochs" not in recorded  # a test hook is no setting


def test_a_runs_config_file_runs_it_again(started, configured_run, tmp_path):
    result = train("--config", str(configured_run / CONFIG_TOML_FILENAME), "-o", str(tmp_path / "again"), "-q")
    assert result.exit_code == 0, result.output
    recorded = TrainConfig.from_dict(json.loads((configured_run / "config.json").read_text()))
    assert started[-1] == dataclasses.replace(recorded, out=str(tmp_path / "again"))


def visible_options() -> list[click.Option]:
    """The options `edgeseg train -h` lists, -h/--help included (click adds it in get_params)."""
    # A context as the edgeseg group makes (-h/--help): click caches the help option it first builds on the command.
    params = train_command.get_params(click.Context(train_command, **main.context_settings))
    return [param for param in params if isinstance(param, click.Option) and not param.hidden]


def test_train_has_few_options():
    options = visible_options()
    assert "--help" in {flag for option in options for flag in option.opts}
    assert len(options) <= MOST_OPTIONS, [max(option.opts, key=len) for option in options]


@pytest.mark.parametrize(
    ("flags", "field", "value", "note"),
    [
        (["--loss", "lovasz"], "loss", "lovasz", 'loss = "lovasz"'),
        (["--seed", "5"], "seed", 5, "seed = 5"),
        (["--no-augment"], "augment", False, "augment = false"),
        (["--decoder-channels", "32,16"], "decoder_channels", (32, 16), "decoder_channels = [32, 16]"),
        (["--workers", "2"], "workers", 2, "workers = 2"),
    ],
)
def test_a_moved_flag_still_works_and_names_its_setting(started, tmp_path, flags, field, value, note):
    result = train("-d", str(tmp_path), "-o", str(tmp_path / "run"), *flags)
    assert result.exit_code == 0, result.output
    assert getattr(started[-1], field) == value
    assert f"note: {flags[0]} is now a setting of the --config file (TOML): {note}" in result.stderr


def test_a_moved_flag_overrides_the_file_too(started, tmp_path):
    settings = write(tmp_path / "settings.toml", 'loss = "dice"\n')
    result = train("-d", str(tmp_path), "-o", str(tmp_path / "run"), "--config", str(settings), "--loss", "lovasz")
    assert result.exit_code == 0 and started[-1].loss == "lovasz", result.output


def test_help_lists_the_file_only_settings_with_the_dataclass_defaults():
    shown = CliRunner().invoke(main, ["train", "-h"]).output
    for name in FILE_ONLY_SETTINGS:
        default = default_of(name)
        assert (f"{name} = {toml_value(default)}" if default is not None else f"  {name} ") in shown, name
    # The list is every setting without a flag: the flags' own (--backend sets device) and the file's make all.
    flagged = {option.name for option in visible_options()} | {"device"}
    assert set(FILE_ONLY_SETTINGS) == set(file_fields()) - flagged


def imports_of(path: Path) -> set[str]:
    """Every module a file imports, type-only imports included."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
        elif isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
    return found


def test_only_the_command_line_imports_the_loop():
    """The loop imports the rest of train/, so nothing of it may import the loop back, not even for a type."""
    importers = sorted(path.name for path in TRAIN_DIR.glob("*.py") if "edgeseg.train.loop" in imports_of(path))
    assert importers == ["cli.py"]
    assert "torch" not in imports_of(TRAIN_DIR / "config.py")  # --help reads its defaults without PyTorch


def test_the_config_module_imports_without_torch():
    code = "import sys, edgeseg.train.config, edgeseg.train.cli; assert 'torch' not in sys.modules"
    assert subprocess.run([sys.executable, "-c", code], timeout=60).returncode == 0
