"""`edgeseg bench`: the command line over ``edgeseg.evaluate.bench`` (measuring) and ``bench_report`` (text)."""

from __future__ import annotations

import shlex
from pathlib import Path
from typing import Any

import click

from edgeseg.click_types import BACKEND_CHOICE, INPUT_SIZE, JSON_HELP, JSON_OUTPUT, overwrite_option
from edgeseg.evaluate.bench import DEFAULT_RUNS, DEFAULT_WARMUP
from edgeseg.files import portable_path
from edgeseg.progress import quiet_option


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
@click.option("-b", "--backend", "backends", multiple=True, default=("auto",), show_default=True,
              type=BACKEND_CHOICE,
              help="Backend(s) to run each form on (repeat to compare); each form runs on those that apply to it.")
@click.option("--runs", default=DEFAULT_RUNS, show_default=True, type=click.IntRange(min=1),
              help="Timed runs per form (after warm-up).")
@click.option("--warmup", default=DEFAULT_WARMUP, show_default=True, type=click.IntRange(min=0),
              help="Untimed runs per form first (engine start-up, caches, clocks).")
@click.option("--size", type=INPUT_SIZE, default=None,
              help="256 or HEIGHTxWIDTH: input size for PyTorch and dynamic-shape ONNX forms; static forms keep their card's size.")
@click.option("--image", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="A real frame to time on (default: a synthetic 640x480 dermoscopy frame).")
@click.option("-d", "--data", type=click.Path(exists=True, file_okay=False, path_type=Path),
              help="Data set folder (ISIC layout or images/ + masks/): adds Dice and thresholded Jaccard per form.")
@click.option("--split", default="val", show_default=True, help="Split of --data to score, or 'all'.")
@click.option("--split-dir", type=click.Path(exists=True, file_okay=False, path_type=Path),
              help="Folder of split files (default: DATA/splits).")
@click.option("--limit", type=click.IntRange(min=1), help="Score only the first N images of the split.")
@click.option("-j", "--json", "json_path", type=JSON_OUTPUT, help=f"Write the results as JSON here {JSON_HELP}.")
@click.option("--md", "md_path", type=click.Path(dir_okay=False, path_type=Path), help="Write a markdown results file here.")
@overwrite_option
@quiet_option
@click.pass_context
def bench_command(ctx: click.Context, models: tuple[Path, ...], backends: tuple[str, ...], runs: int, warmup: int,
                  size: tuple[int, int] | None, image: Path | None, data: Path | None, split: str, split_dir: Path | None,
                  limit: int | None, json_path: Path | None, md_path: Path | None, overwrite: bool) -> None:
    """Measure latency per stage and end to end (and accuracy with --data) of model forms, side by side.

    MODEL is a run directory (PyTorch, plus any forms exported into it), an export directory (every
    .onnx and .engine in it) or model files; without one, edgeseg's default model. The forms are interleaved: each round sends the same
    frame once through every form, so the figures come from one run under the same conditions.
    Reports mean, p50, p90, p99, min and max per stage (preprocess, inference, postprocess,
    end to end) and FPS, and warns when p99/p50 shows a noisy machine.
    """
    from edgeseg.click_types import json_to_stdout, model_or_default, write_json
    from edgeseg.evaluate.bench import exit_code, run_bench
    from edgeseg.evaluate.bench_report import terminal_text, write_report
    from edgeseg.evaluate.models import ModelPathError
    from edgeseg.files import prepare_outputs, read_image

    prepare_outputs([("--json", json_path), ("--md", md_path)], overwrite)
    models = models or (model_or_default(None),)
    command = command_line(models, dict(backends=backends, runs=runs, warmup=warmup, size=size, image=image, data=data,
                                        split=split, split_dir=split_dir, limit=limit, json_path=json_path, md_path=md_path))
    samples = None
    if data is not None:
        from edgeseg.data import require_usable

        samples = require_usable(data, split=None if split == "all" else split, split_dir=split_dir)
        samples = samples[:limit] if limit else samples
    frame = read_image(image) if image is not None else None
    try:
        report = run_bench(list(models), backends, runs, warmup, size, frame, portable_path(image) if image else None,
                           data, samples, split, command)
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
