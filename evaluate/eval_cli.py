"""`edgeseg eval`: score a model on a data set with the official ISIC 2018 metrics."""

from __future__ import annotations

import json
from pathlib import Path

import click

from edgeseg.names import BACKENDS

# Spellings of --backend from before every command shared edgeseg.names.BACKENDS.
OLD_BACKEND_NAMES = {"cpu": "torch-cpu", "torch": "torch-cpu", "cuda": "torch-cuda"}

EXAMPLE = """\b
Examples:
  edgeseg eval --model runs/lite0 --data ../shared/data/isic2018 --split val
  edgeseg eval --model runs/lite0/model.onnx --data ../shared/data/isic2018 --json eval.json
  edgeseg eval --model runs/lite0 --data DIR --save-masks preds/   # PNGs the ISIC scorer accepts
"""


def default_out_dir(model: Path, split: str) -> Path:
    """Beside the model, eval-<split>/; for the default model (inside the installation), ./eval-<split>/."""
    from edgeseg.names import DefaultModelMissing, default_model_path

    try:
        if model == default_model_path():
            return Path(f"eval-{split}")
    except DefaultModelMissing:
        pass
    return (model if model.is_dir() else model.parent) / f"eval-{split}"


def backend_name(value: str) -> str:
    """--backend, with the old cpu/cuda/torch spellings still accepted (and a one-line notice)."""
    if value in OLD_BACKEND_NAMES:
        click.echo(f"note: --backend {value} is now spelled --backend {OLD_BACKEND_NAMES[value]}", err=True)
        return OLD_BACKEND_NAMES[value]
    if value not in BACKENDS:
        raise click.BadParameter(f"{value!r}: choose one of {', '.join(BACKENDS)}", param_hint="--backend")
    return value


@click.command("eval", epilog=EXAMPLE)
@click.option("--model", "model", type=click.Path(exists=True, path_type=Path),
              help="Run directory (PyTorch), model.onnx, or a TensorRT .engine [edgeseg's default model].")
@click.option("--data", "data_dir", required=True, type=click.Path(exists=True, file_okay=False, path_type=Path),
              help="Data set folder (ISIC layout or images/ + masks/).")
@click.option("--split", default="val", show_default=True,
              help="Split to evaluate (a file <split>.txt in the split folder), or 'all'.")
@click.option("--split-dir", type=click.Path(exists=True, file_okay=False, path_type=Path),
              help="Folder of split files (default: DATA/splits).")
@click.option("--backend", default="auto", show_default=True, callback=lambda ctx, param, value: backend_name(value),
              help=f"One of {', '.join(BACKENDS)}; auto picks the fastest that runs the model here.")
@click.option("--out", "out_dir", type=click.Path(file_okay=False, path_type=Path),
              help="Folder for per-image.csv and worst-cases.png (default: beside the model, eval-<split>/).")
@click.option("--json", "json_path", type=click.Path(dir_okay=False, path_type=Path),
              help="Write {mean, per_image, ...} as JSON here.")
@click.option("--save-masks", type=click.Path(file_okay=False, path_type=Path),
              help="Write ISIC_nnnnnnn_segmentation.png masks (0/255, original size) here.")
def eval_command(model: Path | None, data_dir: Path, split: str, split_dir: Path | None, backend: str,
                 out_dir: Path | None, json_path: Path | None, save_masks: Path | None) -> None:
    """Score a model on a data set with the official ISIC 2018 metrics.

    Each image is segmented, its probability map resized back to the image's own resolution and
    thresholded at the model card's threshold; Jaccard, thresholded Jaccard, Dice, sensitivity,
    specificity and accuracy are computed per image, then averaged over images, as the official
    scorer does.
    """
    import cv2

    from edgeseg.click_types import model_or_default
    from edgeseg.data import require_usable
    from edgeseg.evaluate.accuracy import evaluate, per_image_csv, summary_table, worst_cases_image
    from edgeseg.evaluate.models import open_model
    from edgeseg.files import write_bytes_atomic, write_text_atomic

    model = model_or_default(model)
    samples = require_usable(data_dir, split=None if split == "all" else split, split_dir=split_dir)
    segmenter = open_model(model, backend)
    with segmenter:
        evaluation = evaluate(segmenter, samples, model_name=str(model), split=split, save_masks=save_masks)

    out_dir = out_dir or default_out_dir(model, split)
    write_text_atomic(out_dir / "per-image.csv", per_image_csv(evaluation))
    ok, png = cv2.imencode(".png", worst_cases_image(evaluation, samples))
    if ok:
        write_bytes_atomic(out_dir / "worst-cases.png", png.tobytes())
    if json_path is not None:
        write_text_atomic(json_path, json.dumps(evaluation.to_dict(), indent=2) + "\n")
    click.echo(summary_table(evaluation))
    click.echo(f"per-image results: {out_dir / 'per-image.csv'}; worst cases: {out_dir / 'worst-cases.png'}")
