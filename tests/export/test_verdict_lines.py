"""Export says its verdict on the terminal, a line per form, and keeps onnxruntime's own chatter off it.

`PASS <form>: <figure> <value> (rule: <rule> <= <limit>)` names the rule that came nearest its limit;
`FAIL <form>: <rule> <value> ... > <limit>` the rule that decided; `SKIP <form>: <why>`. A rule on a mean
left unjudged (too few parity images) is a one-line warning per form, under --quiet too.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from edgeseg.export.export_run import FormResult
from edgeseg.export.parity import MEAN_RULES_MIN_IMAGES, ImageComparison, Tolerances, summarize
from edgeseg.export.report import verdict_line

pytest.importorskip("onnx")

ONNXRUNTIME_NOISE = ("Could not find a CPU kernel", "WARNING:root", "\x1b[", "[W:onnxruntime")
QUANTIZER_PRINTS = ("Collecting tensor data", "Finding optimal threshold", "Number of tensors")


def row(image: str, dice: float = 0.8, reference_dice: float = 0.8, confident_flips: int = 0) -> ImageComparison:
    return ImageComparison(
        image=image,
        max_abs_probability=0.0,
        mean_abs_probability=0.0,
        flipped_fraction=0.0,
        mask_iou=1.0,
        dice=dice,
        threshold_jaccard=dice,
        reference_dice=reference_dice,
        reference_threshold_jaccard=reference_dice,
        finite=True,
        empty=False,
        reference_empty=False,
        confident_pixels=10_000,
        confident_flips=confident_flips,
    )


def built(name: str, precision: str, rows: list[ImageComparison], tolerances: Tolerances) -> FormResult:
    return FormResult(name, precision, path=Path(f"{name}.onnx"), parity=summarize(name, precision, rows, tolerances))


def test_a_passing_form_names_the_rule_nearest_its_limit():
    rows = [row("a"), row("b", dice=0.79), *(row(f"same{index}") for index in range(MEAN_RULES_MIN_IMAGES))]
    line = verdict_line(built("fp16", "fp16", rows, Tolerances()), Tolerances())
    # 0.01 Dice lost on b is half its limit of 0.02: nearer than |delta Dice| 0.00045 to its 0.002
    assert line == "PASS fp16: worst image dDice -0.0100 (rule: Dice lost on one image <= 0.02)"
    looser = Tolerances(fp16_image_dice_loss=1.0)
    assert (
        verdict_line(built("fp16", "fp16", rows, looser), looser)
        == "PASS fp16: dDice -0.0005 (rule: |delta Dice| against the truth <= 0.002)"
    )


def test_a_failing_form_names_the_rule_that_decided_and_counts_the_others():
    tolerances = Tolerances()
    rows = [row("a"), row("b", dice=0.5, reference_dice=0.8), row("c", confident_flips=900)]
    line = verdict_line(built("int8", "int8", rows, tolerances), tolerances)
    assert line == (
        "FAIL int8: confident pixels flipped in one image: 0.0900 on c > 0.05 (and 1 more in export-report.md)"
    )
    single = verdict_line(built("int8", "int8", [row("a"), row("b", dice=0.5)], tolerances), tolerances)
    assert single == "FAIL int8: Dice lost on one image 0.3000 on b > 0.1"


def test_skipped_failed_and_advisory_forms_each_get_their_line():
    assert (
        verdict_line(FormResult("engine", "fp16", status="skipped", reason="no GPU here\nmore"), Tolerances())
        == "SKIP engine: no GPU here"
    )
    assert (
        verdict_line(FormResult("fp16", "fp16", status="failed", reason="ValueError: bad"), Tolerances())
        == "FAIL fp16: build failed: ValueError: bad"
    )
    simulated = built("fp16-simulated", "fp16", [row("a")], Tolerances())
    simulated.simulation = True
    assert verdict_line(simulated, Tolerances()).startswith("PASS fp16-simulated: ")
    assert verdict_line(simulated, Tolerances()).endswith("(advisory: a simulation, not part of the gate)")


def export(tmp_path: Path, *flags: str) -> subprocess.CompletedProcess:
    """`edgeseg export` of the default model, as a user runs it with its output going to a log (pipes)."""
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "edgeseg",
            "export",
            "--format",
            "fp16,int8",
            "--parity-n",
            "3",
            "--calib-n",
            "3",
            "--out",
            str(tmp_path / "out"),
            *flags,
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=600,
    )


def test_export_prints_pass_and_fail_lines_and_no_onnxruntime_noise(tmp_path):
    # -1: no image can lose less Dice than that, so the per-image rule fails INT8 on any CPU
    done = export(tmp_path, "--tolerance", "int8-image-dice-loss=-1")
    assert done.returncode == 1, done.stderr[-3000:]
    verdicts = [line for line in done.stdout.splitlines() if line.split(" ")[0] in ("PASS", "FAIL", "SKIP")]
    assert [line.split(":")[0] for line in verdicts] == ["SKIP onnx", "PASS fp16", "FAIL int8"], done.stdout
    assert verdicts[1].startswith("PASS fp16: ") and "(rule: " in verdicts[1] and "<= " in verdicts[1]
    assert verdicts[2].startswith("FAIL int8: Dice lost on one image ") and verdicts[2].endswith(" > -1")
    for noise in ONNXRUNTIME_NOISE:
        assert noise not in done.stderr and noise not in done.stdout, noise
    for printed in QUANTIZER_PRINTS:
        assert printed not in done.stdout, printed
    # 3 parity images: each reduced-precision form warns, in one line, that its rules on a mean were not judged
    unjudged = [line for line in done.stderr.splitlines() if line.startswith("warning: ")]
    assert [line.split(":")[1].strip() for line in unjudged] == ["fp16", "int8"]
    assert all("not judged: 3 parity image(s)" in line for line in unjudged)
    # a log gets plain progress lines, not a bar's updates
    assert "\r" not in done.stderr and "it/s" not in done.stderr and "image/s" not in done.stderr
    assert "INT8 calibration: 3/3 image in " in done.stderr and "parity: fp16, int8: 3/3 image in " in done.stderr
    report = json.loads((tmp_path / "out" / "export-report.json").read_text())
    assert report["passed"] is False and report["failures"][0] == verdicts[2].removeprefix("FAIL ")


def test_export_under_quiet_keeps_the_verdict_and_the_warnings_only(tmp_path):
    done = export(tmp_path, "-q", "--json", "-")
    assert done.returncode == 0, done.stderr[-3000:]
    assert json.loads(done.stdout)["passed"] is True  # stdout: the JSON alone
    said = done.stderr.splitlines()
    assert [line.split(":")[0] for line in said if line.startswith(("PASS", "FAIL"))] == ["PASS fp16", "PASS int8"]
    assert sum(line.startswith("warning: ") for line in said) == 2
    for note in ("no model named", "exporting ", "INT8 calibration", "parity: ", "parity on "):
        assert not any(line.startswith(note) or line.strip().startswith(note) for line in said), note
    for noise in ONNXRUNTIME_NOISE:
        assert noise not in done.stderr, noise


def test_export_takes_the_old_parity_data_spelling_with_a_note(tmp_path, synthetic_dir):
    new = subprocess.run(
        [
            sys.executable,
            "-m",
            "edgeseg",
            "export",
            "--format",
            "fp16",
            "-q",
            "-d",
            str(synthetic_dir),
            "-o",
            str(tmp_path / "new"),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    old = subprocess.run(
        [
            sys.executable,
            "-m",
            "edgeseg",
            "export",
            "--format",
            "fp16",
            "-q",
            "--parity-data",
            str(synthetic_dir),
            "-o",
            str(tmp_path / "old"),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert new.returncode == old.returncode == 0, new.stderr[-2000:] + old.stderr[-2000:]
    assert "note: --parity-data of `export` is now spelled -d/--data" in old.stderr and "note:" not in new.stderr
    reports = [
        json.loads((tmp_path / name / "export-report.json").read_text())["parity_images"] for name in ("new", "old")
    ]
    assert reports[0] == reports[1] and reports[0]["count"] >= 1 and reports[0]["reference_set"] is False
