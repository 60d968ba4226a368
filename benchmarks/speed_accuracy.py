"""Speed against accuracy of the model sizes a device builder can choose: lite0, lite1, lite2 at 256 and 320.

For each encoder and input size the FPN of the default model's decoder is built, exported to the fp32 ONNX
and the CPU's INT8 form (calibrated on the train split of edgeseg's reference set, as `edgeseg export` does
by default), and every form of every size is timed in ONE interleaved `edgeseg bench` run, so the ratios
between them hold even on a noisy machine.

Latency does not depend on the weights' values, so the models are built with random weights (seed 0) unless
``--trained SIZE=RUN_DIR`` names a trained run for a size. Accuracy does: a row has accuracy only where
``--scored SIZE=EVAL.json`` gives the `edgeseg eval --json` record of a model of that size scored on the locked
test split (with its interval); elsewhere the table says it is not measured and why. A SIZE is written
``lite0@256``.

    python benchmarks/speed_accuracy.py                      # all six sizes, latency only
    python benchmarks/speed_accuracy.py --scored lite2@256=eval-test.json --runs 100

Writes benchmarks/results/speed-accuracy-cpu.json and .md (the command and the CPU named), and, where at least
one row has accuracy, speed-accuracy-cpu.png (latency against test Dice, with intervals).
"""

from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path
from typing import Any

import click

RESULTS = Path(__file__).resolve().parent / "results"
ENCODERS = {
    "lite0": "tu-tf_efficientnet_lite0",
    "lite1": "tu-tf_efficientnet_lite1",
    "lite2": "tu-tf_efficientnet_lite2",
}
SIZES = (256, 320)
CALIBRATION_IMAGES = 32
ONE_PASS_NOTE = (
    "one network pass a frame: the closer look (refine) is off, since random weights would decide whether a "
    "frame gets a second pass; `edgeseg run` adds that pass on frames where the lesion is small"
)
INT8_NOTE = (
    "INT8 keeps float the layers down to a quarter of the input (the stride rule): which blocks `edgeseg "
    "export`'s sensitivity pass keeps float depends on trained weights; on the default model its choice ran "
    "1.58x fp32 where the stride rule ran 1.48x (int8-sensitivity-cpu.md)"
)
NOT_SCORED = (
    "no model of this size trained without the locked test images yet: accuracy needs a GPU training run "
    "(issue 24); latency is the architecture's, with random weights"
)


def size_label(encoder: str, size: int) -> str:
    return f"{encoder}@{size}"


def parse_pairs(values: tuple[str, ...], option: str) -> dict[str, Path]:
    pairs = {}
    for value in values:
        label, separator, path = value.partition("=")
        if not separator or label.split("@")[0] not in ENCODERS or not label.partition("@")[2].isdigit():
            raise click.BadParameter(f"{value!r}: write SIZE=PATH with SIZE like lite0@256", param_hint=option)
        pairs[label] = Path(path)
    return pairs


def weights_note(label: str, trained_runs: dict[str, Path]) -> str:
    """Which weights the row of ``label`` measured: a trained run's, or random ones."""
    return f"{label}: weights {'trained: ' + trained_runs[label].name if label in trained_runs else 'random (seed 0)'}"


def build_run(directory: Path, encoder: str, size: int, trained: Path | None) -> tuple[Path, int]:
    """A run directory of this size (random weights, seed 0, unless a trained run is given) and its parameter count."""
    import torch

    from edgeseg.core.card import ModelCard, save_card
    from edgeseg.core.names import WEIGHTS_FILENAME, default_model_path
    from edgeseg.runtime.loaders import read_card
    from edgeseg.train.network import build_model, load_model, save_weights

    if trained is not None:
        model, _ = load_model(trained)
        return trained, sum(parameter.numel() for parameter in model.parameters())
    default = read_card(default_model_path())
    card = ModelCard(
        encoder=ENCODERS[encoder],
        architecture_kwargs=default.architecture_kwargs,
        input_size=(size, size),
        preprocessing=default.preprocessing,
        output=default.output,
    )
    torch.manual_seed(0)
    model = build_model(card)
    directory.mkdir(parents=True)
    save_weights(model, directory / WEIGHTS_FILENAME)
    save_card(card, directory)
    return directory, sum(parameter.numel() for parameter in model.parameters())


def export_cpu_forms(run_dir: Path, out_dir: Path, images: list[Path]) -> None:
    """model.onnx and model.int8.onnx of ``run_dir`` in ``out_dir``, with export's own functions and defaults."""
    from edgeseg.core.names import ONNX_FILENAMES
    from edgeseg.export.int8_export import export_int8
    from edgeseg.export.onnx_export import export_onnx
    from edgeseg.train.network import load_model

    model, card = load_model(run_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    onnx_path = export_onnx(model, card, out_dir / ONNX_FILENAMES["onnx"])
    # The stride rule, not the sensitivity pass: with random weights the pass would measure noise (INT8_NOTE).
    export_int8(onnx_path, card, out_dir / ONNX_FILENAMES["int8"], images, measure_float_blocks=False)


def calibration_images() -> list[Path]:
    from edgeseg.core.data import discover_samples
    from edgeseg.core.names import reference_set_path

    samples = discover_samples(reference_set_path(), split="train")
    return [sample.image for sample in samples[:CALIBRATION_IMAGES]]


def scored_accuracy(path: Path) -> dict[str, Any]:
    """Dice and thresholded Jaccard, with their intervals, from an `edgeseg eval --json` record of the test split."""
    record = json.loads(path.read_text(encoding="utf-8"))
    split = record.get("split")
    if split != "test":
        raise click.BadParameter(
            f"{path}: scored on the {split!r} split; the table takes the locked test split only", param_hint="--scored"
        )
    return {
        "dice": record["mean"]["dice"],
        "threshold_jaccard": record["mean"]["threshold_jaccard"],
        "intervals": record.get("intervals", {}),
        "images": record.get("images"),
        "record": path.name,
    }


def table_rows(report: dict[str, Any]) -> list[list[str]]:
    rows = [["size", "parameters", "fp32 ONNX MB", "fp32 p50 ms", "INT8 p50 ms", "INT8 speed-up", "test Dice (95% CI)"]]
    for row in report["rows"]:
        accuracy = row["accuracy"]
        if accuracy:
            interval = accuracy["intervals"].get("dice", {})
            ci = f" ({interval['low']:.3f}-{interval['high']:.3f})" if interval else ""
            dice = f"{accuracy['dice']:.3f}{ci}"
        else:
            dice = "not measured (see notes)"
        rows.append(
            [
                row["size"],
                f"{row['parameters'] / 1e6:.2f} M",
                f"{row['fp32_mb']:.1f}",
                f"{row['fp32_ms']:.2f}",
                f"{row['int8_ms']:.2f}",
                f"{row['fp32_ms'] / row['int8_ms']:.2f}x",
                dice,
            ]
        )
    return rows


def rows_from_bench(bench: dict[str, Any], sizes: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per size: its fp32 and INT8 inference p50 from the interleaved bench's records (in the forms' order)."""
    records = bench["results"]
    if len(records) != 2 * len(sizes) or any(record["status"] != "ok" for record in records):
        raise click.ClickException(
            "a form did not run: "
            + "; ".join(f"{record['form']}: {record['reason']}" for record in records if record["status"] != "ok")
        )
    rows = []
    for index, size in enumerate(sizes):
        fp32, int8 = records[2 * index], records[2 * index + 1]
        rows.append(
            {
                "size": size["label"],
                "parameters": size["parameters"],
                "fp32_mb": fp32["size_bytes"] / 1e6,
                "fp32_ms": fp32["stages"]["inference"]["p50_ms"],
                "int8_ms": int8["stages"]["inference"]["p50_ms"],
                "fp32_end_to_end_ms": fp32["stages"]["end_to_end"]["p50_ms"],
                "int8_end_to_end_ms": int8["stages"]["end_to_end"]["p50_ms"],
                "accuracy": size["accuracy"],
                "accuracy_note": None if size["accuracy"] else NOT_SCORED,
            }
        )
    return rows


def time_one_pass(forms: list[Path], runs: int) -> dict[str, Any]:
    """`edgeseg bench`'s interleaved timing of every form, with the closer look off (ONE_PASS_NOTE)."""
    from contextlib import ExitStack

    from edgeseg.core.host import host_info
    from edgeseg.evaluate.latency import plan, result_record, synthetic_frame, time_interleaved
    from edgeseg.loading.open import discover_forms, open_model

    results = plan(discover_forms(forms), ("onnxruntime-cpu",))
    with ExitStack() as stack:
        for result in results:
            result.segmenter = stack.enter_context(open_model(result.form.path, result.backend, refine=False))
            result.backend, result.precision = result.segmenter.backend.name, result.segmenter.backend.precision
            result.input_size = tuple(result.segmenter.card.input_size)
        time_interleaved(results, synthetic_frame(), runs, warmup=10)
        return {"results": [result_record(result) for result in results], "host": host_info(), "warnings": []}


def draw_plot(report: dict[str, Any], path: Path) -> bool:
    """Latency (x) against test Dice (y), one point per scored form with its interval; False when nothing is scored."""
    import cv2
    import numpy as np

    points = [
        (row[f"{form}_ms"], row["accuracy"], f"{row['size']} {form}")
        for row in report["rows"]
        if row["accuracy"]
        for form in ("fp32", "int8")
    ]
    if not points:
        return False
    width, height, margin = 900, 600, 80
    canvas = np.full((height, width, 3), 255, np.uint8)
    xs = [point[0] for point in points]
    lows = [point[1]["intervals"].get("dice", {}).get("low", point[1]["dice"]) for point in points]
    highs = [point[1]["intervals"].get("dice", {}).get("high", point[1]["dice"]) for point in points]
    x_range, y_range = (0.0, max(xs) * 1.15), (min(lows) - 0.01, max(highs) + 0.01)

    def at(x: float, y: float) -> tuple[int, int]:
        return (
            int(margin + (x - x_range[0]) / (x_range[1] - x_range[0]) * (width - 2 * margin)),
            int(height - margin - (y - y_range[0]) / (y_range[1] - y_range[0]) * (height - 2 * margin)),
        )

    cv2.rectangle(canvas, at(x_range[0], y_range[0]), at(x_range[1], y_range[1]), (0, 0, 0), 1)
    for (x, accuracy, label), low, high in zip(points, lows, highs, strict=True):
        cv2.line(canvas, at(x, low), at(x, high), (120, 120, 120), 1)
        cv2.circle(canvas, at(x, accuracy["dice"]), 5, (200, 80, 0), -1)
        cv2.putText(canvas, label, at(x, accuracy["dice"]), cv2.FONT_HERSHEY_SIMPLEX, 0.45, (0, 0, 0), 1, cv2.LINE_AA)
    cv2.putText(
        canvas,
        f"inference p50 ms on {report['cpu']} (x) against test Dice with 95% interval (y)",
        (margin, margin // 2),
        cv2.FONT_HERSHEY_SIMPLEX,
        0.5,
        (0, 0, 0),
        1,
        cv2.LINE_AA,
    )
    cv2.putText(
        canvas,
        f"x: 0 to {x_range[1]:.0f} ms; y: {y_range[0]:.3f} to {y_range[1]:.3f}",
        (margin, height - margin // 3),
        cv2.FONT_HERSHEY_SIMPLEX,
        0.5,
        (0, 0, 0),
        1,
        cv2.LINE_AA,
    )
    ok, encoded = cv2.imencode(".png", canvas)
    from edgeseg.core.files import write_bytes_atomic

    write_bytes_atomic(path, encoded.tobytes())
    return ok


def markdown(report: dict[str, Any]) -> str:
    from edgeseg.core.tables import markdown_table

    lines = [
        "# Speed against accuracy: lite0, lite1, lite2 at 256 and 320",
        "",
        f"Command: `{report['command']}`",
        "",
        f"- CPU: {report['cpu']}; {report['date']}",
        f"- latency: onnxruntime-cpu inference stage p50 over {report['runs']} interleaved rounds of all forms "
        f"(one process run: compare ratios, not absolute figures, across machines)",
        f"- INT8: `edgeseg export`'s CPU form, calibrated on {report['calibration']}",
        "",
    ]
    lines += [markdown_table(table_rows(report)), ""]
    lines += [f"- {note}" for note in report["notes"]]
    return "\n".join(lines) + "\n"


@click.command()
@click.option("--encoders", default=",".join(ENCODERS), show_default=True, help="Comma-separated: lite0,lite1,lite2.")
@click.option("--sizes", default=",".join(map(str, SIZES)), show_default=True, help="Comma-separated input sizes.")
@click.option("--trained", multiple=True, help="SIZE=RUN_DIR: a trained run for that size (default: random weights).")
@click.option(
    "--scored", multiple=True, help="SIZE=EVAL.json: `edgeseg eval --split test --json` of that size's model."
)
@click.option("--runs", default=50, show_default=True, type=click.IntRange(min=20), help="Timed rounds.")
@click.option(
    "--out",
    "out_stem",
    default=RESULTS / "speed-accuracy-cpu",
    show_default=True,
    type=click.Path(path_type=Path),
    help="Results path without extension: .json, .md (and .png) are written.",
)
def main(
    encoders: str, sizes: str, trained: tuple[str, ...], scored: tuple[str, ...], runs: int, out_stem: Path
) -> None:
    """Time every size's fp32 and INT8 ONNX in one interleaved run; add test accuracy where scored; record it all."""
    from datetime import datetime, timezone

    from edgeseg.core.files import portable_command, write_text_atomic
    from edgeseg.core.host import cpu_model
    from edgeseg.core.names import ONNX_FILENAMES, REFERENCE_SET_NAME

    trained_runs, scored_records = parse_pairs(trained, "--trained"), parse_pairs(scored, "--scored")
    labels = [size_label(encoder, int(size)) for encoder in encoders.split(",") for size in sizes.split(",")]
    with tempfile.TemporaryDirectory(prefix="edgeseg-speed-") as scratch:
        scratch, images, chosen = Path(scratch), calibration_images(), []
        for label in labels:
            encoder, size = label.split("@")
            click.echo(f"{label}: building and exporting", err=True)
            run_dir, parameters = build_run(scratch / label / "run", encoder, int(size), trained_runs.get(label))
            export_cpu_forms(run_dir, scratch / label / "forms", images)
            chosen.append(
                {
                    "label": label,
                    "parameters": parameters,
                    "fp32_path": str(scratch / label / "forms" / ONNX_FILENAMES["onnx"]),
                    "int8_path": str(scratch / label / "forms" / ONNX_FILENAMES["int8"]),
                    "accuracy": scored_accuracy(scored_records[label]) if label in scored_records else None,
                }
            )
        forms = [Path(size[key]) for size in chosen for key in ("fp32_path", "int8_path")]
        bench = time_one_pass(forms, runs)
        report = {
            "command": portable_command(sys.argv),
            "cpu": cpu_model()[0] or "unknown CPU",
            "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "runs": runs,
            "calibration": f"the first {CALIBRATION_IMAGES} train images of {REFERENCE_SET_NAME}",
            "rows": rows_from_bench(bench, chosen),
            "host": bench["host"],
            "warnings": bench["warnings"],
            "notes": [weights_note(size["label"], trained_runs) for size in chosen]
            + [ONE_PASS_NOTE, INT8_NOTE, NOT_SCORED.capitalize() + " where a row says not measured."],
        }
    write_text_atomic(out_stem.with_suffix(".json"), json.dumps(report, indent=2) + "\n")
    write_text_atomic(out_stem.with_suffix(".md"), markdown(report))
    plotted = draw_plot(report, out_stem.with_suffix(".png"))
    click.echo(markdown(report))
    click.echo(
        f"wrote {out_stem.with_suffix('.json')}, .md" + (" and .png" if plotted else " (no plot: nothing scored)")
    )


if __name__ == "__main__":
    main()
