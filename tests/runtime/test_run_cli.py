"""`edgeseg run` end to end on generated files, and its errors."""

from __future__ import annotations

import json
import re
from pathlib import Path

import cv2
import pytest
from click.testing import CliRunner

from edgeseg.cli import main

from .conftest import count_video_frames

RECORD_KEYS = {
    "index",
    "source_index",
    "name",
    "timestamp",
    "width",
    "height",
    "timings_ms",
    "latency_ms",
    "lesion_present",
    "regions",
    "area_px",
    "bbox",
    "perimeter_px",
    "max_diameter_px",
    "mm_per_px",
    "area_mm2",
    "perimeter_mm",
    "max_diameter_mm",
}


def run(*args: str):
    return CliRunner().invoke(main, ["run", *args], catch_exceptions=False)


def test_run_on_a_video_writes_every_frame_and_one_record_per_frame(
    tiny_onnx: Path, video_20: Path, tmp_path: Path
) -> None:
    video, records = tmp_path / "out" / "overlay.mp4", tmp_path / "out" / "frames.jsonl"
    result = run(
        str(tiny_onnx),
        "--source",
        str(video_20),
        "--no-show",
        "--save",
        str(video),
        "--jsonl",
        str(records),
        "--mm-per-px",
        "0.05",
        "--save-masks",
        str(tmp_path / "masks"),
    )
    assert result.exit_code == 0, result.output
    assert "20 frames" in result.output
    assert count_video_frames(video) == (20, (640, 480))
    lines = records.read_text().splitlines()
    assert len(lines) == 20
    for number, line in enumerate(lines):
        record = json.loads(line)
        assert set(record) == RECORD_KEYS
        assert record["index"] == record["source_index"] == number
        assert set(record["timings_ms"]) == {"preprocess", "inference", "postprocess"}
        assert (record["width"], record["height"], record["mm_per_px"]) == (640, 480, 0.05)
        assert record["lesion_present"] == (record["area_px"] > 0)
        if record["lesion_present"]:
            assert record["area_mm2"] == pytest.approx(record["area_px"] * 0.05**2)
    masks = sorted((tmp_path / "masks").iterdir())
    assert len(masks) == 20 and masks[0].name == "frame_000000_segmentation.png"
    mask = cv2.imread(str(masks[0]), cv2.IMREAD_UNCHANGED)
    assert mask.shape == (480, 640) and set(mask.ravel().tolist()) <= {0, 255}
    assert not list((tmp_path / "out").glob(".*tmp*")), "no temporary file may be left behind"


def test_folder_with_a_corrupt_image_processes_the_rest_and_reports_it(
    tiny_onnx: Path, image_folder: Path, tmp_path: Path, caplog
) -> None:
    masks = tmp_path / "masks"
    result = run(str(tiny_onnx), "--source", str(image_folder), "--no-show", "--save-masks", str(masks))
    assert result.exit_code == 0, result.output
    skipped = [record.getMessage() for record in caplog.records if record.getMessage().startswith("skipped ")]
    assert len(skipped) == 1 and "ISIC_0000009.jpg: " in skipped[0], "one line `skipped NAME: reason` per bad image"
    assert "1 skipped" in result.output and "ISIC_0000009" not in result.output, "said once, when it was met"
    names = sorted(path.name for path in masks.iterdir())
    assert names == ["ISIC_0000001_segmentation.png", "ISIC_0000002_segmentation.png", "visit3_segmentation.png"]
    assert cv2.imread(str(masks / "ISIC_0000001_segmentation.png"), cv2.IMREAD_UNCHANGED).shape == (90, 120)


def test_camera_that_does_not_exist_exits_non_zero_with_a_clear_message(tiny_onnx: Path) -> None:
    result = run(str(tiny_onnx), "--camera", "99", "--no-show")
    assert result.exit_code != 0
    assert "camera 99 did not open" in result.output


def test_backend_that_cannot_run_here_exits_non_zero_with_the_reason(tiny_onnx: Path, video_20: Path) -> None:
    result = run(str(tiny_onnx), "--source", str(video_20), "--no-show", "--backend", "tensorrt")
    assert result.exit_code != 0 and "--format engine" in result.output


def test_foreign_model_exits_non_zero_naming_the_file(tmp_path: Path, video_20: Path) -> None:
    model = tmp_path / "other.onnx"
    model.write_bytes(b"\x0a\x03abc")
    result = run(str(model), "--source", str(video_20), "--no-show")
    assert result.exit_code != 0 and str(model) in result.output


def test_one_source_is_required(tiny_onnx: Path) -> None:
    result = run(str(tiny_onnx), "--no-show")
    assert result.exit_code == 2 and "exactly one of --camera N or --source" in result.output


def test_help_explains_with_examples_and_says_measurements_are_not_a_diagnosis() -> None:
    result = run("--help")
    assert result.exit_code == 0
    text = " ".join(result.output.split())  # help is wrapped to the terminal's width
    assert "edgeseg run model.onnx --camera 0" in text and "not a diagnosis" in text


def test_serve_prints_the_live_view_address_and_the_run_ends_cleanly(tiny_onnx: Path, video_20: Path) -> None:
    result = run(str(tiny_onnx), "--source", str(video_20), "--no-show", "--serve", "127.0.0.1:0")
    assert result.exit_code == 0, result.output
    assert re.search(r"live view: http://127\.0\.0\.1:\d+/\n", result.output) and "20 frames" in result.output


def test_serve_on_every_interface_prints_the_lan_addresses_a_tablet_opens(
    tiny_onnx: Path, video_20: Path, monkeypatch
) -> None:
    from edgeseg.runtime import serve

    monkeypatch.setattr(serve, "outgoing_addresses", lambda: ["192.168.1.23"])
    monkeypatch.setattr(serve, "host_name_addresses", lambda: ["127.0.1.1"])
    result = run(str(tiny_onnx), "-s", str(video_20), "--no-show", "--max-frames", "2", "--serve", "0.0.0.0:0")
    assert result.exit_code == 0, result.output
    assert re.search(r"live view: http://192\.168\.1\.23:\d+/\n", result.output)
    assert re.search(r"http://192\.168\.1\.23:\d+/\?token=\S+", result.output)


def test_a_bad_serve_address_is_a_usage_error_naming_the_option(tiny_onnx: Path, video_20: Path) -> None:
    result = CliRunner().invoke(
        main, ["run", str(tiny_onnx), "--source", str(video_20), "--no-show", "--serve", "host:port"]
    )
    assert result.exit_code == 2 and "--serve" in result.output and "0 to 65535" in result.output


def test_jsonl_dash_streams_records_alone_on_stdout(tiny_onnx: Path, video_20: Path) -> None:
    import subprocess
    import sys

    command = [
        sys.executable,
        "-m",
        "edgeseg",
        "run",
        str(tiny_onnx),
        "--source",
        str(video_20),
        "--no-show",
        "--jsonl",
        "-",
    ]
    completed = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert completed.returncode == 0, completed.stderr
    records = [json.loads(line) for line in completed.stdout.splitlines()]
    assert [record["index"] for record in records] == list(range(20))
    assert "20 frames" in completed.stderr


def test_the_run_loop_takes_grey_bgra_and_16_bit_frames_from_a_pipeline(tiny_onnx: Path, tmp_path: Path) -> None:
    import time as clock

    import numpy as np

    from edgeseg.runtime.backends import open_segmenter
    from edgeseg.runtime.run_loop import RunOptions, run_pipeline
    from edgeseg.runtime.sources import Frame, Source

    images = [
        np.full((48, 64), 90, np.uint8),
        np.full((48, 64, 4), 90, np.uint8),
        np.full((48, 64, 3), 90 * 257, np.uint16),
    ]

    class OddFrames(Source):
        description = "odd frames"

        def frames(self):
            for index, image in enumerate(images):
                yield Frame(index, image, f"odd{index}", clock.time(), clock.perf_counter())

    records = tmp_path / "odd.jsonl"
    with open_segmenter(tiny_onnx, "onnxruntime-cpu") as segmenter:
        summary = run_pipeline(segmenter, OddFrames(), RunOptions(save_video=tmp_path / "odd.mp4", jsonl=records))
    assert summary.frames == 3
    assert [(r["width"], r["height"]) for r in map(json.loads, records.read_text().splitlines())] == [(64, 48)] * 3
    assert count_video_frames(tmp_path / "odd.mp4") == (3, (64, 48))


def test_sigterm_stops_a_run_cleanly_with_a_complete_recording(tiny_onnx: Path, video_20: Path, tmp_path: Path) -> None:
    import signal
    import subprocess
    import sys
    import time as clock

    video, records = tmp_path / "overlay.mp4", tmp_path / "frames.jsonl"
    command = [
        sys.executable,
        "-m",
        "edgeseg",
        "run",
        str(tiny_onnx),
        "--source",
        str(video_20),
        "--loop",
        "--no-show",
        "--save",
        str(video),
        "--jsonl",
        str(records),
    ]
    # A service manager's process: SIGINT ignored, as for a background job, so only SIGTERM can stop it.
    process = subprocess.Popen(
        command, stderr=subprocess.PIPE, text=True, preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_IGN)
    )
    while not records.exists() or len(records.read_text().splitlines()) < 30:
        assert process.poll() is None, process.stderr.read()
        clock.sleep(0.2)
    process.terminate()
    _, errors = process.communicate(timeout=60)
    assert process.returncode == 0, errors
    frames = len(records.read_text().splitlines())
    assert frames >= 30 and count_video_frames(video) == (frames, (640, 480))


def test_the_next_run_removes_the_temporary_a_killed_run_left(tiny_onnx: Path, video_20: Path, tmp_path: Path) -> None:
    """kill -9 leaves the video's hidden temporary (.overlay.XXXXXXXX.tmp.mp4); nothing else would remove it."""
    import signal
    import subprocess
    import sys
    import time as clock

    video, masks = tmp_path / "overlay.mp4", tmp_path / "masks"
    command = [
        sys.executable,
        "-m",
        "edgeseg",
        "run",
        str(tiny_onnx),
        "--source",
        str(video_20),
        "--loop",
        "--no-show",
        "--save",
        str(video),
        "--save-masks",
        str(masks),
    ]
    process = subprocess.Popen(command, stderr=subprocess.PIPE, text=True)
    deadline = clock.monotonic() + 120
    while not (masks.is_dir() and len(list(masks.glob("*.png"))) >= 5):
        assert process.poll() is None and clock.monotonic() < deadline, process.stderr.read()
        clock.sleep(0.2)
    process.send_signal(signal.SIGKILL)
    process.communicate(timeout=60)
    assert list(tmp_path.glob(".overlay.*.tmp.mp4")) and not video.exists()

    result = run(
        str(tiny_onnx),
        "--source",
        str(video_20),
        "--no-show",
        "--max-frames",
        "2",
        "--save",
        str(video),
        "--save-masks",
        str(masks),
        "--overwrite",
    )
    assert result.exit_code == 0, result.output
    assert count_video_frames(video)[0] == 2
    assert not list(tmp_path.rglob(".*.tmp*")), "a killed run's temporary was left"
