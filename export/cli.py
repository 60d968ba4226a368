"""`edgeseg export RUN_DIR`: the exported forms, gated by parity with PyTorch. Heavy imports stay inside."""

from __future__ import annotations

from pathlib import Path

import click

from edgeseg.core.click_types import JSON_HELP, JSON_OUTPUT, old_spelling, overwrite_option
from edgeseg.core.progress import note, quiet_option

EXAMPLES = """\b
Examples:
  edgeseg export --fp16                          the default model's FP16 forms, checked on the reference set
  edgeseg export runs/lite0 --data DATA          every form this host can build, checked on DATA's val split
                                                 (and INT8 calibrated on its train split)
  edgeseg export runs/lite0 --fp16               fp32 + FP16 ONNX (+ FP16 TensorRT engine on a GPU host)
  edgeseg export runs/lite0 --int8 --calib DATA --calib-n 128
  edgeseg export runs/lite0 --format engine      on the Jetson / GPU host: the FP16 engine
  edgeseg export model.onnx --format engine --data DATA --out jetson/
                                                 on a Jetson without PyTorch: engine from the ONNX,
                                                 checked against that ONNX on onnxruntime's CPU
  edgeseg export runs/lite0 --simulate-fp16 4    also run PyTorch float16 on the CPU (slow) as an FP16 preview

\b
Forms (--format, comma-separated): onnx (fp32, always built), fp16, int8 (the fast CPU form, U8
activations), int8-trt (symmetric S8 QDQ, the form TensorRT parses), engine (TensorRT FP16),
engine-int8 (TensorRT from int8-trt). Exit status 0 when every built form passes parity,
1 when a form fails to build or breaks a tolerance (the message names the form, the image, the number).
The verdict, a line per form on stdout after the table:
  PASS fp16: worst image dDice -0.0003 (rule: Dice lost on one image <= 0.02)   the rule nearest its limit
  FAIL int8: Dice lost on one image 0.2100 on ISIC_0012345 > 0.1                the rule that decided
  SKIP engine: <why it was not built here>
Read export-report.md beside the model; export-report.json holds the same for tools (--json - also
prints it on stdout, the table and verdict then going to stderr).
"""


DEFAULT_MODEL_OUT = "default-model-export"  # the installed default model's folder is not ours to write in


def tolerance_options(command):
    """One option per rule of the parity gate (--fp16-confident-flips ...), its default from Tolerances."""
    import dataclasses

    from edgeseg.export.parity import Tolerances, tolerance_help

    for field in reversed(dataclasses.fields(Tolerances)):
        flag = "--" + field.name.replace("_", "-")
        command = click.option(
            flag, field.name, type=float, default=field.default, show_default=True, help=tolerance_help(field.name)
        )(command)
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


@click.command("export", epilog=EXAMPLES)
@click.argument("run_dir", metavar="[RUN_DIR|MODEL.onnx]", required=False, type=click.Path(exists=True, path_type=Path))
@click.option(
    "-o", "--out", "out_dir", type=click.Path(file_okay=False, path_type=Path), help="Output folder (default: RUN_DIR)."
)
@click.option(
    "--format",
    "formats",
    multiple=True,
    metavar="FORMS",
    help="Forms to build: onnx,fp16,int8,int8-trt,engine,engine-int8 (default: every form this host can build).",
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
@click.option("--parity-n", type=click.IntRange(1), help="Parity images, spread over the split (default: all of it).")
@tolerance_options
@click.option(
    "--workspace-mib", type=click.IntRange(16), default=1024, show_default=True, help="TensorRT builder workspace."
)
@click.option(
    "--keep-norm-fp32",
    is_flag=True,
    help="Keep normalisation and Resize layers in FP32 in the FP16 forms (done anyway when plain FP16 fails parity).",
)
@click.option(
    "--simulate-fp16",
    type=click.IntRange(0),
    default=0,
    show_default=True,
    metavar="N",
    help="Also run PyTorch in float16 on the CPU on N images: an advisory simulation of the FP16 forms (slow).",
)
@click.option(
    "--latency-runs",
    type=click.IntRange(1),
    default=10,
    show_default=True,
    help="Timed runs per form for the quick latency.",
)
@click.option(
    "-j", "--json", "json_path", type=JSON_OUTPUT, help=f"Also write export-report.json's content here {JSON_HELP}."
)
@old_spelling(
    "--parity-data",
    "--parity-data of `export` is now spelled -d/--data (as in eval, bench and train)",
    type=click.Path(exists=True, file_okay=False, path_type=Path),
)
@overwrite_option
@quiet_option
@click.pass_context
def export_command(
    ctx: click.Context,
    run_dir: Path | None,
    out_dir: Path | None,
    formats: tuple[str, ...],
    fp16: bool,
    int8: bool,
    calib: Path | None,
    calib_n: int,
    dynamic: bool,
    half_weights: bool,
    parity_data: Path | None,
    parity_n: int | None,
    workspace_mib: int,
    keep_norm_fp32: bool,
    simulate_fp16: int,
    latency_runs: int,
    json_path: Path | None,
    overwrite: bool,
    old_parity_data: Path | None,
    **tolerances: float,
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
    from edgeseg.core.click_types import model_or_default, renamed
    from edgeseg.export.export_run import ExportOptions, export_run, select_forms
    from edgeseg.export.parity import Tolerances

    if run_dir is None:
        run_dir, out_dir = model_or_default(None), out_dir or Path(DEFAULT_MODEL_OUT)
        note(f"the default model's forms go to {out_dir}/ (--out picks another folder)")
    refuse_an_earlier_export(run_dir, out_dir, json_path, overwrite)
    chosen, explicit = select_forms(_formats(formats), fp16=fp16, int8=int8)
    options = ExportOptions(
        formats=chosen,
        explicit=explicit,
        dynamic=dynamic,
        parity_data=renamed(ctx, "parity_data", "old_parity_data"),
        parity_n=parity_n,
        calib=calib,
        calib_n=calib_n,
        half_weights=half_weights,
        workspace_mib=workspace_mib,
        keep_norm_fp32=keep_norm_fp32,
        simulate_fp16=simulate_fp16,
        latency_runs=latency_runs,
        tolerances=Tolerances(**tolerances),
    )
    report = export_run(run_dir, out_dir, options, echo=note)
    tell_the_verdict(report, json_path)


def tell_the_verdict(report, json_path: Path | None) -> None:
    """Write the report files; print the table, a PASS/FAIL line per form and the warnings; exit 1 on a failure."""
    import json

    from edgeseg.core.click_types import json_to_stdout, write_json
    from edgeseg.export.report import report_dict, terminal_table, verdict_lines, write_report

    report_json, markdown_path = write_report(report)
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
