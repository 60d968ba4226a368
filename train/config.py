"""A training run's settings, TrainConfig, and their TOML file: torch-free, so `edgeseg train --help` shows the
defaults from here.

The loop (train.loop) runs a TrainConfig; the command line (train.cli) reads each option's default from it and
a ``--config FILE.toml`` into it (``read_settings``). Every run writes its own settings as RUN/config.toml
(``settings_toml``), so ``edgeseg train --config RUN/config.toml`` runs it again.
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import re
import types
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edgeseg.core.card import CardError, parse_input_size
from edgeseg.core.files import SettingsFileError, read_toml

LITE0_ENCODER = "tu-tf_efficientnet_lite0"  # the default edge encoder (train.encoders holds its weights)
CONFIG_TOML_FILENAME = "config.toml"  # a run's settings as a --config file


@dataclass(frozen=True)
class TrainConfig:
    data: str
    out: str
    split_dir: str | None = None
    epochs: int = 40  # an upper bound when time_budget_minutes is set
    batch_size: int = 8
    size: tuple[int, int] = (256, 256)
    lr: float = 1e-3
    min_lr_factor: float = 0.01  # cosine ends at lr * this
    warmup_epochs: int = 1  # cosine: linear warm-up from lr / 10 over this many epochs
    weight_decay: float = 1e-4
    optimizer: str = "adamw"  # adamw | adam
    schedule: str = "cosine"  # cosine | step
    step_epoch: int = 10  # step: lr * step_factor from this epoch on (1-based epochs after it)
    step_factor: float = 0.1
    loss: str = "dice+bce"
    encoder: str = LITE0_ENCODER
    encoder_weights: str = "imagenet"  # imagenet | none | path to a .safetensors state dict of the encoder
    init_weights: str | None = None  # a trained run directory to fine-tune: every weight and its preprocessing
    decoder_channels: tuple[int, int] = (128, 64)  # FPN pyramid, segmentation channels
    augment: bool = True
    camera_framing: float = 0.3  # share of training samples placed in a full camera frame (CameraFraming)
    seed: int = 0
    device: str = "auto"  # auto | cpu | cuda | cuda:N (the command line: --backend auto | torch-cpu | torch-cuda)
    time_budget_minutes: float | None = None
    threads: int | None = None
    workers: int = 0
    progress: bool = True  # this terminal's progress bars (-q/--quiet), so never in a settings file

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainConfig:
        values = dict(data)
        for name in ("size", "decoder_channels"):  # JSON and checkpoints store tuples as lists
            if name in values:
                values[name] = tuple(values[name])
        return cls(**values)


def default_of(name: str) -> Any:
    """The default of TrainConfig field ``name``."""
    return next(field.default for field in dataclasses.fields(TrainConfig) if field.name == name)


# The settings that only a --config file sets (the command line has no flag for them), each with what it
# does: `edgeseg train --help` lists them with their defaults (tests/train/test_train_config.py checks the list).
FILE_ONLY_SETTINGS = {
    "optimizer": "adamw or adam",
    "weight_decay": "AdamW weight decay",
    "schedule": "cosine (warm-up, then decay) or step (lr * step_factor after step_epoch)",
    "warmup_epochs": "cosine: epochs of linear warm-up from lr / 10",
    "min_lr_factor": "cosine: it ends at lr * this",
    "step_epoch": "step: the last epoch at the full lr",
    "step_factor": "step: lr is multiplied by this after step_epoch",
    "loss": "dice (the paper's), dice+bce, or lovasz (the Lovasz hinge: suits a fine-tune)",
    "decoder_channels": "FPN decoder channels [PYRAMID, SEGMENTATION] (smp's: [256, 128])",
    "augment": "flips, rotations, scale/shift and colour jitter of the training images",
    "camera_framing": "share of training samples placed in a full 4:3 or 3:2 camera frame",
    "seed": "random seed; the same seed repeats a CPU run exactly",
    "threads": "CPU threads per process (not set: all cores / processes)",
    "workers": "DataLoader worker processes for augmentation",
}

# What a value must be, where the command line's own types do not say it (settings without a flag, and
# device, which --backend spells differently): name -> (test, what it must be).
VALUE_RULES = {
    "min_lr_factor": (lambda value: 0 <= value <= 1, "a number from 0 to 1"),
    "warmup_epochs": (lambda value: value >= 0, "0 or more"),
    "step_factor": (lambda value: value > 0, "a number above 0"),
    "device": (
        lambda value: re.fullmatch(r"auto|cpu|cuda(:\d+)?", value) is not None,
        '"auto", "cpu", "cuda" or "cuda:N"',
    ),
}
TYPE_WORDS = {int: "a whole number", float: "a number", str: "a quoted string", bool: "true or false"}


class ConfigFileError(SettingsFileError):
    """A --config file that is not TrainConfig's settings; the message names the file, the key and the fix."""


def file_fields() -> tuple[str, ...]:
    """The keys of a settings file: TrainConfig's fields, but for this terminal's progress bars."""
    return tuple(field.name for field in dataclasses.fields(TrainConfig) if field.name != "progress")


# --- reading a settings file ------------------------------------------------------------------------


def read_settings(path: Path) -> dict[str, Any]:
    """The settings of a TOML file, each key a TrainConfig field and each value of that field's type."""
    hints = typing.get_type_hints(TrainConfig)
    settings = {}
    for key, value in parse_toml(path).items():
        if key not in file_fields():
            raise ConfigFileError(unknown_key(path, key, value))
        settings[key] = checked(path, key, value, hints[key])
    return settings


def parse_toml(path: Path) -> dict[str, Any]:
    return read_toml(path, example="epochs = 20")


def unknown_key(path: Path, key: str, value: Any) -> str:
    close = difflib.get_close_matches(key, file_fields(), n=1)
    message = f"{path}: key '{key}' is not a setting of edgeseg train"
    message += f" (did you mean '{close[0]}'?)." if close else "."
    if isinstance(value, dict):
        message += " Settings are top-level keys, with no [sections]."
    return f"{message} The keys are: {', '.join(file_fields())}"


def checked(path: Path, key: str, value: Any, hint: Any) -> Any:
    """``value`` as field ``key`` takes it (a whole number for a float, a list for a pair), or ConfigFileError."""
    kind = without_none(hint)
    if key == "size":
        return input_size(path, value)
    if typing.get_origin(kind) is tuple:
        return positive_pair(path, key, value)
    if kind is float and type(value) is int:
        value = float(value)
    if type(value) is not kind:
        example = default_of(key)
        example = f" (for example {key} = {toml_value(example)})" if example is not None else ""
        raise ConfigFileError(f"{path}: key '{key}' takes {TYPE_WORDS[kind]}{example}, not {described(value)}")
    if key in VALUE_RULES and not VALUE_RULES[key][0](value):
        raise ConfigFileError(f"{path}: key '{key}' must be {VALUE_RULES[key][1]}, not {described(value)}")
    return value


def without_none(hint: Any) -> Any:
    """``int`` for ``int | None``; the hint itself when None is not among its types."""
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        return next(kind for kind in typing.get_args(hint) if kind is not type(None))
    return hint


def input_size(path: Path, value: Any) -> tuple[int, int]:
    """size = 256, "256x320" or [256, 320], as --size takes it: each side a multiple of 32."""
    if type(value) is list and len(value) == 2 and all(type(side) is int for side in value):
        value = f"{value[0]}x{value[1]}"
    if type(value) not in (int, str):
        raise ConfigFileError(
            f"{path}: key 'size' takes one number or [HEIGHT, WIDTH] (for example size = 256), not {described(value)}"
        )
    try:
        return parse_input_size(str(value))
    except CardError as error:
        raise ConfigFileError(f"{path}: key 'size': {error}") from None


def positive_pair(path: Path, key: str, value: Any) -> tuple[int, int]:
    if type(value) is list and len(value) == 2 and all(type(item) is int and item > 0 for item in value):
        return value[0], value[1]
    example = toml_value(default_of(key))
    raise ConfigFileError(
        f"{path}: key '{key}' takes two whole numbers above 0 (for example {key} = {example}), not {described(value)}"
    )


def described(value: Any) -> str:
    """A value read from TOML as the file spells it, for a message."""
    try:
        return toml_value(value)
    except TypeError:
        return "a table" if isinstance(value, dict) else f"a {type(value).__name__}"


# --- writing one --------------------------------------------------------------------------------------

SETTINGS_HEADER = """\
# edgeseg train settings. Run them again with: edgeseg train --config THIS_FILE --out NEW_RUN_DIR
# (flags given on the command line win over this file; paths are read from the current folder, as flags are).
"""


def settings_toml(config: TrainConfig) -> str:
    """``config`` as a settings file, one ``key = value`` a line; an unset setting is left out (TOML has no null)."""
    lines = [f"{name} = {toml_value(value)}" for name in file_fields() if (value := getattr(config, name)) is not None]
    return SETTINGS_HEADER + "\n".join(lines) + "\n"


def toml_value(value: Any) -> str:
    """A str, int, float, bool or list of them as TOML writes it (``repr`` of a float reads back exactly)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        # A JSON string is a TOML basic string, but for DEL, which TOML wants escaped.
        return json.dumps(value, ensure_ascii=False).replace("\x7f", "\\u007f")
    if isinstance(value, list | tuple):
        return "[" + ", ".join(toml_value(item) for item in value) + "]"
    raise TypeError(f"no TOML spelling for {type(value).__name__}")
