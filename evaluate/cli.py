"""The evaluation commands: `edgeseg eval` (ISIC metrics, edgeseg.evaluate.accuracy) and `edgeseg bench` (latency of
every form, edgeseg.evaluate.latency and latency_report)."""

from __future__ import annotations

import shlex
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from edgeseg.core.click_types import BACKEND_CHOICE, INPUT_SIZE, JSON_HELP, JSON_OUTPUT, old_spelling, overwrite_option
from edgeseg.core.files import portable_path
from edgeseg.core.progress import note, quiet_option
from edgeseg.core.segmenter import FILL_HOLES_DEFAULT, REFINE_DEFAULT, TTA_DEFAULT, TTA_MODES
from edgeseg.evaluate.latency import DEFAULT_RUNS, DEFAULT_WARMUP

if TYPE_CHECKING:  # the evaluation parts load when a command runs
    from edgeseg.core.data import Sample
    from edgeseg.evaluate.accuracy import Evaluation

EXAMPLE = """\b
Examples:
  edgeseg eval runs/lite0 --data ../shared/data/isic2018 --split val
  edgeseg eval runs/lite0/model.onnx --data ../shared/data/isic2018 --json eval.json
  edgeseg eval runs/lite0 --data DIR --json - | python -m json.tool   # JSON on stdout, the table on stderr
  edgeseg eval runs/lite0 --data DIR --save-masks preds/   # PNGs the ISIC scorer accepts
  edgeseg eval --data DIR --tta hflip   # the default model, averaged with its horizontal flip
  edgeseg eval runs/new --data DIR --against runs/old   # is new better than old? paired, with intervals
"""

LOCKED_NOTE = (
    "note: scoring the locked test split. Score it once, for a model about to ship, and report it with "
    "its interval; every choice (epoch, threshold, lever, model) is made on val, never on this split."
)


OUT_HELP = (
    "Folder for per-image.csv and worst-cases.png. Default: eval-<split>/ beside MODEL (inside a run "
    "directory; in the folder of a model file); for edgeseg's default model, which lies inside the "
    "installation, eval-<split>/ in the current folder."
)


def default_out_dir(model: Path, split: str) -> Path:
    """Beside the model, eval-<split>/; for the default model (inside the installation) ./eval-<split>/, in a note."""
    from edgeseg.core.names import DefaultModelMissing, default_model_path

    try:
        if model.resolve() == default_model_path().resolve():
            out_dir = Path(f"eval-{split}")
            note(
                f"the default model's folder belongs to the installation: outputs go to ./{out_dir}/ "
                "(--out picks another folder)"
            )
            return out_dir
    except DefaultModelMissing:
        pass
    return (model if model.is_dir() else model.parent) / f"eval-{split}"


@click.command("eval", epilog=EXAMPLE)
@click.argument("model", required=False, type=click.Path(exists=True, path_type=Path))
@old_spelling(
    "--model",
    "--model is now the positional MODEL argument: edgeseg eval MODEL --data ...",
    type=click.Path(exists=True, path_type=Path),
)
@click.option(
    "-d",
    "--data",
    "data_dir",
    required=True,
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    help="Data set folder (ISIC layout or images/ + masks/).",
)
@click.option(
    "--split",
    default="val",
    show_default=True,
    help="Split to evaluate (a file <split>.txt in the split folder), or 'all'.",
)
@click.option(
    "--split-dir",
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    help="Folder of split files (default: DATA/splits).",
)
@click.option(
    "-b",
    "--backend",
    default="auto",
    show_default=True,
    type=BACKEND_CHOICE,
    help="auto picks the fastest backend that runs the model here.",
)
@click.option("-o", "--out", "out_dir", type=click.Path(file_okay=False, path_type=Path), help=OUT_HELP)
@click.option(
    "-j", "--json", "json_path", type=JSON_OUTPUT, help=f"Write {{mean, per_image, ...}} as JSON here {JSON_HELP}."
)
@click.option(
    "--save-masks",
    type=click.Path(file_okay=False, path_type=Path),
    help="Write ISIC_nnnnnnn_segmentation.png masks (0/255, original size) here.",
)
@click.option(
    "--against",
    type=click.Path(exists=True, path_type=Path),
    help="A second model scored on the same images: prints MODEL minus it per metric, paired by image, with "
    "a 95% bootstrap interval; 'better' only where the interval excludes 0.",
)
@overwrite_option
@click.option(
    "--tta",
    type=click.Choice(TTA_MODES),
    default=TTA_DEFAULT,
    show_default=True,
    help="Flip test-time augmentation: average the probabilities of the image and its horizontal flip "
    "(hflip), or of all four flips (hvflip); 2 or 4 network runs per image.",
)
@click.option(
    "--fill-holes/--no-fill-holes",
    default=FILL_HOLES_DEFAULT,
    show_default=True,
    help="Fill the holes inside the kept lesion region(s) of each mask.",
)
@click.option(
    "--refine/--no-refine",
    default=REFINE_DEFAULT,
    show_default=True,
    help="Look again, closer: where the lesion is small in the image, segment a square around it a second "
    "time at the network's full input and use that outline (a second network run on those images).",
)
@quiet_option
@click.pass_context
def eval_command(
    ctx: click.Context,
    model: Path | None,
    data_dir: Path,
    split: str,
    split_dir: Path | None,
    backend: str,
    out_dir: Path | None,
    json_path: Path | None,
    save_masks: Path | None,
    against: Path | None,
    tta: str,
    fill_holes: bool,
    refine: bool,
    overwrite: bool,
    old_model: Path | None,
) -> None:
    """Score MODEL on a data set with the official ISIC 2018 metrics.

    MODEL is a run directory (PyTorch), an ONNX or a TensorRT engine; without one, edgeseg's default model.

    Each image is segmented, its probability map resized back to the image's own resolution and
    thresholded at the model card's threshold; Jaccard, thresholded Jaccard, Dice, sensitivity,
    specificity and accuracy are computed per image, then averaged over images, as the official
    scorer does. Each mean comes with its 95% bootstrap interval over the images.
    """
    from edgeseg.core.click_types import model_or_default, renamed
    from edgeseg.core.data import LOCKED_SPLIT, require_usable
    from edgeseg.core.files import prepare_outputs

    model = model_or_default(renamed(ctx, "model", "old_model"))
    out_dir = out_dir or default_out_dir(model, split)
    out_files = [("--out", out_dir / "per-image.csv"), ("--out", out_dir / "worst-cases.png")]
    prepare_outputs([*out_files, ("--json", json_path), ("--save-masks", save_masks)], overwrite)
    samples = require_usable(data_dir, split=None if split == "all" else split, split_dir=split_dir)
    if split == LOCKED_SPLIT:  # edgeseg.core.data.LOCKED_SPLIT
        note(LOCKED_NOTE)
    options = {"tta": tta, "fill_holes": fill_holes, "refine": refine}
    evaluation = score(model, backend, options, samples, split, save_masks)
    baseline = score(against, backend, options, samples, split, None) if against is not None else None
    write_eval_files(evaluation, baseline, samples, out_dir, json_path)
    echo_eval(evaluation, baseline, out_dir, json_path)


def write_eval_files(
    evaluation: Evaluation, baseline: Evaluation | None, samples: list[Sample], out_dir: Path, json_path: Path | None
) -> None:
    """per-image.csv and worst-cases.png in out_dir; the JSON record (with the comparison, if any) at json_path."""
    import cv2

    from edgeseg.core.click_types import write_json
    from edgeseg.core.files import write_bytes_atomic, write_text_atomic
    from edgeseg.evaluate.accuracy import comparison_dict, per_image_csv, worst_cases_image

    write_text_atomic(out_dir / "per-image.csv", per_image_csv(evaluation))
    ok, png = cv2.imencode(".png", worst_cases_image(evaluation, samples))
    if ok:
        write_bytes_atomic(out_dir / "worst-cases.png", png.tobytes())
    if json_path is not None:
        record = evaluation.to_dict()
        if baseline is not None:
            record["comparison"] = comparison_dict(evaluation, baseline)
        write_json(json_path, record)


def echo_eval(evaluation: Evaluation, baseline: Evaluation | None, out_dir: Path, json_path: Path | None) -> None:
    """The tables, and where the per-image files are; on stderr when stdout carries the JSON alone."""
    from edgeseg.core.click_types import json_to_stdout
    from edgeseg.evaluate.accuracy import comparison_table, summary_table

    to_stderr = json_to_stdout(json_path)
    click.echo(summary_table(evaluation), err=to_stderr)
    if baseline is not None:
        click.echo("\n" + summary_table(baseline) + "\n\n" + comparison_table(evaluation, baseline), err=to_stderr)
    files = f"per-image results: {out_dir / 'per-image.csv'}; worst cases: {out_dir / 'worst-cases.png'}"
    click.echo(files, err=to_stderr)


def score(model: Path, backend: str, options: dict, samples, split: str, save_masks: Path | None):
    """``model`` scored on ``samples`` with the Segmenter's options (the same for a model and its comparison)."""
    from edgeseg.evaluate.accuracy import evaluate
    from edgeseg.loading.open import open_model

    segmenter = open_model(model, backend)
    for name, value in options.items():
        setattr(segmenter, name, value)
    with segmenter:
        return evaluate(segmenter, samples, model_name=str(model), split=split, save_masks=save_masks)


# `edgeseg bench`


def command_line(models: tuple[Path, ...], options: dict[str, Any]) -> str:
    """The command as run, rebuilt from the parsed options (defaults included), so a result can be redone;
    its paths as a committed record may hold them (``portable_path``)."""
    words = ["edgeseg", "bench", *map(portable_path, models)]
    for backend in options["backends"]:
        words += ["--backend", backend]
    words += ["--runs", str(options["runs"]), "--warmup", str(options["warmup"])]
    for name in ("size", "image", "data", "split", "split_dir", "limit", "json_path", "md_path"):
        value = options.get(name)
        if value is None or (name in ("split", "split_dir") and options.get("data") is None):
            continue
        flag = {"json_path": "--json", "md_path": "--md", "split_dir": "--split-dir"}.get(name, f"--{name}")
        words += [flag, "x".join(map(str, value)) if name == "size" else portable_path(str(value))]
    return shlex.join(words)


EXAMPLE = """\b
Examples:
  edgeseg bench runs/lite0                        # PyTorch, plus every form exported into the run
  edgeseg bench exports/lite0 --runs 200 --md bench.md
  edgeseg bench model.onnx model.int8.onnx --data ../shared/data/isic2018 --split val --limit 100
  edgeseg bench model.trt10.3.sm87-orin.fp16.engine model.onnx --backend auto --json bench.json   # on a Jetson
  edgeseg bench model.onnx --json - | python -m json.tool      # JSON on stdout, the table on stderr

\b
Exit status: 0 when at least one form was measured and none failed; forms that cannot run on this
host (no TensorRT, no GPU provider, no PyTorch) are reported as skipped and do not change it.
1 when nothing could be measured or a form failed (a broken model file, an error while running).
"""


@click.command("bench", epilog=EXAMPLE)
@click.argument("models", nargs=-1, type=click.Path(exists=True, path_type=Path))
@click.option(
    "-b",
    "--backend",
    "backends",
    multiple=True,
    default=("auto",),
    show_default=True,
    type=BACKEND_CHOICE,
    help="Backend(s) to run each form on (repeat to compare); each form runs on those that apply to it.",
)
@click.option(
    "--runs",
    default=DEFAULT_RUNS,
    show_default=True,
    type=click.IntRange(min=1),
    help="Timed runs per form (after warm-up).",
)
@click.option(
    "--warmup",
    default=DEFAULT_WARMUP,
    show_default=True,
    type=click.IntRange(min=0),
    help="Untimed runs per form first (engine start-up, caches, clocks).",
)
@click.option(
    "--size",
    type=INPUT_SIZE,
    default=None,
    help="256 or HEIGHTxWIDTH: input size for PyTorch and dynamic-shape ONNX forms; static forms keep their "
    "card's size.",
)
@click.option(
    "--image",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="A real frame to time on (default: a synthetic 640x480 dermoscopy frame).",
)
@click.option(
    "-d",
    "--data",
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    help="Data set folder (ISIC layout or images/ + masks/): adds Dice and thresholded Jaccard per form.",
)
@click.option("--split", default="val", show_default=True, help="Split of --data to score, or 'all'.")
@click.option(
    "--split-dir",
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    help="Folder of split files (default: DATA/splits).",
)
@click.option("--limit", type=click.IntRange(min=1), help="Score only the first N images of the split.")
@click.option("-j", "--json", "json_path", type=JSON_OUTPUT, help=f"Write the results as JSON here {JSON_HELP}.")
@click.option(
    "--md", "md_path", type=click.Path(dir_okay=False, path_type=Path), help="Write a markdown results file here."
)
@overwrite_option
@quiet_option
@click.pass_context
def bench_command(
    ctx: click.Context,
    models: tuple[Path, ...],
    backends: tuple[str, ...],
    runs: int,
    warmup: int,
    size: tuple[int, int] | None,
    image: Path | None,
    data: Path | None,
    split: str,
    split_dir: Path | None,
    limit: int | None,
    json_path: Path | None,
    md_path: Path | None,
    overwrite: bool,
) -> None:
    """Measure latency per stage and end to end (and accuracy with --data) of model forms, side by side.

    MODEL is a run directory (PyTorch, plus any forms exported into it), an export directory (every
    .onnx and .engine in it) or model files; without one, edgeseg's default model. The forms are
    interleaved: each round sends the same frame once through every form, so the figures come from
    one run under the same conditions.
    Reports mean, p50, p90, p99, min and max per stage (preprocess, inference, postprocess,
    end to end) and FPS, and warns when p99/p50 shows a noisy machine.
    """
    from edgeseg.core.click_types import json_to_stdout, model_or_default, write_json
    from edgeseg.core.files import prepare_outputs, read_image
    from edgeseg.evaluate.latency import exit_code, run_bench
    from edgeseg.evaluate.latency_report import terminal_text, write_report
    from edgeseg.loading.open import ModelPathError

    prepare_outputs([("--json", json_path), ("--md", md_path)], overwrite)
    models = models or (model_or_default(None),)
    command = command_line(models, ctx.params)  # the options as parsed, defaults included
    samples = bench_samples(data, split, split_dir, limit) if data is not None else None
    frame = read_image(image) if image is not None else None
    frame_source = portable_path(image) if image is not None else None
    try:
        report = run_bench(
            list(models), backends, runs, warmup, size, frame, frame_source, data, samples, split, command
        )
    except ModelPathError as error:
        raise click.UsageError(str(error)) from None
    if json_path is not None:
        write_json(json_path, report)
    write_report(report, md_path=md_path)
    to_stderr = json_to_stdout(json_path)  # stdout carries the JSON alone
    click.echo(terminal_text(report), err=to_stderr)
    for path in (json_path, md_path):
        if path is not None and not json_to_stdout(path):
            click.echo(f"wrote {path}", err=to_stderr)
    ctx.exit(exit_code(report))


def bench_samples(data: Path, split: str, split_dir: Path | None, limit: int | None) -> list[Sample]:
    """The checked samples of --data's split ('all': every pair), the first --limit of them."""
    from edgeseg.core.data import require_usable

    samples = require_usable(data, split=None if split == "all" else split, split_dir=split_dir)
    return samples[:limit] if limit else samples
