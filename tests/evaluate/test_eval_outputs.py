"""Where `edgeseg eval` writes (beside the model, as its help says; the current folder for the default model,
said in a note), and the legend drawn into worst-cases.png."""

from __future__ import annotations

import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest
from click.testing import CliRunner

from edgeseg.cli import main
from edgeseg.core.names import default_model_path
from edgeseg.evaluate.accuracy import LEGEND_HEIGHT, PREDICTION_COLOUR, TRUTH_COLOUR, legend_band

DEFAULT_MODEL_NOTE = "the default model's folder belongs to the installation: outputs go to ./eval-val/"


@pytest.fixture(scope="module")
def model_copy(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The default model, copied into a folder of ours."""
    folder = tmp_path_factory.mktemp("model")
    return Path(shutil.copy(default_model_path(), folder / "model.onnx"))


def test_eval_writes_beside_the_model_it_was_given(model_copy, synthetic_dir, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(main, ["eval", str(model_copy), "-d", str(synthetic_dir)])
    assert result.exit_code == 0, result.output
    beside = model_copy.parent / "eval-val"
    assert (beside / "per-image.csv").is_file() and (beside / "worst-cases.png").is_file()
    assert not (tmp_path / "eval-val").exists() and DEFAULT_MODEL_NOTE not in result.stderr
    assert f"per-image results: {beside / 'per-image.csv'}" in result.stdout


def test_eval_of_the_default_model_writes_to_the_current_folder_and_says_so(synthetic_dir, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(main, ["eval", "-d", str(synthetic_dir)])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "eval-val" / "per-image.csv").is_file()
    assert DEFAULT_MODEL_NOTE in result.stderr
    assert not (default_model_path().parent / "eval-val").exists()
    quiet = CliRunner().invoke(main, ["eval", "-d", str(synthetic_dir), "-q", "--overwrite"])
    assert quiet.exit_code == 0 and DEFAULT_MODEL_NOTE not in quiet.stderr


def test_eval_help_says_where_the_outputs_go():
    shown = " ".join(CliRunner().invoke(main, ["eval", "-h"]).output.split())
    assert "Default: eval-<split>/ beside MODEL" in shown and "eval-<split>/ in the current folder" in shown


def test_worst_cases_has_a_legend_in_the_outline_colours(model_copy, synthetic_dir):
    picture = cv2.imread(str(model_copy.parent / "eval-val" / "worst-cases.png"))
    if picture is None:  # this test alone: make the picture
        assert CliRunner().invoke(main, ["eval", str(model_copy), "-d", str(synthetic_dir), "-q"]).exit_code == 0
        picture = cv2.imread(str(model_copy.parent / "eval-val" / "worst-cases.png"))
    band = picture[:LEGEND_HEIGHT]
    assert (picture.shape[0] - LEGEND_HEIGHT) % 256 == 0 and picture.shape[1] == 3 * 256
    assert np.array_equal(band, legend_band(256))
    for column, colour in ((1, TRUTH_COLOUR), (2, PREDICTION_COLOUR)):
        third = band[:, column * 256 : (column + 1) * 256].reshape(-1, 3)
        assert np.count_nonzero((third == colour).all(axis=1)) > 20, colour  # a sample stroke in that colour
    assert np.count_nonzero((band[:, :256] >= 150).all(axis=2)) > 100  # the first column's label, in white
