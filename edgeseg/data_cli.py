"""`edgeseg data`: commands about labelled data (for now: `check`)."""

from __future__ import annotations

import json
from pathlib import Path

import click


@click.group("data")
def data_command() -> None:
    """Inspect labelled image/mask data before training or evaluating on it.

    \b
    Example:
      edgeseg data check ../shared/data/isic2018
    """


@data_command.command("check")
@click.argument("root", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--split", help="Check only the pairs listed in this split (e.g. val).")
@click.option(
    "--split-dir",
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    help="Folder of <split>.txt files (one id a line). Default: ROOT/splits.",
)
@click.option("--json", "json_path", metavar="FILE", help="Also write the report as JSON to FILE ('-': stdout).")
@click.option("--workers", type=click.IntRange(min=1), help="Threads that decode files. Default: cores + 2, at most 8.")
def check_command(
    root: Path, split: str | None, split_dir: Path | None, json_path: str | None, workers: int | None
) -> None:
    """Decode every image and mask under ROOT and report each problem with its file and fix.

    ROOT holds the official ISIC layout (*_Input/<id>.jpg + *_GroundTruth/<id>_segmentation.png)
    or a plain one (images/<id>.jpg + masks/<id>.png or masks/<id>_segmentation.png); split files
    ROOT/splits/<split>.txt are counted. Errors (missing, unreadable, truncated or mis-sized files,
    non-binary masks, broken split files) make the data unusable; warnings (empty masks, images that
    will be converted, duplicates) do not. Exit status 0 when usable, 1 otherwise.

    \b
    Example:
      edgeseg data check ../shared/data/isic2018 --json data-report.json
    """
    from edgeseg.data import check_dataset
    from edgeseg.files import write_text_atomic

    report = check_dataset(root, split=split, split_dir=split_dir, workers=workers)

    to_stdout = json_path == "-"
    click.echo(report.text(), err=to_stdout)  # keep stdout pure JSON when it carries the JSON
    document = json.dumps(report.to_dict(), indent=2) + "\n"
    if to_stdout:
        click.echo(document, nl=False)
    elif json_path:
        write_text_atomic(json_path, document)
        click.echo(f"Report written to {json_path}", err=True)
    raise SystemExit(0 if report.usable else 1)
