"""`edgeseg bench`: the JSON contract, interleaving, skipped and failed forms, accuracy, exit status."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from click.testing import CliRunner

from edgeseg.cli import main
from edgeseg.evaluate.cli import command_line
from edgeseg.evaluate.latency import STAGES, STAT_KEYS, Result, noise_warnings, stage_stats, time_interleaved
from edgeseg.loading.open import Form

RESULT_KEYS = {"form", "backend", "status", "reason", "size_bytes", "stages", "fps", "accuracy", "accuracy_reason"}
FAST = ["--runs", "3", "--warmup", "1"]


def bench(tmp_path: Path, *args: str) -> tuple[int, dict, str]:
    """Run `edgeseg bench ARGS --json` and return (exit code, the JSON, the terminal output)."""
    json_path = tmp_path / "bench.json"
    outcome = CliRunner().invoke(main, ["bench", *args, *FAST, "--json", str(json_path)])
    if outcome.exception and not isinstance(outcome.exception, SystemExit):
        raise outcome.exception
    return outcome.exit_code, json.loads(json_path.read_text()), outcome.output


def by_form(report: dict) -> dict[str, dict]:
    return {record["form"]: record for record in report["results"]}


def check_measured(record: dict) -> None:
    assert record["status"] == "ok" and record["reason"] is None
    for stage in STAGES:
        stats = record["stages"][stage]
        assert set(stats) == set(STAT_KEYS)
        assert 0 <= stats["min_ms"] <= stats["p50_ms"] <= stats["p90_ms"] <= stats["p99_ms"] <= stats["max_ms"]
        assert stats["min_ms"] <= stats["mean_ms"] <= stats["max_ms"]
    assert record["fps"] == pytest.approx(1000 / record["stages"]["end_to_end"]["mean_ms"], rel=1e-2, abs=1e-3)
    # Stages are parts of the end-to-end call, so their means cannot add up to more than it.
    parts = sum(record["stages"][stage]["mean_ms"] for stage in STAGES[:3])
    assert parts <= record["stages"]["end_to_end"]["mean_ms"] + 1e-3


def fake_engine(directory: Path) -> Path:
    """An engine file with a sound sidecar: only TensorRT could tell that its bytes are no engine."""
    from edgeseg.core.card import ModelCard
    from edgeseg.runtime.loaders import sha256_of, sidecar_path

    engine = directory / "model.trt10.3.sm87-orin.fp16.engine"
    engine.write_bytes(b"not a real engine")
    sidecar = {
        "card": ModelCard(input_size=(64, 64)).to_dict(),
        "engine_sha256": sha256_of(engine),
        "tensorrt_version": "10.3.0.30",
        "gpu_name": "Orin",
        "compute_capability": "8.7",
        "precision": "fp16",
    }
    sidecar_path(engine).write_text(json.dumps(sidecar))
    return engine


def test_json_has_every_field_filled_or_null_with_reason(tiny_onnx: Path, tmp_path: Path) -> None:
    md_path = tmp_path / "bench.md"
    code, report, output = bench(tmp_path, str(tiny_onnx), "--md", str(md_path))
    assert code == 0
    assert {"host", "results", "runs", "warmup", "interleaved", "command"} <= set(report)
    assert report["runs"] == 3 and report["warmup"] == 1 and report["interleaved"] is True
    assert report["command"].startswith("edgeseg bench ") and "--runs 3 --warmup 1" in report["command"]
    (record,) = report["results"]
    assert RESULT_KEYS <= set(record)
    check_measured(record)
    assert record["form"] == "model.onnx" and record["backend"] == "onnxruntime-cpu"
    assert record["precision"] == "fp32" and record["input_size"] == [64, 64]
    assert record["size_bytes"] == tiny_onnx.stat().st_size
    assert record["accuracy"] is None and record["accuracy_reason"] == "no --data given"
    assert report["host"]["cpu"]["logical_cores"] >= 1
    assert report["frame"] == {"source": report["frame"]["source"], "height": 480, "width": 640}
    assert "interleaved" in output and "p99" in output
    markdown = md_path.read_text()
    assert report["command"] in markdown and report["host"]["cpu"]["model"] in markdown
    assert "| model.onnx | onnxruntime-cpu |" in markdown


def test_two_forms_are_measured_interleaved(tiny_onnx: Path, tiny_run_dir: Path, tmp_path: Path) -> None:
    copy = tmp_path / "copy.onnx"
    shutil.copy(tiny_onnx, copy)
    code, report, _ = bench(tmp_path, str(tiny_onnx), str(copy), str(tiny_run_dir))
    assert code == 0
    records = by_form(report)
    assert set(records) == {"model.onnx", "copy.onnx", "pytorch"}
    for record in records.values():
        check_measured(record)
    assert records["pytorch"]["backend"] == "torch-cpu"


class RecordingSegmenter:
    """Stands in for a Segmenter and logs the order in which forms are called."""

    def __init__(self, name: str, log: list[str]) -> None:
        self.name, self.log = name, log

    def segment(self, frame: np.ndarray) -> SimpleNamespace:
        self.log.append(self.name)
        return SimpleNamespace(timings_ms={"preprocess": 1.0, "inference": 2.0, "postprocess": 3.0})


def test_every_round_runs_each_form_once_with_rotating_start() -> None:
    log: list[str] = []
    results = []
    for name in "abc":
        result = Result(Form(name, Path(name), "onnx"), "auto")
        result.segmenter = RecordingSegmenter(name, log)
        results.append(result)
    time_interleaved(results, np.zeros((8, 8, 3), np.uint8), runs=4, warmup=2, progress=False)
    rounds = [log[i : i + 3] for i in range(0, len(log), 3)]
    assert len(rounds) == 6 and all(sorted(one) == ["a", "b", "c"] for one in rounds)
    assert [one[0] for one in rounds] == ["a", "b", "c", "a", "b", "c"]
    for result in results:  # warm-up rounds are not counted
        assert len(result.times_ms["end_to_end"]) == 4 and result.times_ms["inference"] == [2.0] * 4


def test_a_form_that_fails_midway_does_not_stop_the_others() -> None:
    log: list[str] = []
    good = Result(Form("good", Path("good"), "onnx"), "auto")
    good.segmenter = RecordingSegmenter("good", log)
    bad = Result(Form("bad", Path("bad"), "onnx"), "auto")
    bad.segmenter = SimpleNamespace(segment=lambda frame: (_ for _ in ()).throw(RuntimeError("device lost")))
    time_interleaved([good, bad], np.zeros((8, 8, 3), np.uint8), runs=3, warmup=0, progress=False)
    assert bad.status == "failed" and "device lost" in bad.reason
    assert good.status == "ok" and len(good.times_ms["end_to_end"]) == 3


def test_engine_without_tensorrt_is_skipped_and_the_run_still_succeeds(tiny_onnx: Path, tmp_path: Path) -> None:
    try:
        import tensorrt  # noqa: F401 - only whether it imports matters

        pytest.skip("TensorRT is installed here: a fake engine would fail, not be skipped")
    except ImportError:
        pass
    engine = fake_engine(tmp_path)
    code, report, output = bench(tmp_path, str(tiny_onnx), str(engine))
    assert code == 0
    record = by_form(report)[engine.name]
    assert RESULT_KEYS <= set(record)
    assert record["status"] == "skipped" and "TensorRT" in record["reason"]
    assert record["stages"] == {stage: None for stage in STAGES} and record["fps"] is None
    assert record["size_bytes"] == engine.stat().st_size
    assert record["accuracy"] is None and record["accuracy_reason"]
    check_measured(by_form(report)["model.onnx"])
    assert "skipped" in output


def test_nothing_measured_exits_1(tiny_onnx: Path, tmp_path: Path) -> None:
    code, report, _ = bench(tmp_path, str(tiny_onnx), "--backend", "tensorrt")
    assert code == 1
    (record,) = report["results"]
    assert record["status"] == "skipped" and "onnxruntime-cpu" in record["reason"]


def test_broken_model_file_fails_and_exits_1(tiny_onnx: Path, tmp_path: Path) -> None:
    broken = tmp_path / "broken.onnx"
    broken.write_bytes(tiny_onnx.read_bytes()[:1000])
    code, report, _ = bench(tmp_path, str(tiny_onnx), str(broken))
    assert code == 1
    records = by_form(report)
    assert records["broken.onnx"]["status"] == "failed" and "broken.onnx" in records["broken.onnx"]["reason"]
    check_measured(records["model.onnx"])


def test_export_directory_gives_every_form_and_data_gives_accuracy(
    tiny_onnx: Path, tiny_run_dir: Path, synthetic_dir: Path, tmp_path: Path
) -> None:
    run = tmp_path / "run"
    shutil.copytree(tiny_run_dir, run)
    shutil.copy(tiny_onnx, run / "model.onnx")
    code, report, output = bench(tmp_path, str(run), "--data", str(synthetic_dir), "--split", "val", "--limit", "3")
    assert code == 0
    records = by_form(report)
    assert list(records) == ["pytorch", "model.onnx"]
    for record in records.values():
        accuracy = record["accuracy"]
        assert accuracy["images"] == 3 and accuracy["split"] == "val" and record["accuracy_reason"] is None
        assert 0.0 <= accuracy["dice"] <= 1.0 and 0.0 <= accuracy["threshold_jaccard"] <= accuracy["jaccard"] <= 1.0
    # The same weights in PyTorch and in fp32 ONNX give the same masks, so the same scores.
    assert records["pytorch"]["accuracy"]["dice"] == pytest.approx(records["model.onnx"]["accuracy"]["dice"], abs=1e-3)
    assert "Dice" in output


def test_size_applies_to_pytorch_but_not_a_static_onnx(tiny_onnx: Path, tiny_run_dir: Path, tmp_path: Path) -> None:
    code, report, _ = bench(tmp_path, str(tiny_onnx), str(tiny_run_dir), "--size", "96x128")
    assert code == 0
    records = by_form(report)
    assert records["pytorch"]["input_size"] == [96, 128]
    assert records["model.onnx"]["input_size"] == [64, 64]


def test_bad_size_is_a_usage_error(tiny_onnx: Path) -> None:
    outcome = CliRunner().invoke(main, ["bench", str(tiny_onnx), "--size", "100x100"])
    assert outcome.exit_code == 2 and "multiples of 32" in outcome.output


def test_directory_without_a_model_is_a_usage_error(tmp_path: Path) -> None:
    outcome = CliRunner().invoke(main, ["bench", str(tmp_path)])
    assert outcome.exit_code == 2 and "no model here" in outcome.output


def test_stage_stats() -> None:
    stats = stage_stats([float(v) for v in range(1, 101)])
    assert stats["mean_ms"] == 50.5 and stats["min_ms"] == 1 and stats["max_ms"] == 100
    assert (
        stats["p50_ms"] == 50.5 and stats["p90_ms"] == pytest.approx(90.1) and stats["p99_ms"] == pytest.approx(99.01)
    )
    assert stage_stats([]) is None


def test_noise_warning_only_above_ratio() -> None:
    records = [
        {"form": "quiet", "backend": "b", "p99_over_p50": 1.2},
        {"form": "busy", "backend": "b", "p99_over_p50": 2.0},
        {"form": "skipped", "backend": "b", "p99_over_p50": None},
    ]
    (warning,) = noise_warnings(records)
    assert warning.startswith("busy") and "noisy" in warning


def test_command_line_can_be_rerun() -> None:
    options = dict(
        backends=("auto", "onnxruntime-cpu"),
        runs=50,
        warmup=5,
        size=None,
        image=None,
        data=Path("d d"),
        split="val",
        split_dir=None,
        limit=10,
        json_path=Path("out.json"),
        md_path=None,
    )
    line = command_line((Path("exports/run"),), options)
    assert line == (
        "edgeseg bench exports/run --backend auto --backend onnxruntime-cpu --runs 50 --warmup 5 "
        "--data 'd d' --split val --limit 10 --json out.json"
    )


def test_benching_an_onnx_never_imports_torch(tiny_onnx: Path) -> None:
    code = (
        "import sys\n"
        "from pathlib import Path\n"
        "from edgeseg.evaluate.latency import run_bench\n"
        f"report = run_bench([Path({str(tiny_onnx)!r})], runs=2, warmup=0, progress=False)\n"
        "assert report['results'][0]['status'] == 'ok', report['results'][0]\n"
        "assert 'torch' not in sys.modules, 'torch was imported'\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
