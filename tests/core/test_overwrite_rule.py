"""One overwrite rule for every output of every command: an output that exists is refused, naming it and the
fix, unless --overwrite is given; then it is replaced. What a killed run left half-written is removed first."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from edgeseg.cli import main
from edgeseg.core.files import OutputExistsError, atomic_output, prepare_outputs

EARLIER = "an earlier output\n"


def invoke(*arguments: str):
    return CliRunner().invoke(main, [str(argument) for argument in arguments])


def assert_refused(result, *named: Path) -> None:
    assert result.exit_code == 1, result.output
    assert "Error:" in result.output and "--overwrite" in result.output, result.output
    assert "Traceback" not in result.output and "bug in edgeseg" not in result.output, result.output
    for path in named:
        assert str(path) in result.output, f"the message does not name {path}:\n{result.output}"


def earlier(*paths: Path) -> None:
    for path in paths:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(EARLIER)


def assert_replaced(*paths: Path) -> None:
    for path in paths:
        assert path.read_text(errors="replace") != EARLIER, f"{path} was not replaced"


# --- the rule itself ---------------------------------------------------------------------------------


def test_an_existing_file_or_a_folder_that_is_not_empty_is_refused_and_each_is_named(tmp_path: Path) -> None:
    masks, records, fresh = tmp_path / "masks", tmp_path / "frames.jsonl", tmp_path / "new.json"
    earlier(masks / "ISIC_0000000_segmentation.png", records)
    with pytest.raises(OutputExistsError) as refused:
        prepare_outputs([("--save-masks", masks), ("--jsonl", records), ("--json", fresh), ("--json", "-")], False)
    message = str(refused.value)
    assert f"{masks}/ (--save-masks: not empty)" in message and f"{records} (--jsonl)" in message
    assert str(fresh) not in message and "--overwrite" in message
    prepare_outputs([("--save-masks", masks), ("--jsonl", records)], True)  # told to: nothing refused
    prepare_outputs([("--save-masks", tmp_path / "empty"), ("--json", fresh)], False)  # nothing there yet


def test_a_killed_writes_temporary_is_removed_and_a_live_ones_is_kept(tmp_path: Path) -> None:
    killed = tmp_path / ".overlay.abcd1234.tmp.mp4"  # what atomic_output leaves when its process is killed
    other = tmp_path / ".notes.abcd1234.tmp.txt"  # another output's, in a folder the command does not own
    earlier(killed, other)
    with atomic_output(tmp_path / "frames.jsonl") as live:  # another process writing into the same folder
        live.write_text("half")
        prepare_outputs([("--save", tmp_path / "overlay.mp4"), ("--jsonl", tmp_path / "frames.jsonl")], False)
        assert not killed.exists() and other.exists()
        assert live.exists(), "a live write's temporary must be left alone"
    masks = tmp_path / "masks"
    earlier(masks / ".ISIC_0000000_segmentation.abcd1234.tmp.png")
    prepare_outputs([("--save-masks", masks)], False)  # a folder of outputs: any temporary in it
    assert not any(masks.iterdir())


# --- every command -----------------------------------------------------------------------------------


def test_run_refuses_its_existing_outputs_and_replaces_them_with_overwrite(
    tiny_onnx: Path, synthetic_dir: Path, tmp_path: Path
) -> None:
    video, masks, records = tmp_path / "overlay.mp4", tmp_path / "masks", tmp_path / "frames.jsonl"
    mask = masks / "ISIC_9000000_segmentation.png"
    earlier(video, records, mask)
    command = [
        "run",
        tiny_onnx,
        "--source",
        synthetic_dir / "ISIC2018_Task1-2_Training_Input",
        "--no-show",
        "--max-frames",
        "2",
        "--save",
        video,
        "--save-masks",
        masks,
        "--jsonl",
        records,
    ]
    assert_refused(invoke(*command), video, masks, records)
    assert video.read_text() == records.read_text() == mask.read_text() == EARLIER
    result = invoke(*command, "--overwrite")
    assert result.exit_code == 0, result.output
    assert_replaced(video, records, mask)
    assert len(records.read_text().splitlines()) == 2


def test_eval_refuses_its_existing_outputs_and_replaces_them_with_overwrite(
    tiny_onnx: Path, synthetic_dir: Path, tmp_path: Path
) -> None:
    table, report, masks = tmp_path / "eval" / "per-image.csv", tmp_path / "eval.json", tmp_path / "masks"
    command = ["eval", tiny_onnx, "--data", synthetic_dir, "--out", tmp_path / "eval", "--json", report]
    for given in (table, report):
        earlier(given)
        assert_refused(invoke(*command), given)
        given.unlink()
    earlier(masks / "notes.txt")
    assert_refused(invoke(*command, "--save-masks", masks), masks)
    earlier(table, report)
    result = invoke(*command, "--save-masks", masks, "--overwrite")
    assert result.exit_code == 0, result.output
    assert_replaced(table, report)
    assert json.loads(report.read_text())["images"] > 0 and (masks / "notes.txt").exists()


def test_bench_refuses_its_existing_outputs_and_replaces_them_with_overwrite(tiny_onnx: Path, tmp_path: Path) -> None:
    report, table = tmp_path / "bench.json", tmp_path / "bench.md"
    command = ["bench", tiny_onnx, "--runs", "1", "--warmup", "0", "--json", report, "--md", table]
    for given in (report, table):
        earlier(given)
        assert_refused(invoke(*command), given)
        given.unlink()
    earlier(report, table)
    result = invoke(*command, "--overwrite")
    assert result.exit_code == 0, result.output
    assert_replaced(report, table)


def test_data_check_refuses_an_existing_report_and_replaces_it_with_overwrite(
    synthetic_dir: Path, tmp_path: Path
) -> None:
    report = tmp_path / "check.json"
    earlier(report)
    assert_refused(invoke("data", "check", synthetic_dir, "--json", report), report)
    assert invoke("data", "check", synthetic_dir, "--json", report, "--overwrite").exit_code == 0
    assert_replaced(report)


def test_export_refuses_an_earlier_export_and_replaces_it_with_overwrite(
    tiny_onnx: Path, synthetic_dir: Path, tmp_path: Path
) -> None:
    pytest.importorskip("onnx")
    out = tmp_path / "export"
    command = [
        "export",
        tiny_onnx,
        "--format",
        "fp16",
        "--out",
        out,
        "--parity-data",
        synthetic_dir,
        "--parity-n",
        "2",
        "--latency-runs",
        "1",
    ]
    report = out / "export-report.json"
    earlier(out / "model.fp16.onnx")  # a form with no report beside it: an export killed before its end, built again
    result = invoke(*command)
    assert result.exit_code == 0, result.output
    assert_replaced(out / "model.fp16.onnx")
    earlier(report)
    assert_refused(invoke(*command), report)
    result = invoke(*command, "--overwrite")
    assert result.exit_code == 0, result.output
    assert json.loads(report.read_text())["forms"]


@pytest.mark.slow
def test_train_refuses_an_earlier_run_and_starts_afresh_with_overwrite(synthetic_dir: Path, tmp_path: Path) -> None:
    pytest.importorskip("torch")
    run = tmp_path / "run"
    earlier(run / "checkpoint-last.pt", run / "card.json", run / "plots" / "old.png", run / "notes.txt")
    command = [
        "train",
        "--data",
        synthetic_dir,
        "--out",
        run,
        "--epochs",
        "1",
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
    ]
    result = invoke(*command)
    assert_refused(result, run / "checkpoint-last.pt")
    assert f"--resume {run}" in result.output
    result = invoke(*command, "--overwrite")
    assert result.exit_code == 0, result.output
    assert_replaced(run / "card.json")
    assert not (run / "plots" / "old.png").exists(), "the earlier run's files are removed first"
    assert (run / "notes.txt").read_text() == EARLIER, "a file train does not write is left alone"
    assert invoke("train", "--resume", run, "--data", synthetic_dir, "--overwrite").exit_code == 2
