"""Latency of the default model's forms on this machine: PyTorch eager, ONNX fp32, fp16 and INT8.

Builds (or takes, with --run) the default model of ``edgeseg.core.card.ModelCard()``, exports it to the fp32,
FP16 and INT8 ONNX with the export functions, and measures all four forms with ``edgeseg bench``'s
measurement, interleaved, from one process run. Writes benchmarks/results/bench-cpu.json and .md with
the exact command and the host.

Without --run the weights are random (seed 0): latency does not depend on the weight values (INT8
ranges aside, which are calibrated), but accuracy does, so no accuracy is reported then, and the
results say so at the top.

    python benchmarks/bench_forms.py                          # random weights, synthetic calibration
    python benchmarks/bench_forms.py --run runs/lite0 --calib ../shared/data/isic2018 --runs 200

A run directory that already holds the forms `edgeseg export` wrote is benched as it is (those are the
forms the parity gate judged); otherwise the forms are exported into a scratch folder first.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import click

from edgeseg.core.names import ONNX_FILENAMES

RESULTS = Path(__file__).resolve().parent / "results"
CALIBRATION_IMAGES = 32
RANDOM_WEIGHTS_NOTE = (
    "RANDOM WEIGHTS: no --run was given, so the model is the default architecture with random weights (seed 0) and "
    "INT8 was calibrated on synthetic images. The latencies are the architecture's; no accuracy is implied"
)


def default_run(directory: Path) -> Path:
    """A run directory holding the card's default model with random weights (seed 0)."""
    import torch

    from edgeseg.core.card import ModelCard, save_card
    from edgeseg.core.names import WEIGHTS_FILENAME
    from edgeseg.train.network import build_model, save_weights

    torch.manual_seed(0)
    card = ModelCard()
    directory.mkdir(parents=True, exist_ok=True)
    save_weights(build_model(card), directory / WEIGHTS_FILENAME)
    save_card(card, directory)
    return directory


def calibration_images(calib: Path | None, scratch: Path) -> tuple[list[Path], str]:
    """Images to calibrate INT8 on: spread over --calib's train split (or all of it), else synthetic ones."""
    from edgeseg.core.data import discover_samples

    if calib is None:
        from edgeseg.core.synthetic import generate_dataset

        samples = generate_dataset(scratch / "calibration", n=CALIBRATION_IMAGES, size=256, seed=11)
        return [
            sample.image for sample in samples
        ], f"{CALIBRATION_IMAGES} synthetic images (edgeseg.core.synthetic, seed 11)"
    try:
        samples = discover_samples(calib, split="train")
    except (FileNotFoundError, ValueError):
        samples = discover_samples(calib)
    step = max(1, len(samples) // CALIBRATION_IMAGES)
    chosen = samples[::step][:CALIBRATION_IMAGES]
    return [sample.image for sample in chosen], f"{len(chosen)} images of {calib}"


def export_forms(run_dir: Path, out_dir: Path, images: list[Path]) -> None:
    """model.onnx, model.fp16.onnx and model.int8.onnx (the names `edgeseg export` writes) in out_dir."""
    from edgeseg.core.names import ONNX_FILENAMES
    from edgeseg.export.fp16_export import export_fp16
    from edgeseg.export.int8_export import export_int8
    from edgeseg.export.onnx_export import export_onnx
    from edgeseg.train.network import load_model

    model, card = load_model(run_dir)
    onnx_path = export_onnx(model, card, out_dir / ONNX_FILENAMES["onnx"])
    export_fp16(onnx_path, card, out_dir / ONNX_FILENAMES["fp16"])
    export_int8(onnx_path, card, out_dir / ONNX_FILENAMES["int8"], images, progress=True)


@click.command()
@click.option(
    "--run",
    "run_dir",
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    help="A trained run directory (default: the card's default model with random weights).",
)
@click.option(
    "--calib",
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    help="Data to calibrate INT8 on (its train split; default: synthetic images).",
)
@click.option(
    "--data",
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    help="Also score each form on this data's --split (only meaningful with --run).",
)
@click.option("--split", default="val", show_default=True)
@click.option("--limit", type=click.IntRange(min=1), help="Score only the first N images.")
@click.option("--runs", default=100, show_default=True, type=click.IntRange(min=50), help="Timed runs per form.")
@click.option("--warmup", default=10, show_default=True, type=click.IntRange(min=1))
@click.option(
    "--out",
    "out_stem",
    default=RESULTS / "bench-cpu",
    show_default=True,
    type=click.Path(path_type=Path),
    help="Results path without extension: .json and .md are written.",
)
def main(
    run_dir: Path | None,
    calib: Path | None,
    data: Path | None,
    split: str,
    limit: int | None,
    runs: int,
    warmup: int,
    out_stem: Path,
) -> None:
    """Measure PyTorch eager, ONNX fp32, FP16 and INT8 of one model, interleaved, and record the results."""
    from edgeseg.core.files import portable_command, portable_path
    from edgeseg.evaluate.latency import run_bench
    from edgeseg.evaluate.latency_report import terminal_text, write_report

    command = portable_command(sys.argv)
    with tempfile.TemporaryDirectory(prefix="edgeseg-bench-") as scratch:
        scratch = Path(scratch)
        random_weights = run_dir is None
        if random_weights:
            click.echo(RANDOM_WEIGHTS_NOTE, err=True)
            run_dir = default_run(scratch / "run")
        forms = [run_dir]
        if (run_dir / ONNX_FILENAMES["onnx"]).is_file():
            # The forms `edgeseg export` wrote (and gated) beside the run: bench exactly those.
            calibration = "as `edgeseg export` did (see the run's export-report.json)"
        else:
            images, calibration = calibration_images(calib, scratch)
            forms.append(scratch / "export")
            export_forms(run_dir, forms[-1], images)
        samples = None
        if data is not None:
            from edgeseg.core.data import require_usable

            samples = require_usable(data, split=None if split == "all" else split)[:limit]
        report = run_bench(forms, ("auto",), runs, warmup, data=data, samples=samples, split=split, command=command)
    report["model"] = {
        "weights": "random (seed 0)" if random_weights else portable_path(run_dir),
        "card": "edgeseg.core.card.ModelCard() defaults" if random_weights else portable_path(run_dir / "card.json"),
        "int8_calibration": calibration,
    }
    report["notes"].insert(
        0,
        f"model: weights {report['model']['weights']}, card {report['model']['card']}; "
        f"INT8 calibrated on {calibration}",
    )
    if random_weights:
        report["notes"].insert(0, RANDOM_WEIGHTS_NOTE)
    write_report(
        report,
        out_stem.with_suffix(".json"),
        out_stem.with_suffix(".md"),
        title="edgeseg forms on this CPU: PyTorch eager, ONNX fp32, FP16, INT8",
    )
    click.echo(terminal_text(report))
    click.echo(f"wrote {out_stem.with_suffix('.json')} and {out_stem.with_suffix('.md')}")


if __name__ == "__main__":
    main()
