"""benchmarks/train_accuracy.py: a run that came back without its checkpoint is recorded from its logs alike."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

pytest.importorskip("torch")

from click.testing import CliRunner

from edgeseg.cli import main


def test_a_run_without_its_checkpoint_is_recorded_from_its_logs_as_from_the_checkpoint(
    synthetic_dir: Path, tmp_path: Path, load_benchmark
):
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
            "2",
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
        catch_exceptions=False,
    )
    assert result.exit_code == 0, result.output
    script = load_benchmark("train_accuracy")
    from_checkpoint = script.training_record(run)
    came_back = tmp_path / "came-back"
    shutil.copytree(run, came_back, ignore=shutil.ignore_patterns("checkpoint-last.pt"))
    from_logs = script.training_record(came_back)

    for key in ("epochs_run", "best_epoch", "steps", "median_seconds_per_step"):
        assert from_logs[key] == from_checkpoint[key], key
    assert from_logs["config"] == json.loads(json.dumps(from_checkpoint["config"]))  # as the report writes it
    assert from_logs["epochs_planned"] is None
    assert [row["val_jaccard"] for row in from_logs["per_epoch"]] == pytest.approx(
        [row["val_jaccard"] for row in from_checkpoint["per_epoch"]]
    )
