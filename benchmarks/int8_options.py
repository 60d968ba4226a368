"""INT8 choices side by side: each quantization of one trained model, judged by the parity gate and timed.

    python benchmarks/int8_options.py --run runs/default-v1 [--data ../shared/data/isic2018] [--runs 100]
    python benchmarks/int8_options.py --run runs/lite2-ft --options float-layers

Every option quantizes the run's fp32 ONNX with ``edgeseg.export.int8_export``. Two tables
(``OPTION_SETS``): ``calibration`` (activations U8 or symmetric S8, MinMax / entropy / percentile
calibration, 64 or 256 training images, every layer INT8), and ``float-layers`` (how many of the
network's leading layers stay float32: none, down to 1/4 or 1/16 of the input). All forms go
through one parity pass against PyTorch fp32 on the whole val split (the export's gate, default
tolerances) and one interleaved latency run with the fp32 ONNX (``edgeseg bench``'s measurement), so
every figure comes from one process on one machine. Writes benchmarks/results/int8-options-cpu.json
and .md (``float-layers``: int8-float-layers-cpu.json and .md).
"""

from __future__ import annotations

import contextlib
import json
import sys
import tempfile
from pathlib import Path

import click

RESULTS = Path(__file__).resolve().parent / "results"
OPTION_SETS = {  # name -> (label, activations, calibration, calibration images, float_until_stride, float_bias)
    # Which calibration (results/int8-options-cpu.md, on the lite0 default then): every layer INT8.
    "calibration": (
        ("u8 minmax 64 (the default until this table)", "u8", "minmax", 64, 1, False),
        ("s8 minmax 64 (TensorRT-ready)", "s8", "minmax", 64, 1, False),
        ("u8 entropy 64", "u8", "entropy", 64, 1, False),
        ("u8 percentile 64 (the default now)", "u8", "percentile", 64, 1, False),
        ("u8 minmax 256", "u8", "minmax", 256, 1, False),
    ),
    # Which leading layers stay float32 (results/int8-float-layers-cpu.md, on the lite2 default), for
    # the CPU form (int8) and TensorRT's (int8-trt: S8S8, float32 biases), both percentile on 64 images.
    "float-layers": (
        ("int8, every layer INT8 (until this table)", "u8", "percentile", 64, 1, False),
        ("int8, float down to 1/4 of the input (now)", "u8", "percentile", 64, 4, False),
        ("int8-trt, every layer INT8 (until this table)", "s8", "percentile", 64, 1, True),
        ("int8-trt, float down to 1/4 (now)", "s8", "percentile", 64, 4, True),
        ("int8-trt, float down to 1/16", "s8", "percentile", 64, 16, True),
    ),
}


def build_options(onnx_path: Path, data: Path, out: Path, options) -> dict[str, Path]:
    from edgeseg.core.data import discover_samples
    from edgeseg.export.export_run import spread
    from edgeseg.export.int8_export import export_int8
    from edgeseg.runtime.loaders import read_card

    card = read_card(onnx_path)
    train = [sample.image for sample in discover_samples(data, split="train")]
    forms = {}
    for number, (label, activations, calibration, count, float_until_stride, float_bias) in enumerate(options):
        click.echo(f"quantizing: {label}", err=True)
        forms[label] = export_int8(
            onnx_path,
            card,
            out / f"option{number}.int8.onnx",
            spread(train, count),
            activations=activations,
            calibration=calibration,
            float_until_stride=float_until_stride,
            float_bias=float_bias,
        )
    return forms


def gate(source: Path, forms: dict[str, Path], data: Path) -> dict:
    """Every form through the export's parity gate on the whole val split, against ``source``: a run directory
    on PyTorch fp32, or an fp32 ONNX on onnxruntime's CPU provider (as `edgeseg export MODEL.onnx` checks)."""
    from edgeseg.core.data import discover_samples
    from edgeseg.core.names import is_onnx
    from edgeseg.export.parity import Tolerances, run_parity
    from edgeseg.loading.open import open_model

    val = discover_samples(data, split="val")
    with contextlib.ExitStack() as stack:
        reference = stack.enter_context(open_model(source, "onnxruntime-cpu" if is_onnx(source) else "torch-cpu"))
        candidates = {
            label: (stack.enter_context(open_model(path, "onnxruntime-cpu")), "int8") for label, path in forms.items()
        }
        return run_parity(reference, candidates, val, Tolerances())


def latency(onnx_path: Path, forms: dict[str, Path], runs: int) -> dict[str, float]:
    """Inference p50 (ms) of the fp32 ONNX and every option, interleaved in one run."""
    from edgeseg.core.files import portable_path
    from edgeseg.evaluate.latency import run_bench

    report = run_bench([onnx_path, *forms.values()], runs=runs, warmup=10)
    by_path = {record["path"]: record["stages"]["inference"]["p50_ms"] for record in report["results"]}
    return {
        "fp32": by_path[portable_path(onnx_path)],
        **{label: by_path[portable_path(path)] for label, path in forms.items()},
    }


def table(parities: dict, p50: dict[str, float]) -> list[list[str]]:
    rows = [
        [
            "option",
            "gate",
            "dDice",
            "dThrJ",
            "confident flips all / worst image",
            "worst image dDice",
            "inference p50 ms",
            "speed-up vs fp32",
            "why it failed",
        ]
    ]
    rows.append(["fp32 ONNX (reference for speed)", "-", "-", "-", "-", "-", f"{p50['fp32']:.2f}", "1.00", ""])
    for label, parity in parities.items():
        rows.append(
            [
                label,
                "pass" if parity.passed else "FAIL",
                f"{parity.delta_dice:+.4f}",
                f"{parity.delta_threshold_jaccard:+.4f}",
                f"{parity.confident_flip_share:.5f} / {parity.max_image_confident_flip_share:.4f}",
                f"{-parity.largest_dice_loss:+.4f} ({parity.largest_dice_loss_image})",
                f"{p50[label]:.2f}",
                f"{p50['fp32'] / p50[label]:.2f}",
                "; ".join(parity.breaches),
            ]
        )
    return rows


@click.command()
@click.option("--run", "run_dir", required=True, type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option(
    "--data",
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    default=Path(__file__).resolve().parents[2] / "shared" / "data" / "isic2018",
    show_default=True,
)
@click.option("--runs", default=100, show_default=True, type=click.IntRange(min=20), help="Timed runs per form.")
@click.option(
    "--options",
    "option_set",
    type=click.Choice(list(OPTION_SETS)),
    default="calibration",
    show_default=True,
    help="Which table: calibration methods, or how many leading layers stay float32.",
)
@click.option(
    "--out",
    "out_stem",
    type=click.Path(path_type=Path),
    help="Results stem [results/int8-options-cpu, or results/int8-float-layers-cpu with --options float-layers].",
)
def main(run_dir: Path, data: Path, runs: int, option_set: str, out_stem: Path | None) -> None:
    """Quantize one trained model every way in one of OPTION_SETS; gate and time each against its fp32 ONNX."""
    from edgeseg.core.files import portable_command, portable_path, write_text_atomic
    from edgeseg.core.host import describe_host, host_info
    from edgeseg.core.tables import markdown_table

    out_stem = out_stem or RESULTS / ("int8-options-cpu" if option_set == "calibration" else "int8-float-layers-cpu")
    onnx_path = run_dir / "model.onnx"
    if not onnx_path.is_file():
        sys.exit(f"{onnx_path}: export the run first (edgeseg export {run_dir} --format onnx)")
    with tempfile.TemporaryDirectory(prefix="edgeseg-int8-options-") as scratch:
        forms = build_options(onnx_path, data, Path(scratch), OPTION_SETS[option_set])
        parities = gate(run_dir, forms, data)
        p50 = latency(onnx_path, forms, runs)
    rows = table(parities, p50)
    host = host_info()
    command = portable_command(sys.argv)
    record = {
        "command": command,
        "host": host,
        "run": portable_path(run_dir),
        "inference_p50_ms": p50,
        "parity": {label: parity.to_dict() for label, parity in parities.items()},
    }
    write_text_atomic(out_stem.with_suffix(".json"), json.dumps(record, indent=2) + "\n")
    text = [
        "# INT8 options for one trained model",
        "",
        f"Command: `{command}`",
        "",
        *[f"- {line}" for line in describe_host(host)],
        "",
        "Gate: the export's default tolerances, against PyTorch fp32, on the whole val split; latency: "
        f"inference stage p50 over {runs} interleaved runs, onnxruntime CPU.",
        "",
        markdown_table(rows),
        "",
    ]
    write_text_atomic(out_stem.with_suffix(".md"), "\n".join(text))
    click.echo("\n".join(text))


if __name__ == "__main__":
    main()
