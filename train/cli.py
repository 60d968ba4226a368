"""`edgeseg train`: the command line of the training part (torch is imported only when it runs).

Everyday settings are flags; the rest live in a TOML settings file (``--config FILE.toml``, keys named as
TrainConfig's fields), which flags given on the command line override. Each run writes its settings as
RUN/config.toml. A flag whose setting moved to the file still works, hidden, with a note.
"""

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
from edgeseg.train.config import (
    CONFIG_TOML_FILENAME,
    FILE_ONLY_SETTINGS,
    ConfigFileError,
    default_of,
    read_settings,
    toml_value,
)

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
    return f"{value:g}" if isinstance(value, float) else str(value)


def config_default(name: str) -> dict[str, Any]:
    """An option's default, read from TrainConfig and shown in the help; the run takes only what was typed."""
    return {"default": shown(name), "show_default": True}


class ChannelPair(click.ParamType):
    """Two channel counts, PYRAMID,SEGMENTATION (the hidden --decoder-channels)."""

    name = "PYRAMID,SEGMENTATION"

    def convert(self, value, param, ctx) -> tuple[int, int]:
        if isinstance(value, tuple):
            return value
        match = re.fullmatch(r"\s*(\d+)\s*[,/xX]\s*(\d+)\s*", str(value))
        if not match:
            self.fail(f"{value!r}: give two numbers, PYRAMID,SEGMENTATION (for example 128,64)", param, ctx)
        return int(match[1]), int(match[2])


def moved_to_file(flag: str, name: str, **attrs):
    """A flag whose setting now lives in the --config file only: hidden, still taken, and using it prints a
    note with the file's spelling. Its type also checks the file's value of ``name`` (settings_from_file)."""

    def tell(ctx, param, value):
        if value is not None:
            click.echo(
                f"note: {flag} is now a setting of the --config file (TOML): {name} = {toml_value(value)}", err=True
            )
        return value

    return click.option(flag, name, hidden=True, default=None, callback=tell, **attrs)


def file_only_help() -> str:
    """The settings only a --config file sets, each with TrainConfig's default, for the help's epilog."""
    lines = ["\b", "Settings only a --config file sets, with their defaults:"]
    for name, what in FILE_ONLY_SETTINGS.items():
        default = default_of(name)
        setting = name if default is None else f"{name} = {toml_value(default)}"
        lines.append(f"  {setting:<30} {what}")
    return "\n".join(lines) + "\n"


EXAMPLES = """\b
Examples:
  edgeseg train --data ../shared/data/isic2018 --out runs/lite0 --time-budget 60
  edgeseg train --data data/synth --out runs/try --epochs 3 --size 128 --encoder-weights none
  edgeseg train --data ../shared/data/isic2018 --out runs/paper --preset paper --encoder-weights none
  edgeseg train --config my-settings.toml --data DIR --out runs/mine   # flags win over the file
  edgeseg train --config runs/lite0/config.toml --out runs/again       # run a run's settings again
  edgeseg train --resume runs/lite0 --data ../shared/data/isic2018   # continue a stopped run exactly
  edgeseg train --data my-clinic --out runs/tuned --init-weights runs/lite0 --lr 3e-4 --time-budget 30
  torchrun --nproc_per_node 4 -m edgeseg train --data DIR --out runs/ddp --backend torch-cuda
"""

SETTINGS_FILE = """\b
A settings file holds one `key = value` a line, keys named as in TrainConfig: a flag's name with _ for -
(batch_size = 16), but time_budget_minutes = 60 for --time-budget and device = "auto" | "cpu" | "cuda"
| "cuda:N" for --backend. Paths in it are read from the current folder, as flags are.
"""

RUN_DIRECTORY = """\b
The run directory gets model.safetensors (best epoch by validation IoU), card.json (input size,
normalisation, threshold, provenance), config.toml (its settings, for --config), checkpoint-last.pt
(for --resume), logs/*.csv and plots/*.png.
"""


# What --resume takes from the command line; every other setting comes from the run (train.loop.RUN_FIELDS).
START_FILE_OPTIONS = ("encoder_weights", "init_weights")  # for a run stopped before its first checkpoint
RESUME_OPTIONS = ("data", "split_dir", *START_FILE_OPTIONS)


def check_resume_options(resume_dir: Path, options: dict[str, Any]) -> None:
    """--resume needs the data again and refuses settings it would not use (``options``: None where not given)."""
    refused = [name for name, value in options.items() if value is not None and name not in RESUME_OPTIONS]
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
        names = (CHECKPOINT_FILENAME, CONFIG_FILENAME, CONFIG_TOML_FILENAME, CARD_FILENAME, WEIGHTS_FILENAME)
        for path in [*(out / name for name in names), *(out / "logs").glob("*.csv"), *(out / "plots").glob("*.png")]:
            path.unlink(missing_ok=True)


@click.command("train", epilog="\n".join([EXAMPLES, SETTINGS_FILE, file_only_help(), RUN_DIRECTORY]))
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
    "--config",
    "config_file",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="TOML file of settings (below: how it spells them, and the settings only it sets); flags given on "
    f"the command line win over it. Every run writes its own as RUN/{CONFIG_TOML_FILENAME}.",
)
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
    help="A named set-up; a --config file and flags given override it. paper: se_resnext50_32x4d, 320x320, "
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
    "decoder_channels; its normalisation is kept) instead of the encoder's ImageNet weights.",
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
@moved_to_file("--optimizer", "optimizer", type=click.Choice(["adamw", "adam"]))
@moved_to_file("--weight-decay", "weight_decay", type=click.FloatRange(0))
@moved_to_file("--schedule", "schedule", type=click.Choice(["cosine", "step"]))
@moved_to_file("--step-epoch", "step_epoch", type=click.IntRange(1))
@moved_to_file("--loss", "loss", type=click.Choice(LOSSES))
@moved_to_file("--decoder-channels", "decoder_channels", type=ChannelPair())
@moved_to_file("--no-augment", "augment", flag_value=False)
@moved_to_file("--camera-framing", "camera_framing", type=click.FloatRange(0, 1))
@moved_to_file("--seed", "seed", type=int)
@moved_to_file("--threads", "threads", type=click.IntRange(1))
@moved_to_file("--workers", "workers", type=click.IntRange(0))
@old_spelling("--no-progress", "--no-progress is now spelled -q/--quiet", is_flag=True)
@click.option("--stop-after-epochs", type=click.IntRange(1), hidden=True)  # test hooks (train.loop.RunHooks)
@click.option("--sample-log", hidden=True)
@overwrite_option
@quiet_option
@click.pass_context
def train_command(
    ctx: click.Context,
    config_file: Path | None,
    resume_dir: Path | None,
    preset: str | None,
    overwrite: bool,
    old_no_progress: bool | None,
    stop_after_epochs: int | None,
    sample_log: str | None,
    **options: Any,
) -> None:
    """Train an FPN lesion segmenter and write its run directory (weights, card, settings, logs, plots).

    Every epoch is validated on the val split at each image's own resolution (Dice, IoU, thresholded
    Jaccard); the best epoch by IoU is kept. After training, a threshold sweep on the val split picks
    the threshold stored in the card. Bad data stops the run before the first step, listing problems.
    """
    try:
        from edgeseg.train.loop import RunHooks
    except ImportError as error:
        raise click.ClickException(
            f"training needs PyTorch ({error.name} is missing): pip install 'edgeseg[train]'"
        ) from None

    if old_no_progress:
        set_quiet(True)
    options = typed(ctx, options)
    options["device"] = chosen_device(ctx, options)
    hooks = RunHooks(stop_after_epochs=stop_after_epochs, sample_log=sample_log)
    if resume_dir is not None:
        if overwrite:
            raise click.UsageError(
                "--overwrite starts a new run over an earlier one, --resume continues it: give one of them"
            )
        check_resume_options(resume_dir, {"config_file": config_file, "preset": preset, **options})
        result = resume_run(resume_dir, options, hooks)
    else:
        settings = {**(PRESETS[preset] if preset else {}), **settings_from_file(ctx, config_file)}
        result = start_run(settings, options, overwrite, hooks)
    say_result(result)


def resume_run(resume_dir: Path, options: dict[str, Any], hooks):
    from edgeseg.train.loop import resume

    start_files = {name: str(options[name]) for name in START_FILE_OPTIONS if options[name] is not None}
    return resume(
        resume_dir,
        data=options["data"],
        split_dir=options["split_dir"],
        start_files=start_files,
        progress=not is_quiet(),
        hooks=hooks,
    )


def start_run(settings: dict[str, Any], options: dict[str, Any], overwrite: bool, hooks):
    """A new run of ``settings`` (a preset's, then a --config file's) and the options given, which win."""
    from edgeseg.train.config import TrainConfig
    from edgeseg.train.loop import train

    values = {**settings, **{name: value for name, value in options.items() if value is not None}}
    if "data" not in values or "out" not in values:
        raise click.UsageError(
            "--data and --out are required (as flags, or data and out in the --config file), or --resume RUN_DIR"
        )
    replace_an_earlier_run(Path(values["out"]), overwrite)
    for name in ("data", "out", "split_dir", "init_weights"):
        if name in values:
            values[name] = str(values[name])
    return train(TrainConfig(**values, progress=not is_quiet()), hooks)


def settings_from_file(ctx: click.Context, path: Path | None) -> dict[str, Any]:
    """A --config file's settings (none without one), each value checked as its flag checks it; read_settings
    has checked the keys, the types, and the values of the settings that have no flag."""
    if path is None:
        return {}
    settings = read_settings(path)
    params = {param.name: param for param in ctx.command.params}
    for name, value in settings.items():
        # A pair (size, decoder_channels) read_settings checked whole; their flags' types take it as it is.
        if name in params and not isinstance(value, tuple):
            try:
                settings[name] = params[name].type.convert(value, params[name], ctx)
            except click.BadParameter as error:
                raise ConfigFileError(f"{path}: key '{name}': {error.message}") from None
    return settings


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
