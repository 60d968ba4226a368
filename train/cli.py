"""`edgeseg train`: the command line of the training part (torch is imported only when it runs)."""

from __future__ import annotations

import re
import sys
from pathlib import Path
from typing import Any

import click
from click.core import ParameterSource

from edgeseg.core.click_types import (
    INPUT_SIZE,
    TORCH_BACKEND_CHOICE,
    long_flag,
    old_spelling,
    overwrite_option,
    renamed,
    size_text,
)
from edgeseg.core.names import LOSSES
from edgeseg.core.progress import is_quiet, quiet_option, set_quiet
from edgeseg.train.config import default_of

# --backend as TrainConfig.device (which the old --device named directly, cuda:N included)
BACKEND_DEVICES = {"auto": "auto", "torch-cpu": "cpu", "torch-cuda": "cuda"}

# The paper's set-up (FPN with SE-ResNeXt-50, 320 px, Dice loss, Adam 1e-4 -> 1e-5 after epoch 10, 20 epochs).
PRESETS: dict[str, dict[str, Any]] = {
    "paper": {
        "encoder": "se_resnext50_32x4d",
        "size": (320, 320),
        "loss": "dice",
        "optimizer": "adam",
        "lr": 1e-4,
        "schedule": "step",
        "step_epoch": 10,
        "step_factor": 0.1,
        "epochs": 20,
        "decoder_channels": (256, 128),  # smp's FPN defaults
    }
}


def shown(name: str) -> str:
    """TrainConfig's default of field ``name`` as a user types it, for the help ([default: ...])."""
    value = default_of(name)
    if name == "size":
        return size_text(value)
    if name == "device":
        return {device: backend for backend, device in BACKEND_DEVICES.items()}[value]
    if isinstance(value, tuple):
        return ",".join(map(str, value))
    return f"{value:g}" if isinstance(value, float) else str(value)


def config_default(name: str) -> dict[str, Any]:
    """An option's default, read from TrainConfig and shown in the help; the run takes only what was typed."""
    return {"default": shown(name), "show_default": True}


def parse_pair(text: str) -> tuple[int, int]:
    match = re.fullmatch(r"\s*(\d+)\s*[,/xX]\s*(\d+)\s*", text)
    if not match:
        raise click.BadParameter(f"{text!r}: give two numbers, PYRAMID,SEGMENTATION (for example 128,64)")
    return int(match[1]), int(match[2])


EXAMPLE = """\b
Examples:
  edgeseg train --data ../shared/data/isic2018 --out runs/lite0 --time-budget 60
  edgeseg train --data data/synth --out runs/try --epochs 3 --size 128 --encoder-weights none
  edgeseg train --data ../shared/data/isic2018 --out runs/paper --preset paper --encoder-weights none
  edgeseg train --resume runs/lite0 --data ../shared/data/isic2018   # continue a stopped run exactly
  edgeseg train --data my-clinic --out runs/tuned --init-weights runs/lite0 --lr 3e-4 --time-budget 30
  torchrun --nproc_per_node 4 -m edgeseg train --data DIR --out runs/ddp --backend torch-cuda

\b
The run directory gets model.safetensors (best epoch by validation IoU), card.json (input size,
normalisation, threshold, provenance), checkpoint-last.pt (for --resume), logs/*.csv and plots/*.png.
"""


# What --resume takes from the command line; every other setting comes from the run (train.loop.RUN_FIELDS).
START_FILE_OPTIONS = ("encoder_weights", "init_weights")  # for a run stopped before its first checkpoint
TEST_HOOK_OPTIONS = ("stop_after_epochs", "sample_log")
RESUME_OPTIONS = ("data", "split_dir", *START_FILE_OPTIONS, *TEST_HOOK_OPTIONS)


def check_resume_options(resume_dir: Path, preset: str | None, options: dict[str, Any]) -> None:
    """--resume needs the data again and refuses settings it would not use."""
    refused = [name for name, value in options.items() if value is not None and name not in RESUME_OPTIONS]
    if preset is not None:
        refused.insert(0, "preset")
    if refused:
        raise click.UsageError(
            f"{option_flags(refused)}: a resumed run keeps the settings it was started with; "
            "with --resume give only --data and --split-dir (and --encoder-weights FILE or "
            "--init-weights RUN_DIR for a run stopped before its first checkpoint)"
        )
    if options["data"] is None:
        raise click.UsageError(
            f"--resume needs --data: a run folder's paths are never used{started_with(resume_dir)}. "
            f"Resume with: edgeseg train --resume {resume_dir} --data DATA"
        )


def option_flags(names: list[str]) -> str:
    flags = {param.name: long_flag(param) for param in click.get_current_context().command.params}
    flags["device"] = "--backend"  # TrainConfig's name for it
    return ", ".join(flags[name] for name in names)


def started_with(resume_dir: Path) -> str:
    """A hint for the user: the data folder the run's config.json names, shown, never used."""
    from edgeseg.train.checkpoints import read_config

    try:
        data = (read_config(resume_dir) or {}).get("data")
    except (OSError, ValueError):
        return ""
    return f" (it was started with --data {data})" if isinstance(data, str) and data.isprintable() else ""


def replace_an_earlier_run(out: Path, overwrite: bool) -> None:
    """The overwrite rule for a run directory: one that holds a run (its checkpoint) is refused; with --overwrite
    the files that run wrote are removed first, by name (nothing else in the folder)."""
    from edgeseg.core.card import CARD_FILENAME
    from edgeseg.core.files import prepare_outputs
    from edgeseg.core.names import WEIGHTS_FILENAME
    from edgeseg.train.checkpoints import CHECKPOINT_FILENAME, CONFIG_FILENAME

    prepare_outputs(
        [(f"--out: a training run, which `--resume {out}` continues", out / CHECKPOINT_FILENAME)], overwrite
    )
    if overwrite:
        names = (CHECKPOINT_FILENAME, CONFIG_FILENAME, CARD_FILENAME, WEIGHTS_FILENAME)
        for path in [*(out / name for name in names), *(out / "logs").glob("*.csv"), *(out / "plots").glob("*.png")]:
            path.unlink(missing_ok=True)


@click.command("train", epilog=EXAMPLE)
@click.option(
    "-d",
    "--data",
    "data",
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    help="Data set folder (ISIC layout or images/ + masks/) with splits/train.txt and splits/val.txt.",
)
@click.option(
    "--split-dir",
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    help="Folder holding train.txt and val.txt (default: DATA/splits).",
)
@click.option("-o", "--out", "out", type=click.Path(file_okay=False, path_type=Path), help="Run directory to create.")
@click.option(
    "--resume",
    "resume_dir",
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    help="Continue the run in this directory from its last checkpoint, or from the start if it stopped "
    "before one. Give --data (and --split-dir) again: the run folder supplies only its training "
    "settings, never a path.",
)
@click.option(
    "--preset",
    type=click.Choice(sorted(PRESETS)),
    help="A named set-up; options given explicitly override it. paper: se_resnext50_32x4d, 320x320, "
    "Dice loss, Adam lr 1e-4 -> 1e-5 after epoch 10, 20 epochs.",
)
@click.option(
    "--epochs",
    type=click.IntRange(1),
    **config_default("epochs"),
    help="Epochs (with --time-budget, the most it may run).",
)
@click.option(
    "--time-budget",
    "time_budget_minutes",
    type=click.FloatRange(0, min_open=True),
    help="Minutes of training: after every epoch the run re-plans how many epochs fit at the recent pace "
    "(the cosine schedule ends with them) and stops cleanly if time runs out.",
)
@click.option(
    "--batch-size",
    type=click.IntRange(1),
    **config_default("batch_size"),
    help="Images per step (per process under torchrun).",
)
@click.option(
    "--size",
    type=INPUT_SIZE,
    **config_default("size"),
    help="Network input: one number or HEIGHTxWIDTH, multiples of 32.",
)
@click.option("--lr", type=click.FloatRange(0, min_open=True), **config_default("lr"), help="Peak learning rate.")
@click.option("--optimizer", type=click.Choice(["adamw", "adam"]), **config_default("optimizer"))
@click.option("--weight-decay", type=click.FloatRange(0), **config_default("weight_decay"), help="AdamW weight decay.")
@click.option(
    "--schedule",
    type=click.Choice(["cosine", "step"]),
    **config_default("schedule"),
    help=f"cosine: {shown('warmup_epochs')} epoch linear warm-up, then cosine decay to lr * "
    f"{shown('min_lr_factor')}; step: lr * {shown('step_factor')} after --step-epoch.",
)
@click.option(
    "--step-epoch",
    type=click.IntRange(1),
    **config_default("step_epoch"),
    help="For --schedule step: last epoch at the full lr.",
)
@click.option(
    "--loss",
    type=click.Choice(LOSSES),
    **config_default("loss"),
    help="Dice (the paper's), Dice + BCE, or the per-image Lovasz hinge, a surrogate of IoU that suits "
    "fine-tuning a trained model (--init-weights).",
)
@click.option("--encoder", **config_default("encoder"), help="Any smp encoder name.")
@click.option(
    "--encoder-weights",
    **config_default("encoder_weights"),
    help="imagenet, none, or PATH to a .safetensors state dict of the encoder.",
)
@click.option(
    "--init-weights",
    type=click.Path(exists=True, file_okay=False),
    help="Fine-tune: start from every weight of this trained run directory (same --encoder and "
    "--decoder-channels; its normalisation is kept) instead of the encoder's ImageNet weights.",
)
@click.option(
    "--decoder-channels",
    callback=lambda ctx, param, value: parse_pair(value) if value else None,
    **config_default("decoder_channels"),
    help="FPN decoder channels PYRAMID,SEGMENTATION (smp's default is 256,128).",
)
@click.option("--no-augment", "augment", flag_value=False, default=None, help="Train without augmentation.")
@click.option(
    "--camera-framing",
    type=click.FloatRange(0, 1),
    **config_default("camera_framing"),
    help="Share of training samples placed in a full 4:3 or 3:2 camera frame (smaller, off-centre lesions, "
    "as a dermatoscope camera shows them).",
)
@click.option(
    "-b",
    "--backend",
    type=TORCH_BACKEND_CHOICE,
    **config_default("device"),
    help="auto: torch-cuda where PyTorch sees a GPU, else torch-cpu. CUDA trains with automatic mixed "
    "precision; under torchrun each process takes its own GPU.",
)
@old_spelling(
    "--device",
    "--device of `train` is now spelled --backend (auto, torch-cpu, torch-cuda); --device cuda:N still picks GPU N",
)
@click.option(
    "--seed", type=int, **config_default("seed"), help="Random seed; the same seed repeats a CPU run exactly."
)
@click.option(
    "--threads", type=click.IntRange(1), show_default="all cores / processes", help="CPU threads per process."
)
@click.option(
    "--workers",
    type=click.IntRange(0),
    **config_default("workers"),
    help="DataLoader worker processes for augmentation.",
)
@old_spelling("--no-progress", "--no-progress is now spelled -q/--quiet", is_flag=True)
@click.option("--stop-after-epochs", type=click.IntRange(1), hidden=True)
@click.option("--sample-log", hidden=True)
@overwrite_option
@quiet_option
@click.pass_context
def train_command(
    ctx: click.Context,
    resume_dir: Path | None,
    preset: str | None,
    overwrite: bool,
    old_no_progress: bool | None,
    **options: Any,
) -> None:
    """Train an FPN lesion segmenter and write its run directory (weights, card, logs, plots).

    Every epoch is validated on the val split at each image's own resolution (Dice, IoU, thresholded
    Jaccard); the best epoch by IoU is kept. After training, a threshold sweep on the val split picks
    the threshold stored in the card. Bad data stops the run before the first step, listing problems.
    """
    try:
        from edgeseg.train.loop import TrainConfig, resume, train
    except ImportError as error:
        raise click.ClickException(
            f"training needs PyTorch ({error.name} is missing): pip install 'edgeseg[train]'"
        ) from None

    if old_no_progress:
        set_quiet(True)
    options = typed(ctx, options)
    options["device"] = chosen_device(ctx, options)
    progress = not is_quiet()
    if resume_dir is not None:
        if overwrite:
            raise click.UsageError(
                "--overwrite starts a new run over an earlier one, --resume continues it: give one of them"
            )
        check_resume_options(resume_dir, preset, options)
        start_files = {name: str(options[name]) for name in START_FILE_OPTIONS if options[name] is not None}
        test_hooks = {name: options[name] for name in TEST_HOOK_OPTIONS if options[name] is not None}
        result = resume(
            resume_dir,
            data=options["data"],
            split_dir=options["split_dir"],
            start_files=start_files,
            progress=progress,
            test_hooks=test_hooks,
        )
    else:
        if options["data"] is None or options["out"] is None:
            raise click.UsageError("--data and --out are required (or --resume RUN_DIR)")
        replace_an_earlier_run(options["out"], overwrite)
        given = {name: value for name, value in options.items() if value is not None}
        values = {**PRESETS.get(preset, {}), **given}
        for name in ("data", "out", "split_dir", "init_weights"):
            if name in values:
                values[name] = str(values[name])
        result = train(TrainConfig(**values, progress=progress))
    say_result(result)


def typed(ctx: click.Context, options: dict[str, Any]) -> dict[str, Any]:
    """Each option's value where the command line gave it, else None. The defaults the help shows are
    TrainConfig's, which the run applies itself: a preset, or a resumed run's settings, win over them."""
    return {
        name: None if ctx.get_parameter_source(name) in (ParameterSource.DEFAULT, None) else value
        for name, value in options.items()
    }


def chosen_device(ctx: click.Context, options: dict[str, Any]) -> str | None:
    """TrainConfig's device from --backend (torch-cpu -> cpu, torch-cuda -> cuda) or the old --device as given."""
    backend, old_device = options.pop("backend"), options.pop("old_device")
    renamed(ctx, "backend", "old_device")  # both given: a UsageError
    if old_device is not None:
        return old_device
    return BACKEND_DEVICES[backend] if backend is not None else None


def say_result(result) -> None:
    """The run's outcome on stdout (a stopped run's hint on stderr)."""
    if result.sweep is not None:
        metrics = result.card.provenance.val_metrics
        click.echo(
            f"{result.run_dir}: best epoch {result.state.best_epoch} of {result.state.epoch}; val at threshold "
            f"{result.card.output.threshold:g}: dice {metrics['dice']:.4f}, jaccard {metrics['jaccard']:.4f}, "
            f"thresholded jaccard {metrics['threshold_jaccard']:.4f}",
            err=False,
        )
    elif result.state.epoch < result.state.planned_epochs:
        click.echo(
            f"{result.run_dir}: stopped after epoch {result.state.epoch}; continue with --resume {result.run_dir}",
            err=True,
        )
    sys.stdout.flush()
