"""Every command: -q/--quiet and -h; short flags with one meaning each; plain progress lines in a log; old spellings
with a note; shell completion for bash, zsh and fish."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from edgeseg.cli import COMMANDS, main
from edgeseg.core.click_types import SHORT_FLAGS

SHELLS = ("bash", "zsh", "fish")


def leaf_commands() -> dict[str, click.Command]:
    """Every command a user can run, by its words (`data check`), from edgeseg.cli.COMMANDS."""
    context = click.Context(main)
    found = {}
    for name in COMMANDS:
        command = main.get_command(context, name)
        if isinstance(command, click.Group):
            found.update({f"{name} {sub}": command.get_command(context, sub) for sub in command.list_commands(context)})
        else:
            found[name] = command
    return found


def options_of(command: click.Command) -> list[click.Option]:
    return [param for param in command.params if isinstance(param, click.Option) and not param.hidden]


@pytest.mark.parametrize("words", sorted(leaf_commands()))
def test_every_command_takes_quiet_and_short_help(words):
    flags = {flag for option in options_of(leaf_commands()[words]) for flag in option.opts}
    assert {"-q", "--quiet"} <= flags, f"edgeseg {words} has no -q/--quiet"
    shown = CliRunner().invoke(main, [*words.split(), "-h"])
    assert shown.exit_code == 0 and shown.output.startswith("Usage: ") and "-q, --quiet" in shown.output


def test_a_short_flag_means_one_thing_in_every_command():
    meanings: dict[str, set[str]] = {}
    for command in leaf_commands().values():
        for option in options_of(command):
            for short in (flag for flag in option.opts if len(flag) == 2):
                meanings.setdefault(short, set()).add(max(option.opts, key=len))
    for short, longs in meanings.items():
        assert longs <= set(SHORT_FLAGS[short]) if short in SHORT_FLAGS else len(longs) == 1, (short, longs)
    assert set(SHORT_FLAGS) - {"-h"} <= set(meanings)
    # and every command with one of those options has its short flag too
    short_of = {long: short for short, longs in SHORT_FLAGS.items() for long in longs}
    for words, command in leaf_commands().items():
        for option in options_of(command):
            short = short_of.get(max(option.opts, key=len))
            assert short is None or short in option.opts, f"edgeseg {words} {max(option.opts, key=len)} lacks {short}"


def synth(tmp_path: Path, *flags: str) -> subprocess.CompletedProcess:
    """`edgeseg synth` in a child process whose stderr is a pipe, as in a log or under CI."""
    return subprocess.run(
        [sys.executable, "-m", "edgeseg", "synth", str(tmp_path / "data"), "-n", "20", "--image-size", "64", *flags],
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_a_log_gets_plain_progress_lines_and_no_bar_updates(tmp_path):
    done = synth(tmp_path)
    assert done.returncode == 0, done.stderr
    assert "\r" not in done.stderr and "it/s" not in done.stderr and "img/s" not in done.stderr
    lines = done.stderr.splitlines()
    assert [line.split(" img in ")[0] for line in lines] == [f"synth: {count}/20" for count in range(2, 21, 2)]
    assert done.stdout.startswith("wrote 20 synthetic pairs")


def test_quiet_keeps_the_result_and_drops_progress(tmp_path):
    done = synth(tmp_path, "-q")
    assert done.returncode == 0 and done.stderr == "" and done.stdout.startswith("wrote 20 synthetic pairs")


def test_quiet_silences_notes_but_not_errors(tmp_path):
    noted = CliRunner().invoke(main, ["eval", "-d", str(tmp_path / "missing")])
    assert noted.exit_code == 2 and "does not exist" in noted.output  # a usage error always prints
    model_note = "no model named: using edgeseg's default model"
    data = tmp_path / "one"
    subprocess.run(
        [sys.executable, "-m", "edgeseg", "synth", str(data), "-n", "4", "--image-size", "64", "-q"],
        check=True,
        timeout=120,
    )
    said = CliRunner().invoke(main, ["eval", "-d", str(data), "-o", str(tmp_path / "a")])
    quiet = CliRunner().invoke(main, ["eval", "-d", str(data), "-o", str(tmp_path / "b"), "-q"])
    assert said.exit_code == quiet.exit_code == 0, said.output + quiet.output
    assert model_note in said.stderr and model_note not in quiet.stderr
    assert "eval val: " in said.stderr and "eval val: " not in quiet.stderr
    assert "per-image results:" in quiet.stdout  # the result stays
    again = CliRunner().invoke(main, ["eval", "-d", str(data), "-o", str(tmp_path / "c")])
    assert model_note in again.stderr  # -q held for its own command only


def test_synth_takes_the_old_n_with_a_note_and_makes_the_same_images(tmp_path):
    new = CliRunner().invoke(main, ["synth", str(tmp_path / "new"), "--images", "3", "--image-size", "64"])
    old = CliRunner().invoke(main, ["synth", str(tmp_path / "old"), "--n", "3", "--image-size", "64"])
    assert new.exit_code == old.exit_code == 0, new.output + old.output
    assert "note: --n of `synth` is now spelled -n/--images" in old.stderr and "note:" not in new.stderr
    files = [sorted(path.name for path in (tmp_path / name).rglob("*.jpg")) for name in ("new", "old")]
    assert files[0] == files[1] and len(files[0]) == 3
    both = CliRunner().invoke(main, ["synth", str(tmp_path / "x"), "--n", "3", "--images", "3"])
    assert both.exit_code == 2 and "--n is the old spelling of --images" in both.output


def test_data_split_takes_the_old_val_with_a_note_and_writes_the_same_split(tmp_path):
    for name in ("new", "old"):
        subprocess.run(
            [sys.executable, "-m", "edgeseg", "synth", str(tmp_path / name), "-n", "10", "--image-size", "64", "-q"],
            check=True,
            timeout=120,
        )
        for split in (tmp_path / name / "splits").glob("*.txt"):
            split.unlink()
    new = CliRunner().invoke(main, ["data", "split", str(tmp_path / "new"), "--val-fraction", "0.3"])
    old = CliRunner().invoke(main, ["data", "split", str(tmp_path / "old"), "--val", "0.3"])
    assert new.exit_code == old.exit_code == 0, new.output + old.output
    assert "note: --val of `data split` is now spelled --val-fraction" in old.stderr and "note:" not in new.stderr
    texts = [(tmp_path / name / "splits" / "val.txt").read_text() for name in ("new", "old")]
    assert texts[0] == texts[1] and texts[0].startswith("# edgeseg data split --val-fraction 0.3 ")


def test_demo_takes_the_old_train_minutes_with_a_note(monkeypatch, tmp_path):
    import edgeseg.demo

    commands = {}

    def record(plan, name, command, allowed_exit_codes=(0,)):
        commands[name] = command[3:]
        if name == "train":
            raise click.exceptions.Exit(0)

    monkeypatch.setattr(edgeseg.demo, "run_step", record)
    old = CliRunner().invoke(main, ["demo", "-o", str(tmp_path / "old"), "--train-minutes", "0.5", "-n", "9"])
    new = CliRunner().invoke(main, ["demo", "-o", str(tmp_path / "new"), "--time-budget", "0.5", "--images", "9"])
    assert old.exit_code == new.exit_code == 0, old.output + new.output
    assert "note: --train-minutes of `demo` is now spelled --time-budget" in old.stderr and "note:" not in new.stderr
    train = commands["train"]
    assert train[train.index("--time-budget") + 1] == "0.5"
    synthesise = commands["synthesise data"]
    assert synthesise[synthesise.index("--images") + 1] == "9"


def edgeseg_script() -> Path:
    """The installed `edgeseg` command: completion keys on the program's name (`python -m edgeseg` is another)."""
    script = Path(sys.executable).with_name("edgeseg")
    if not script.is_file():
        pytest.skip("no edgeseg script beside this python")
    return script


def complete(shell: str, words: list[str]) -> str:
    """What `edgeseg` offers for the last of ``words`` (empty: a new word), asked the way each shell's script asks."""
    current = str(len(words) - 1) if shell != "fish" else words[-1]
    environment = {
        **os.environ,
        "_EDGESEG_COMPLETE": f"{shell}_complete",
        "COMP_WORDS": " ".join(words),
        "COMP_CWORD": current,
    }
    return subprocess.run(
        [str(edgeseg_script())], env=environment, capture_output=True, text=True, timeout=60, check=True
    ).stdout


@pytest.mark.parametrize("shell", SHELLS)
def test_completion_scripts_for_each_shell_list_the_commands(shell):
    environment = {**os.environ, "_EDGESEG_COMPLETE": f"{shell}_source"}
    script = subprocess.run(
        [str(edgeseg_script())], env=environment, capture_output=True, text=True, timeout=60, check=True
    ).stdout
    assert "_edgeseg_completion" in script and f"_EDGESEG_COMPLETE={shell}_complete" in script
    offered = complete(shell, ["edgeseg", ""])
    for name in COMMANDS:
        assert name in offered.replace(",", "\n").split(), f"{shell}: {name} not offered"
    options = complete(shell, ["edgeseg", "train", "--b"])
    assert "--backend" in options and "--batch-size" in options


def test_bash_completion_sourced_in_bash_completes_the_commands():
    script = (
        'eval "$(_EDGESEG_COMPLETE=bash_source edgeseg)"; COMP_WORDS=(edgeseg ""); COMP_CWORD=1; '
        '_edgeseg_completion edgeseg; printf "%s\\n" "${COMPREPLY[@]}"'
    )
    path = f"{edgeseg_script().parent}{os.pathsep}{os.environ.get('PATH', '')}"
    done = subprocess.run(
        ["bash", "-c", script], env={**os.environ, "PATH": path}, capture_output=True, text=True, timeout=60
    )
    assert done.stdout.split() == list(COMMANDS), done.stderr
