"""`edgeseg export RUN_DIR`: the exported forms, gated by parity with PyTorch. Heavy imports stay inside."""

from __future__ import annotations

from pathlib import Path

import click

from edgeseg.core import forms
from edgeseg.core.click_types import JSON_HELP, JSON_OUTPUT, old_spelling, overwrite_option
from edgeseg.core.forms import exported_names
from edgeseg.core.progress import note, quiet_option

EXAMPLES = """\b
Examples:
  edgeseg export --fp16                          the default model's FP16 forms, checked on the reference set
  edgeseg export runs/lite0 --data DATA          every form this host can build, checked on DATA's val split
                                                 (and INT8 calibrated on its train split)
  edgeseg export runs/lite0 --fp16               fp32 + FP16 ONNX (+ FP16 TensorRT engine on a GPU host)
  edgeseg export runs/lite0 --int8 --calib DATA --calib-n 128
  edgeseg export runs/lite0 --int8 --tolerance int8-image-dice-loss=0.12
                                                 one rule of the parity gate changed (repeatable)
  edgeseg export runs/lite0 --config gate.toml   rules and build settings from a file (listed below)
  edgeseg export runs/lite0 --format engine      on the Jetson / GPU host: the FP16 engine
  edgeseg export model.onnx --format engine --data DATA --out jetson/
                                                 on a Jetson without PyTorch: engine from the ONNX,
                                                 checked against that ONNX on onnxruntime's CPU

\b
Forms: see "Forms" below (--format takes them comma-separated; onnx is always built). Exit status 0 when
every built form passes parity, 1 when a form fails to build or breaks a tolerance (the message names
the form, the image, the number).
The verdict, a line per form on stdout after the table:
  PASS fp16: worst image dDice -0.0003 (rule: Dice lost on one image <= 0.02)   the rule nearest its limit
  FAIL int8: Dice lost on one image 0.2100 on ISIC_0012345 > 0.1                the rule that decided
  SKIP engine: <why it was not built here>
Read export-report.md beside the model; export-report.json holds the same for tools (--json - also
prints it on stdout, the table and verdict then going to stderr).

\b
A --config file (TOML; docs/export.md shows one):
  int8_image_dice_loss = 0.12      a rule of the gate, as --tolerance names it (- or _ alike)
  [build]
  latency_runs = 20                a build setting that has no flag
"""


DEFAULT_MODEL_OUT = "default-model-export"  # the installed default model's folder is not ours to write in

# The flags the gate's rules had before --tolerance (one per field of Tolerances then): still taken, with a note.
OLD_TOLERANCE_FLAGS = (
    "fp32_max_abs_probability",
    "confident_margin",
    "fp16_confident_flips",
    "fp16_image_confident_flips",
    "fp16_abs_delta_dice",
    "fp16_abs_delta_threshold_jaccard",
    "fp16_image_dice_loss",
    "int8_confident_flips",
    "int8_image_confident_flips",
    "int8_abs_delta_dice",
    "int8_abs_delta_threshold_jaccard",
    "int8_image_dice_loss",
)
# The build settings that were flags and now live only in the --config file's [build] table.
OLD_BUILD_FLAGS = {
    "--workspace-mib": {"type": click.IntRange(16)},
    "--keep-norm-fp32": {"is_flag": True},
    "--simulate-fp16": {"type": click.IntRange(0)},
    "--latency-runs": {"type": click.IntRange(1)},
}


class ExportCommand(click.Command):
    """`export`, whose help ends with the gate's rules and the file-only settings, read from their dataclasses
    with their defaults (only when the help is shown: reading them imports the export part)."""

    def format_epilog(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        super().format_epilog(ctx, formatter)
        from edgeseg.export.export_config import build_rows, rule_rows

        with formatter.section("Forms (the table of forms, edgeseg.core.forms, in build order)"):
            formatter.write_dl([(row.name, row.description) for row in forms.FORMS if row.exported], col_max=14)
        with formatter.section("Rules of the gate (--tolerance RULE=VALUE, or RULE = VALUE in the --config file)"):
            formatter.write_dl(rule_rows(), col_max=34)
        with formatter.section("Only in the --config file, its [build] table (each was a flag, still taken)"):
            formatter.write_dl(build_rows())


class ToleranceRule(click.ParamType):
    """RULE=VALUE: a rule of the parity gate (a field of Tolerances, - or _ alike) and its limit."""

    name = "RULE=VALUE"

    def convert(self, value, param, ctx) -> tuple[str, float]:
        if isinstance(value, tuple):
            return value
        from edgeseg.export.export_config import parse_tolerance

        try:
            return parse_tolerance(str(value))
        except ValueError as error:
            self.fail(str(error), param, ctx)


def old_spellings(command):
    """The flags export had before -n/--images, --tolerance and --config: hidden, still taken, each with a note."""
    command = old_spelling(
        "--parity-data",
        "--parity-data of `export` is now spelled -d/--data (as in eval, bench and train)",
        type=click.Path(exists=True, file_okay=False, path_type=Path),
    )(command)
    command = old_spelling("--parity-n", "--parity-n of `export` is now spelled -n/--images", type=click.IntRange(1))(
        command
    )
    for rule in OLD_TOLERANCE_FLAGS:
        flag = "--" + rule.replace("_", "-")
        command = old_spelling(flag, f"{flag} is now spelled --tolerance {flag[2:]}=VALUE", type=float)(command)
    for flag, attrs in OLD_BUILD_FLAGS.items():
        key = flag[2:].replace("-", "_")
        where = f"`{key} = ...` in the [build] table of a --config FILE.toml (see --help)"
        command = old_spelling(flag, f"{flag} is now {where}", **attrs)(command)
    return command


def _formats(values: tuple[str, ...]) -> tuple[str, ...]:
    return tuple(part.strip() for value in values for part in value.split(",") if part.strip())


def refuse_an_earlier_export(source: Path, out_dir: Path | None, json_path: Path | None, overwrite: bool) -> None:
    """The overwrite rule for an export: a folder holds an earlier export when its report is there (written last).
    The forms an export killed before its report left are rebuilt, as a run killed before its checkpoint restarts."""
    from edgeseg.core.files import prepare_outputs
    from edgeseg.core.names import is_onnx
    from edgeseg.export.report import JSON_NAME, MARKDOWN_NAME

    out_dir = out_dir or (source.parent if is_onnx(source) else source)
    prepare_outputs(
        [
            ("--out: an earlier export", out_dir / JSON_NAME),
            ("--out: an earlier export", out_dir / MARKDOWN_NAME),
            ("--json", json_path),
        ],
        overwrite,
    )


@click.command("export", cls=ExportCommand, epilog=EXAMPLES)
@click.argument("run_dir", metavar="[RUN_DIR|MODEL.onnx]", required=False, type=click.Path(exists=True, path_type=Path))
@click.option(
    "-o", "--out", "out_dir", type=click.Path(file_okay=False, path_type=Path), help="Output folder (default: RUN_DIR)."
)
@click.option(
    "--format",
    "formats",
    multiple=True,
    metavar="FORMS",
    help=f"Forms to build: {','.join(exported_names())} (default: every form this host can build).",
)
@click.option(
    "--fp16", is_flag=True, help="FP16 ONNX, and the FP16 TensorRT engine where TensorRT and a GPU are present."
)
@click.option("--int8", is_flag=True, help="INT8 ONNX (static QDQ, per-channel), and the INT8 engine on a GPU host.")
@click.option(
    "--calib",
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    help="INT8 calibration data: its splits/train.txt images, else all (default: the --data folder, "
    "else edgeseg's reference set).",
)
@click.option("--calib-n", type=click.IntRange(1), default=64, show_default=True, help="Calibration images.")
@click.option(
    "--dynamic", is_flag=True, help="ONNX with free batch, height and width (default: the card's static shape)."
)
@click.option(
    "--half-weights",
    is_flag=True,
    help="Store the fp32 ONNX's weights as float16, cast back to float32 in the graph: half the file, the "
    "same fp32 speed; judged by the FP16 parity rules. For a model under a size limit, like edgeseg's default.",
)
@click.option(
    "-d",
    "--data",
    "parity_data",
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    help="Parity images with masks: its splits/val.txt pairs, else all; also the INT8 calibration data unless "
    "--calib names another (default: edgeseg's reference set, 40 ISIC images: a small set).",
)
@click.option(
    "-n",
    "--images",
    "parity_n",
    type=click.IntRange(1),
    help="Parity images, spread over the split (default: all of it).",
)
@click.option(
    "--tolerance",
    "tolerances",
    type=ToleranceRule(),
    multiple=True,
    help="A rule of the parity gate and its limit, e.g. int8-image-dice-loss=0.12 (repeatable; wins over "
    "--config). The rules and their defaults: below.",
)
@click.option(
    "--config",
    "config_path",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    metavar="FILE.toml",
    help="Rules of the gate (RULE = VALUE) and, in a [build] table, the settings that have no flag (below).",
)
@click.option(
    "-j", "--json", "json_path", type=JSON_OUTPUT, help=f"Also write export-report.json's content here {JSON_HELP}."
)
@overwrite_option
@quiet_option
@old_spellings
@click.pass_context
def export_command(
    ctx: click.Context, run_dir: Path | None, out_dir: Path | None, json_path: Path | None, overwrite: bool, **_
) -> None:
    """Export a training run to ONNX (fp32, FP16, INT8) and TensorRT, each checked against PyTorch.

    Every form runs on the same images through the runtime's preprocessing; its probabilities and
    masks are compared with PyTorch fp32's and its Dice with the ground truth. A form outside its
    tolerances fails the export. Writes the models, export-report.json and export-report.md.

    Without RUN_DIR, edgeseg's default model (an ONNX that ships with edgeseg) is the source, and the
    forms go to ./default-model-export/.

    Without --data or --calib, parity is checked (and INT8 calibrated) on edgeseg's reference set,
    a few real ISIC images that ship with it, and the report says it was the small set; --data DIR
    runs the full check on your data, and serves calibration too unless --calib names another folder.

    Given an exported model.onnx instead of a run directory, the other forms are built from it and
    checked against it (onnxruntime fp32 on the CPU): no PyTorch needed, as on a Jetson.
    """
    from edgeseg.core.click_types import model_or_default
    from edgeseg.export.export_run import export_run

    options, rule_sources = export_options(ctx)
    if run_dir is None:
        run_dir, out_dir = model_or_default(None), out_dir or Path(DEFAULT_MODEL_OUT)
        note(f"the default model's forms go to {out_dir}/ (--out picks another folder)")
    refuse_an_earlier_export(run_dir, out_dir, json_path, overwrite)
    report = export_run(run_dir, out_dir, options, echo=note)
    tell_the_verdict(report, json_path, rule_sources)


def export_options(ctx: click.Context):
    """The ExportOptions of the command line and its --config file (a flag wins over the file), and where each
    rule of the gate that was set came from (for the report)."""
    from edgeseg.core.click_types import renamed
    from edgeseg.export.export_config import ExportConfig, read_config
    from edgeseg.export.export_run import ExportOptions, select_forms

    given = ctx.params
    config = read_config(given["config_path"]) if given["config_path"] else ExportConfig()
    tolerances, rule_sources = gate_rules(ctx, config)
    chosen, explicit = select_forms(_formats(given["formats"]), fp16=given["fp16"], int8=given["int8"])
    options = ExportOptions(
        formats=chosen,
        explicit=explicit,
        dynamic=given["dynamic"],
        half_weights=given["half_weights"],
        parity_data=renamed(ctx, "parity_data", "old_parity_data"),
        parity_n=renamed(ctx, "parity_n", "old_parity_n"),
        calib=given["calib"],
        calib_n=given["calib_n"],
        tolerances=tolerances,
        **build_settings(ctx, config),
    )
    return options, rule_sources


def gate_rules(ctx: click.Context, config):
    """Tolerances: their defaults, then the --config file's rules, then the flags (--tolerance, the old flags);
    and rule -> where its value came from, for every rule that was set."""
    from edgeseg.export.parity import Tolerances

    values, sources = dict(config.rules), dict.fromkeys(config.rules, str(config.path))
    typed = dict(ctx.params["tolerances"])
    for rule in OLD_TOLERANCE_FLAGS:
        old_value, old_flag = ctx.params["old_" + rule], "--" + rule.replace("_", "-")
        if old_value is None:
            continue
        if rule in typed:
            raise click.UsageError(
                f"{old_flag} is the old spelling of --tolerance {old_flag[2:]}=VALUE: give one of them, not both"
            )
        values[rule], sources[rule] = old_value, old_flag
    for rule, value in typed.items():
        values[rule], sources[rule] = value, "--tolerance"
    return Tolerances(**values), sources


def build_settings(ctx: click.Context, config) -> dict:
    """The [build] settings of the --config file, each overridden by its old flag where that was given."""
    settings = dict(config.build)
    for flag in OLD_BUILD_FLAGS:
        key = flag[2:].replace("-", "_")
        if ctx.params["old_" + key] is not None:
            settings[key] = ctx.params["old_" + key]
    return settings


def tell_the_verdict(report, json_path: Path | None, rule_sources: dict[str, str] | None = None) -> None:
    """Write the report files; print the table, a PASS/FAIL line per form and the warnings; exit 1 on a failure."""
    import json

    from edgeseg.core.click_types import json_to_stdout, write_json
    from edgeseg.export.report import report_dict, terminal_table, verdict_lines, write_report

    report_json, markdown_path = write_report(report, tolerance_sources=rule_sources)
    if json_path is not None:
        write_json(json_path, json.loads(report_json.read_text(encoding="utf-8")))  # the same document, to the letter
    to_stderr = json_to_stdout(json_path)  # stdout carries the JSON alone
    click.echo(terminal_table(report_dict(report)), err=to_stderr)
    for line in verdict_lines(report):
        click.echo(line, err=to_stderr)
    click.echo(f"report: {markdown_path} (and {report_json.name})", err=to_stderr)
    for text in report.unjudged():
        click.echo(f"warning: {text}", err=True)
    failures = report.failures()
    if failures:
        raise click.ClickException("export failed the parity gate:\n  " + "\n  ".join(failures))
