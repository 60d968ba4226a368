"""edgeseg demo at a tiny size: every output it promises exists and holds sane values."""

import json

import cv2
import pytest
from click.testing import CliRunner

from edgeseg.cli import main


@pytest.mark.slow
def test_tiny_demo_writes_every_promised_output(tmp_path):
    out = tmp_path / "demo"
    result = CliRunner().invoke(main, [
        "demo", "--out", str(out), "--images", "12", "--image-size", "96", "--size", "64",
        "--train-minutes", "0.2", "--epochs", "2", "--encoder-weights", "none", "--decoder-channels", "32,32",
        "--parity-n", "2", "--bench-runs", "3",
    ])
    assert result.exit_code == 0, result.output

    evaluation = json.loads((out / "eval.json").read_text())
    assert evaluation["images"] >= 1 and 0.0 <= evaluation["mean"]["dice"] <= 1.0

    export = json.loads((out / "run" / "export-report.json").read_text())
    forms = {form["name"]: form for form in export["forms"]}
    assert forms["onnx"]["status"] == "built" and forms["onnx"]["passed"] is True
    assert (out / "run" / "model.onnx").is_file()

    bench = json.loads((out / "bench.json").read_text())
    measured = [row for row in bench["results"] if row["status"] == "ok"]
    assert measured and all(row["fps"] > 0 for row in measured)

    frames = [json.loads(line) for line in (out / "frames.jsonl").read_text().splitlines()]
    video = cv2.VideoCapture(str(out / "video.mp4"))
    video_frames = int(video.get(cv2.CAP_PROP_FRAME_COUNT))
    video.release()
    assert video_frames > 0 and len(frames) == video_frames
    overlay = cv2.VideoCapture(str(out / "overlay.mp4"))
    assert int(overlay.get(cv2.CAP_PROP_FRAME_COUNT)) == video_frames
    overlay.release()

    assert cv2.imread(str(out / "overlay-strip.png")) is not None
    summary = (out / "summary.md").read_text()
    for heading in ("Validation accuracy", "Exported forms", "Live runtime", "Training curves"):
        assert heading in summary
    assert "| onnx | built | pass |" in summary
    assert (out / "run" / "plots" / "loss.png").is_file()


def test_demo_refuses_to_overwrite_a_previous_run(tmp_path):
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "card.json").write_text("{}")
    result = CliRunner().invoke(main, ["demo", "--out", str(tmp_path)])
    assert result.exit_code != 0 and "already holds a run" in result.output


def test_demo_overwrite_replaces_only_a_folder_the_demo_made(tmp_path):
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "card.json").write_text("{}")
    result = CliRunner().invoke(main, ["demo", "--out", str(tmp_path), "--overwrite"])
    assert result.exit_code != 0 and (tmp_path / "run" / "card.json").is_file()  # not ours: kept
