"""GPU check for any CUDA machine without TensorRT: PyTorch for CUDA and cuda-python, nothing downloaded.

    python benchmarks/gpu_check.py [--out benchmarks/results]

Six parts, each within its own time budget (under 8 minutes in all, start-up included):

1. buffers (30 s): edgeseg's cuda-python pinned/device buffers (``edgeseg.runtime.cuda.PinnedBuffer``)
   round-tripped 1000 times on one cuda-python stream, with PyTorch computing ``y = 2x + 1`` in place
   of the engine on that same stream (``torch.cuda.ExternalStream`` from the stream's handle, the
   device memory wrapped without a copy); every output is checked against numpy.
2. train (200 s): `edgeseg synth`, then `edgeseg train --backend torch-cuda` (mixed precision) on it, killed
   with SIGKILL once its first checkpoint exists, then `edgeseg train --resume` to the end: the epochs
   are contiguous, the run directory complete and the checkpoint holds the AMP grad scaler's state.
3. eval (60 s): `edgeseg eval` of that run on its val split through torch-cuda and torch-cpu; mean
   Dice and thresholded Jaccard must agree within the FP16 parity gate (export.parity.Tolerances).
4. bench (45 s): `edgeseg bench` of the run on torch-cuda and torch-cpu, interleaved.
5. torch_forms (45 s): that run in PyTorch on CUDA as a user would speed it up before reaching for
   TensorRT: eager fp32 (the reference, as edgeseg's torch-cuda backend runs it), eager FP16
   (``.half()``, channels_last) and each captured once in a CUDA graph (``torch.cuda.CUDAGraph`` on a
   static input, replayed per image). Manual capture rather than ``torch.compile(mode="reduce-overhead")``:
   it is a few lines of stock PyTorch, captures in a second, and needs no Triton or C compiler on the
   host; compile would spend much of this budget compiling and measure the compiler as much as the graph.
6. onnxruntime_cuda (60 s): the run exported to fp32 and FP16 ONNX (as `edgeseg export` makes them) on
   onnxruntime's CUDA provider with IO binding (input and output OrtValues on the GPU, bound once,
   updated in place), without and with CUDA graphs (provider option ``enable_cuda_graph``). Only where
   onnxruntime-gpu's CUDAExecutionProvider is installed; otherwise skipped with the providers it has.

Parts 5 and 6 time each form from a float32 batch on the host to float32 logits on the host (the copies
included, as `edgeseg bench` times inference), interleaved, p50 and p95, on part 2's val images; each
form's probabilities and masks are compared with the first form's (max |dprob|, mask Dice agreement,
confident pixels flipped) and judged by the export parity gate's fp32 or FP16 rule.

Writes benchmarks/results/gpu-check-<gpu-name>.json and .md with every figure and the GPU named.
Without a CUDA GPU every part is skipped with its reason, and the record (gpu-check-no-cuda-gpu) says
so and names the CPU; exit 0. A GPU that nvidia-smi lists but PyTorch cannot use (a CPU build of
torch, a driver too old) exits 1 with the reason, writing nothing. Exit 1 also when any part failed.
"""

from __future__ import annotations

import argparse
import copy
import csv
import importlib.util
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from edgeseg.core import host
from edgeseg.core.files import portable_path, write_text_atomic

RESULTS_DIR = Path(__file__).resolve().parent / "results"
BUDGETS_S = {
    "buffers": 30.0,
    "train": 200.0,
    "eval": 60.0,
    "bench": 45.0,
    "torch_forms": 45.0,
    "onnxruntime_cuda": 60.0,
}
ROUND_TRIPS = 1000
BUFFER_SHAPE = (1, 3, 256, 256)
# The training set-up: a real one on a GPU; a tiny one for --simulate-on-cpu (the test of this script).
# Random encoder weights: the check is of the mechanics (AMP, kill, resume), and a GPU host need not carry
# the ImageNet weights package (its first run on an H100 failed there for want of it).
GPU_SETUP = {
    "n": 96,
    "image_size": 192,
    "epochs": 6,
    "train": ["--size", "192", "--batch-size", "8", "--encoder-weights", "none"],
    "bench": ["--runs", "50", "--warmup", "10"],
}
CPU_SETUP = {
    "n": 24,
    "image_size": 64,
    "epochs": 3,
    "bench": ["--runs", "5", "--warmup", "1"],
    "train": ["--size", "64", "--batch-size", "4", "--decoder-channels", "32,32", "--encoder-weights", "none"],
}


def slug(name: str) -> str:
    """A GPU's name as a file-name part: "NVIDIA GeForce RTX 4090" -> "nvidia-geforce-rtx-4090"."""
    return re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-") or "gpu"


def timed_part(name: str, part: Callable[[float], dict[str, Any]]) -> dict[str, Any]:
    """Run one part within its budget; an exception is that part's failure, not the script's end."""
    budget = BUDGETS_S[name]
    start = time.monotonic()
    try:
        result = part(budget)
    except Exception as error:  # any failure of a part is recorded with its reason
        result = {"status": "failed", "reason": f"{type(error).__name__}: {error}"}
    result.update(seconds=round(time.monotonic() - start, 1), budget_s=budget)
    print(
        f"gpu_check: {name}: {result['status']} in {result['seconds']} s"
        + (f" ({result['reason']})" if result.get("reason") else ""),
        flush=True,
    )
    return result


# --- 1. buffers -----------------------------------------------------------------------------------


class DeviceArray:
    """Device memory as PyTorch can wrap it without a copy (the CUDA Array Interface)."""

    def __init__(self, pointer: int, shape: tuple[int, ...]) -> None:
        self.__cuda_array_interface__ = {
            "shape": shape,
            "typestr": "<f4",
            "data": (pointer, False),
            "version": 3,
            "strides": None,
            "stream": None,
        }


def open_stream(cuda: Any) -> tuple[Any, int, Callable[[], None], Callable[[], None]]:
    """(what PinnedBuffer's copies take, the int handle, synchronize, destroy), across edgeseg.runtime.cuda's
    versions."""
    if hasattr(cuda, "Stream"):
        stream = cuda.Stream()
        return stream, stream.handle, stream.synchronize, stream.destroy
    runtime = cuda.cudart()
    raw = cuda.call(runtime.cudaStreamCreate())
    return (
        raw,
        int(raw),
        lambda: cuda.call(runtime.cudaStreamSynchronize(raw)),
        lambda: cuda.call(runtime.cudaStreamDestroy(raw)),
    )


def part_buffers(budget_s: float) -> dict[str, Any]:
    import torch

    from edgeseg.runtime import cuda

    stream, handle, synchronize, destroy = open_stream(cuda)
    buffers = [cuda.PinnedBuffer(BUFFER_SHAPE, np.float32) for _ in range(2)]
    try:
        source, target = buffers
        x = torch.as_tensor(DeviceArray(source.device_pointer, BUFFER_SHAPE), device="cuda")
        y = torch.as_tensor(DeviceArray(target.device_pointer, BUFFER_SHAPE), device="cuda")
        zero_copy = x.data_ptr() == source.device_pointer and y.data_ptr() == target.device_pointer
        torch_stream = torch.cuda.ExternalStream(handle)
        rng, times_ms, wrong, worst = np.random.default_rng(0), [], 0, 0.0
        deadline = time.monotonic() + budget_s - 5.0
        while len(times_ms) < ROUND_TRIPS and time.monotonic() < deadline:
            source.host[...] = rng.standard_normal(BUFFER_SHAPE, dtype=np.float32)
            expected = source.host * np.float32(2) + np.float32(1)
            start = time.perf_counter()
            source.to_device(stream)
            with torch.cuda.stream(torch_stream):
                y.copy_(x).mul_(2.0).add_(1.0)
            target.to_host(stream)
            synchronize()
            times_ms.append((time.perf_counter() - start) * 1000.0)
            error = float(np.max(np.abs(target.host - expected)))
            worst, wrong = max(worst, error), wrong + (error > 0.0)
    finally:
        for buffer in buffers:
            buffer.free()
        destroy()
    done = len(times_ms)
    passed = done == ROUND_TRIPS and wrong == 0 and zero_copy
    reason = (
        None
        if passed
        else (
            f"{wrong} of {done} round trips wrong (max abs error {worst:g})"
            if wrong
            else f"{done} of {ROUND_TRIPS} round trips in the budget"
            if done < ROUND_TRIPS
            else "PyTorch copied the device memory instead of wrapping it"
        )
    )
    return {
        "status": "passed" if passed else "failed",
        "reason": reason,
        "round_trips": done,
        "wrong": wrong,
        "max_abs_error": worst,
        "zero_copy": zero_copy,
        "shape": list(BUFFER_SHAPE),
        "round_trip_ms_p50": round(float(np.percentile(times_ms, 50)), 4) if times_ms else None,
        "round_trip_ms_p99": round(float(np.percentile(times_ms, 99)), 4) if times_ms else None,
    }


# --- 2. train, killed, resumed --------------------------------------------------------------------


def edgeseg(*args: str, timeout: float, log: Path) -> subprocess.CompletedProcess:
    """One `edgeseg` command in a child process, its output appended to ``log``."""
    with open(log, "a") as stream:
        stream.write(f"\n$ edgeseg {' '.join(args)}\n")
        stream.flush()
        return subprocess.run(
            [sys.executable, "-m", "edgeseg", *args],
            stdout=stream,
            stderr=subprocess.STDOUT,
            timeout=max(timeout, 1.0),
            check=False,
        )


def epoch_rows(run: Path) -> list[dict[str, str]]:
    try:
        with open(run / "logs" / "epochs.csv", newline="") as stream:
            return list(csv.DictReader(stream))
    except (OSError, csv.Error):
        return []


def train_until_first_checkpoint(arguments: list[str], run: Path, deadline: float, log: Path) -> dict[str, Any]:
    """Start training, SIGKILL it as soon as its first epoch is checkpointed; what the kill left."""
    with open(log, "a") as stream:
        stream.write(f"\n$ edgeseg {' '.join(arguments)}   (killed once checkpointed)\n")
        stream.flush()
        process = subprocess.Popen(
            [sys.executable, "-m", "edgeseg", *arguments], stdout=stream, stderr=subprocess.STDOUT
        )
    start = time.monotonic()
    while process.poll() is None and not epoch_rows(run) and time.monotonic() < deadline:
        time.sleep(0.05)
    if process.poll() is not None:
        return {"killed": False, "reason": f"the run ended (exit {process.returncode}) before it could be killed"}
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    epochs = len(epoch_rows(run))
    reason = None if epochs else "no checkpoint within the budget"
    return {
        "killed": True,
        "reason": reason,
        "epochs_before_kill": epochs,
        "seconds_to_first_checkpoint": round(time.monotonic() - start, 1),
        "finished_before_kill": (run / "logs" / "threshold.csv").exists(),
    }


def part_train(budget_s: float, work: Path, device: str, setup: dict[str, Any]) -> dict[str, Any]:
    import torch

    deadline, log = time.monotonic() + budget_s, work / "train.log"
    data, run = work / "synth", work / "run"
    sizes = ("--images", str(setup["n"]), "--image-size", str(setup["image_size"]))
    edgeseg("synth", str(data), *sizes, "--seed", "0", timeout=60, log=log).check_returncode()
    result = train_until_first_checkpoint(train_arguments(data, run, device, setup), run, deadline, log)
    if not result["killed"] or result["reason"] or result["finished_before_kill"]:
        return {"status": "failed", **result, "reason": result["reason"] or "the run had finished before the kill"}
    resumed = edgeseg(
        "train", "--resume", str(run), "--data", str(data), "--quiet", timeout=deadline - time.monotonic(), log=log
    )
    epochs = [int(row["epoch"]) for row in epoch_rows(run)]
    card = json.loads((run / "card.json").read_text()) if (run / "card.json").exists() else {}
    scaler = torch.load(run / "checkpoint-last.pt", map_location="cpu", weights_only=True).get("scaler") or {}
    problems = resume_problems(
        run, resumed.returncode, epochs, result["epochs_before_kill"], device == "cuda" and not scaler
    )
    seconds = [float(row["seconds"]) for row in epoch_rows(run) if row.get("seconds")]
    return {
        "status": "failed" if problems else "passed",
        "reason": "; ".join(problems) or None,
        **result,
        "epochs": epochs,
        "amp_grad_scaler": bool(scaler),
        "val_metrics": card.get("provenance", {}).get("val_metrics"),
        "epoch_seconds": seconds,
        "images": setup["n"],
        "image_size": setup["image_size"],
        "run": portable_path(run),
        "data": portable_path(data),
    }


def train_arguments(data: Path, run: Path, device: str, setup: dict[str, Any]) -> list[str]:
    """`edgeseg train` on the synthetic data, on the device's PyTorch backend, with the setup's own options."""
    backend = "torch-cuda" if device == "cuda" else "torch-cpu"
    folders = ("--data", str(data), "--out", str(run))
    length = ("--epochs", str(setup["epochs"]), "--time-budget", "2")
    return ["train", *folders, "--backend", backend, *length, "--seed", "0", "--quiet", *setup["train"]]


def resume_problems(
    run: Path, resumed_exit: int, epochs: list[int], epochs_before_kill: int, scaler_missing: bool
) -> list[str]:
    """What the resumed run got wrong, a sentence each: its exit, its epochs, its files, its grad scaler."""
    complete = all((run / name).exists() for name in ("model.safetensors", "card.json", "logs/threshold.csv"))
    counts_on = epochs == list(range(1, len(epochs) + 1))  # 1, 2, 3, ...: no epoch repeated or skipped
    checks = (
        (resumed_exit != 0, f"the resumed run exited {resumed_exit} (see train.log)"),
        (not counts_on or len(epochs) <= epochs_before_kill, f"epochs after resume are {epochs}"),
        (not complete, "the run directory is incomplete"),
        (scaler_missing, "the checkpoint has no grad scaler state: mixed precision was off"),
    )
    return [text for failed, text in checks if failed]


# --- 3. eval and 4. bench -------------------------------------------------------------------------


def part_eval(budget_s: float, work: Path, backends: tuple[str, str]) -> dict[str, Any]:
    from edgeseg.export.parity import Tolerances

    deadline, runs = time.monotonic() + budget_s, []
    for index, backend in enumerate(backends):
        target = work / f"eval-{index}-{backend}.json"
        done = edgeseg(
            "eval",
            str(work / "run"),
            "--data",
            str(work / "synth"),
            "--split",
            "val",
            "--backend",
            backend,
            "--out",
            str(work / f"eval-{index}-{backend}"),
            "--json",
            str(target),
            timeout=deadline - time.monotonic(),
            log=work / "eval.log",
        )
        if done.returncode != 0:
            return {"status": "failed", "reason": f"eval on {backend} exited {done.returncode} (see eval.log)"}
        evaluation = json.loads(target.read_text())
        runs.append({"backend": evaluation["backend"], "images": evaluation["images"], "mean": evaluation["mean"]})
    gate = Tolerances()
    limits = {"dice": gate.fp16_abs_delta_dice, "threshold_jaccard": gate.fp16_abs_delta_threshold_jaccard}
    deltas = {name: abs(runs[0]["mean"][name] - runs[1]["mean"][name]) for name in limits}
    outside = [f"|delta {name}| {deltas[name]:.5f} > {limits[name]}" for name in limits if deltas[name] > limits[name]]
    return {
        "status": "failed" if outside else "passed",
        "reason": "; ".join(outside) or None,
        "runs": runs,
        "abs_delta": deltas,
        "tolerance": limits,
    }


def part_bench(budget_s: float, work: Path, backends: tuple[str, str], setup: dict[str, Any]) -> dict[str, Any]:
    target = work / "bench.json"
    arguments = ["bench", str(work / "run"), *setup["bench"], "--json", str(target)]
    for backend in dict.fromkeys(backends):  # each once (the CPU simulation names torch-cpu twice)
        arguments += ["--backend", backend]
    done = edgeseg(*arguments, timeout=budget_s, log=work / "bench.log")
    records = json.loads(target.read_text())["results"] if target.exists() else []
    figures = {}
    for record in records:
        stages = record["stages"] or {}
        figures[record["backend"]] = {
            "status": record["status"],
            "reason": record["reason"],
            "fps": record["fps"],
            "inference_p50_ms": (stages.get("inference") or {}).get("p50_ms"),
            "end_to_end_p50_ms": (stages.get("end_to_end") or {}).get("p50_ms"),
            "end_to_end_p99_ms": (stages.get("end_to_end") or {}).get("p99_ms"),
        }
    measured = [backend for backend in backends if figures.get(backend, {}).get("status") == "ok"]
    passed = done.returncode == 0 and len(measured) == len(backends)
    reason = None if passed else f"bench exited {done.returncode}; measured: {measured or 'none'} (see bench.log)"
    fast, slow = (figures.get(backend, {}).get("inference_p50_ms") for backend in backends)
    return {
        "status": "passed" if passed else "failed",
        "reason": reason,
        "backends": figures,
        "inference_speedup": round(slow / fast, 2) if fast and slow else None,
    }


# --- 5. PyTorch forms and 6. onnxruntime's CUDA provider ------------------------------------------

# name -> (precision, captured in a CUDA graph); the first form of each is the reference of the others.
TORCH_FORMS = {
    "eager fp32": ("fp32", False),
    "eager fp16": ("fp16", False),
    "cuda graph fp32": ("fp32", True),
    "cuda graph fp16": ("fp16", True),
}
ORT_FORMS = {
    "fp32 io binding": ("fp32", False),
    "fp32 io binding + cuda graph": ("fp32", True),
    "fp16 io binding": ("fp16", False),
    "fp16 io binding + cuda graph": ("fp16", True),
}
FORM_ROUNDS = {"cuda": (20, 300), "cpu": (0, 3)}  # (warm-up runs, timed runs) of each form; the CPU only for tests


def form_plan(forms: dict[str, tuple[str, bool]], device: str) -> dict[str, str | None]:
    """Which forms run on ``device``: None for each that runs, why not for each skipped (CUDA graphs off CUDA)."""
    return {
        name: "CUDA graphs need a CUDA GPU" if graph and device != "cuda" else None
        for name, (_, graph) in forms.items()
    }


def ort_cuda_skip_reason(providers: list[str]) -> str | None:
    """Why onnxruntime's CUDA part cannot run with these execution providers; None when it can."""
    if "CUDAExecutionProvider" in providers:
        return None
    return f"onnxruntime-gpu not installed: CUDAExecutionProvider missing (providers: {', '.join(providers) or 'none'})"


def onnxruntime_cuda_skip_reason() -> str | None:
    """Why part 6 cannot run here (no onnxruntime, no CUDA provider, no onnx to export with); None when it can."""
    try:
        import onnxruntime
    except ImportError:
        return (
            "onnxruntime not installed: CUDAExecutionProvider missing "
            "(pip install 'edgeseg[gpu]' or 'edgeseg[gpu-cu13]')"
        )
    why = ort_cuda_skip_reason(onnxruntime.get_available_providers())
    if why is None and importlib.util.find_spec("onnx") is None:
        return "onnx not installed: the ONNX forms cannot be exported here (pip install 'edgeseg[export]')"
    return why


def val_batches(data: Path, card: Any) -> list[np.ndarray]:
    """Part 2's val images, each a float32 (1, 3, H, W) batch as the runtime preprocesses it."""
    from edgeseg.core.data import discover_samples
    from edgeseg.core.files import read_image
    from edgeseg.core.preprocess import preprocess

    return [preprocess(read_image(sample.image), card) for sample in discover_samples(data, split="val")]


def torch_form(model: Any, precision: str, graph: bool, device: str, shape: tuple[int, ...]) -> Callable:
    """One PyTorch form as ``infer(batch) -> float32 logits``, host to host."""
    import torch

    dtype = torch.float16 if precision == "fp16" else torch.float32
    # FP16 on CUDA in channels_last, the layout cuDNN's tensor-core convolutions take without a transpose;
    # fp32 stays in PyTorch's default layout, as edgeseg's torch-cuda backend runs it (and so does the CPU's
    # emulated FP16 of the tests, where channels_last only adds conversions).
    layout = torch.channels_last if precision == "fp16" and device == "cuda" else torch.contiguous_format
    form = copy.deepcopy(model).to(device, dtype=dtype, memory_format=layout).eval()
    if graph:
        return graphed_form(form, torch.zeros(shape, device=device, dtype=dtype).contiguous(memory_format=layout))

    def infer(batch: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            return form(torch.from_numpy(batch).to(device).to(dtype=dtype, memory_format=layout)).float().cpu().numpy()

    return infer


def graphed_form(form: Any, static_input: Any) -> Callable:
    """The forward captured once in a CUDA graph on ``static_input``; each call copies a batch in and replays it."""
    import torch

    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.no_grad(), torch.cuda.stream(side):
        for _ in range(3):  # outside the capture: cuDNN picks its algorithms and the allocator its blocks
            form(static_input)
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.no_grad(), torch.cuda.graph(graph):
        static_output = form(static_input).float()

    def infer(batch: np.ndarray) -> np.ndarray:
        static_input.copy_(torch.from_numpy(batch))  # to the GPU, in the form's dtype and layout
        graph.replay()
        return static_output.cpu().numpy()

    return infer


def ort_session(path: Path, device: str, cuda_graph: bool) -> Any:
    """An onnxruntime session on the CUDA provider (``enable_cuda_graph`` as asked) or, for the tests, the CPU."""
    import onnxruntime as ort

    if device == "cpu":
        if cuda_graph:
            raise ValueError("onnxruntime's CUDA graphs need the CUDA provider")
        return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    options = {"enable_cuda_graph": "1" if cuda_graph else "0"}
    session = ort.InferenceSession(str(path), providers=[("CUDAExecutionProvider", options), "CPUExecutionProvider"])
    if session.get_providers()[0] != "CUDAExecutionProvider":
        raise RuntimeError(
            f"onnxruntime fell back to {session.get_providers()[0]}: its CUDA/cuDNN libraries "
            "are missing or do not match it"
        )
    return session


def io_bound_form(session: Any, device: str, shape: tuple[int, ...]) -> Callable:
    """``infer(batch) -> float32 logits`` for batches of ``shape`` through IO binding: OrtValues on ``device``,
    bound once, updated in place.

    The addresses never change, as the CUDA provider's graphs require: the first runs capture, later ones replay.
    """
    import onnxruntime as ort

    model_input, model_output = session.get_inputs()[0], session.get_outputs()[0]
    output_shape = model_output.shape
    if not all(isinstance(size, int) for size in output_shape):  # the FP16 converter leaves it symbolic
        output_shape = session.run(None, {model_input.name: np.zeros(shape, np.float32)})[0].shape
    input_value = ort.OrtValue.ortvalue_from_numpy(np.zeros(shape, np.float32), device, 0)
    output_value = ort.OrtValue.ortvalue_from_shape_and_type(list(output_shape), np.float32, device, 0)
    binding = session.io_binding()
    binding.bind_ortvalue_input(model_input.name, input_value)
    binding.bind_ortvalue_output(model_output.name, output_value)

    def infer(batch: np.ndarray) -> np.ndarray:
        input_value.update_inplace(batch)
        session.run_with_iobinding(binding)
        logits = output_value.numpy()  # from the GPU a fresh host array; on the CPU a view of the bound buffer
        return logits.copy() if device == "cpu" else logits

    return infer


def onnx_forms(model: Any, card: Any, folder: Path) -> dict[str, Path]:
    """The fp32 ONNX and the FP16 one (float32 I/O), made as `edgeseg export` makes them."""
    from edgeseg.export.fp16_export import export_fp16
    from edgeseg.export.onnx_export import export_onnx

    fp32 = export_onnx(model, card, folder / "model.onnx")
    return {"fp32": fp32, "fp16": export_fp16(fp32, card, folder / "model.fp16.onnx")}


def probabilities(logits: np.ndarray) -> np.ndarray:
    return np.exp(-np.logaddexp(0.0, -logits.astype(np.float64)))  # the sigmoid, without overflow


def mask_dice(a: np.ndarray, b: np.ndarray) -> float:
    total = np.count_nonzero(a) + np.count_nonzero(b)
    return 1.0 if total == 0 else 2.0 * np.count_nonzero(a & b) / total


def agreement(reference: list[np.ndarray], logits: list[np.ndarray], threshold: float, margin: float) -> dict[str, Any]:
    """A form's outputs against the reference form's on the same images: probabilities, masks, sure pixels flipped."""
    worst, dice, sure_pixels, sure_flips = 0.0, [], 0, 0
    for reference_logits, form_logits in zip(reference, logits, strict=True):
        expected, probability = probabilities(reference_logits), probabilities(form_logits)
        worst = max(worst, float(np.max(np.abs(probability - expected))))
        expected_mask, mask = expected > threshold, probability > threshold
        dice.append(mask_dice(expected_mask, mask))
        sure = np.abs(expected - threshold) >= margin
        sure_pixels += int(sure.sum())
        sure_flips += int((sure & (mask != expected_mask)).sum())
    return {
        "max_abs_dprob": worst,
        "mask_dice_mean": float(np.mean(dice)),
        "mask_dice_min": float(np.min(dice)),
        "confident_flip_share": sure_flips / sure_pixels if sure_pixels else 0.0,
    }


def within_gate(precision: str, figures: dict[str, Any]) -> bool:
    """The export parity gate's rule for the precision: fp32 by probability, FP16 by confident pixels flipped."""
    from edgeseg.export.parity import Tolerances

    gate = Tolerances()
    if precision == "fp32":
        return figures["max_abs_dprob"] <= gate.fp32_max_abs_probability
    return figures["confident_flip_share"] <= gate.fp16_confident_flips


def time_forms(
    infers: dict[str, Callable], batches: list[np.ndarray], rounds: tuple[int, int], deadline: float
) -> dict[str, list[float]]:
    """Milliseconds per call of each form, the forms interleaved image by image so drift hits them alike."""
    warmup, runs = rounds
    for infer in infers.values():
        for index in range(warmup):
            infer(batches[index % len(batches)])
    times: dict[str, list[float]] = {name: [] for name in infers}
    for index in range(runs):
        if time.monotonic() > deadline:
            break
        for name, infer in infers.items():
            start = time.perf_counter()
            infer(batches[index % len(batches)])
            times[name].append((time.perf_counter() - start) * 1000.0)
    return times


def build_forms(
    builders: dict[str, tuple[str, Callable[[], Callable]]],
) -> tuple[dict[str, tuple[str, Callable]], dict[str, dict[str, Any]]]:
    """({name: (precision, infer)} of the forms that built, {name: failure record} of those that did not)."""
    infers, failures = {}, {}
    for name, (precision, build) in builders.items():
        try:
            infers[name] = (precision, build())
        except Exception as error:  # a form that cannot be built (a capture refused) is that form's failure
            failures[name] = {"status": "failed", "precision": precision, "reason": f"{type(error).__name__}: {error}"}
    return infers, failures


def measure_forms(
    infers: dict[str, tuple[str, Callable]],
    batches: list[np.ndarray],
    threshold: float,
    rounds: tuple[int, int],
    deadline: float,
) -> dict[str, dict[str, Any]]:
    """Each form's outputs on every image against the first form's, then all of them timed together."""
    from edgeseg.export.parity import Tolerances

    outputs = {name: [infer(batch) for batch in batches] for name, (_, infer) in infers.items()}
    reference = next(iter(outputs.values()))
    times = time_forms({name: infer for name, (_, infer) in infers.items()}, batches, rounds, deadline)
    figures = {}
    for index, (name, (precision, _)) in enumerate(infers.items()):
        record: dict[str, Any] = {
            "status": "measured",
            "precision": precision,
            "runs": len(times[name]),
            "p50_ms": round(float(np.percentile(times[name], 50)), 4) if times[name] else None,
            "p95_ms": round(float(np.percentile(times[name], 95)), 4) if times[name] else None,
        }
        if index:
            record.update(agreement(reference, outputs[name], threshold, Tolerances().confident_margin))
            record["within_gate"] = within_gate(precision, record)
        figures[name] = record
    return figures


def forms_part(
    plan: dict[str, str | None],
    builders: dict[str, tuple[str, Callable[[], Callable]]],
    batches: list[np.ndarray],
    threshold: float,
    device: str,
    deadline: float,
) -> dict[str, Any]:
    """Build, compare and time the planned forms; the part's record, forms in the plan's order."""
    if not batches:
        return {"status": "failed", "reason": "part 2's data has no val images"}
    infers, failures = build_forms({name: builders[name] for name, why in plan.items() if why is None})
    measured = measure_forms(infers, batches, threshold, FORM_ROUNDS[device], deadline) if infers else {}
    forms = {
        name: measured.get(name) or failures.get(name) or {"status": "skipped", "reason": why}
        for name, why in plan.items()
    }
    problems = [f"{name}: {form['reason']}" for name, form in forms.items() if form["status"] == "failed"]
    problems += [
        f"{name}: outside the parity gate against {next(iter(plan))}"
        for name, form in forms.items()
        if form.get("within_gate") is False
    ]
    return {
        "status": "failed" if problems else "passed",
        "reason": "; ".join(problems) or None,
        "device": device,
        "reference": next(iter(plan)),
        "images": len(batches),
        "input": list(batches[0].shape),
        "forms": forms,
    }


def part_torch_forms(budget_s: float, run: Path, data: Path, device: str) -> dict[str, Any]:
    import torch

    from edgeseg.train.network import load_model

    deadline = time.monotonic() + budget_s - 5.0
    model, card = load_model(run)
    batches = val_batches(data, card)
    shape = batches[0].shape if batches else (1, 3, *card.input_size)
    builders = {
        name: (precision, lambda precision=precision, graph=graph: torch_form(model, precision, graph, device, shape))
        for name, (precision, graph) in TORCH_FORMS.items()
    }
    result = forms_part(form_plan(TORCH_FORMS, device), builders, batches, card.output.threshold, device, deadline)
    return {**result, "torch": torch.__version__, "tf32_convolutions": torch.backends.cudnn.allow_tf32}


def part_onnxruntime_cuda(budget_s: float, run: Path, data: Path, work: Path, device: str) -> dict[str, Any]:
    """onnxruntime's CUDA provider (device "cpu": its CPU provider, so the IO binding runs without a GPU too)."""
    why = onnxruntime_cuda_skip_reason() if device == "cuda" else None
    if why:
        return {"status": "skipped", "reason": why}
    import onnxruntime as ort

    from edgeseg.train.network import load_model

    deadline = time.monotonic() + budget_s - 5.0
    model, card = load_model(run)
    paths = onnx_forms(model, card, work / "onnx")
    batches = val_batches(data, card)
    shape = batches[0].shape if batches else (1, 3, *card.input_size)
    builders = {
        name: (
            precision,
            lambda precision=precision, graph=graph: io_bound_form(
                ort_session(paths[precision], device, graph), device, shape
            ),
        )
        for name, (precision, graph) in ORT_FORMS.items()
    }
    result = forms_part(form_plan(ORT_FORMS, device), builders, batches, card.output.threshold, device, deadline)
    return {**result, "onnxruntime": ort.__version__, "providers": ort.get_available_providers()}


# --- the GPU, the report, main --------------------------------------------------------------------


def cuda_gpu() -> tuple[dict[str, Any] | None, str | None, bool]:
    """(the GPU PyTorch uses, None, False), or (None, why not, whether that is a failure rather than a skip)."""
    try:
        import torch
    except ImportError:
        gpus, why = host.nvidia_smi_gpus()
        if not gpus:  # no GPU either: nothing this check could measure here
            return None, f"no CUDA GPU found (PyTorch not installed; nvidia-smi: {why})", False
        return (
            None,
            "PyTorch is not installed (this check needs PyTorch for CUDA and cuda-python: "
            "pip install 'edgeseg[gpu,train]')",
            True,
        )
    if torch.cuda.is_available():
        index = torch.cuda.current_device()
        properties = torch.cuda.get_device_properties(index)
        return (
            {
                "name": torch.cuda.get_device_name(index),
                "compute_capability": f"{properties.major}.{properties.minor}",
                "memory_gib": round(properties.total_memory / 1024**3, 1),
                "torch": torch.__version__,
                "torch_cuda": torch.version.cuda,
            },
            None,
            False,
        )
    gpus, why = host.nvidia_smi_gpus()
    if not gpus:
        return (
            None,
            (
                f"no CUDA GPU found (PyTorch {torch.__version__}, CUDA build: {torch.version.cuda or 'none'}; "
                f"nvidia-smi: {why})"
            ),
            False,
        )
    listed = f"nvidia-smi lists {gpus[0]['name']} (driver {gpus[0]['driver']})"
    if torch.version.cuda is None:
        return None, f"{listed} but PyTorch {torch.__version__} is a CPU build: install PyTorch for CUDA", True
    problem = host.driver_problem(gpus[0]["driver"], int(torch.version.cuda.split(".")[0]))
    return (
        None,
        problem
        or (
            f"{listed} but PyTorch (CUDA {torch.version.cuda}) cannot use it "
            f"(CUDA_VISIBLE_DEVICES={os.environ.get('CUDA_VISIBLE_DEVICES', 'unset')})"
        ),
        True,
    )


def log_tails(work: Path, lines: int = 40) -> dict[str, str]:
    return {
        path.name: "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
        for path in sorted(work.glob("*.log"))
    }


def run_parts(work: Path, simulate: bool) -> dict[str, dict[str, Any]]:
    device, setup = ("cpu", CPU_SETUP) if simulate else ("cuda", GPU_SETUP)
    backends = ("torch-cpu", "torch-cpu") if simulate else ("torch-cuda", "torch-cpu")
    run, data = work / "run", work / "synth"
    parts: dict[str, dict[str, Any]] = {}
    parts["buffers"] = (
        {"status": "skipped", "reason": "simulated on the CPU: needs CUDA"}
        if simulate
        else timed_part("buffers", part_buffers)
    )
    parts["train"] = timed_part("train", lambda budget: part_train(budget, work, device, setup))
    for name, part in (
        ("eval", lambda budget: part_eval(budget, work, backends)),
        ("bench", lambda budget: part_bench(budget, work, backends, setup)),
        ("torch_forms", lambda budget: part_torch_forms(budget, run, data, device)),
        ("onnxruntime_cuda", lambda budget: part_onnxruntime_cuda(budget, run, data, work, device)),
    ):
        if parts["train"]["status"] != "passed":
            parts[name] = {"status": "skipped", "reason": "needs the run that part 2 trains"}
            continue
        parts[name] = timed_part(name, part)
    return parts


def skipped_parts() -> dict[str, dict[str, Any]]:
    """Every part skipped on a host without a CUDA GPU (the record's header says why there is none);
    onnxruntime's part says what its own check finds first: a missing CUDA provider."""
    parts = {name: {"status": "skipped", "reason": "needs a CUDA GPU; this host has none"} for name in BUDGETS_S}
    parts["onnxruntime_cuda"]["reason"] = onnxruntime_cuda_skip_reason() or parts["onnxruntime_cuda"]["reason"]
    return parts


def summary(name: str, part: dict[str, Any]) -> str:
    """The figures of one part, in one line."""
    if part["status"] == "skipped" or (part["status"] == "failed" and part.get("seconds") is None):
        return part.get("reason") or "-"
    if name == "buffers" and part.get("round_trips"):
        return (
            f"{part['round_trips']} round trips of {'x'.join(map(str, part['shape']))} float32, {part['wrong']} wrong "
            f"(max abs error {part['max_abs_error']:g}), zero copy: {part['zero_copy']}; round trip p50 "
            f"{part['round_trip_ms_p50']} ms, p99 {part['round_trip_ms_p99']} ms"
        )
    if name == "train" and part.get("epochs") is not None:
        dice = (part.get("val_metrics") or {}).get("dice")
        return (
            f"killed (SIGKILL) after epoch {part['epochs_before_kill']} (first checkpoint after "
            f"{part['seconds_to_first_checkpoint']} s), resumed to epochs {part['epochs'][0]}-{part['epochs'][-1]}; "
            f"AMP grad scaler: {part['amp_grad_scaler']}; "
            f"{part['images']} synthetic images at {part['image_size']} px; "
            f"val Dice {dice if dice is None else round(dice, 4)}"
        )
    if name == "eval" and part.get("runs"):
        first, second = part["runs"]
        return f"{first['images']} val images; " + "; ".join(
            f"mean {metric} {first['mean'][metric]:.5f} ({first['backend']}) vs {second['mean'][metric]:.5f} "
            f"({second['backend']}): difference {part['abs_delta'][metric]:.5f}, tolerance {part['tolerance'][metric]}"
            for metric in part["abs_delta"]
        )
    if name == "bench" and part.get("backends"):
        rows = [
            f"{backend}: inference p50 {figures['inference_p50_ms']} ms, end to end p50 {figures['end_to_end_p50_ms']} "
            f"ms (p99 {figures['end_to_end_p99_ms']}), {figures['fps']} FPS"
            for backend, figures in part["backends"].items()
        ]
        return "; ".join(rows) + f"; inference speed-up {part['inference_speedup']}x"
    if name in ("torch_forms", "onnxruntime_cuda") and part.get("forms"):
        measured = sum(form["status"] == "measured" for form in part["forms"].values())
        return (
            f"{measured} of {len(part['forms'])} forms measured on {part['device']}, {part['images']} val images "
            f"at {'x'.join(map(str, part['input']))}; reference {part['reference']} (see Forms)"
        )
    return part.get("reason") or "-"


def header(report: dict[str, Any]) -> str:
    """The record's first line: the GPU and the software that drove it, or why there was no GPU and the CPU."""
    gpu, made = report["gpu"], f"{report['seconds']} s in all. Made by `{report['command']}`."
    if gpu.get("reason"):
        cpu = report["host"]["cpu"]
        return (
            f"{report['date']}; {gpu['reason']}; every GPU part skipped. CPU: {cpu['model'] or 'unknown'} "
            f"({cpu['logical_cores'] or '?'} logical cores). {made}"
        )
    return (
        f"{report['date']}; GPU {gpu['name']} (compute capability {gpu.get('compute_capability', '-')}, "
        f"{gpu.get('memory_gib', '-')} GiB), driver {report['driver'] or '-'}; PyTorch {gpu.get('torch')} "
        f"(CUDA {gpu.get('torch_cuda')}); cuda-python {report['cuda_python'] or '-'}; {made}"
    )


def cell(text: str) -> str:
    """Text that keeps a markdown table's row in one piece."""
    return " ".join(text.split()).replace("|", "/")


def form_row(part: str, name: str, form: dict[str, Any]) -> str:
    if form["status"] != "measured":
        return f"| {part} | {name} | {form['status']} | - | - | - | - | - | - | {cell(form['reason'])} |"
    timing = f"{form['p50_ms']} | {form['p95_ms']} | {form['runs']}"
    if "within_gate" not in form:
        return f"| {part} | {name} | measured | {timing} | - | - | - | reference |"
    return (
        f"| {part} | {name} | measured | {timing} | {form['max_abs_dprob']:.2e} | {form['mask_dice_mean']:.5f} "
        f"({form['mask_dice_min']:.5f}) | {form['confident_flip_share']:.2e} | "
        f"{'yes' if form['within_gate'] else 'NO'} |"
    )


def forms_table(parts: dict[str, dict[str, Any]]) -> list[str]:
    """Parts 5 and 6 form by form; nothing when neither measured a form."""
    rows = [
        form_row(name, form_name, form)
        for name, part in parts.items()
        for form_name, form in (part.get("forms") or {}).items()
    ]
    if not rows:
        return []
    return [
        "",
        "Forms: a float32 batch on the host to float32 logits on the host, interleaved; each compared with its "
        "part's first form on the same images at the network's input size (probability, mask Dice, confident "
        "pixels flipped) and judged by the export parity gate's fp32 or FP16 rule.",
        "",
        "| part | form | status | p50 ms | p95 ms | runs | max abs dprob | mask Dice mean (min) "
        "| confident flipped | within gate |",
        "| --- " * 10 + "|",
        *rows,
    ]


def markdown(report: dict[str, Any]) -> str:
    lines = [
        f"# GPU check: {report['gpu']['name']}",
        "",
        header(report),
        "",
        "| part | status | seconds (budget) | figures |",
        "| --- | --- | --- | --- |",
    ]
    for name, part in report["parts"].items():
        spent = f"{part['seconds']} ({part['budget_s']:g})" if part.get("seconds") is not None else "-"
        lines.append(f"| {name} | {part['status']} | {spent} | {cell(summary(name, part))} |")
    lines += forms_table(report["parts"])
    failed = [f"- {name}: {part['reason']}" for name, part in report["parts"].items() if part["status"] == "failed"]
    lines += (["", "Failed:", *failed] if failed else []) + [
        "",
        "Host:",
        *[f"- {line}" for line in host.describe_host(report["host"])],
    ]
    return "\n".join(lines) + "\n"


NO_GPU = "no CUDA GPU"


def write_record(
    gpu: dict[str, Any], parts: dict[str, dict[str, Any]], logs: dict[str, str], started: float, out: Path
) -> None:
    gpus, _ = host.nvidia_smi_gpus()
    report = {
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "gpu": gpu,
        "driver": gpus[0]["driver"] if gpus else None,
        "cuda_python": host.package_version("cuda-python")[0] or host.package_version("cuda-bindings")[0],
        "command": "python benchmarks/gpu_check.py",
        "seconds": round(time.monotonic() - started, 1),
        "parts": parts,
        "failed_logs": logs,
        "host": host.host_info(),
    }
    stem = out / f"gpu-check-{slug(gpu['name'])}"
    write_text_atomic(stem.with_suffix(".json"), json.dumps(report, indent=2) + "\n")
    write_text_atomic(stem.with_suffix(".md"), markdown(report))
    print(f"gpu_check: wrote {stem}.json and .md", flush=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--out", type=Path, default=RESULTS_DIR, help="folder for gpu-check-<gpu>.json and .md [%(default)s]"
    )
    parser.add_argument("--simulate-on-cpu", action="store_true", help=argparse.SUPPRESS)  # the test of parts 2-6
    args = parser.parse_args()
    started = time.monotonic()
    if args.simulate_on_cpu:
        gpu, why, failure = {"name": "simulated on the CPU"}, None, False
    else:
        gpu, why, failure = cuda_gpu()
    if failure:
        print(f"gpu_check: cannot run: {why}; nothing written", flush=True)
        return 1
    if gpu is None:
        print(f"gpu_check: skipped: {why}", flush=True)
        write_record({"name": NO_GPU, "reason": why}, skipped_parts(), {}, started, args.out)
        return 0
    print(f"gpu_check: {gpu['name']}: {len(BUDGETS_S)} parts, at most {sum(BUDGETS_S.values()):.0f} s", flush=True)
    with tempfile.TemporaryDirectory(prefix="gpu-check-") as folder:
        parts = run_parts(Path(folder), args.simulate_on_cpu)
        logs = log_tails(Path(folder)) if any(part["status"] == "failed" for part in parts.values()) else {}
    write_record(gpu, parts, logs, started, args.out)
    return 1 if any(part["status"] == "failed" for part in parts.values()) else 0


if __name__ == "__main__":
    sys.exit(main())
