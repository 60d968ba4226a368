"""What a command tells a person while it works, fitted to where its output goes.

On a terminal, long work shows a tqdm bar. In a log (stderr piped or redirected: CI, systemd, `2> log`)
a bar would write thousands of updates, so it becomes a plain line at each tenth of the work instead.
``--quiet`` (every command has it, ``quiet_option``) turns off both and the notes a command prints for
people (``note``); results, warnings and errors are still printed.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Iterable, Iterator, Sized
from typing import Any

import click

PLAIN_LINES = 10  # a plain line at each tenth of the work (and at its end)

_state = {"quiet": False}


def set_quiet(quiet: bool) -> None:
    _state["quiet"] = bool(quiet)


def is_quiet() -> bool:
    return _state["quiet"]


def note(message: str) -> None:
    """A line for the person watching (on stderr), left out under --quiet."""
    if not is_quiet():
        click.echo(message, err=True)


def stderr_is_terminal() -> bool:
    try:
        return sys.stderr.isatty()
    except (AttributeError, ValueError):  # replaced or closed stderr
        return False


def progress(
    iterable: Iterable | None = None,
    desc: str = "",
    unit: str = "it",
    total: int | None = None,
    enabled: bool = True,
    leave: bool = True,
) -> Any:
    """A progress display over ``iterable``: a tqdm bar on a terminal, plain lines in a log, nothing when quiet.

    The object returned iterates like the iterable and has tqdm's ``update``, ``set_postfix`` and ``close``.
    """
    if total is None and isinstance(iterable, Sized):
        total = len(iterable)
    if not enabled or is_quiet():
        return PlainProgress(iterable, desc, unit, total, silent=True)
    if stderr_is_terminal():
        from tqdm import tqdm

        return tqdm(iterable, desc=desc, unit=unit, total=total, leave=leave, dynamic_ncols=True, file=sys.stderr)
    return PlainProgress(iterable, desc, unit, total)


class PlainProgress:
    """tqdm's interface, writing a plain line at each tenth of the work (only at its end where the total is unknown)."""

    def __init__(
        self, iterable: Iterable | None, desc: str, unit: str, total: int | None, silent: bool = False
    ) -> None:
        self.iterable, self.desc, self.unit, self.total, self.silent = iterable, desc, unit, total, silent
        self.count = 0
        self.postfix = ""
        self.started = time.monotonic()
        self._next_line_at = self._step()
        self._closed = False

    def _step(self) -> float:
        if self.total:
            return max(1, -(-self.total // PLAIN_LINES))
        return float("inf")

    def __iter__(self) -> Iterator:
        if self.iterable is None:
            raise TypeError("a progress made without an iterable is advanced with update(), not iterated")
        for item in self.iterable:
            yield item
            self.update(1)
        self.close()

    def __len__(self) -> int:
        return self.total or 0

    def __enter__(self) -> PlainProgress:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def set_postfix(self, **values: Any) -> None:
        self.postfix = ", ".join(f"{name}={value}" for name, value in values.items())

    def set_description(self, desc: str) -> None:
        self.desc = desc

    def update(self, n: int = 1) -> None:
        self.count += n
        if self.count >= self._next_line_at and (self.total is None or self.count < self.total):
            self._write()
            self._next_line_at += self._step()

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            if self.count:
                self._write()

    def _write(self) -> None:
        if self.silent:
            return
        seconds = time.monotonic() - self.started
        done = f"{self.count}/{self.total}" if self.total else f"{self.count}"
        tail = f" ({self.postfix})" if self.postfix else ""
        click.echo(f"{self.desc}: {done} {self.unit} in {seconds:.0f} s{tail}", err=True)


def quiet_option(command):
    """-q/--quiet, spelt and explained one way for every command."""

    def remember(ctx: click.Context, param: click.Parameter, value: bool) -> bool:
        set_quiet(value)  # set either way: one process may run several commands (tests, the demo)
        return value

    return click.option(
        "-q",
        "--quiet",
        is_flag=True,
        expose_value=False,
        is_eager=True,
        callback=remember,
        help="No progress bars and no notes: only results, warnings and errors.",
    )(command)
