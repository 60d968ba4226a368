"""`edgeseg train --resume` trusts a run folder for its training settings only: never a path, never a test hook.

A run folder may come from anyone, so a crafted checkpoint or config.json must not choose where the run
reads or writes. The real kill before the first checkpoint is in tests/test_kills.py.
"""

from __future__ import annotations

import dataclasses
import json
import os
import pickle
import shutil
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
from click.testing import CliRunner

from edgeseg.cli import main
from edgeseg.core.card import load_card
from edgeseg.core.data import read_split
from edgeseg.train.checkpoints import CONFIG_FILENAME
from edgeseg.train.config import TrainConfig
from edgeseg.train.loop import (
    CHECKPOINT_FILENAME,
    COMMAND_LINE_ONLY_FIELDS,
    LOCATION_FIELDS,
    RUN_FIELDS,
    START_FILE_FIELDS,
)

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
    "1",
    "--no-progress",
]


def invoke(*args: str):
    return CliRunner().invoke(main, ["train", *args])


@pytest.fixture(scope="module")
def stopped_run(synthetic_dir, tmp_path_factory) -> Path:
    """A run left after its first of two epochs, as a kill after that checkpoint leaves it."""
    out = tmp_path_factory.mktemp("resume") / "run"
    result = invoke("--data", str(synthetic_dir), "--out", str(out), "--epochs", "2", "--stop-after-epochs", "1", *TINY)
    assert result.exit_code == 0, result.output
    return out


@pytest.fixture
def run_copy(stopped_run, tmp_path) -> Path:
    out = tmp_path / "run"
    shutil.copytree(stopped_run, out)
    return out


def hostile_paths(tmp_path: Path) -> dict[str, str]:
    """Paths a crafted run folder names: a log to append to, data, a split and an output elsewhere."""
    elsewhere = tmp_path / "elsewhere"
    return {
        "sample_log": str(elsewhere / "appended.log"),
        "data": str(elsewhere / "data"),
        "split_dir": str(elsewhere / "splits"),
        "out": str(elsewhere / "out"),
    }


def assert_nothing_written_elsewhere(tmp_path: Path) -> None:
    assert not (tmp_path / "elsewhere").exists(), sorted(str(path) for path in (tmp_path / "elsewhere").rglob("*"))


def test_every_config_field_has_one_source_on_resume():
    groups = [RUN_FIELDS, LOCATION_FIELDS, START_FILE_FIELDS, COMMAND_LINE_ONLY_FIELDS]
    named = [name for group in groups for name in group]
    assert len(named) == len(set(named)), "a field is in two groups"
    fields = {field.name for field in dataclasses.fields(TrainConfig)}
    assert set(named) == fields, "decide where a new field comes from on resume"


def test_a_crafted_checkpoint_chooses_no_path_and_no_test_hook(run_copy, synthetic_dir, tmp_path):
    checkpoint = torch.load(run_copy / CHECKPOINT_FILENAME, weights_only=True)
    checkpoint["config"] |= {**hostile_paths(tmp_path), "stop_after_epochs": 1}
    torch.save(checkpoint, run_copy / CHECKPOINT_FILENAME)

    result = invoke("--resume", str(run_copy), "--data", str(synthetic_dir), "--no-progress")

    assert result.exit_code == 0, result.output
    assert_nothing_written_elsewhere(tmp_path)
    assert (run_copy / "logs" / "threshold.csv").is_file()  # finished: the stored stop_after_epochs was not used
    assert load_card(run_copy).provenance.data == synthetic_dir.name  # trained on the command line's data


def test_a_crafted_config_json_chooses_no_path_and_no_test_hook(run_copy, synthetic_dir, tmp_path):
    (run_copy / CHECKPOINT_FILENAME).unlink()  # stopped before its first checkpoint: it starts from config.json
    config = json.loads((run_copy / CONFIG_FILENAME).read_text())
    config |= {**hostile_paths(tmp_path), "stop_after_epochs": None, "epochs": 1}
    (run_copy / CONFIG_FILENAME).write_text(json.dumps(config))

    result = invoke("--resume", str(run_copy), "--data", str(synthetic_dir), "--no-progress")

    assert result.exit_code == 0, result.output
    assert_nothing_written_elsewhere(tmp_path)
    written = json.loads((run_copy / CONFIG_FILENAME).read_text())
    assert (written["data"], written["out"]) == (str(synthetic_dir), str(run_copy))
    assert "sample_log" not in written and "stop_after_epochs" not in written  # test hooks are no settings
    assert written["epochs"] == 1  # the training settings did come from the run
    assert (run_copy / CHECKPOINT_FILENAME).is_file() and (run_copy / "logs" / "threshold.csv").is_file()


@pytest.mark.parametrize(
    ("field", "value", "option"),
    [
        ("encoder_weights", "/somewhere/encoder.safetensors", "--encoder-weights"),
        ("init_weights", "/somewhere/run", "--init-weights"),
    ],
)
def test_a_file_read_at_the_start_is_never_taken_from_config_json(run_copy, synthetic_dir, field, value, option):
    (run_copy / CHECKPOINT_FILENAME).unlink()
    config = json.loads((run_copy / CONFIG_FILENAME).read_text())
    (run_copy / CONFIG_FILENAME).write_text(json.dumps({**config, field: value}))

    result = invoke("--resume", str(run_copy), "--data", str(synthetic_dir), "--no-progress")

    assert result.exit_code == 1 and f"resume it with {option} FILE given again" in result.output, result.output
    assert "Traceback" not in result.output


def test_resume_without_data_names_the_fix(stopped_run, synthetic_dir):
    result = invoke("--resume", str(stopped_run), "--no-progress")
    assert result.exit_code == 2, result.output
    assert "--resume needs --data" in result.output
    assert f"edgeseg train --resume {stopped_run} --data DATA" in result.output
    assert f"started with --data {synthetic_dir}" in result.output  # a hint to copy, never used by itself


def test_resume_refuses_settings_it_would_not_use(stopped_run, synthetic_dir):
    result = invoke("--resume", str(stopped_run), "--data", str(synthetic_dir), "--epochs", "9", "--out", "x")
    assert result.exit_code == 2, result.output
    refusal = next(line for line in result.output.splitlines() if line.startswith("Error:"))
    assert "--epochs" in refusal and "--out" in refusal and "keeps the settings it was started with" in refusal


def test_resume_on_another_split_is_refused(run_copy, synthetic_dir, tmp_path):
    splits = tmp_path / "splits"
    splits.mkdir()
    train_ids = read_split(synthetic_dir / "splits" / "train.txt")
    (splits / "train.txt").write_text("".join(f"{sample_id}\n" for sample_id in train_ids[1:]))
    shutil.copy(synthetic_dir / "splits" / "val.txt", splits / "val.txt")

    result = invoke(
        "--resume", str(run_copy), "--data", str(synthetic_dir), "--split-dir", str(splits), "--no-progress"
    )

    assert result.exit_code == 1, result.output
    assert f"{splits}: this train/val split is not the one {run_copy} trained on" in result.output


def test_a_checkpoint_that_would_run_code_is_refused(run_copy, synthetic_dir, tmp_path):
    witness = tmp_path / "code-ran"

    class RunsCode:
        def __reduce__(self):
            return os.system, (f"touch {witness}",)

    with open(run_copy / CHECKPOINT_FILENAME, "wb") as stream:
        pickle.dump({"config": RunsCode()}, stream, protocol=2)

    result = invoke("--resume", str(run_copy), "--data", str(synthetic_dir), "--no-progress")

    assert result.exit_code == 1, result.output
    assert "not a checkpoint edgeseg wrote" in result.output and "Traceback" not in result.output
    assert not witness.exists()
