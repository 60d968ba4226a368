"""`edgeseg bench`: latency per stage and end to end, and accuracy if asked, for every form of a model.

A form is a file the runtime opens (an ONNX in fp32, fp16 or int8; a TensorRT engine) or a run
directory, which runs on PyTorch. Each form runs on each backend given that applies to it. The forms
are timed *interleaved*: every iteration sends the same frame once through every form (the starting
form rotates), so the figures being compared come from one process run under the same conditions:
the same thermal state, the same background load. Warm-up iterations run first and are not counted.

A form that cannot run on this host (no TensorRT, no GPU provider, no PyTorch) is reported as
"skipped" with the reason; one that should run but raised is "failed" with the error.

This module is the command line's glue: it imports only click and the core at the top; the runtime
(and, for a run directory, PyTorch) is imported when a form is opened.
"""

from __future__ import annotations

import contextlib
import json
import shlex
import sys
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import click
import numpy as np

from edgeseg.files import write_text_atomic

STAGES = ("preprocess", "inference", "postprocess", "end_to_end")
STAT_KEYS = ("mean_ms", "p50_ms", "p90_ms", "p99_ms", "min_ms", "max_ms")
BACKEND_CHOICES = (
    "auto", "onnxruntime-cpu", "onnxruntime-cuda", "onnxruntime-tensorrt", "tensorrt", "torch-cpu", "torch-cuda",
)
# Which backends can run which kind of form. "auto" picks the fastest this host offers.
APPLICABLE_BACKENDS = {
    "torch": ("auto", "torch-cpu", "torch-cuda"),
    "onnx": ("auto", "onnxruntime-cpu", "onnxruntime-cuda", "onnxruntime-tensorrt"),
    "engine": ("auto", "tensorrt"),
}
ONNX_ORDER = ("model.onnx", "model.fp16.onnx", "model.int8.onnx")  # the names `edgeseg export` writes
ENGINE_SUFFIXES = (".engine", ".plan", ".trt")  # as edgeseg.runtime.model_file reads them
NOISY_RATIO = 1.5  # p99 / p50 of end-to-end above this: the machine was busy while measuring
FRAME_SIZE = (480, 640)  # (height, width) of the default synthetic frame: a VGA camera frame
FRAME_SEED = 2024
DEFAULT_RUNS = 100
DEFAULT_WARMUP = 10

INTERLEAVE_NOTE = (
    "forms were interleaved: each timed iteration sends the frame once through every form, the starting form "
    "rotating, so all figures come from one process run under the same conditions"
)
TIMING_NOTE = (
    "end_to_end is wall time (time.perf_counter) around the whole Segmenter.segment() call, one frame at a time, "
    "synchronous as an application sees it; fps = 1000 / mean end_to_end. On a GPU the TensorRT and onnxruntime "
    "CUDA backends synchronise inside infer(), so inference and end_to_end include the host-device copies"
)


class FormUnavailable(RuntimeError):
    """A form that cannot run on this host (not an error in the form itself)."""


@dataclass(frozen=True)
class Form:
    """One model form: a file the runtime opens ("onnx", "engine") or a run directory ("torch")."""

    label: str
    path: Path
    kind: str


@dataclass
class Result:
    form: Form
    backend: str  # as asked; replaced by the opened backend's own name (auto -> e.g. onnxruntime-cpu)
    status: str = "ok"  # ok | skipped | failed
    reason: str | None = None
    precision: str | None = None
    input_size: tuple[int, int] | None = None
    times_ms: dict[str, list[float]] = field(default_factory=lambda: {stage: [] for stage in STAGES})
    accuracy: dict[str, Any] | None = None
    accuracy_reason: str | None = None
    segmenter: Any = None

    def stop(self, status: str, reason: str) -> None:
        self.status, self.reason = status, reason


# --- finding the forms ---------------------------------------------------------------------------


def is_run_dir(path: Path) -> bool:
    return (path / "card.json").is_file() and (path / "model.safetensors").is_file()


def forms_in_directory(directory: Path) -> list[Form]:
    """PyTorch for a run directory, and every ONNX and engine file in it (`edgeseg export` writes there)."""
    forms = [Form("pytorch", directory, "torch")] if is_run_dir(directory) else []
    known = {name: rank for rank, name in enumerate(ONNX_ORDER)}
    onnx_files = sorted(directory.glob("*.onnx"), key=lambda p: (known.get(p.name, len(known)), p.name))
    forms += [Form(path.name, path, "onnx") for path in onnx_files]
    engines = sorted(p for p in directory.iterdir() if p.suffix.lower() in ENGINE_SUFFIXES and p.is_file())
    forms += [Form(path.name, path, "engine") for path in engines]
    return forms


def discover_forms(models: list[Path]) -> list[Form]:
    """Expand the MODEL arguments into forms with unique labels; a path that holds none is an error."""
    forms: list[Form] = []
    for path in models:
        if path.is_dir():
            found = forms_in_directory(path)
            if not found:
                raise click.UsageError(
                    f"{path}: no model here. Pass a run directory (card.json + model.safetensors, from `edgeseg train`), "
                    f"an export directory (*.onnx, *.engine, from `edgeseg export`), or a model file."
                )
            forms += found
        elif path.suffix.lower() in ENGINE_SUFFIXES:
            forms.append(Form(path.name, path, "engine"))
        elif path.suffix.lower() == ".onnx":
            forms.append(Form(path.name, path, "onnx"))
        else:
            raise click.UsageError(f"{path}: not a model form; expected a .onnx, a TensorRT .engine, or a run/export directory")
    return unique_labels(forms)


def unique_labels(forms: list[Form]) -> list[Form]:
    """Where two forms share a label (model.onnx of two runs), label them by their paths instead."""
    counts: dict[str, int] = {}
    for form in forms:
        counts[form.label] = counts.get(form.label, 0) + 1
    relabelled = []
    for form in forms:
        if counts[form.label] > 1:
            label = f"{form.path} (pytorch)" if form.kind == "torch" else str(form.path)
            form = Form(label, form.path, form.kind)
        relabelled.append(form)
    return relabelled


def plan(forms: list[Form], backends: tuple[str, ...]) -> list[Result]:
    """One result per (form, applicable backend); a form no given backend applies to is skipped with why."""
    results = []
    for form in forms:
        chosen = [backend for backend in backends if backend in APPLICABLE_BACKENDS[form.kind]]
        if not chosen:
            results.append(Result(form, "/".join(backends), status="skipped", reason=(
                f"a {form.kind} form runs on {', '.join(APPLICABLE_BACKENDS[form.kind])}; none of the backends asked "
                f"for ({', '.join(backends)}) applies")))
        results += [Result(form, backend) for backend in chosen]
    return results


def size_bytes(form: Form) -> int:
    """Bytes on disk: the weights of a run, a file plus its ONNX external data (``<name>.data``) if any."""
    if form.kind == "torch":
        return (form.path / "model.safetensors").stat().st_size
    external = form.path.with_name(form.path.name + ".data")
    return form.path.stat().st_size + (external.stat().st_size if external.is_file() else 0)


# --- opening a form ------------------------------------------------------------------------------


def open_torch(form: Form, backend: str, size: tuple[int, int] | None):
    """A Segmenter over PyTorch eager for a run directory."""
    try:
        import torch

        from edgeseg.train.model import load_model
        from edgeseg.train.torch_backend import TorchBackend
    except ImportError as error:
        raise FormUnavailable(
            f"PyTorch is not installed here ({error.name} is missing): pip install 'edgeseg[train]', or bench the "
            f"exported forms, which need no torch"
        ) from None
    from edgeseg.runtime.segmenter import Segmenter

    device = "cuda" if backend == "torch-cuda" else "cpu"
    if device == "cuda" and not torch.cuda.is_available():
        raise FormUnavailable("torch-cuda: this PyTorch sees no CUDA GPU")
    model, card = load_model(form.path)
    if size is not None:  # the FPN takes any size that is a multiple of 32
        card = card.replace(input_size=size)
    return Segmenter(TorchBackend(model, card, device=device), card)


def takes_any_size(backend) -> bool:
    """True for an onnxruntime session whose input height and width are free (a dynamic-shape export)."""
    session = getattr(backend, "session", None)
    if session is None:
        return False
    height, width = session.get_inputs()[0].shape[2:]
    return not (isinstance(height, int) and isinstance(width, int))


def open_runtime(form: Form, backend: str, size: tuple[int, int] | None):
    """A Segmenter for an ONNX or engine; --size applies only to a dynamic-shape ONNX."""
    from edgeseg.runtime.backends import BackendUnavailable, open_backend
    from edgeseg.runtime.model_file import RuntimeModelError, read_engine_info
    from edgeseg.runtime.segmenter import Segmenter

    try:
        opened = open_backend(form.path, backend)
    except BackendUnavailable as error:
        raise FormUnavailable(str(error)) from None
    except RuntimeModelError as error:
        if form.kind != "engine":
            raise
        read_engine_info(form.path)  # raises if the engine or its sidecar is broken: that is a failure
        raise FormUnavailable(str(error)) from None  # a sound engine built for another TensorRT or GPU
    card = opened.card
    if size is not None and takes_any_size(opened):
        card = card.replace(input_size=size)
    return Segmenter(opened, card)


def open_result(result: Result, size: tuple[int, int] | None) -> None:
    """Open the form on its backend; on trouble mark the result skipped (cannot run here) or failed."""
    opener = open_torch if result.form.kind == "torch" else open_runtime
    try:
        segmenter = opener(result.form, result.backend, size)
    except FormUnavailable as error:
        result.stop("skipped", str(error))
        return
    except Exception as error:  # a broken file or card: report it beside the forms that did run
        result.stop("failed", f"{type(error).__name__}: {error}")
        return
    result.segmenter = segmenter
    result.backend = segmenter.backend.name if result.form.kind != "torch" else f"torch-{segmenter.backend.device.type}"
    result.precision = segmenter.backend.precision
    result.input_size = tuple(segmenter.card.input_size)


# --- measuring -----------------------------------------------------------------------------------


def synthetic_frame(seed: int = FRAME_SEED) -> np.ndarray:
    """A dermoscopy-like BGR frame of FRAME_SIZE: the centre of a square synthetic image."""
    from edgeseg.synthetic import make_sample

    height, width = FRAME_SIZE
    image, _ = make_sample(seed, 0, width)
    top = (width - height) // 2
    return np.ascontiguousarray(image[top : top + height])


def time_interleaved(results: list[Result], frame: np.ndarray, runs: int, warmup: int, progress: bool = True) -> None:
    """Run the frame through every open form in turn, ``warmup`` + ``runs`` times, recording the timed runs."""
    from tqdm import tqdm

    active = [result for result in results if result.status == "ok"]
    for iteration in tqdm(range(warmup + runs), desc="bench", unit="round", disable=not progress or not active,
                          file=sys.stderr):
        start = iteration % len(active) if active else 0
        for result in active[start:] + active[:start]:
            if result.status != "ok":
                continue
            try:
                began = time.perf_counter()
                segmentation = result.segmenter.segment(frame)
                elapsed_ms = (time.perf_counter() - began) * 1000.0
            except Exception as error:  # one form failing must not lose the others' figures
                result.stop("failed", f"segment() raised on iteration {iteration}: {type(error).__name__}: {error}")
                continue
            if iteration < warmup:
                continue
            for stage in STAGES[:3]:
                result.times_ms[stage].append(segmentation.timings_ms[stage])
            result.times_ms["end_to_end"].append(elapsed_ms)


def score(results: list[Result], samples: list, split: str, data: Path, progress: bool = True) -> None:
    """Dice and thresholded Jaccard (and the other ISIC metrics) of each form, at original resolution."""
    from edgeseg.evaluate import evaluate

    for result in results:
        if result.status != "ok":
            result.accuracy_reason = f"form {result.status}: no accuracy"
            continue
        try:
            evaluation = evaluate(result.segmenter, samples, model_name=result.form.label, split=split, progress=progress)
        except Exception as error:
            result.accuracy_reason = f"scoring failed: {type(error).__name__}: {error}"
            result.stop("failed", result.accuracy_reason)
            continue
        result.accuracy = {
            **{name: round(value, 6) for name, value in evaluation.mean.items()},
            "images": len(evaluation.per_image),
            "data": str(data),
            "split": split,
            "resolution": "original (probability upsampled to each image's size, thresholded at the card's threshold)",
            "aggregation": "mean over images of per-image scores (ISIC 2018 Task 1 convention)",
        }


def stage_stats(values: list[float]) -> dict[str, float] | None:
    if not values:
        return None
    array = np.asarray(values, dtype=np.float64)
    p50, p90, p99 = np.percentile(array, [50, 90, 99])
    figures = (array.mean(), p50, p90, p99, array.min(), array.max())
    return {key: round(float(value), 4) for key, value in zip(STAT_KEYS, figures)}


def result_record(result: Result) -> dict[str, Any]:
    """The JSON record of one (form, backend): every key present, null with a reason where not measured."""
    stages = {stage: stage_stats(result.times_ms[stage]) if result.status == "ok" else None for stage in STAGES}
    end_to_end = stages["end_to_end"]
    return {
        "form": result.form.label,
        "backend": result.backend,
        "status": result.status,
        "reason": result.reason,
        "size_bytes": size_bytes(result.form),
        "stages": stages,
        "fps": round(1000.0 / end_to_end["mean_ms"], 3) if end_to_end else None,
        "accuracy": result.accuracy,
        "accuracy_reason": result.accuracy_reason,
        "path": str(result.form.path),
        "kind": result.form.kind,
        "precision": result.precision,
        "input_size": list(result.input_size) if result.input_size else None,
        "p99_over_p50": round(end_to_end["p99_ms"] / end_to_end["p50_ms"], 3) if end_to_end else None,
    }


def noise_warnings(records: list[dict[str, Any]]) -> list[str]:
    warnings = []
    for record in records:
        ratio = record["p99_over_p50"]
        if ratio is not None and ratio > NOISY_RATIO:
            warnings.append(
                f"{record['form']} on {record['backend']}: end-to-end p99/p50 = {ratio:.2f} > {NOISY_RATIO}: the machine "
                f"was noisy while measuring (other processes, frequency scaling, thermal throttling); compare p50s, and "
                f"rerun on an idle machine (on a Jetson: fixed nvpmodel mode and `sudo jetson_clocks`)"
            )
    return warnings


def run_bench(
    models: list[Path],
    backends: tuple[str, ...] = ("auto",),
    runs: int = DEFAULT_RUNS,
    warmup: int = DEFAULT_WARMUP,
    size: tuple[int, int] | None = None,
    frame: np.ndarray | None = None,
    frame_source: str | None = None,
    data: Path | None = None,
    samples: list | None = None,
    split: str = "val",
    command: str = "",
    progress: bool = True,
) -> dict[str, Any]:
    """Measure every form of ``models`` on every applicable backend and return the report (``--json``'s content).

    ``samples`` (from ``edgeseg.data.require_usable``) adds accuracy on ``data``.
    """
    from edgeseg.host import host_info

    if runs < 1 or warmup < 0:
        raise ValueError(f"runs must be >= 1 and warmup >= 0, got runs={runs}, warmup={warmup}")
    if frame is None:
        frame = synthetic_frame()
        frame_source = (f"synthetic dermoscopy frame: edgeseg.synthetic.make_sample(seed={FRAME_SEED}, index=0, "
                        f"size={FRAME_SIZE[1]}), centre {FRAME_SIZE[1]}x{FRAME_SIZE[0]}")
    results = plan(discover_forms(models), backends)
    with contextlib.ExitStack() as stack:
        for result in results:
            if result.status == "ok":
                open_result(result, size)
            if result.segmenter is not None:  # the backend's context: it frees sessions, engines, GPU buffers
                stack.enter_context(result.segmenter.backend)
        time_interleaved(results, frame, runs, warmup, progress)
        if samples is not None:
            score(results, samples, split, data, progress)
        else:
            for result in results:
                result.accuracy_reason = "no --data given"
        records = [result_record(result) for result in results]
    notes = [INTERLEAVE_NOTE, TIMING_NOTE]
    if size is not None:
        notes.append(f"--size {size[0]}x{size[1]} applies to PyTorch and dynamic-shape ONNX forms; the others ran at their card's size (input_size)")
    return {
        "host": host_info(),
        "results": records,
        "runs": runs,
        "warmup": warmup,
        "interleaved": True,
        "command": command,
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "frame": {"source": frame_source or "given image", "height": int(frame.shape[0]), "width": int(frame.shape[1])},
        "notes": notes,
        "warnings": noise_warnings(records),
    }


def exit_code(report: dict[str, Any]) -> int:
    """0 when at least one form was measured and none failed (skipped forms are fine); else 1."""
    statuses = [record["status"] for record in report["results"]]
    return 0 if "ok" in statuses and "failed" not in statuses else 1


# --- output --------------------------------------------------------------------------------------


def _ms(stats: dict[str, float] | None, key: str) -> str:
    return f"{stats[key]:.2f}" if stats else "-"


def _accuracy(record: dict[str, Any]) -> str:
    accuracy = record["accuracy"]
    if not accuracy:
        return "-"
    return f"Dice {accuracy['dice']:.4f} / TJ {accuracy['threshold_jaccard']:.4f}"


def _size(record: dict[str, Any]) -> str:
    return f"{record['size_bytes'] / 1e6:.1f} MB"


def _input(record: dict[str, Any]) -> str:
    return "x".join(map(str, record["input_size"])) if record["input_size"] else "-"


def summary_rows(report: dict[str, Any]) -> list[list[str]]:
    rows = [["form", "backend", "precision", "status", "input", "size", "accuracy", "p50 ms", "p99 ms", "FPS"]]
    for record in report["results"]:
        end_to_end = record["stages"]["end_to_end"]
        rows.append([
            record["form"], record["backend"], record["precision"] or "-", record["status"], _input(record), _size(record),
            _accuracy(record), _ms(end_to_end, "p50_ms"), _ms(end_to_end, "p99_ms"),
            f"{record['fps']:.1f}" if record["fps"] else "-",
        ])
    return rows


def stage_rows(report: dict[str, Any]) -> list[list[str]]:
    rows = [["form", "backend", "stage", "mean", "p50", "p90", "p99", "min", "max"]]
    for record in report["results"]:
        if record["status"] != "ok":
            continue
        for stage in STAGES:
            stats = record["stages"][stage]
            rows.append([record["form"], record["backend"], stage, *(_ms(stats, key) for key in STAT_KEYS)])
    return rows


def text_table(rows: list[list[str]]) -> str:
    widths = [max(len(row[column]) for row in rows) for column in range(len(rows[0]))]
    lines = ["  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip() for row in rows]
    lines.insert(1, "  ".join("-" * width for width in widths))
    return "\n".join(lines)


def markdown_table(rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(row) + " |" for row in rows]
    lines.insert(1, "|" + "|".join(" --- " for _ in rows[0]) + "|")
    return "\n".join(lines)


def reasons(report: dict[str, Any]) -> list[str]:
    return [f"{record['form']} ({record['backend']}): {record['status']}: {record['reason']}"
            for record in report["results"] if record["status"] != "ok"]


def terminal_text(report: dict[str, Any]) -> str:
    from edgeseg.host import describe_host

    parts = [text_table(summary_rows(report)), "", "latency per stage (ms, over "
             f"{report['runs']} runs after {report['warmup']} warm-up):", text_table(stage_rows(report)), ""]
    parts += [f"note: {note}" for note in report["notes"]]
    parts += [f"frame: {report['frame']['source']} ({report['frame']['width']}x{report['frame']['height']})"]
    parts += [f"not measured: {line}" for line in reasons(report)]
    parts += [f"WARNING: {warning}" for warning in report["warnings"]]
    parts += ["host: " + line for line in describe_host(report["host"])]
    return "\n".join(parts)


def markdown_text(report: dict[str, Any], title: str = "edgeseg bench") -> str:
    from edgeseg.host import describe_host

    lines = [f"# {title}", "", "Command:", "", "```", report["command"], "```", "",
             f"Measured {report['date']} on:", ""]
    lines += [f"- {line}" for line in describe_host(report["host"])]
    lines += ["", f"{report['runs']} timed runs per form after {report['warmup']} warm-up runs; frame: "
              f"{report['frame']['source']} ({report['frame']['width']}x{report['frame']['height']}).", ""]
    lines += [f"- {note}" for note in report["notes"]]
    lines += ["", "## Summary", "", markdown_table(summary_rows(report)), "",
              "Accuracy: Dice / thresholded Jaccard (TJ); p50/p99/FPS: end to end.", "",
              "## Latency per stage (ms)", "", markdown_table(stage_rows(report))]
    if reasons(report):
        lines += ["", "## Not measured", ""] + [f"- {line}" for line in reasons(report)]
    if report["warnings"]:
        lines += ["", "## Warnings", ""] + [f"- {warning}" for warning in report["warnings"]]
    accuracy = [record["accuracy"] for record in report["results"] if record["accuracy"]]
    if accuracy:
        first = accuracy[0]
        lines += ["", f"Accuracy on {first['data']}, split {first['split']} ({first['images']} images): "
                      f"{first['resolution']}; {first['aggregation']}."]
    return "\n".join(lines) + "\n"


def write_report(report: dict[str, Any], json_path: Path | None = None, md_path: Path | None = None,
                 title: str = "edgeseg bench") -> None:
    if json_path is not None:
        write_text_atomic(json_path, json.dumps(report, indent=2) + "\n")
    if md_path is not None:
        write_text_atomic(md_path, markdown_text(report, title))


# --- the command ---------------------------------------------------------------------------------


def parse_size(value: str | None) -> tuple[int, int] | None:
    if value is None:
        return None
    height, separator, width = value.lower().partition("x")
    if not separator or not height.strip().isdigit() or not width.strip().isdigit():
        raise click.BadParameter(f"{value!r}: give the input size as HEIGHTxWIDTH, e.g. 256x256", param_hint="--size")
    size = int(height), int(width)
    if size[0] % 32 or size[1] % 32 or min(size) <= 0:
        raise click.BadParameter(f"{value!r}: FPN needs sides that are positive multiples of 32", param_hint="--size")
    return size


def command_line(models: tuple[Path, ...], options: dict[str, Any]) -> str:
    """The command as run, rebuilt from the parsed options (defaults included), so a result can be redone."""
    words = ["edgeseg", "bench", *map(str, models)]
    for backend in options["backends"]:
        words += ["--backend", backend]
    words += ["--runs", str(options["runs"]), "--warmup", str(options["warmup"])]
    for name in ("size", "image", "data", "split", "split_dir", "limit", "json_path", "md_path"):
        value = options.get(name)
        if value is None or (name in ("split", "split_dir") and options.get("data") is None):
            continue
        flag = {"json_path": "--json", "md_path": "--md", "split_dir": "--split-dir"}.get(name, f"--{name}")
        words += [flag, str(value)]
    return shlex.join(words)


EXAMPLE = """\b
Examples:
  edgeseg bench runs/lite0                        # PyTorch, plus every form exported into the run
  edgeseg bench exports/lite0 --runs 200 --md bench.md
  edgeseg bench model.onnx model.int8.onnx --data ../shared/data/isic2018 --split val --limit 100
  edgeseg bench model.trt10.3.sm87.fp16.engine model.onnx --backend auto --json bench.json   # on a Jetson

\b
Exit status: 0 when at least one form was measured and none failed; forms that cannot run on this
host (no TensorRT, no GPU provider, no PyTorch) are reported as skipped and do not change it.
1 when nothing could be measured or a form failed (a broken model file, an error while running).
"""


@click.command("bench", epilog=EXAMPLE)
@click.argument("models", nargs=-1, required=True, type=click.Path(exists=True, path_type=Path))
@click.option("--backend", "backends", multiple=True, default=("auto",), show_default=True,
              type=click.Choice(BACKEND_CHOICES),
              help="Backend(s) to run each form on (repeat to compare); each form runs on those that apply to it.")
@click.option("--runs", default=DEFAULT_RUNS, show_default=True, type=click.IntRange(min=1),
              help="Timed runs per form (after warm-up).")
@click.option("--warmup", default=DEFAULT_WARMUP, show_default=True, type=click.IntRange(min=0),
              help="Untimed runs per form first (engine start-up, caches, clocks).")
@click.option("--size", default=None, metavar="HxW",
              help="Input size for PyTorch and dynamic-shape ONNX forms; static forms keep their card's size.")
@click.option("--image", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="A real frame to time on (default: a synthetic 640x480 dermoscopy frame).")
@click.option("--data", type=click.Path(exists=True, file_okay=False, path_type=Path),
              help="Data set folder (ISIC layout or images/ + masks/): adds Dice and thresholded Jaccard per form.")
@click.option("--split", default="val", show_default=True, help="Split of --data to score, or 'all'.")
@click.option("--split-dir", type=click.Path(exists=True, file_okay=False, path_type=Path),
              help="Folder of split files (default: DATA/splits).")
@click.option("--limit", type=click.IntRange(min=1), help="Score only the first N images of the split.")
@click.option("--json", "json_path", type=click.Path(dir_okay=False, path_type=Path), help="Write the results as JSON here.")
@click.option("--md", "md_path", type=click.Path(dir_okay=False, path_type=Path), help="Write a markdown results file here.")
@click.pass_context
def bench_command(ctx: click.Context, models: tuple[Path, ...], backends: tuple[str, ...], runs: int, warmup: int,
                  size: str | None, image: Path | None, data: Path | None, split: str, split_dir: Path | None,
                  limit: int | None, json_path: Path | None, md_path: Path | None) -> None:
    """Measure latency per stage and end to end (and accuracy with --data) of model forms, side by side.

    MODEL is a run directory (PyTorch, plus any forms exported into it), an export directory (every
    .onnx and .engine in it) or model files. The forms are interleaved: each round sends the same
    frame once through every form, so the figures come from one run under the same conditions.
    Reports mean, p50, p90, p99, min and max per stage (preprocess, inference, postprocess,
    end to end) and FPS, and warns when p99/p50 shows a noisy machine.
    """
    from edgeseg.files import read_image

    parsed_size = parse_size(size)
    command = command_line(models, dict(backends=backends, runs=runs, warmup=warmup, size=size, image=image, data=data,
                                        split=split, split_dir=split_dir, limit=limit, json_path=json_path, md_path=md_path))
    samples = None
    if data is not None:
        from edgeseg.data import DataError, require_usable

        try:
            samples = require_usable(data, split=None if split == "all" else split, split_dir=split_dir)
        except DataError as error:
            raise click.ClickException(str(error)) from None
        samples = samples[:limit] if limit else samples
    frame = read_image(image) if image is not None else None
    report = run_bench(list(models), backends, runs, warmup, parsed_size, frame, str(image) if image else None,
                       data, samples, split, command)
    write_report(report, json_path, md_path)
    click.echo(terminal_text(report))
    for path in (json_path, md_path):
        if path is not None:
            click.echo(f"wrote {path}")
    ctx.exit(exit_code(report))
