"""The export's settings beyond its flags: the parity gate's rules (``--tolerance RULE=VALUE``) and a TOML file
(``--config FILE.toml``) of rules and of the build settings that have no flag, each read and checked here.

The file holds the rules at its top level, named as Tolerances' fields (``-`` or ``_`` alike), and the build
settings in a ``[build]`` table, named as ExportOptions' fields (docs/export.md, "A gate file")::

    int8_image_dice_loss = 0.12

    [build]
    latency_runs = 20
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from pathlib import Path

from edgeseg.core.files import SettingsFileError, read_toml
from edgeseg.export.export_run import ExportOptions
from edgeseg.export.parity import Tolerances, tolerance_help

RULES = tuple(rule.name for rule in dataclasses.fields(Tolerances))
BUILD_TABLE = "build"


@dataclass(frozen=True)
class BuildSetting:
    """A setting of ExportOptions that lives only in the file's [build] table (its default: ExportOptions')."""

    help: str
    minimum: int | None = None  # for a number; None for a switch (true/false)


BUILD_SETTINGS = {
    "workspace_mib": BuildSetting("TensorRT builder workspace, MiB.", minimum=16),
    "keep_norm_fp32": BuildSetting(
        "Keep normalisation and Resize layers in FP32 in the FP16 forms (done anyway when plain FP16 fails parity)."
    ),
    "simulate_fp16": BuildSetting(
        "Also run PyTorch in float16 on the CPU on this many images: an advisory preview of the FP16 forms (slow).",
        minimum=0,
    ),
    "latency_runs": BuildSetting("Timed runs per form for the quick latency.", minimum=1),
}


class ExportConfigError(SettingsFileError):
    """A --config file that cannot be read or holds a key or value export does not take; the message names both."""


@dataclass(frozen=True)
class ExportConfig:
    """What a --config file sets, by field name: rules of the gate (Tolerances) and build settings (ExportOptions)."""

    path: Path | None = None
    rules: dict[str, float] = field(default_factory=dict)
    build: dict[str, int | bool] = field(default_factory=dict)


def default_of(name: str):
    """ExportOptions' or Tolerances' default for field ``name``."""
    defaults = {entry.name: entry.default for entry in dataclasses.fields(ExportOptions)}
    return defaults[name] if name in defaults else getattr(Tolerances, name)


def flag_spelling(rule: str) -> str:
    return rule.replace("_", "-")


def rule_name(text: str) -> str:
    """The Tolerances field ``text`` names (``int8-image-dice-loss`` or ``int8_image_dice_loss``)."""
    name = text.strip().replace("-", "_")
    if name not in RULES:
        raise ValueError(f"unknown rule {text.strip()!r}; the rules: {', '.join(map(flag_spelling, RULES))}")
    return name


def checked_limit(rule: str, value) -> float:
    """A rule's limit: a finite number (NaN would fail every form; the report's JSON has no Infinity)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ValueError(f"{flag_spelling(rule)} must be a finite number (default {default_of(rule):g}), not {value!r}")
    return float(value)


def parse_tolerance(text: str) -> tuple[str, float]:
    """``RULE=VALUE`` (``int8-image-dice-loss=0.12``) as (Tolerances field, limit); a ValueError says what is wrong."""
    rule, equals, number = text.partition("=")
    if not equals:
        raise ValueError(f"{text!r} is not RULE=VALUE (e.g. int8-image-dice-loss=0.12)")
    name = rule_name(rule)
    value: float | str
    try:
        value = float(number)
    except ValueError:
        value = number.strip()  # checked_limit refuses it, naming the rule and its default
    return name, checked_limit(name, value)


def read_config(path: Path) -> ExportConfig:
    """The rules and build settings of the TOML file at ``path``; ExportConfigError names the file, key and fix."""
    document = read_toml(path, example="int8_image_dice_loss = 0.12")
    build = document.pop(BUILD_TABLE, {})
    if not isinstance(build, dict):
        raise ExportConfigError(f"{path}: '{BUILD_TABLE}' must be a table ([{BUILD_TABLE}]) of: {build_keys()}")
    return ExportConfig(
        path=path,
        rules=dict(checked_rule(path, key, value) for key, value in document.items()),
        build={key: checked_build_setting(path, key, value) for key, value in build.items()},
    )


def checked_rule(path: Path, key: str, value) -> tuple[str, float]:
    try:
        name = rule_name(key)
    except ValueError:
        raise ExportConfigError(
            f"{path}: key '{key}' is not a rule of the gate; the rules: {', '.join(RULES)}; "
            f"build settings go in a [{BUILD_TABLE}] table: {build_keys()}"
        ) from None
    try:
        return name, checked_limit(name, value)
    except ValueError:
        raise ExportConfigError(
            f"{path}: key '{key}' must be a finite number, e.g. {name} = {default_of(name)!r}; not {value!r}"
        ) from None


def checked_build_setting(path: Path, key: str, value) -> int | bool:
    setting = BUILD_SETTINGS.get(key)
    if setting is None:
        raise ExportConfigError(
            f"{path}: key '{key}' of [{BUILD_TABLE}] is not a build setting; they are: {build_keys()}"
        )
    example = f"{key} = {toml_text(default_of(key))}"
    if setting.minimum is None:
        if not isinstance(value, bool):
            raise ExportConfigError(f"{path}: key '{key}' must be true or false, e.g. {example}; not {value!r}")
        return value
    if isinstance(value, bool) or not isinstance(value, int) or value < setting.minimum:
        raise ExportConfigError(
            f"{path}: key '{key}' must be a whole number >= {setting.minimum}, e.g. {example}; not {value!r}"
        )
    return value


def build_keys() -> str:
    return ", ".join(BUILD_SETTINGS)


def toml_text(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return f"{value:g}" if isinstance(value, float) else str(value)


def rule_rows() -> list[tuple[str, str]]:
    """(rule = default, what it bounds) for every rule of the gate: the help's list."""
    return [(f"{rule} = {toml_text(default_of(rule))}", tolerance_help(rule)) for rule in RULES]


def build_rows() -> list[tuple[str, str]]:
    """(setting = default, what it does) for every setting that lives only in the [build] table."""
    return [(f"{name} = {toml_text(default_of(name))}", setting.help) for name, setting in BUILD_SETTINGS.items()]
