"""Command-line value types every edgeseg command shares, so one thing is spelled one way everywhere."""

from __future__ import annotations

from pathlib import Path

import click

from edgeseg.card import CardError, parse_input_size


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


def model_or_default(model):
    """The model a command was given, or, when none was, edgeseg's default model, said in one line on stderr."""
    from edgeseg.names import DefaultModelMissing, default_model_path

    if model is not None:
        return Path(model)
    try:
        path = default_model_path()
    except DefaultModelMissing as error:
        raise click.UsageError(str(error)) from None
    click.echo(f"no model named: using edgeseg's default model ({path})", err=True)
    return path
