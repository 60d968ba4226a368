"""`edgeseg bench`: latency per stage and end to end, and accuracy if asked, for every form of a model.

A form is a file the runtime opens (an ONNX in fp32, fp16 or int8; a TensorRT engine) or a run
directory, which runs on PyTorch. Each form runs on each backend given that applies to it. The forms
are timed *interleaved*: every iteration sends the same frame once through every form (the starting
form rotates), so the figures being compared come from one process run under the same conditions:
the same thermal state, the same background load. Warm-up iterations run first and are not counted.

A form that cannot run on this host (no TensorRT, no GPU provider, no PyTorch) is reported as
"skipped" with the reason; one that should run but raised is "failed" with the error.

Forms are opened through ``edgeseg.loading.open.open_model``, so the runtime (and, for a run
directory, PyTorch) is imported only when a form is opened. The report's text and markdown are
``edgeseg.evaluate.latency_report``'s; the command line is ``edgeseg.evaluate.cli``'s.
"""

from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from edgeseg.core.files import portable_path
from edgeseg.core.forms import listed_backends
from edgeseg.core.names import WEIGHTS_FILENAME
from edgeseg.core.progress import progress as track
from edgeseg.core.segmenter import BackendUnavailable
from edgeseg.loading.open import Form, discover_forms, open_model

STAGES = ("preprocess", "inference", "postprocess", "end_to_end")
STAT_KEYS = ("mean_ms", "p50_ms", "p90_ms", "p99_ms", "min_ms", "max_ms")
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


# --- planning and opening ---------------------------------------------------------------------------


def plan(forms: list[Form], backends: tuple[str, ...]) -> list[Result]:
    """One result per (form, applicable backend); a form no given backend applies to is skipped with why."""
    results = []
    for form in forms:
        chosen = [backend for backend in backends if backend in listed_backends(form.kind)]
        if not chosen:
            results.append(
                Result(
                    form,
                    "/".join(backends),
                    status="skipped",
                    reason=(
                        f"a {form.kind} form runs on {', '.join(listed_backends(form.kind))}; none of the "
                        f"backends asked for ({', '.join(backends)}) applies"
                    ),
                )
            )
        results += [Result(form, backend) for backend in chosen]
    return results


def size_bytes(form: Form) -> int:
    """Bytes on disk: the weights of a run, a file plus its ONNX external data (``<name>.data``) if any."""
    if form.kind == "torch":
        return (form.path / WEIGHTS_FILENAME).stat().st_size
    external = form.path.with_name(form.path.name + ".data")
    return form.path.stat().st_size + (external.stat().st_size if external.is_file() else 0)


def open_result(result: Result, size: tuple[int, int] | None) -> None:
    """Open the form on its backend; on trouble mark the result skipped (cannot run here) or failed."""
    try:
        segmenter = open_model(result.form.path, result.backend, size=size)
    except BackendUnavailable as error:
        result.stop("skipped", str(error))
        return
    except Exception as error:  # a broken file or card: report it beside the forms that did run
        if result.form.kind == "engine" and engine_for_another_host(result.form.path):
            result.stop("skipped", str(error))
        else:
            result.stop("failed", f"{type(error).__name__}: {error}")
        return
    result.segmenter = segmenter
    result.backend = segmenter.backend.name
    result.precision = segmenter.backend.precision
    height, width = segmenter.card.input_size
    result.input_size = (height, width)


def engine_for_another_host(path: Path) -> bool:
    """A sound engine (its sidecar and checksum hold) that would not open: built for another TensorRT or GPU."""
    from edgeseg.core.card import CardError
    from edgeseg.runtime.loaders import RuntimeModelError, read_engine_info

    try:
        read_engine_info(path)
    except (RuntimeModelError, CardError):
        return False
    return True


# --- measuring -----------------------------------------------------------------------------------


def synthetic_frame(seed: int = FRAME_SEED) -> np.ndarray:
    """A dermoscopy-like BGR frame of FRAME_SIZE: the centre of a square synthetic image."""
    from edgeseg.core.synthetic import make_sample

    height, width = FRAME_SIZE
    image, _ = make_sample(seed, 0, width)
    top = (width - height) // 2
    return np.ascontiguousarray(image[top : top + height])


def time_interleaved(results: list[Result], frame: np.ndarray, runs: int, warmup: int, progress: bool = True) -> None:
    """Run the frame through every open form in turn, ``warmup`` + ``runs`` times, recording the timed runs."""
    active = [result for result in results if result.status == "ok"]
    for iteration in track(range(warmup + runs), desc="bench", unit="round", enabled=progress and bool(active)):
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


def score(results: list[Result], samples: list | None, split: str, data: Path | None, progress: bool = True) -> None:
    """Dice and thresholded Jaccard (and the other ISIC metrics) of each form, at original resolution, on
    ``samples`` (None: no accuracy) from the folder ``data``."""
    from edgeseg.evaluate.accuracy import evaluate

    if samples is None:
        for result in results:
            result.accuracy_reason = "no --data given"
        return
    if data is None:
        raise ValueError("samples were given without data: pass data=, the folder they come from (the report names it)")
    for result in results:
        if result.status != "ok":
            result.accuracy_reason = f"form {result.status}: no accuracy"
            continue
        try:
            evaluation = evaluate(
                result.segmenter, samples, model_name=result.form.label, split=split, progress=progress
            )
        except Exception as error:
            result.accuracy_reason = f"scoring failed: {type(error).__name__}: {error}"
            result.stop("failed", result.accuracy_reason)
            continue
        result.accuracy = {
            **{name: round(value, 6) for name, value in evaluation.mean.items()},
            "images": len(evaluation.per_image),
            "intervals": {name: interval.to_dict() for name, interval in evaluation.intervals.items()},
            "data": portable_path(data),
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
    return {key: round(float(value), 4) for key, value in zip(STAT_KEYS, figures, strict=True)}


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
        "path": portable_path(result.form.path),
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
                f"{record['form']} on {record['backend']}: end-to-end p99/p50 = {ratio:.2f} > {NOISY_RATIO}: the "
                f"machine was noisy while measuring (other processes, frequency scaling, thermal throttling); compare "
                f"p50s, and rerun on an idle machine (on a Jetson: fixed nvpmodel mode and `sudo jetson_clocks`)"
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

    ``samples`` (from ``edgeseg.core.data.require_usable``) adds accuracy on ``data``.
    """
    from edgeseg.core.host import host_info

    if runs < 1 or warmup < 0:
        raise ValueError(f"runs must be >= 1 and warmup >= 0, got runs={runs}, warmup={warmup}")
    if frame is None:
        frame = synthetic_frame()
        frame_source = (
            f"synthetic dermoscopy frame: edgeseg.core.synthetic.make_sample(seed={FRAME_SEED}, index=0, "
            f"size={FRAME_SIZE[1]}), centre {FRAME_SIZE[1]}x{FRAME_SIZE[0]}"
        )
    results = plan(discover_forms(models), backends)
    with contextlib.ExitStack() as stack:
        for result in results:
            if result.status == "ok":
                open_result(result, size)
            if result.segmenter is not None:  # the backend's context: it frees sessions, engines, GPU buffers
                stack.enter_context(result.segmenter.backend)
        time_interleaved(results, frame, runs, warmup, progress)
        score(results, samples, split, data, progress)
        records = [result_record(result) for result in results]
    notes = [INTERLEAVE_NOTE, TIMING_NOTE]
    if size is not None:
        notes.append(
            f"--size {size[0]}x{size[1]} applies to PyTorch and dynamic-shape ONNX forms; the others ran at their "
            "card's size (input_size)"
        )
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
