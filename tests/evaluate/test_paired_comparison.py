"""`edgeseg eval` with intervals: every mean with its bootstrap interval, and two models compared image by image."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner

from edgeseg.cli import main
from edgeseg.core.metrics import METRIC_NAMES


def eval_json(*arguments: str) -> tuple[dict, str]:
    result = CliRunner().invoke(main, ["eval", *arguments, "--json", "-"])
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout), result.stderr


def test_every_mean_comes_with_its_interval(tiny_onnx: Path, synthetic_dir: Path, tmp_path: Path):
    record, table = eval_json(str(tiny_onnx), "--data", str(synthetic_dir), "--split", "all", "--out", str(tmp_path))
    assert set(record["intervals"]) == set(METRIC_NAMES) and "bootstrap" in record["interval"]
    for name in METRIC_NAMES:
        interval = record["intervals"][name]
        assert interval["mean"] == pytest.approx(record["mean"][name]) and interval["images"] == 24
        assert interval["low"] <= interval["mean"] <= interval["high"]
    assert "[95% interval]" in table


def test_a_model_against_itself_shows_no_difference_and_a_trained_one_beats_an_untrained_one(
    tiny_onnx: Path, trained_run_dir: Path, synthetic_dir: Path, tmp_path: Path
):
    record, table = eval_json(
        str(tiny_onnx),
        "--data",
        str(synthetic_dir),
        "--split",
        "all",
        "--out",
        str(tmp_path / "a"),
        "--against",
        str(tiny_onnx),
    )
    same = record["comparison"]
    assert all(
        same["differences"][name] == {"mean": 0.0, "low": 0.0, "high": 0.0, "images": 24} for name in METRIC_NAMES
    )
    assert set(same["verdicts"].values()) == {"no difference shown (the interval holds 0)"}
    # The tiny FPN trained for 60 steps against the same architecture untrained (random weights): far apart.
    record, table = eval_json(
        str(trained_run_dir),
        "--data",
        str(synthetic_dir),
        "--split",
        "all",
        "--out",
        str(tmp_path / "b"),
        "--against",
        str(tiny_onnx),
    )
    dice = record["comparison"]["differences"]["dice"]
    assert dice["low"] > 0 and record["comparison"]["verdicts"]["dice"] == "better"
    assert dice["mean"] == pytest.approx(record["mean"]["dice"] - record["comparison"]["against_mean"]["dice"])
    assert "paired on the same 24 images" in table and "better" in table


def test_scoring_the_locked_test_split_says_so(tiny_onnx: Path, synthetic_dir: Path, tmp_path: Path):
    data = tmp_path / "data"
    shutil.copytree(synthetic_dir, data)
    val_ids = (data / "splits" / "val.txt").read_text()
    (data / "splits" / "test.txt").write_text(val_ids)
    (data / "splits" / "val.txt").write_text("")
    _, table = eval_json(str(tiny_onnx), "--data", str(data), "--split", "test", "--out", str(tmp_path / "out"))
    assert "scoring the locked test split" in table and "never on this split" in table
    _, table = eval_json(str(tiny_onnx), "--data", str(synthetic_dir), "--split", "val", "--out", str(tmp_path / "val"))
    assert "locked test split" not in table
