"""Progress fits where the output goes: plain lines in a log, nothing under --quiet."""

from __future__ import annotations

import click
from click.testing import CliRunner

from edgeseg.core import progress as progress_module
from edgeseg.core.progress import note, progress, quiet_option, set_quiet


def test_a_log_gets_a_plain_line_at_each_tenth_not_bar_updates(capsys):
    set_quiet(False)
    assert list(progress(range(1000), desc="eval val", unit="img")) == list(range(1000))
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 10
    assert lines[0].startswith("eval val: 100/1000 img") and lines[-1].startswith("eval val: 1000/1000 img")
    assert not any("\r" in line or "it/s" in line for line in lines)


def test_postfix_and_manual_updates_reach_the_plain_line(capsys):
    set_quiet(False)
    bar = progress(desc="epoch 1/3", unit="step", total=4)
    for _ in range(4):
        bar.set_postfix(loss="0.1234")
        bar.update()
    bar.close()
    lines = capsys.readouterr().err.splitlines()
    assert lines[-1].startswith("epoch 1/3: 4/4 step") and lines[-1].endswith("(loss=0.1234)")


def test_quiet_silences_bars_and_notes(capsys):
    set_quiet(True)
    try:
        assert sum(progress(range(50), desc="x")) == sum(range(50))
        note("a note for people")
    finally:
        set_quiet(False)
    assert capsys.readouterr().err == ""


def test_the_quiet_option_sets_quiet_for_the_command():
    seen = []

    @click.command()
    @quiet_option
    def command():
        seen.append(progress_module.is_quiet())

    try:
        assert CliRunner().invoke(command, ["-q"]).exit_code == 0
    finally:
        set_quiet(False)
    assert seen == [True]
