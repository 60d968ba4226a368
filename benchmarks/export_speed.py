"""CPU inference speed of the exported forms: PyTorch eager vs onnxruntime fp32 vs INT8 (and FP16 ONNX).

    .venv/bin/python benchmarks/export_speed.py [--run-dir RUN_DIR] [--runs 50]

The default model (ModelCard() defaults) at its input size, batch 1, inference only (preprocessing
excluded). A trained run directory is used when given; otherwise the network has random weights,
which is fine for speed (the arithmetic is the same) and says nothing about INT8 accuracy (that is
the export's parity gate, on a trained model). All forms are timed in one process, interleaved
round by round, median of --runs after warm-up. Before each timed call the process sleeps briefly:
onnxruntime's worker threads spin after a run and would otherwise slow the next PyTorch call ~10x
on a 2-core machine, which is not what either backend costs alone.

Writes benchmarks/results/export-speed-cpu.json and .md (command, host, load average, figures).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

RESULTS = Path(__file__).resolve().parent / "results"
PAUSE_S = 0.03


def calibration_images(card, scratch: Path, n: int) -> tuple[list[Path], str]:
    """Real images when the ISIC data are here, else synthetic ones (speed does not depend on them)."""
    from edgeseg.data import discover_samples

    root = Path(os.environ.get("EDGESEG_ISIC_DIR", Path(__file__).resolve().parents[2] / "shared" / "data" / "isic2018"))
    if card.provenance.data and Path(card.provenance.data).is_dir():
        root = Path(card.provenance.data)
    if root.is_dir():
        samples = discover_samples(root)
        step = max(1, len(samples) // n)
        return [sample.image for sample in samples[::step][:n]], f"{n} images from {root}"
    from edgeseg.synthetic import generate_dataset

    samples = generate_dataset(scratch / "synthetic", n=n, size=max(card.input_size), seed=0)
    return [sample.image for sample in samples], f"{n} synthetic images (no real data found at {root})"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--run-dir", type=Path, help="Trained run directory (default: random weights, default card).")
    parser.add_argument("--runs", type=int, default=50)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--calib-n", type=int, default=32)
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()

    import torch

    from edgeseg.card import ModelCard
    from edgeseg.export.fp16_export import export_fp16
    from edgeseg.export.int8_export import export_int8
    from edgeseg.export.onnx_export import export_onnx
    from edgeseg.runtime.backends import OnnxRuntimeBackend
    from edgeseg.train.model import build_model, load_model
    from edgeseg.train.torch_backend import TorchBackend

    if args.run_dir:
        model, card = load_model(args.run_dir)
        weights = f"trained run {args.run_dir}"
    else:
        card = ModelCard()
        torch.manual_seed(0)
        model = build_model(card).eval()
        weights = "random weights (no run dir given): speed only, says nothing about INT8 accuracy"
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="edgeseg-bench-") as scratch:
        scratch = Path(scratch)
        started = time.perf_counter()
        fp32 = export_onnx(model, card, scratch / "model.onnx")
        fp16 = export_fp16(fp32, card, scratch / "model.fp16.onnx")
        images, calibration = calibration_images(card, scratch, args.calib_n)
        int8 = export_int8(fp32, card, scratch / "model.int8.onnx", images)
        export_seconds = time.perf_counter() - started
        sizes = {name: path.stat().st_size for name, path in (("onnxruntime fp32", fp32), ("onnxruntime fp16", fp16), ("onnxruntime int8", int8))}

        backends = {
            "pytorch eager fp32": TorchBackend(model, card),
            "onnxruntime fp32": OnnxRuntimeBackend(fp32),
            "onnxruntime int8": OnnxRuntimeBackend(int8),
            "onnxruntime fp16": OnnxRuntimeBackend(fp16),
        }
        batch = np.random.default_rng(0).standard_normal((1, 3, *card.input_size)).astype(np.float32)
        outputs = {name: backend.infer(batch) for name, backend in backends.items()}
        for _ in range(args.warmup):
            for backend in backends.values():
                backend.infer(batch)
        times: dict[str, list[float]] = {name: [] for name in backends}
        for _ in range(args.runs):
            for name, backend in backends.items():
                time.sleep(PAUSE_S)
                tick = time.perf_counter()
                backend.infer(batch)
                times[name].append((time.perf_counter() - tick) * 1000)
    load_after = os.getloadavg()

    median = {name: statistics.median(values) for name, values in times.items()}
    reference = outputs["onnxruntime fp32"]
    result = {
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "model": {"architecture": card.architecture, "encoder": card.encoder, "architecture_kwargs": card.architecture_kwargs,
                  "input_size": list(card.input_size), "weights": weights},
        "calibration": calibration,
        "export_seconds": round(export_seconds, 1),
        "runs": args.runs, "warmup": args.warmup, "batch": 1, "pause_before_each_call_s": PAUSE_S,
        "median_ms": median,
        "p10_ms": {name: float(np.percentile(values, 10)) for name, values in times.items()},
        "p90_ms": {name: float(np.percentile(values, 90)) for name, values in times.items()},
        "size_bytes": sizes,
        "max_abs_logit_difference_to_onnx_fp32": {name: float(np.abs(out - reference).max()) for name, out in outputs.items()},
        "speedups": {
            "int8 vs onnxruntime fp32": median["onnxruntime fp32"] / median["onnxruntime int8"],
            "onnxruntime fp32 vs pytorch eager": median["pytorch eager fp32"] / median["onnxruntime fp32"],
        },
        "targets": {"int8 vs onnxruntime fp32": 1.5, "onnxruntime fp32 vs pytorch eager": 1.4},
        "host": {
            "cpu": _cpu_name(), "cpu_count": os.cpu_count(), "platform": platform.platform(),
            "torch_threads": torch.get_num_threads(), "load_average_before": load_before, "load_average_after": load_after,
            "versions": {"torch": torch.__version__, "onnxruntime": __import__("onnxruntime").__version__},
        },
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "export-speed-cpu.json").write_text(json.dumps(result, indent=2) + "\n")
    (args.out / "export-speed-cpu.md").write_text(markdown(result))
    print(markdown(result))
    return 0


def markdown(result: dict) -> str:
    model = result["model"]
    lines = [
        "# Export speed on CPU",
        "",
        f"`{result['command']}` ({result['created']})",
        "",
        f"Model: {model['architecture']} {model['encoder']} {model['architecture_kwargs'] or ''} at "
        f"{model['input_size'][0]}x{model['input_size'][1]}, batch 1, {model['weights']}. INT8 calibration: {result['calibration']}.",
        f"Host: {result['host']['cpu']}, {result['host']['cpu_count']} logical CPUs, {result['host']['platform']}; "
        f"load average before/after {result['host']['load_average_before'][0]:.1f}/{result['host']['load_average_after'][0]:.1f} "
        "(a shared machine: other jobs ran at the same time).",
        f"Median of {result['runs']} interleaved runs after {result['warmup']} warm-up rounds, inference only.",
        "",
        "| form | median ms | p10 ms | p90 ms | size MiB |",
        "|---|---|---|---|---|",
    ]
    for name, value in result["median_ms"].items():
        size = result["size_bytes"].get(name)
        lines.append(f"| {name} | {value:.1f} | {result['p10_ms'][name]:.1f} | {result['p90_ms'][name]:.1f} | "
                     f"{'-' if size is None else f'{size / 2**20:.1f}'} |")
    lines += ["", "| speed-up | measured | target |", "|---|---|---|"]
    for name, value in result["speedups"].items():
        lines.append(f"| {name} | {value:.2f}x | >= {result['targets'][name]}x |")
    return "\n".join(lines) + "\n"


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


if __name__ == "__main__":
    sys.exit(main())
