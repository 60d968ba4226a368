"""edgeseg demo at a tiny size: every output it promises exists and holds sane values."""

import json

import cv2
import pytest
from click.testing import CliRunner

from edgeseg.cli import main


@pytest.mark.slow
def test_tiny_demo_writes_every_promised_output(tmp_path):
    out = tmp_path / "demo"
    result = CliRunner().invoke(
        main,
        [
            "demo",
            "--out",
            str(out),
            "--images",
            "12",
            "--image-size",
            "96",
            "--size",
            "64",
            "--train-minutes",
            "0.2",
            "--epochs",
            "2",
            "--encoder-weights",
            "none",
            "--decoder-channels",
            "32,32",
            "--parity-n",
            "2",
            "--bench-runs",
            "3",
        ],
    )
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


def write_json(path, value) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(value))


def hand_written_demo(out):
    """A DemoPlan over a folder holding the JSON files a demo's steps would have written."""
    from edgeseg.demo import DemoPlan, Step

    write_json(
        out / "eval.json",
        {
            "split": "val",
            "images": 20,
            "mean": {
                "dice": 0.8123,
                "jaccard": 0.7,
                "threshold_jaccard": 0.65,
                "sensitivity": 0.9,
                "specificity": 0.95,
                "accuracy": 0.93,
            },
        },
    )
    write_json(
        out / "run" / "export-report.json",
        {
            "reference": {"accuracy": {"dice": 0.8}},
            "parity_images": {"ids": ["a", "b"]},
            "forms": [
                {
                    "name": "onnx",
                    "status": "built",
                    "passed": True,
                    "path": "run/model.onnx",
                    "size_bytes": 3 * 2**20,
                    "parity": {"mean_mask_iou": 0.99991, "max_abs_probability": 1.5e-6},
                    "accuracy": {"dice": 0.8},
                },
                {
                    "name": "int8",
                    "status": "built",
                    "passed": False,
                    "path": "run/model.int8.onnx",
                    "size_bytes": 2**20,
                    "parity": {"mean_mask_iou": 0.9},
                    "accuracy": {"dice": 0.75},
                },
                {"name": "engine", "status": "skipped", "passed": None, "path": None},
            ],
        },
    )
    write_json(
        out / "bench.json",
        {
            "runs": 3,
            "results": [
                {"form": "pytorch", "status": "ok", "fps": 20.0, "stages": {"end_to_end": {"p50_ms": 50.0}}},
                {"form": "model.onnx", "status": "ok", "fps": 40.0, "stages": {"end_to_end": {"p50_ms": 25.04}}},
                {"form": "model.int8.onnx", "status": "failed"},
            ],
        },
    )
    frames = ['{"lesion_present": true}', '{"lesion_present": false}', "", '{"lesion_present": true}']
    (out / "frames.jsonl").write_text("\n".join(frames) + "\n")
    write_json(
        out / "run" / "card.json",
        {"encoder": "tu-tf_efficientnet_lite0", "input_size": [64, 64], "output": {"threshold": 0.45}},
    )
    (out / "run" / "plots").mkdir()
    for name in ("threshold.png", "loss.png"):
        (out / "run" / "plots" / name).write_bytes(b"")
    plan = DemoPlan(
        out=out,
        data=None,
        images=12,
        image_size=96,
        input_size=64,
        time_budget_minutes=0.2,
        epochs=2,
        encoder_weights="none",
        decoder_channels="32,32",
        parity_n=2,
        bench_runs=3,
    )
    plan.steps = [
        Step("train", ["python", "-m", "train", "--epochs", "2"], seconds=12.4, exit_code=0),
        Step("export", ["python", "-m", "export", "run"], seconds=3.6, exit_code=1),
    ]
    return plan


def test_summary_page_and_terminal_table_from_the_steps_json(tmp_path):
    from edgeseg.demo import summary_tables

    page, terminal = summary_tables(hand_written_demo(tmp_path))

    lines = page.splitlines()
    assert lines[0] == "# edgeseg demo"
    assert f"Data: `{tmp_path / 'data'}` (synthetic dermoscopy-like images);" in lines
    assert "model: FPN `tu-tf_efficientnet_lite0` at [64, 64], threshold 0.450" in lines
    assert "| val | 20 | 0.812 | 0.700 | 0.650 | 0.900 | 0.950 | 0.930 |" in lines
    assert "Dice here is on the 2 parity images (the table above: every val image)." in lines
    assert "| PyTorch (reference) | trained | - | - | - | 0.800 | - | 50.0 | 20.0 |" in lines
    assert "| onnx | built | pass | 0.9999 | 0.000002 | 0.800 | 3.0 | 25.0 | 40.0 |" in lines
    assert "| int8 | built | FAIL | 0.9000 | - | 0.750 | 1.0 | - | - |" in lines
    assert "| engine | skipped | - | - | - | - | - | - | - |" in lines
    assert "Latency: `edgeseg bench`, 3 interleaved runs after warm-up, end to end" in lines
    assert "`edgeseg run` processed 3 frames of `video.mp4` (2 with a lesion) and wrote" in lines
    assert "![loss](run/plots/loss.png)\n![threshold](run/plots/threshold.png)" in page
    assert "| train | `train --epochs 2` | 12 s | 0 |\n| export | `export run` | 4 s | 1 |" in page
    assert page.endswith("nothing about accuracy on real dermoscopy.\n")

    assert terminal.splitlines() == [
        "form            status    gate      Dice   p50 ms    FPS",
        "pytorch         trained   -        0.800     50.0   20.0",
        "onnx            built     pass     0.800     25.0   40.0",
        "int8            built     FAIL     0.750        -      -",
        "engine          skipped   -            -        -      -",
    ]


def test_summary_of_a_demo_that_wrote_nothing_yet(tmp_path):
    from edgeseg.demo import DemoPlan, summary_tables

    plan = DemoPlan(
        out=tmp_path,
        data=tmp_path / "isic",
        images=12,
        image_size=96,
        input_size=64,
        time_budget_minutes=0.2,
        epochs=2,
        encoder_weights="none",
        decoder_channels="32,32",
        parity_n=2,
        bench_runs=3,
    )
    page, terminal = summary_tables(plan)
    assert f"Data: `{tmp_path / 'isic'}` (your data);" in page
    assert "model: FPN `?` at -, threshold -" in page
    assert "| - | - | - | - | - | - | - | - |" in page
    assert terminal.splitlines()[1:] == ["pytorch         trained   -            -        -      -"]
