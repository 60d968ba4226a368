"""`edgeseg export`'s options: at most 16 shown, the gate's rules as --tolerance RULE=VALUE or a --config file, the
old flags still taken with a note, and the docs' example gate file read as it says.

No export runs here: export_run and the verdict are replaced by recorders, so each test checks the ExportOptions
the command line builds.
"""

from __future__ import annotations

import re
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from edgeseg.cli import main
from edgeseg.core.files import SettingsFileError
from edgeseg.export import cli as export_cli
from edgeseg.export import export_run as export_run_module
from edgeseg.export.export_config import BUILD_SETTINGS, RULES, read_config
from edgeseg.export.export_run import ExportOptions
from edgeseg.export.parity import Tolerances

REPO_ROOT = Path(__file__).resolve().parents[2]
MAX_OPTIONS = 16


@pytest.fixture
def exported(monkeypatch: pytest.MonkeyPatch, tmp_path: Path):
    """Run `edgeseg export RUN_DIR -o OUT ARGS...` up to export_run; returns (result, what export_run and the
    verdict were given)."""
    given: dict = {}

    def record_run(run_dir, out_dir, options, echo=None):
        given["options"] = options
        return "report"

    def record_verdict(report, json_path, rule_sources=None):
        given["rule_sources"] = rule_sources

    monkeypatch.setattr(export_run_module, "export_run", record_run)
    monkeypatch.setattr(export_cli, "tell_the_verdict", record_verdict)
    run_dir = tmp_path / "run"
    run_dir.mkdir()

    def export(*args: str):
        result = CliRunner().invoke(main, ["export", str(run_dir), "-o", str(tmp_path / "out"), *args])
        return result, given

    return export


def gate_file(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "gate.toml"
    path.write_text(text, encoding="utf-8")
    return path


def test_export_shows_at_most_16_options_counting_help():
    command = export_cli.export_command
    shown = [param for param in command.params if isinstance(param, click.Option) and not param.hidden]
    # A context as the edgeseg group makes (-h/--help): click caches the help option it first builds on the command.
    help_option = command.get_help_option(click.Context(command, info_name="export", **main.context_settings))
    assert help_option is not None and help_option not in shown
    assert len(shown) + 1 <= MAX_OPTIONS, [param.opts for param in shown]
    flags = {flag for param in shown for flag in param.opts}
    assert {"--tolerance", "--config", "--fp16", "-n", "--images"} <= flags
    assert not flags & {"--int8-image-dice-loss", "--latency-runs", "--parity-n"}


def test_without_settings_export_runs_with_the_defaults(exported):
    result, given = exported()
    assert result.exit_code == 0, result.output
    options = given["options"]
    assert options.tolerances == Tolerances()
    assert (options.latency_runs, options.workspace_mib) == (ExportOptions.latency_runs, ExportOptions.workspace_mib)
    assert given["rule_sources"] == {}


def test_tolerance_sets_a_rule_spelled_with_dashes_or_underscores(exported):
    result, given = exported(
        "--tolerance", "int8-image-dice-loss=0.12", "--tolerance", "fp16_confident_flips=0.001", "-n", "7"
    )
    assert result.exit_code == 0, result.output
    tolerances = given["options"].tolerances
    assert (tolerances.int8_image_dice_loss, tolerances.fp16_confident_flips) == (0.12, 0.001)
    assert tolerances.int8_abs_delta_dice == Tolerances.int8_abs_delta_dice
    assert given["options"].parity_n == 7
    assert given["rule_sources"] == {"int8_image_dice_loss": "--tolerance", "fp16_confident_flips": "--tolerance"}


def test_config_file_sets_rules_and_build_settings_and_a_flag_wins(exported, tmp_path: Path):
    path = gate_file(tmp_path, "int8_image_dice_loss = 0.2\nconfident-margin = 0.15\n[build]\nlatency_runs = 3\n")
    result, given = exported("--config", str(path), "--tolerance", "int8-image-dice-loss=0.12")
    assert result.exit_code == 0, result.output
    options = given["options"]
    assert (options.tolerances.int8_image_dice_loss, options.tolerances.confident_margin) == (0.12, 0.15)
    assert options.latency_runs == 3
    assert given["rule_sources"] == {"int8_image_dice_loss": "--tolerance", "confident_margin": str(path)}


@pytest.mark.parametrize(
    "value, wrong",
    [
        ("int8-dice=0.1", "unknown rule 'int8-dice'"),
        ("int8-image-dice-loss=much", "must be a finite number"),
        ("int8-image-dice-loss=nan", "must be a finite number"),
        ("int8-image-dice-loss", "is not RULE=VALUE"),
    ],
    ids=["unknown-rule", "bad-value", "nan", "no-value"],
)
def test_a_bad_tolerance_is_a_usage_error_that_says_why(exported, value: str, wrong: str):
    result, given = exported("--tolerance", value)
    assert result.exit_code == 2 and "options" not in given
    assert "--tolerance" in result.output and wrong in result.output
    if "unknown" in wrong:
        assert "int8-image-dice-loss" in result.output  # the valid rules are listed


@pytest.mark.parametrize(
    "text, named",
    [
        ("int8_dice = 0.1\n", "key 'int8_dice' is not a rule of the gate"),
        ("int8_image_dice_loss = 'small'\n", "key 'int8_image_dice_loss' must be a finite number"),
        ("[build]\nlatency = 3\n", "key 'latency' of [build] is not a build setting"),
        ("[build]\nlatency_runs = 0\n", "key 'latency_runs' must be a whole number >= 1"),
        ("[build]\nkeep_norm_fp32 = 1\n", "key 'keep_norm_fp32' must be true or false"),
        ("int8_image_dice_loss = \n", "not a TOML file"),
    ],
    ids=["unknown-rule", "rule-type", "unknown-setting", "setting-range", "setting-type", "not-toml"],
)
def test_a_bad_config_file_is_an_error_naming_the_file_and_key(exported, tmp_path: Path, text: str, named: str):
    path = gate_file(tmp_path, text)
    result, given = exported("--config", str(path))
    assert result.exit_code == 1 and "options" not in given
    assert f"Error: {path}: {named}" in result.output
    assert "Traceback" not in result.output


def test_an_old_flag_still_works_and_names_its_new_spelling(exported):
    result, given = exported("--int8-image-dice-loss", "0.3", "--latency-runs", "2", "--parity-n", "5")
    assert result.exit_code == 0, result.output
    options = given["options"]
    assert (options.tolerances.int8_image_dice_loss, options.latency_runs, options.parity_n) == (0.3, 2, 5)
    assert "note: --int8-image-dice-loss is now spelled --tolerance int8-image-dice-loss=VALUE" in result.output
    assert "note: --latency-runs is now `latency_runs = ...` in the [build] table" in result.output
    assert "note: --parity-n of `export` is now spelled -n/--images" in result.output
    assert given["rule_sources"] == {"int8_image_dice_loss": "--int8-image-dice-loss"}


def test_an_old_flag_and_its_new_spelling_together_are_refused(exported):
    result, _ = exported("--int8-image-dice-loss", "0.3", "--tolerance", "int8-image-dice-loss=0.2")
    assert result.exit_code == 2 and "give one of them, not both" in result.output


def test_help_lists_every_rule_and_build_setting_with_its_default():
    result = CliRunner().invoke(main, ["export", "--help"])
    assert result.exit_code == 0
    text = " ".join(result.output.split())
    for rule in RULES:
        assert f"{rule} = {getattr(Tolerances, rule):g}" in text
    for name in BUILD_SETTINGS:
        default = getattr(ExportOptions, name)
        assert f"{name} = {str(default).lower()}" in text


def test_the_gate_file_example_in_the_docs_reads_as_it_says(tmp_path: Path):
    section = (REPO_ROOT / "docs" / "export.md").read_text(encoding="utf-8").split("### A gate file", 1)[1]
    example = re.search(r"```toml\n(.*?)```", section, re.DOTALL)
    assert example is not None, "docs/export.md's 'A gate file' has no ```toml example"
    config = read_config(gate_file(tmp_path, example.group(1)))
    assert config.rules["int8_image_dice_loss"] == 0.12
    assert config.build["latency_runs"] == 20
    assert set(config.build) == set(BUILD_SETTINGS)  # the example shows every setting that has no flag


def test_reading_a_missing_rule_file_is_an_edgeseg_error(tmp_path: Path):
    with pytest.raises(SettingsFileError, match="gone.toml: cannot be read"):
        read_config(tmp_path / "gone.toml")


def test_the_report_says_which_rules_were_set_and_where(tmp_path: Path, tiny_card):
    from edgeseg.export.export_run import ExportReport
    from edgeseg.export.report import report_dict, tolerance_source_lines

    tolerances = Tolerances(int8_image_dice_loss=0.12)
    report = ExportReport(tmp_path, tmp_path, tiny_card, [], tolerances, {}, {}, {}, {})
    data = report_dict(report, {"int8_image_dice_loss": "gate.toml"})
    assert data["tolerances"]["int8_image_dice_loss"] == 0.12
    assert data["tolerance_sources"] == {"int8_image_dice_loss": "gate.toml"}
    lines = tolerance_source_lines(data["tolerances"], data["tolerance_sources"])
    assert lines == ["- set here: `int8_image_dice_loss = 0.12` (gate.toml)"]
    assert tolerance_source_lines(data["tolerances"], {}) == ["- every rule at its default"]
