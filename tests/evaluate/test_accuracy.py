"""edgeseg eval: its numbers equal the ISIC metrics computed directly on the masks it saved."""

import csv
import json

import numpy as np
from click.testing import CliRunner

from edgeseg.cli import main
from edgeseg.core.data import discover_samples
from edgeseg.core.files import read_mask
from edgeseg.core.metrics import METRIC_NAMES, image_scores, mean_scores


def run_eval(model, data, tmp_path):
    out = tmp_path / "eval"
    result = CliRunner().invoke(
        main,
        [
            "eval",
            str(model),
            "--data",
            str(data),
            "--split",
            "val",
            "--out",
            str(out),
            "--json",
            str(tmp_path / "eval.json"),
            "--save-masks",
            str(tmp_path / "masks"),
        ],
    )
    assert result.exit_code == 0, result.output
    return out, json.loads((tmp_path / "eval.json").read_text())


def test_eval_of_an_onnx_equals_metrics_on_its_saved_masks(tiny_onnx, synthetic_dir, tmp_path):
    out, report = run_eval(tiny_onnx, synthetic_dir, tmp_path)
    samples = discover_samples(synthetic_dir, split="val")
    assert [row["id"] for row in report["per_image"]] == [sample.id for sample in samples]

    direct = []
    for sample, row in zip(samples, report["per_image"], strict=True):
        saved = read_mask(tmp_path / "masks" / f"{sample.id}_segmentation.png")
        truth = read_mask(sample.mask)
        assert saved.shape == truth.shape  # written at the image's own resolution
        scores = image_scores(truth, saved)
        direct.append(scores)
        for name in METRIC_NAMES:
            assert abs(row[name] - scores[name]) < 1e-12
    for name, value in mean_scores(direct).items():
        assert abs(report["mean"][name] - value) < 1e-12
    assert set(report["mean"]) == set(METRIC_NAMES)

    with open(out / "per-image.csv") as stream:
        rows = list(csv.DictReader(stream))
    assert len(rows) == len(samples)
    assert (out / "worst-cases.png").stat().st_size > 0


def test_eval_of_a_run_directory_agrees_with_its_onnx(tiny_run_dir, tiny_onnx, synthetic_dir, tmp_path):
    _, torch_report = run_eval(tiny_run_dir, synthetic_dir, tmp_path / "torch")
    _, onnx_report = run_eval(tiny_onnx, synthetic_dir, tmp_path / "onnx")
    assert torch_report["backend"].startswith("torch")
    torch_dice = np.array([row["dice"] for row in torch_report["per_image"]])
    onnx_dice = np.array([row["dice"] for row in onnx_report["per_image"]])
    np.testing.assert_allclose(torch_dice, onnx_dice, atol=1e-3)


def test_eval_stops_on_unusable_data_with_the_problem(tiny_onnx, tmp_path):
    (tmp_path / "images").mkdir()
    (tmp_path / "masks").mkdir()
    (tmp_path / "images" / "a.jpg").write_bytes(b"not a jpeg")
    (tmp_path / "masks" / "a.png").write_bytes(b"not a png")
    result = CliRunner().invoke(main, ["eval", str(tiny_onnx), "--data", str(tmp_path), "--split", "all"])
    assert result.exit_code != 0
    assert "a.jpg" in result.output


def test_only_the_lowest_jaccard_masks_are_kept_for_the_worst_cases_picture():
    from edgeseg.evaluate.accuracy import Evaluation, keep_if_worst

    evaluation = Evaluation(model="m", backend="b", split="val")
    jaccards = [0.9, 0.2, 0.8, 0.1, 0.95, 0.5, 0.3, 0.7, 0.05, 0.99]
    for index, value in enumerate(jaccards):
        keep_if_worst(evaluation, f"img{index}", value, np.zeros((2, 2), bool), count=4)
    assert set(evaluation.worst_masks) == {"img8", "img3", "img1", "img6"}
