"""The INT8 form chosen by measurement, beside every-layer INT8 and the stride rule: gate, speed, and cost.

    python benchmarks/int8_sensitivity.py [--model models/default/model.onnx] [--data ../shared/data/isic2018]
        [--calib-n 64] [--runs 100] [--repeats 2]

Builds three INT8 forms of one model from the same training images (``edgeseg.export.int8_export``, U8
activations, percentile calibration): every layer INT8; float32 down to a quarter of the input (the stride
rule, the CPU form until now); float32 where the sensitivity pass chooses (``int8_sensitivity``, what `edgeseg
export` builds now), timing each build. Gates each on the whole val split with the export's default tolerances
(against PyTorch fp32 for a run directory, onnxruntime fp32 for an ONNX, as `edgeseg export` does); times all
of them interleaved with the fp32 ONNX (`edgeseg bench`'s measurement), ``--repeats`` times to show the noise
of a shared CPU; measures how long the chosen form takes onnxruntime to open, as exported and as a graph it
optimized beforehand, and which operators it fuses. Writes benchmarks/results/int8-sensitivity-cpu.json and .md.
"""

from __future__ import annotations

import collections
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import click

sys.path.insert(0, str(Path(__file__).resolve().parent))
from int8_options import gate, latency  # the same gate and interleaved timing as int8-options-cpu

RESULTS = Path(__file__).resolve().parent / "results"
REPO = Path(__file__).resolve().parents[1]
FORMS = {  # label -> export_int8 keyword arguments
    "every layer INT8": {"float_until_stride": 1},
    "stride rule: float down to 1/4 of the input (until now)": {"float_until_stride": 4},
    "measured: float where the sensitivity pass chooses (now)": {"measure_float_blocks": True},
}
MEASURED = "measured: float where the sensitivity pass chooses (now)"
ISA_FLAGS = ("avx2", "avx512f", "avx512_vnni", "avx_vnni", "amx_int8")
OPENS = 7


def build_forms(onnx_path: Path, images: list[Path], out: Path) -> tuple[dict[str, Path], dict[str, float]]:
    """Every form of FORMS from the same calibration images, and the seconds each build took."""
    from edgeseg.core.install_check import quiet_onnxruntime_tools
    from edgeseg.export.int8_export import export_int8
    from edgeseg.runtime.loaders import read_card

    card = read_card(onnx_path)
    forms, seconds = {}, {}
    for number, (label, options) in enumerate(FORMS.items()):
        click.echo(f"quantizing: {label}", err=True)
        started = time.perf_counter()
        with quiet_onnxruntime_tools():
            path = out / f"form{number}.int8.onnx"
            forms[label] = export_int8(onnx_path, card, path, images, progress=True, **options)
        seconds[label] = time.perf_counter() - started
    return forms, seconds


def open_ms(path: Path, optimized: bool = False) -> float:
    """Median milliseconds onnxruntime takes to open ``path`` (an optimized graph opens without re-optimizing)."""
    import onnxruntime as ort

    times = []
    for _ in range(OPENS):
        options = ort.SessionOptions()
        if optimized:
            options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
        started = time.perf_counter()
        ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        times.append((time.perf_counter() - started) * 1000)
    return statistics.median(times)


def optimized_graph(path: Path, out: Path, level: str) -> Path:
    """The graph onnxruntime's CPU provider runs ``path`` as, saved (``optimized_model_filepath``)."""
    import onnxruntime as ort

    levels = {
        "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
        "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
    }
    options = ort.SessionOptions()
    options.graph_optimization_level = levels[level]
    options.optimized_model_filepath = str(out)
    options.log_severity_level = 3  # "all" warns that its layout is this CPU's: that is what is measured here
    ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    return out


def fusion_summary(optimized: Path) -> dict:
    """Operators of an optimized graph, and the float operators left between a DequantizeLinear and a QuantizeLinear."""
    import onnx

    graph = onnx.load(str(optimized)).graph
    producers = {output: node for node in graph.node for output in node.output}
    islands = collections.Counter()
    for node in graph.node:
        sources = [producers.get(name) for name in node.input[:1]]
        if (
            sources
            and sources[0] is not None
            and sources[0].op_type == "DequantizeLinear"
            and node.op_type not in ("QuantizeLinear", "DequantizeLinear")
        ):
            islands[node.op_type] += 1
    operators = collections.Counter(f"{node.domain or 'ai.onnx'}:{node.op_type}" for node in graph.node)
    return {"operators": dict(operators.most_common()), "float_after_dequantize": dict(islands.most_common())}


def open_and_fusion(path: Path, scratch: Path) -> dict:
    extended = optimized_graph(path, scratch / "optimized-extended.onnx", "extended")
    cpu_specific = optimized_graph(path, scratch / "optimized-all.onnx", "all")
    return {
        "open_ms": {
            "as exported": open_ms(path),
            "optimized beforehand, portable (extended level)": open_ms(extended),
            "optimized beforehand for this CPU (all levels, NCHWc layout)": open_ms(cpu_specific, optimized=True),
        },
        "fusion": fusion_summary(extended),
    }


def cpu_flags() -> list[str]:
    """The instruction sets of ISA_FLAGS this CPU has, from /proc/cpuinfo (none where it cannot be read)."""
    from edgeseg.core.host import CPUINFO, read_text

    text, _ = read_text(CPUINFO)
    flags = next((line.split() for line in (text or "").splitlines() if line.startswith("flags")), [])
    return [flag for flag in ISA_FLAGS if flag in flags]


def gate_rows(parities: dict, seconds: dict[str, float]) -> list[list[str]]:
    rows = [
        [
            "form",
            "gate",
            "dDice",
            "dThrJ",
            "confident flips all / worst image",
            "worst image Dice lost",
            "min mask IoU",
            "build s",
            "why it failed",
        ]
    ]
    for label, parity in parities.items():
        rows.append(
            [
                label,
                "pass" if parity.passed else "FAIL",
                f"{parity.delta_dice:+.4f}",
                f"{parity.delta_threshold_jaccard:+.4f}",
                f"{parity.confident_flip_share:.5f} / {parity.max_image_confident_flip_share:.4f}",
                f"{parity.largest_dice_loss:.4f} ({parity.largest_dice_loss_image})",
                f"{parity.min_mask_iou:.3f} ({parity.min_mask_iou_image})",
                f"{seconds[label]:.0f}",
                "; ".join(parity.breaches),
            ]
        )
    return rows


def speed_rows(rounds: list[dict[str, float]]) -> list[list[str]]:
    rows = [
        [
            "form",
            *[f"run {number} p50 ms" for number in range(1, len(rounds) + 1)],
            *[f"run {number} vs fp32" for number in range(1, len(rounds) + 1)],
        ]
    ]
    for label in rounds[0]:
        rows.append(
            [label, *[f"{p50[label]:.2f}" for p50 in rounds], *[f"{p50['fp32'] / p50[label]:.2f}x" for p50 in rounds]]
        )
    return rows


def block_rows(choice: dict) -> list[list[str]]:
    total = sum(block["rms"] ** 2 for block in choice["blocks"]) or 1.0
    chosen = set(choice["float_blocks"])
    return [
        ["block", "RMS probability change, this block alone INT8", "share of the summed variance", "kept float32"],
        *[
            [
                block["block"],
                f"{block['rms']:.5f}",
                f"{block['rms'] ** 2 / total:.3f}",
                "yes" if block["block"] in chosen else "",
            ]
            for block in choice["blocks"]
        ],
    ]


@click.command()
@click.option(
    "--model",
    "source",
    type=click.Path(exists=True, path_type=Path),
    show_default=True,
    default=REPO / "models" / "default" / "model.onnx",
    help="A run directory (exported first) or an fp32 edgeseg ONNX.",
)
@click.option(
    "--data",
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    default=REPO.parent / "shared" / "data" / "isic2018",
    show_default=True,
)
@click.option(
    "--calib-n", default=64, show_default=True, type=click.IntRange(min=1), help="Training images to calibrate on."
)
@click.option(
    "--runs", default=100, show_default=True, type=click.IntRange(min=20), help="Timed runs per form and repeat."
)
@click.option("--repeats", default=2, show_default=True, type=click.IntRange(min=1), help="Interleaved timing runs.")
@click.option(
    "--out",
    "out_stem",
    type=click.Path(path_type=Path),
    default=RESULTS / "int8-sensitivity-cpu",
    show_default=True,
    help="Results stem: .json and .md are written.",
)
def main(source: Path, data: Path, calib_n: int, runs: int, repeats: int, out_stem: Path) -> None:
    """Build, gate and time the INT8 forms of one model; record the sensitivity pass's choice and its cost."""
    from edgeseg.core.data import discover_samples
    from edgeseg.core.names import is_onnx
    from edgeseg.export.export_run import spread
    from edgeseg.export.int8_export import read_float_choice

    onnx_path = source if is_onnx(source) else source / "model.onnx"
    if not onnx_path.is_file():
        sys.exit(f"{onnx_path}: export the run first (edgeseg export {source} --format onnx)")
    images = [sample.image for sample in spread(discover_samples(data, split="train"), calib_n)]
    with tempfile.TemporaryDirectory(prefix="edgeseg-int8-sensitivity-") as scratch:
        forms, seconds = build_forms(onnx_path, images, Path(scratch))
        choice = read_float_choice(forms[MEASURED])
        parities = gate(source, forms, data)
        rounds = [latency(onnx_path, forms, runs) for _ in range(repeats)]
        opening = open_and_fusion(forms[MEASURED], Path(scratch))
    write_record(out_stem, source, data, len(images), choice, parities, seconds, rounds, opening, runs)


def write_record(
    out_stem: Path,
    source: Path,
    data: Path,
    calibration_images: int,
    choice: dict,
    parities: dict,
    seconds: dict[str, float],
    rounds: list[dict[str, float]],
    opening: dict,
    runs: int,
) -> None:
    from edgeseg.core.files import portable_command, portable_path, write_text_atomic
    from edgeseg.core.host import host_info

    host = host_info()
    command = portable_command(sys.argv)
    pass_seconds = seconds[MEASURED] - seconds["stride rule: float down to 1/4 of the input (until now)"]
    record = {
        "command": command,
        "host": host,
        "cpu_flags": cpu_flags(),
        "model": portable_path(source),
        "data": portable_path(data),
        "calibration_images": calibration_images,
        "choice": choice,
        "build_seconds": seconds,
        "sensitivity_pass_extra_seconds": pass_seconds,
        "inference_p50_ms": rounds,
        "parity": {label: parity.to_dict() for label, parity in parities.items()},
        **opening,
    }
    write_text_atomic(out_stem.with_suffix(".json"), json.dumps(record, indent=2) + "\n")
    text = record_text(record, parities, runs)
    write_text_atomic(out_stem.with_suffix(".md"), "\n".join(text))
    click.echo("\n".join(text))


def record_text(record: dict, parities: dict, runs: int) -> list[str]:
    from edgeseg.core.host import describe_host
    from edgeseg.core.tables import markdown_table

    choice, opening = record["choice"], record
    calibration = f"{record['calibration_images']} images of the train split of `{record['data']}`"
    return [
        "# INT8 chosen by measurement: per-block sensitivity",
        "",
        f"Command: `{record['command']}`",
        "",
        *[f"- {line}" for line in describe_host(record["host"])],
        f"- CPU instruction sets: {', '.join(record['cpu_flags'])}",
        "",
        f"Model `{record['model']}`; calibration on {calibration}; gate: the export's default tolerances on the "
        f"whole val split.",
        "",
        "## Gate (whole val split) and build time",
        "",
        markdown_table(gate_rows(parities, record["build_seconds"])),
        "",
        f"The sensitivity pass added {record['sensitivity_pass_extra_seconds']:.0f} s to the export (the measured "
        f"build against the stride rule's, same calibration).",
        "",
        f"## Speed: inference p50 over {runs} interleaved runs, {len(record['inference_p50_ms'])} runs of it",
        "",
        markdown_table(speed_rows(record["inference_p50_ms"])),
        "",
        "## The choice",
        "",
        f"Float32: {', '.join(choice['float_blocks'])}; predicted share of the all-INT8 error left "
        f"{choice['predicted_share']:.3f}, measured {choice['chosen_rms'] / choice['all_int8_rms']:.3f} (RMS "
        f"{choice['chosen_rms']:.4f} against {choice['all_int8_rms']:.4f}) on {len(choice['images'])} "
        f"calibration images.",
        "",
        markdown_table(block_rows(choice)),
        "",
        "## Opening and fusion (the measured form)",
        "",
        *[f"- open, {how}: {ms:.0f} ms (median of {OPENS})" for how, ms in opening["open_ms"].items()],
        f"- operators onnxruntime runs (extended level): {json.dumps(opening['fusion']['operators'])}",
        f"- float operators right after a DequantizeLinear: {json.dumps(opening['fusion']['float_after_dequantize'])}",
        "",
    ]


if __name__ == "__main__":
    main()
