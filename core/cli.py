"""The core's commands: `edgeseg data` (`check` labelled data, `split` it into train and val) and `edgeseg synth`."""

from __future__ import annotations

import time
from pathlib import Path

import click

from edgeseg.core.click_types import JSON_HELP, JSON_OUTPUT, old_spelling, overwrite_option, renamed
from edgeseg.core.progress import quiet_option
from edgeseg.core.synthetic import MAX_IMAGES, MIN_SIZE, generate_dataset

SHARE = click.FloatRange(0, 1, min_open=True, max_open=True)


@click.group("data")
def data_command() -> None:
    """Inspect labelled image/mask data before training or evaluating on it.

    \b
    Examples:
      edgeseg data check data/isic2018
      edgeseg data split DATA --val-fraction 0.1 --seed 0   # splits/train.txt and val.txt for a download without them
    """


@data_command.command("check")
@click.argument("root", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--split", help="Check only the pairs listed in this split (e.g. val).")
@click.option(
    "--split-dir",
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    help="Folder of <split>.txt files (one id a line). Default: ROOT/splits.",
)
@click.option("-j", "--json", "json_path", type=JSON_OUTPUT, help=f"Also write the report as JSON to FILE {JSON_HELP}.")
@click.option("--threads", type=click.IntRange(min=1), help="Threads that decode files. Default: cores + 2, at most 8.")
@overwrite_option
@old_spelling(
    "--workers",
    "--workers of `data check` is now spelled --threads (decoding threads; "
    "--workers means worker processes in every command)",
    type=click.IntRange(min=1),
)
@quiet_option
@click.pass_context
def check_command(
    ctx: click.Context,
    root: Path,
    split: str | None,
    split_dir: Path | None,
    json_path: Path | None,
    threads: int | None,
    overwrite: bool,
    old_workers: int | None,
) -> None:
    """Decode every image and mask under ROOT and report each problem with its file and fix.

    ROOT holds the official ISIC layout (*_Input/<id>.jpg + *_GroundTruth/<id>_segmentation.png)
    or a plain one (images/<id>.jpg + masks/<id>.png or masks/<id>_segmentation.png); split files
    ROOT/splits/<split>.txt are counted. Errors (missing, unreadable, truncated or mis-sized files,
    non-binary masks, broken split files) make the data unusable; warnings (empty masks, images that
    will be converted, duplicates) do not. Exit status 0 when usable, 1 otherwise.

    \b
    Example:
      edgeseg data check data/isic2018 --json data-report.json
    """
    from edgeseg.core.click_types import json_to_stdout, renamed, write_json
    from edgeseg.core.data import check_dataset
    from edgeseg.core.files import prepare_outputs

    prepare_outputs([("--json", json_path)], overwrite)
    report = check_dataset(root, split=split, split_dir=split_dir, workers=renamed(ctx, "threads", "old_workers"))

    click.echo(report.text(), err=json_to_stdout(json_path))  # keep stdout pure JSON when it carries the JSON
    if json_path is not None:
        write_json(json_path, report.to_dict())
        if not json_to_stdout(json_path):
            click.echo(f"Report written to {json_path}", err=True)
    raise SystemExit(0 if report.usable else 1)


@data_command.command("split")
@click.argument("root", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option(
    "--val-fraction",
    type=SHARE,
    default=0.1,
    show_default=True,
    help="Share of the pairs that go to the validation split.",
)
@old_spelling("--val", "--val of `data split` is now spelled --val-fraction (as in `edgeseg synth`)", type=SHARE)
@click.option("--seed", type=int, default=0, show_default=True, help="Random seed: the same seed gives the same split.")
@click.option(
    "--split-dir",
    type=click.Path(file_okay=False, path_type=Path),
    help="Where to write train.txt and val.txt. Default: ROOT/splits.",
)
@click.option("--overwrite", is_flag=True, help="Replace split files that already exist.")
@quiet_option
@click.pass_context
def split_command(
    ctx: click.Context,
    root: Path,
    val_fraction: float,
    seed: int,
    split_dir: Path | None,
    overwrite: bool,
    old_val: float | None,
) -> None:
    """Write train.txt and val.txt (one id a line) for a data set that has no split, e.g. the ISIC download.

    Every complete image/mask pair under ROOT is assigned at random, reproducibly for a seed; existing
    split files are never replaced unless --overwrite is given. `edgeseg train` and `demo --data` read them.

    \b
    Example:
      edgeseg data split ~/isic2018 --val-fraction 0.1 --seed 0
      edgeseg train --data ~/isic2018 --out runs/mine --time-budget 60
    """
    from edgeseg.core.click_types import renamed
    from edgeseg.core.data import read_split, write_splits

    val_fraction = renamed(ctx, "val_fraction", "old_val")
    paths = write_splits(root, val_fraction=val_fraction, seed=seed, split_dir=split_dir, overwrite=overwrite)
    counts = {name: len(read_split(path)) for name, path in paths.items()}
    click.echo(f"wrote {paths['train']} ({counts['train']} ids) and {paths['val']} ({counts['val']} ids)")


@click.command("synth")
@click.argument("out", type=click.Path(file_okay=False, path_type=Path))
@click.option(
    "-n", "--images", "n", type=click.IntRange(1, MAX_IMAGES), default=200, show_default=True, help="Number of images."
)
@old_spelling(
    "--n", "--n of `synth` is now spelled -n/--images (as in `edgeseg demo`)", type=click.IntRange(1, MAX_IMAGES)
)
@click.option(
    "--image-size", type=click.IntRange(MIN_SIZE), default=256, show_default=True, help="Side of the square images, px."
)
@old_spelling(
    "--size",
    "--size of `synth` is now spelled --image-size (--size means the network input size in every command)",
    type=click.IntRange(MIN_SIZE),
)
@click.option("--seed", type=int, default=0, show_default=True, help="Random seed; the same seed gives the same files.")
@click.option(
    "--val-fraction",
    type=click.FloatRange(0, 1, max_open=True),
    default=0.2,
    show_default=True,
    help="Share of the ids listed in splits/val.txt.",
)
@click.option("--overwrite", is_flag=True, help="Write into a non-empty folder that is not an earlier synth output.")
@quiet_option
@click.pass_context
def synth_command(
    ctx: click.Context,
    out: Path,
    n: int,
    image_size: int,
    seed: int,
    val_fraction: float,
    overwrite: bool,
    old_size: int | None,
    old_n: int | None,
) -> None:
    """Make synthetic dermoscopy-like images with exact lesion masks in the ISIC 2018 layout.

    Skin-tone texture, an irregular variegated lesion (some running off the image), hairs, bubbles,
    glare and the dark circular rim of a dermatoscope; OUT/splits/train.txt and val.txt; a README
    saying the data are synthetic. For the demo and fast tests, not for accuracy work.

    \b
    Example:
      edgeseg synth data/synth --images 200 --image-size 256 --seed 0
      edgeseg data check data/synth
    """
    size = renamed(ctx, "image_size", "old_size")
    n = renamed(ctx, "n", "old_n")
    started = time.perf_counter()
    try:
        samples = generate_dataset(out, n, size, seed, val_fraction, overwrite=overwrite, progress=True)
    except FileExistsError as error:
        raise click.ClickException(str(error)) from None
    seconds = time.perf_counter() - started
    val = (out / "splits" / "val.txt").read_text(encoding="utf-8").split()
    click.echo(
        f"wrote {len(samples)} synthetic pairs ({len(samples) - len(val)} train / {len(val)} val) "
        f"of {size}x{size} px to {out} in {seconds:.1f} s"
    )
