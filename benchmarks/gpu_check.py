"""GPU check for any CUDA machine without TensorRT: PyTorch for CUDA and cuda-python, nothing downloaded.

    python benchmarks/gpu_check.py [--out benchmarks/results]

Four parts, each within its own time budget (under 8 minutes in all, start-up included):

1. buffers (45 s): edgeseg's cuda-python pinned/device buffers (``edgeseg.runtime.cuda.PinnedBuffer``)
   round-tripped 1000 times on one cuda-python stream, with PyTorch computing ``y = 2x + 1`` in place
   of the engine on that same stream (``torch.cuda.ExternalStream`` from the stream's handle, the
   device memory wrapped without a copy); every output is checked against numpy.
2. train (240 s): `edgeseg synth`, then `edgeseg train --device cuda` (mixed precision) on it, killed
   with SIGKILL once its first checkpoint exists, then `edgeseg train --resume` to the end: the epochs
   are contiguous, the run directory complete and the checkpoint holds the AMP grad scaler's state.
3. eval (90 s): `edgeseg eval` of that run on its val split through torch-cuda and torch-cpu; mean
   Dice and thresholded Jaccard must agree within the FP16 parity gate (export.parity.Tolerances).
4. bench (75 s): `edgeseg bench` of the run on torch-cuda and torch-cpu, interleaved.

Writes benchmarks/results/gpu-check-<gpu-name>.json and .md with every figure and the GPU named.
Without a CUDA GPU it prints one "skipped" line and exits 0, writing nothing; a GPU that nvidia-smi
lists but PyTorch cannot use (a CPU build of torch, a driver too old) exits 1 with the reason.
Exit 1 also when any part failed.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable

import numpy as np

from edgeseg import host
from edgeseg.files import portable_path, write_text_atomic

RESULTS_DIR = Path(__file__).resolve().parent / "results"
BUDGETS_S = {"buffers": 45.0, "train": 240.0, "eval": 90.0, "bench": 75.0}
ROUND_TRIPS = 1000
BUFFER_SHAPE = (1, 3, 256, 256)
# The training set-up: a real one on a GPU; a tiny one for --simulate-on-cpu (the test of this script).
# Random encoder weights: the check is of the mechanics (AMP, kill, resume), and a GPU host need not carry
# the ImageNet weights package (its first run on an H100 failed there for want of it).
GPU_SETUP = {"n": 96, "image_size": 192, "epochs": 6, "train": ["--size", "192", "--batch-size", "8", "--encoder-weights", "none"],
             "bench": ["--runs", "50", "--warmup", "10"]}
CPU_SETUP = {"n": 24, "image_size": 64, "epochs": 3, "bench": ["--runs", "5", "--warmup", "1"],
             "train": ["--size", "64", "--batch-size", "4", "--decoder-channels", "32,32", "--encoder-weights", "none"]}


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
    print(f"gpu_check: {name}: {result['status']} in {result['seconds']} s"
          + (f" ({result['reason']})" if result.get("reason") else ""), flush=True)
    return result


# --- 1. buffers -----------------------------------------------------------------------------------


class DeviceArray:
    """Device memory as PyTorch can wrap it without a copy (the CUDA Array Interface)."""

    def __init__(self, pointer: int, shape: tuple[int, ...]) -> None:
        self.__cuda_array_interface__ = {"shape": shape, "typestr": "<f4", "data": (pointer, False),
                                         "version": 3, "strides": None, "stream": None}


def open_stream(cuda: Any) -> tuple[Any, int, Callable[[], None], Callable[[], None]]:
    """(what PinnedBuffer's copies take, the int handle, synchronize, destroy), across edgeseg.runtime.cuda's versions."""
    if hasattr(cuda, "Stream"):
        stream = cuda.Stream()
        return stream, stream.handle, stream.synchronize, stream.destroy
    runtime = cuda.cudart()
    raw = cuda.call(runtime.cudaStreamCreate())
    return (raw, int(raw), lambda: cuda.call(runtime.cudaStreamSynchronize(raw)),
            lambda: cuda.call(runtime.cudaStreamDestroy(raw)))


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
    reason = None if passed else (f"{wrong} of {done} round trips wrong (max abs error {worst:g})" if wrong else
                                  f"{done} of {ROUND_TRIPS} round trips in the budget" if done < ROUND_TRIPS else
                                  "PyTorch copied the device memory instead of wrapping it")
    return {"status": "passed" if passed else "failed", "reason": reason, "round_trips": done, "wrong": wrong,
            "max_abs_error": worst, "zero_copy": zero_copy, "shape": list(BUFFER_SHAPE),
            "round_trip_ms_p50": round(float(np.percentile(times_ms, 50)), 4) if times_ms else None,
            "round_trip_ms_p99": round(float(np.percentile(times_ms, 99)), 4) if times_ms else None}


# --- 2. train, killed, resumed --------------------------------------------------------------------


def edgeseg(*args: str, timeout: float, log: Path) -> subprocess.CompletedProcess:
    """One `edgeseg` command in a child process, its output appended to ``log``."""
    with open(log, "a") as stream:
        stream.write(f"\n$ edgeseg {' '.join(args)}\n")
        stream.flush()
        return subprocess.run([sys.executable, "-m", "edgeseg", *args], stdout=stream, stderr=subprocess.STDOUT,
                              timeout=max(timeout, 1.0), check=False)


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
        process = subprocess.Popen([sys.executable, "-m", "edgeseg", *arguments], stdout=stream, stderr=subprocess.STDOUT)
    start = time.monotonic()
    while process.poll() is None and not epoch_rows(run) and time.monotonic() < deadline:
        time.sleep(0.05)
    if process.poll() is not None:
        return {"killed": False, "reason": f"the run ended (exit {process.returncode}) before it could be killed"}
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    epochs = len(epoch_rows(run))
    reason = None if epochs else "no checkpoint within the budget"
    return {"killed": True, "reason": reason, "epochs_before_kill": epochs,
            "seconds_to_first_checkpoint": round(time.monotonic() - start, 1),
            "finished_before_kill": (run / "logs" / "threshold.csv").exists()}


def part_train(budget_s: float, work: Path, device: str, setup: dict[str, Any]) -> dict[str, Any]:
    import torch

    deadline, log = time.monotonic() + budget_s, work / "train.log"
    data, run = work / "synth", work / "run"
    edgeseg("synth", str(data), "--n", str(setup["n"]), "--image-size", str(setup["image_size"]), "--seed", "0",
            timeout=60, log=log).check_returncode()
    arguments = ["train", "--data", str(data), "--out", str(run), "--device", device, "--epochs", str(setup["epochs"]),
                 "--time-budget", "2", "--seed", "0", "--no-progress", *setup["train"]]
    result = train_until_first_checkpoint(arguments, run, deadline, log)
    if not result["killed"] or result["reason"] or result["finished_before_kill"]:
        return {"status": "failed", **result, "reason": result["reason"] or "the run had finished before the kill"}
    resumed = edgeseg("train", "--resume", str(run), "--data", str(data), "--no-progress", timeout=deadline - time.monotonic(),
                      log=log)
    epochs = [int(row["epoch"]) for row in epoch_rows(run)]
    card = json.loads((run / "card.json").read_text()) if (run / "card.json").exists() else {}
    scaler = torch.load(run / "checkpoint-last.pt", map_location="cpu", weights_only=True).get("scaler") or {}
    complete = all((run / name).exists() for name in ("model.safetensors", "card.json", "logs/threshold.csv"))
    problems = [text for failed, text in (
        (resumed.returncode != 0, f"the resumed run exited {resumed.returncode} (see train.log)"),
        (epochs != list(range(1, len(epochs) + 1)) or len(epochs) <= result["epochs_before_kill"],
         f"epochs after resume are {epochs}"),
        (not complete, "the run directory is incomplete"),
        (device == "cuda" and not scaler, "the checkpoint has no grad scaler state: mixed precision was off"),
    ) if failed]
    seconds = [float(row["seconds"]) for row in epoch_rows(run) if row.get("seconds")]
    return {"status": "failed" if problems else "passed", "reason": "; ".join(problems) or None, **result,
            "epochs": epochs, "amp_grad_scaler": bool(scaler), "val_metrics": card.get("provenance", {}).get("val_metrics"),
            "epoch_seconds": seconds, "images": setup["n"], "image_size": setup["image_size"], "run": portable_path(run), "data": portable_path(data)}


# --- 3. eval and 4. bench -------------------------------------------------------------------------


def part_eval(budget_s: float, work: Path, backends: tuple[str, str]) -> dict[str, Any]:
    from edgeseg.export.parity import Tolerances

    deadline, runs = time.monotonic() + budget_s, []
    for index, backend in enumerate(backends):
        target = work / f"eval-{index}-{backend}.json"
        done = edgeseg("eval", str(work / "run"), "--data", str(work / "synth"), "--split", "val", "--backend", backend,
                       "--out", str(work / f"eval-{index}-{backend}"), "--json", str(target),
                       timeout=deadline - time.monotonic(), log=work / "eval.log")
        if done.returncode != 0:
            return {"status": "failed", "reason": f"eval on {backend} exited {done.returncode} (see eval.log)"}
        evaluation = json.loads(target.read_text())
        runs.append({"backend": evaluation["backend"], "images": evaluation["images"], "mean": evaluation["mean"]})
    gate = Tolerances()
    limits = {"dice": gate.fp16_abs_delta_dice, "threshold_jaccard": gate.fp16_abs_delta_threshold_jaccard}
    deltas = {name: abs(runs[0]["mean"][name] - runs[1]["mean"][name]) for name in limits}
    outside = [f"|delta {name}| {deltas[name]:.5f} > {limits[name]}" for name in limits if deltas[name] > limits[name]]
    return {"status": "failed" if outside else "passed", "reason": "; ".join(outside) or None,
            "runs": runs, "abs_delta": deltas, "tolerance": limits}


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
            "status": record["status"], "reason": record["reason"], "fps": record["fps"],
            "inference_p50_ms": (stages.get("inference") or {}).get("p50_ms"),
            "end_to_end_p50_ms": (stages.get("end_to_end") or {}).get("p50_ms"),
            "end_to_end_p99_ms": (stages.get("end_to_end") or {}).get("p99_ms")}
    measured = [backend for backend in backends if figures.get(backend, {}).get("status") == "ok"]
    passed = done.returncode == 0 and len(measured) == len(backends)
    reason = None if passed else f"bench exited {done.returncode}; measured: {measured or 'none'} (see bench.log)"
    fast, slow = (figures.get(backend, {}).get("inference_p50_ms") for backend in backends)
    return {"status": "passed" if passed else "failed", "reason": reason, "backends": figures,
            "inference_speedup": round(slow / fast, 2) if fast and slow else None}


# --- the GPU, the report, main --------------------------------------------------------------------


def cuda_gpu() -> tuple[dict[str, Any] | None, str | None, bool]:
    """(the GPU PyTorch uses, None, False), or (None, why not, whether that is a failure rather than a skip)."""
    try:
        import torch
    except ImportError:
        return None, "PyTorch is not installed (this check needs PyTorch for CUDA and cuda-python: pip install 'edgeseg[gpu,train]')", True
    if torch.cuda.is_available():
        index = torch.cuda.current_device()
        properties = torch.cuda.get_device_properties(index)
        return {"name": torch.cuda.get_device_name(index), "compute_capability": f"{properties.major}.{properties.minor}",
                "memory_gib": round(properties.total_memory / 1024**3, 1), "torch": torch.__version__,
                "torch_cuda": torch.version.cuda}, None, False
    gpus, why = host.nvidia_smi_gpus()
    if not gpus:
        return None, (f"no CUDA GPU found (PyTorch {torch.__version__}, CUDA build: {torch.version.cuda or 'none'}; "
                      f"nvidia-smi: {why})"), False
    listed = f"nvidia-smi lists {gpus[0]['name']} (driver {gpus[0]['driver']})"
    if torch.version.cuda is None:
        return None, f"{listed} but PyTorch {torch.__version__} is a CPU build: install PyTorch for CUDA", True
    problem = host.driver_problem(gpus[0]["driver"], int(torch.version.cuda.split(".")[0]))
    return None, problem or (f"{listed} but PyTorch (CUDA {torch.version.cuda}) cannot use it "
                             f"(CUDA_VISIBLE_DEVICES={os.environ.get('CUDA_VISIBLE_DEVICES', 'unset')})"), True


def log_tails(work: Path, lines: int = 40) -> dict[str, str]:
    return {path.name: "\n".join(path.read_text(errors="replace").splitlines()[-lines:]) for path in sorted(work.glob("*.log"))}


def run_parts(work: Path, simulate: bool) -> dict[str, dict[str, Any]]:
    device, setup = ("cpu", CPU_SETUP) if simulate else ("cuda", GPU_SETUP)
    backends = ("torch-cpu", "torch-cpu") if simulate else ("torch-cuda", "torch-cpu")
    parts: dict[str, dict[str, Any]] = {}
    parts["buffers"] = ({"status": "skipped", "reason": "simulated on the CPU: needs CUDA"} if simulate
                        else timed_part("buffers", part_buffers))
    parts["train"] = timed_part("train", lambda budget: part_train(budget, work, device, setup))
    for name, part in (("eval", lambda budget: part_eval(budget, work, backends)),
                       ("bench", lambda budget: part_bench(budget, work, backends, setup))):
        if parts["train"]["status"] != "passed":
            parts[name] = {"status": "skipped", "reason": "needs the run that part 2 trains"}
            continue
        parts[name] = timed_part(name, part)
    return parts


def summary(name: str, part: dict[str, Any]) -> str:
    """The figures of one part, in one line."""
    if part["status"] == "skipped" or (part["status"] == "failed" and part.get("seconds") is None):
        return part.get("reason") or "-"
    if name == "buffers" and part.get("round_trips"):
        return (f"{part['round_trips']} round trips of {'x'.join(map(str, part['shape']))} float32, {part['wrong']} wrong "
                f"(max abs error {part['max_abs_error']:g}), zero copy: {part['zero_copy']}; round trip p50 "
                f"{part['round_trip_ms_p50']} ms, p99 {part['round_trip_ms_p99']} ms")
    if name == "train" and part.get("epochs") is not None:
        dice = (part.get("val_metrics") or {}).get("dice")
        return (f"killed (SIGKILL) after epoch {part['epochs_before_kill']} (first checkpoint after "
                f"{part['seconds_to_first_checkpoint']} s), resumed to epochs {part['epochs'][0]}-{part['epochs'][-1]}; "
                f"AMP grad scaler: {part['amp_grad_scaler']}; {part['images']} synthetic images at {part['image_size']} px; "
                f"val Dice {dice if dice is None else round(dice, 4)}")
    if name == "eval" and part.get("runs"):
        first, second = part["runs"]
        return f"{first['images']} val images; " + "; ".join(
            f"mean {metric} {first['mean'][metric]:.5f} ({first['backend']}) vs {second['mean'][metric]:.5f} "
            f"({second['backend']}): difference {part['abs_delta'][metric]:.5f}, tolerance {part['tolerance'][metric]}"
            for metric in part["abs_delta"])
    if name == "bench" and part.get("backends"):
        rows = [f"{backend}: inference p50 {figures['inference_p50_ms']} ms, end to end p50 {figures['end_to_end_p50_ms']} "
                f"ms (p99 {figures['end_to_end_p99_ms']}), {figures['fps']} FPS" for backend, figures in part["backends"].items()]
        return "; ".join(rows) + f"; inference speed-up {part['inference_speedup']}x"
    return part.get("reason") or "-"


def markdown(report: dict[str, Any]) -> str:
    gpu = report["gpu"]
    lines = [f"# GPU check: {gpu['name']}", "",
             f"{report['date']}; GPU {gpu['name']} (compute capability {gpu.get('compute_capability', '-')}, "
             f"{gpu.get('memory_gib', '-')} GiB), driver {report['driver'] or '-'}; PyTorch {gpu.get('torch')} "
             f"(CUDA {gpu.get('torch_cuda')}); cuda-python {report['cuda_python'] or '-'}; "
             f"{report['seconds']} s in all. Made by `{report['command']}`.", "",
             "| part | status | seconds (budget) | figures |", "| --- | --- | --- | --- |"]
    for name, part in report["parts"].items():
        spent = f"{part['seconds']} ({part['budget_s']:g})" if part.get("seconds") is not None else "-"
        lines.append(f"| {name} | {part['status']} | {spent} | {summary(name, part).replace('|', '/')} |")
    failed = [f"- {name}: {part['reason']}" for name, part in report["parts"].items() if part["status"] == "failed"]
    lines += (["", "Failed:", *failed] if failed else []) + ["", "Host:", *[f"- {line}" for line in host.describe_host(report["host"])]]
    return "\n".join(lines) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=RESULTS_DIR, help="folder for gpu-check-<gpu>.json and .md [%(default)s]")
    parser.add_argument("--simulate-on-cpu", action="store_true", help=argparse.SUPPRESS)  # the test of parts 2-4
    args = parser.parse_args()
    started = time.monotonic()
    if args.simulate_on_cpu:
        gpu, why, failure = {"name": "simulated on the CPU"}, None, False
    else:
        gpu, why, failure = cuda_gpu()
    if gpu is None:
        print(f"gpu_check: {'cannot run' if failure else 'skipped'}: {why}; nothing written", flush=True)
        return 1 if failure else 0
    print(f"gpu_check: {gpu['name']}: 4 parts, at most {sum(BUDGETS_S.values()):.0f} s", flush=True)
    with tempfile.TemporaryDirectory(prefix="gpu-check-") as folder:
        parts = run_parts(Path(folder), args.simulate_on_cpu)
        logs = log_tails(Path(folder)) if any(part["status"] == "failed" for part in parts.values()) else {}
    gpus, _ = host.nvidia_smi_gpus()
    report = {"date": datetime.now(timezone.utc).isoformat(timespec="seconds"), "gpu": gpu,
              "driver": gpus[0]["driver"] if gpus else None, "cuda_python": host.package_version("cuda-python")[0] or host.package_version("cuda-bindings")[0],
              "command": "python benchmarks/gpu_check.py", "seconds": round(time.monotonic() - started, 1),
              "parts": parts, "failed_logs": logs, "host": host.host_info()}
    stem = args.out / f"gpu-check-{slug(gpu['name'])}"
    write_text_atomic(stem.with_suffix(".json"), json.dumps(report, indent=2) + "\n")
    write_text_atomic(stem.with_suffix(".md"), markdown(report))
    print(f"gpu_check: wrote {stem}.json and .md", flush=True)
    return 1 if any(part["status"] == "failed" for part in parts.values()) else 0


if __name__ == "__main__":
    sys.exit(main())
