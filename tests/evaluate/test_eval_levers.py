"""`edgeseg eval --tta/--fill-holes/--refine`: accepted, validated, applied to the Segmenter and recorded with the
figures."""

import json

from click.testing import CliRunner

from edgeseg.cli import main


def test_eval_takes_tta_and_fill_holes_and_records_them(tiny_onnx, synthetic_dir, tmp_path):
    result = CliRunner().invoke(
        main,
        [
            "eval",
            str(tiny_onnx),
            "--data",
            str(synthetic_dir),
            "--split",
            "val",
            "--out",
            str(tmp_path / "eval"),
            "--json",
            str(tmp_path / "eval.json"),
            "--tta",
            "hvflip",
            "--fill-holes",
            "--no-refine",
        ],
    )
    assert result.exit_code == 0, result.output
    report = json.loads((tmp_path / "eval.json").read_text())
    assert report["postprocess"] == {"tta": "hvflip", "fill_holes": True, "refine": False}
    assert "tta hvflip, fill_holes True, refine False" in result.output
    assert 0.0 <= report["mean"]["jaccard"] <= 1.0


def test_eval_defaults_to_the_closer_look_alone(tiny_onnx, synthetic_dir, tmp_path):
    result = CliRunner().invoke(
        main,
        [
            "eval",
            str(tiny_onnx),
            "--data",
            str(synthetic_dir),
            "--out",
            str(tmp_path / "eval"),
            "--json",
            str(tmp_path / "e.json"),
        ],
    )
    assert result.exit_code == 0, result.output
    assert json.loads((tmp_path / "e.json").read_text())["postprocess"] == {
        "tta": "none",
        "fill_holes": False,
        "refine": True,
    }


def test_eval_refuses_an_unknown_tta_naming_the_choices(tiny_onnx, synthetic_dir, tmp_path):
    result = CliRunner().invoke(main, ["eval", str(tiny_onnx), "--data", str(synthetic_dir), "--tta", "rotate"])
    assert result.exit_code == 2
    assert "--tta" in result.output and "hflip" in result.output and "hvflip" in result.output
