"""Command-line value types every edgeseg command shares, so one thing is spelled one way everywhere."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import click
from click.core import ParameterSource

from edgeseg.core import forms
from edgeseg.core.card import CardError, parse_input_size
from edgeseg.core.progress import note


class InputSize(click.ParamType):
    """A network input size: '256' (square) or HEIGHTxWIDTH, each side a positive multiple of 32."""

    name = "SIZE"

    def convert(self, value, param, ctx) -> tuple[int, int]:
        if isinstance(value, tuple):
            return value
        try:
            return parse_input_size(str(value))
        except CardError as error:
            self.fail(str(error), param, ctx)


INPUT_SIZE = InputSize()


def size_text(size: tuple[int, int]) -> str:
    """A SIZE as it is typed: '256' for a square, else HEIGHTxWIDTH."""
    height, width = size
    return str(height) if height == width else f"{height}x{width}"


def model_or_default(model):
    """The model a command was given, or, when none was, edgeseg's default model, said in one line on stderr."""
    from edgeseg.core.names import DefaultModelMissing, default_model_path

    if model is not None:
        return Path(model)
    try:
        path = default_model_path()
    except DefaultModelMissing as error:
        raise click.UsageError(str(error)) from None
    note(f"no model named: using edgeseg's default model ({path})")
    return path


def long_flag(param: click.Parameter) -> str:
    """An option as messages name it: its long flag (--backend, not -b)."""
    return max(param.opts, key=len)


# Spellings of --backend from before every command shared edgeseg.core.names.BACKENDS: still accepted, with a note.
OLD_BACKEND_NAMES = {"cpu": "torch-cpu", "torch": "torch-cpu", "cuda": "torch-cuda"}


class BackendChoice(click.Choice):
    """One of the backends ``listed()`` names (the help lists only these); an old spelling is taken with a one-line
    note. The list is read each time it is used, from the table of forms (edgeseg.core.forms.KINDS), so a backend
    added to the table after this module was imported (a test's) is taken too."""

    def __init__(self, listed: Callable[[], tuple[str, ...]], old_names: dict[str, str] | None = None) -> None:
        # Not click.Choice's __init__, which fixes the choices once (all it sets besides case_sensitive).
        self.case_sensitive = True
        self.listed = listed
        self.old_names = dict(old_names or {})

    @property
    def choices(self) -> tuple[str, ...]:  # type: ignore[override]  # read-only: the table of forms holds them
        return self.listed()

    def convert(self, value, param, ctx):
        if isinstance(value, str) and value in self.old_names:
            new = self.old_names[value]
            flag = long_flag(param) if param is not None and param.opts else "--backend"
            click.echo(f"note: {flag} {value} is now spelled {flag} {new}", err=True)
            return new
        return super().convert(value, param, ctx)


# --backend of `eval` and `bench`: every backend name (edgeseg.core.names.BACKENDS); the old cpu/cuda/torch spellings
# still taken.
BACKEND_CHOICE = BackendChoice(
    lambda: ("auto", *forms.runtime_backends(), *forms.torch_backends()), old_names=OLD_BACKEND_NAMES
)
# --backend of `train`: the PyTorch backends alone, by the same names (auto: CUDA where PyTorch sees a GPU).
TORCH_BACKEND_CHOICE = BackendChoice(lambda: ("auto", *forms.torch_backends()), old_names=OLD_BACKEND_NAMES)
# --backend of `run`: the torch-free runtime's backends.
RUNTIME_BACKEND_CHOICE = BackendChoice(lambda: ("auto", *forms.runtime_backends()))

# Short flags: one letter, one meaning, in every command that has the option (-h/--help and -q/--quiet in all).
# -o is where a command writes its outputs: --out, and `run`'s --save (an image, a folder or a video).
SHORT_FLAGS = {
    "-o": ("--out", "--save"),
    "-d": ("--data",),
    "-b": ("--backend",),
    "-n": ("--images",),
    "-q": ("--quiet",),
    "-j": ("--json",),
    "-h": ("--help",),
}


def old_spelling(flag: str, note: str, **attrs):
    """A hidden option under a spelling edgeseg used before: still accepted, and using it prints `note: ...`.

    Its value arrives as ``old_<flag>``; ``renamed`` merges it with the option or argument that replaced it.
    """
    name = "old_" + flag.lstrip("-").replace("-", "_")

    def tell(ctx, param, value):
        if value is not None:
            click.echo(f"note: {note}", err=True)
        return value

    return click.option(flag, name, hidden=True, default=None, callback=tell, **attrs)


def renamed(ctx: click.Context, new: str, old: str):
    """The value of parameter `new`, or of its old spelling `old` where that was given; both at once is a UsageError."""
    value, old_value = ctx.params.get(new), ctx.params.get(old)
    if old_value is None:
        return value
    if ctx.get_parameter_source(new) in (ParameterSource.COMMANDLINE, ParameterSource.ENVIRONMENT):
        spelling = {
            param.name: long_flag(param) if isinstance(param, click.Option) else param.human_readable_name
            for param in ctx.command.params
        }
        raise click.UsageError(f"{spelling[old]} is the old spelling of {spelling[new]}: give one of them, not both")
    return old_value


class JsonOutput(click.Path):
    """Where a command writes its JSON: a file (replaced atomically), or '-' for stdout."""

    def __init__(self) -> None:
        super().__init__(dir_okay=False, allow_dash=True, path_type=Path)


JSON_OUTPUT = JsonOutput()
JSON_HELP = "('-': stdout, and the human-readable output goes to stderr)"


def json_to_stdout(target) -> bool:
    """Whether --json names stdout: then the command's text for people goes to stderr, so stdout stays JSON."""
    return target is not None and str(target) == "-"


def write_json(target, document) -> None:
    """Write ``document`` as indented JSON to the file ``target`` (atomically), or to stdout for '-'."""
    import json

    from edgeseg.core.files import write_text_atomic

    text = json.dumps(document, indent=2) + "\n"
    if json_to_stdout(target):
        click.echo(text, nl=False)
    else:
        write_text_atomic(target, text)


OVERWRITE_HELP = (
    "Replace outputs that exist already (in a folder of outputs, the files of the same names); without it, "
    "an existing output is refused."
)


def overwrite_option(command):
    """--overwrite, spelt and explained one way for every command (the rule: edgeseg.core.files.prepare_outputs)."""
    return click.option("--overwrite", is_flag=True, help=OVERWRITE_HELP)(command)
