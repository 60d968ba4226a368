"""`edgeseg eval`: score a model on a data set with the official ISIC 2018 metrics."""

from __future__ import annotations

from pathlib import Path

import click

from edgeseg.click_types import BACKEND_CHOICE, JSON_HELP, JSON_OUTPUT, old_spelling, overwrite_option
from edgeseg.progress import note, quiet_option
from edgeseg.segmenter import FILL_HOLES_DEFAULT, REFINE_DEFAULT, TTA_DEFAULT, TTA_MODES

EXAMPLE = """\b
Examples:
  edgeseg eval runs/lite0 --data ../shared/data/isic2018 --split val
  edgeseg eval runs/lite0/model.onnx --data ../shared/data/isic2018 --json eval.json
  edgeseg eval runs/lite0 --data DIR --json - | python -m json.tool   # JSON on stdout, the table on stderr
  edgeseg eval runs/lite0 --data DIR --save-masks preds/   # PNGs the ISIC scorer accepts
  edgeseg eval --data DIR --tta hflip   # the default model, averaged with its horizontal flip
  edgeseg eval runs/new --data DIR --against runs/old   # is new better than old? paired, with intervals
"""

LOCKED_NOTE = ("note: scoring the locked test split. Score it once, for a model about to ship, and report it with "
               "its interval; every choice (epoch, threshold, lever, model) is made on val, never on this split.")


OUT_HELP = ("Folder for per-image.csv and worst-cases.png. Default: eval-<split>/ beside MODEL (inside a run "
            "directory; in the folder of a model file); for edgeseg's default model, which lies inside the "
            "installation, eval-<split>/ in the current folder.")


def default_out_dir(model: Path, split: str) -> Path:
    """Beside the model, eval-<split>/; for the default model (inside the installation) ./eval-<split>/, in a note."""
    from edgeseg.names import DefaultModelMissing, default_model_path

    try:
        if model.resolve() == default_model_path().resolve():
            out_dir = Path(f"eval-{split}")
            note(f"the default model's folder belongs to the installation: outputs go to ./{out_dir}/ "
                 "(--out picks another folder)")
            return out_dir
    except DefaultModelMissing:
        pass
    return (model if model.is_dir() else model.parent) / f"eval-{split}"


@click.command("eval", epilog=EXAMPLE)
@click.argument("model", required=False, type=click.Path(exists=True, path_type=Path))
@old_spelling("--model", "--model is now the positional MODEL argument: edgeseg eval MODEL --data ...",
              type=click.Path(exists=True, path_type=Path))
@click.option("-d", "--data", "data_dir", required=True, type=click.Path(exists=True, file_okay=False, path_type=Path),
              help="Data set folder (ISIC layout or images/ + masks/).")
@click.option("--split", default="val", show_default=True,
              help="Split to evaluate (a file <split>.txt in the split folder), or 'all'.")
@click.option("--split-dir", type=click.Path(exists=True, file_okay=False, path_type=Path),
              help="Folder of split files (default: DATA/splits).")
@click.option("-b", "--backend", default="auto", show_default=True, type=BACKEND_CHOICE,
              help="auto picks the fastest backend that runs the model here.")
@click.option("-o", "--out", "out_dir", type=click.Path(file_okay=False, path_type=Path), help=OUT_HELP)
@click.option("-j", "--json", "json_path", type=JSON_OUTPUT,
              help=f"Write {{mean, per_image, ...}} as JSON here {JSON_HELP}.")
@click.option("--save-masks", type=click.Path(file_okay=False, path_type=Path),
              help="Write ISIC_nnnnnnn_segmentation.png masks (0/255, original size) here.")
@click.option("--against", type=click.Path(exists=True, path_type=Path),
              help="A second model scored on the same images: prints MODEL minus it per metric, paired by image, with "
                   "a 95% bootstrap interval; 'better' only where the interval excludes 0.")
@overwrite_option
@click.option("--tta", type=click.Choice(TTA_MODES), default=TTA_DEFAULT, show_default=True,
              help="Flip test-time augmentation: average the probabilities of the image and its horizontal flip "
                   "(hflip), or of all four flips (hvflip); 2 or 4 network runs per image.")
@click.option("--fill-holes/--no-fill-holes", default=FILL_HOLES_DEFAULT, show_default=True,
              help="Fill the holes inside the kept lesion region(s) of each mask.")
@click.option("--refine/--no-refine", default=REFINE_DEFAULT, show_default=True,
              help="Look again, closer: where the lesion is small in the image, segment a square around it a second "
                   "time at the network's full input and use that outline (a second network run on those images).")
@quiet_option
@click.pass_context
def eval_command(ctx: click.Context, model: Path | None, data_dir: Path, split: str, split_dir: Path | None,
                 backend: str, out_dir: Path | None, json_path: Path | None, save_masks: Path | None,
                 against: Path | None, tta: str, fill_holes: bool, refine: bool, overwrite: bool,
                 old_model: Path | None) -> None:
    """Score MODEL on a data set with the official ISIC 2018 metrics.

    MODEL is a run directory (PyTorch), an ONNX or a TensorRT engine; without one, edgeseg's default model.

    Each image is segmented, its probability map resized back to the image's own resolution and
    thresholded at the model card's threshold; Jaccard, thresholded Jaccard, Dice, sensitivity,
    specificity and accuracy are computed per image, then averaged over images, as the official
    scorer does. Each mean comes with its 95% bootstrap interval over the images.
    """
    import cv2

    from edgeseg.click_types import json_to_stdout, model_or_default, renamed, write_json
    from edgeseg.data import LOCKED_SPLIT, require_usable
    from edgeseg.evaluate.accuracy import (comparison_dict, comparison_table, evaluate, per_image_csv, summary_table,
                                           worst_cases_image)
    from edgeseg.files import prepare_outputs, write_bytes_atomic, write_text_atomic

    model = model_or_default(renamed(ctx, "model", "old_model"))
    out_dir = out_dir or default_out_dir(model, split)
    prepare_outputs([("--out", out_dir / "per-image.csv"), ("--out", out_dir / "worst-cases.png"), ("--json", json_path),
                     ("--save-masks", save_masks)], overwrite)
    samples = require_usable(data_dir, split=None if split == "all" else split, split_dir=split_dir)
    if split == LOCKED_SPLIT:  # edgeseg.data.LOCKED_SPLIT
        note(LOCKED_NOTE)
    options = {"tta": tta, "fill_holes": fill_holes, "refine": refine}
    evaluation = score(model, backend, options, samples, split, save_masks)
    baseline = score(against, backend, options, samples, split, None) if against is not None else None

    write_text_atomic(out_dir / "per-image.csv", per_image_csv(evaluation))
    ok, png = cv2.imencode(".png", worst_cases_image(evaluation, samples))
    if ok:
        write_bytes_atomic(out_dir / "worst-cases.png", png.tobytes())
    if json_path is not None:
        record = evaluation.to_dict()
        if baseline is not None:
            record["comparison"] = comparison_dict(evaluation, baseline)
        write_json(json_path, record)
    to_stderr = json_to_stdout(json_path)  # stdout carries the JSON alone
    click.echo(summary_table(evaluation), err=to_stderr)
    if baseline is not None:
        click.echo("\n" + summary_table(baseline) + "\n\n" + comparison_table(evaluation, baseline), err=to_stderr)
    click.echo(f"per-image results: {out_dir / 'per-image.csv'}; worst cases: {out_dir / 'worst-cases.png'}",
               err=to_stderr)


def score(model: Path, backend: str, options: dict, samples, split: str, save_masks: Path | None):
    """``model`` scored on ``samples`` with the Segmenter's options (the same for a model and its comparison)."""
    from edgeseg.evaluate.accuracy import evaluate
    from edgeseg.evaluate.models import open_model

    segmenter = open_model(model, backend)
    for name, value in options.items():
        setattr(segmenter, name, value)
    with segmenter:
        return evaluate(segmenter, samples, model_name=str(model), split=split, save_masks=save_masks)
