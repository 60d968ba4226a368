"""One command-line convention in the core commands: `--size` is the network input size, `--threads` counts
threads, `--json -` is stdout; old spellings (`synth --size`, `data check --workers`) still work with a note."""

from __future__ import annotations

import json
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from edgeseg.cli import main
from edgeseg.core.click_types import BACKEND_CHOICE, size_text, write_json
from edgeseg.core.names import BACKENDS

SYNTH_NOTE = "note: --size of `synth` is now spelled --image-size"
WORKERS_NOTE = "note: --workers of `data check` is now spelled --threads"


def files_of(root: Path) -> dict[str, bytes]:
    return {str(path.relative_to(root)): path.read_bytes() for path in sorted(root.rglob("*")) if path.is_file()}


def test_synth_takes_the_old_size_with_a_note_and_makes_the_same_images(tmp_path):
    new = CliRunner().invoke(main, ["synth", str(tmp_path / "new"), "--n", "4", "--image-size", "64", "--seed", "5"])
    old = CliRunner().invoke(main, ["synth", str(tmp_path / "old"), "--n", "4", "--size", "64", "--seed", "5"])
    assert new.exit_code == old.exit_code == 0, new.output + old.output
    assert SYNTH_NOTE not in new.stderr and old.stderr.count(SYNTH_NOTE) == 1
    assert "of 64x64 px" in old.stdout
    assert files_of(tmp_path / "old") == files_of(tmp_path / "new") != {}


def test_synth_refuses_both_spellings_and_hides_the_old_one(tmp_path):
    both = CliRunner().invoke(main, ["synth", str(tmp_path), "--n", "2", "--size", "64", "--image-size", "64"])
    assert both.exit_code == 2 and "--size is the old spelling of --image-size" in both.output
    assert not any(tmp_path.iterdir())
    shown = CliRunner().invoke(main, ["synth", "--help"]).output
    assert "--image-size" in shown and "--size" not in shown


def test_data_check_takes_the_old_workers_with_a_note(synthetic_dir):
    new = CliRunner().invoke(main, ["data", "check", str(synthetic_dir), "--threads", "2", "--json", "-"])
    old = CliRunner().invoke(main, ["data", "check", str(synthetic_dir), "--workers", "2", "--json", "-"])
    assert new.exit_code == old.exit_code == 0, new.output + old.output
    assert WORKERS_NOTE not in new.stderr and old.stderr.count(WORKERS_NOTE) == 1
    new_report, old_report = json.loads(new.stdout), json.loads(old.stdout)  # stdout is the JSON alone
    assert new_report["usable"] and new_report == old_report | {"seconds": new_report["seconds"]}
    shown = CliRunner().invoke(main, ["data", "check", "--help"]).output
    assert "--threads" in shown and "--workers" not in shown


def test_data_check_writes_the_json_file_and_keeps_the_text_on_stdout(synthetic_dir, tmp_path):
    result = CliRunner().invoke(main, ["data", "check", str(synthetic_dir), "--json", str(tmp_path / "report.json")])
    assert result.exit_code == 0, result.output
    assert json.loads((tmp_path / "report.json").read_text())["usable"] is True
    assert "Usable:" in result.stdout and f"Report written to {tmp_path / 'report.json'}" in result.stderr


def test_the_backend_choice_lists_only_the_real_names_and_maps_old_ones_with_a_note(capsys):
    option = click.Option(["--backend"], type=BACKEND_CHOICE)
    assert BACKEND_CHOICE.get_metavar(option, click.Context(click.Command("x"))) == "[" + "|".join(BACKENDS) + "]"
    assert BACKEND_CHOICE.convert("torch", option, None) == "torch-cpu"
    assert capsys.readouterr().err == "note: --backend torch is now spelled --backend torch-cpu\n"
    assert BACKEND_CHOICE.convert("onnxruntime-cpu", option, None) == "onnxruntime-cpu"
    assert capsys.readouterr().err == ""
    with pytest.raises(click.BadParameter, match="'gpu' is not one of 'auto'"):
        BACKEND_CHOICE.convert("gpu", option, None)


def test_write_json_goes_to_stdout_for_a_dash_and_replaces_a_file_whole(tmp_path, capsys):
    write_json(Path("-"), {"a": 1})
    assert json.loads(capsys.readouterr().out) == {"a": 1}
    target = tmp_path / "sub" / "out.json"
    write_json(target, {"b": [1, 2]})
    write_json(target, {"c": None})
    assert json.loads(target.read_text()) == {"c": None}
    assert [path.name for path in target.parent.iterdir()] == ["out.json"]  # no temporary left behind


def test_demo_passes_its_input_size_and_image_size_on(monkeypatch, tmp_path):
    """demo --size is a SIZE like train's: 64x96 reaches train as is, and the eval step names MODEL positionally."""
    import edgeseg.demo

    commands = {}

    def record(plan, name, command, allowed_exit_codes=(0,)):
        commands[name] = command[3:]  # after `python -m edgeseg`
        if name == "evaluate":
            raise click.exceptions.Exit(0)

    monkeypatch.setattr(edgeseg.demo, "run_step", record)
    result = CliRunner().invoke(main, ["demo", "--out", str(tmp_path), "--image-size", "96", "--size", "64x96"])
    assert result.exit_code == 0, result.output
    assert commands["synthesise data"][commands["synthesise data"].index("--image-size") + 1] == "96"
    assert commands["train"][commands["train"].index("--size") + 1] == "64x96"
    assert commands["evaluate"][:2] == ["eval", str(tmp_path / "run")]
    refused = CliRunner().invoke(main, ["demo", "--out", str(tmp_path / "x"), "--size", "100"])
    assert refused.exit_code == 2 and "multiples of 32" in refused.output


def test_size_text_is_what_a_user_types():
    assert size_text((256, 256)) == "256" and size_text((64, 96)) == "64x96"
