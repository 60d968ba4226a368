"""Throughput of `edgeseg run` against the bare model, in the same process run.

    python benchmarks/runtime_throughput.py MODEL.onnx [--frames 40] [--rounds 11] [--backend auto]

A 640x480 video (generated with OpenCV, a moving dark lesion on skin tones) goes through
``run_pipeline``, the loop `edgeseg run` runs, in two configurations: "record" (overlay video
--save + --jsonl, headless) and "measure" (--jsonl only). The bare model's throughput is
``backend.infer`` alone, called back to back on one preprocessed tensor from the same backend
object. Each round runs bare, record and measure back to back (in reverse order every other round),
so a machine shared with other work affects both sides alike; the ratio to bare is the median of the
rounds' ratios, reported with every round's figures and the per-stage means.
Results: benchmarks/results/runtime_throughput_<model>_<backend>.json and .md.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

import cv2
import numpy as np

from edgeseg.evaluate.models import open_model
from edgeseg.files import portable_path, write_text_atomic
from edgeseg.names import RUNTIME_BACKENDS
from edgeseg.runtime.run_loop import STAGES, RunOptions, run_pipeline
from edgeseg.runtime.sources import open_source
from edgeseg.segmenter import Segmenter

RESULTS_DIR = Path(__file__).resolve().parent / "results"
WIDTH, HEIGHT = 640, 480


def write_test_video(path: Path, frames: int) -> Path:
    rng = np.random.default_rng(0)
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), 30.0, (WIDTH, HEIGHT))
    for index in range(frames):
        image = np.empty((HEIGHT, WIDTH, 3), dtype=np.uint8)
        image[:] = (150, 170, 205)
        cv2.ellipse(image, (WIDTH // 2 + index % 100, HEIGHT // 2), (130, 95), index % 180, 0, 360, (60, 70, 110), -1)
        writer.write(cv2.add(image, rng.integers(0, 25, image.shape, dtype=np.uint8)))
    writer.release()
    return path


def bare_throughput(segmenter: Segmenter, video: Path, frames: int) -> float:
    """Frames per second of the inference stage alone, back to back on one prepared frame."""
    capture = cv2.VideoCapture(str(video))
    ok, image = capture.read()
    capture.release()
    assert ok, f"{video}: no frame"
    prepared = segmenter.prepare(image)
    for _ in range(3):
        segmenter.infer(prepared)
    start = time.perf_counter()
    for _ in range(frames):
        segmenter.infer(prepared)
    return frames / (time.perf_counter() - start)


def pipeline_run(segmenter: Segmenter, video: Path, options: RunOptions) -> dict:
    with open_source(str(video)) as source:
        summary = run_pipeline(segmenter, source, options)
    return {"fps": summary.fps, "frames": summary.frames, "stage_ms": summary.stage_ms}


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model", type=Path, help="an edgeseg ONNX (or TensorRT engine)")
    parser.add_argument("--frames", type=int, default=40, help="frames per run (default 40: short runs, so a "
                        "change in the machine's load rarely falls between the runs of one round)")
    parser.add_argument("--rounds", type=int, default=11, help="rounds of bare and pipeline runs (default 11)")
    parser.add_argument("--backend", choices=("auto", *RUNTIME_BACKENDS), default="auto")
    parser.add_argument("--threads", type=int, default=None, help="onnxruntime threads (default: its choice)")
    parser.add_argument("--out", type=Path, default=RESULTS_DIR)
    return parser.parse_args()


def measure_rounds(segmenter: Segmenter, video: Path, frames: int, rounds: int,
                   configurations: dict[str, RunOptions]) -> list[dict]:
    """Each round: bare, then each configuration, the order reversed every other round."""
    pipeline_run(segmenter, video, RunOptions(max_frames=5))  # warm up every stage once
    measured = []
    for number in range(rounds):
        result = {}
        order = ["bare", *configurations]
        for name in order if number % 2 == 0 else reversed(order):  # so a drift in load hits both sides
            if name == "bare":
                result["bare_fps"] = bare_throughput(segmenter, video, frames)
            else:
                result[name] = pipeline_run(segmenter, video, configurations[name])
        measured.append(result)
        print(f"round {number + 1}: bare {result['bare_fps']:.2f} FPS, "
              + ", ".join(f"{name} {result[name]['fps']:.2f} FPS" for name in configurations), file=sys.stderr)
    return measured


def summarize(rounds: list[dict], names: list[str]) -> dict:
    summary = {}
    for name in names:
        fps = statistics.median(r[name]["fps"] for r in rounds)
        ratios = [r[name]["fps"] / r["bare_fps"] for r in rounds]
        stages = {stage: statistics.median(r[name]["stage_ms"].get(stage, 0.0) for r in rounds) for stage in STAGES}
        # Share of the run's wall time the model was running: immune to load that shifts between runs.
        busy = statistics.median(r[name]["fps"] * r[name]["stage_ms"]["inference"] / 1000 for r in rounds)
        summary[name] = {"fps": fps, "ratio_to_bare": statistics.median(ratios), "ratios_per_round": ratios,
                         "model_busy_share": busy, "stage_ms": stages}
    return summary


def main() -> int:
    args = parse_args()
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="edgeseg-bench-") as scratch:
        scratch = Path(scratch)
        video = write_test_video(scratch / "input.mp4", args.frames)
        configurations = {
            "record": RunOptions(save_video=scratch / "overlay.mp4", jsonl=scratch / "record.jsonl"),
            "measure": RunOptions(jsonl=scratch / "measure.jsonl"),
        }
        with open_model(args.model, args.backend, threads=args.threads) as segmenter:
            rounds = measure_rounds(segmenter, video, args.frames, args.rounds, configurations)
    backend = segmenter.backend
    report = {
        "benchmark": "runtime_throughput",
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "model": portable_path(args.model),
        "backend": backend.name,
        "precision": backend.precision,
        "input_size": list(backend.card.input_size),
        "encoder": backend.card.encoder,
        "architecture_kwargs": backend.card.architecture_kwargs,
        "video": f"{WIDTH}x{HEIGHT} mp4v, {args.frames} frames",
        "threads": args.threads,
        "rounds": args.rounds,
        "load_average_before_after": [load_before, os.getloadavg()],
        "bare_fps": statistics.median(r["bare_fps"] for r in rounds),
        "pipelines": summarize(rounds, list(configurations)),
        "per_round": rounds,
        "host": host_summary(),
    }
    args.out.mkdir(parents=True, exist_ok=True)
    stem = f"runtime_throughput_{args.model.name.split('.')[0]}_{backend.name}"
    write_text_atomic(args.out / f"{stem}.json", json.dumps(report, indent=2) + "\n")
    write_text_atomic(args.out / f"{stem}.md", markdown(report))
    print(markdown(report))
    return 0


def host_summary() -> dict:
    try:
        from edgeseg.host import host_info
    except ImportError:
        return {}
    return host_info()


def markdown(report: dict) -> str:
    lines = [
        f"# edgeseg run throughput: {Path(report['model']).name} on {report['backend']} ({report['precision']})",
        "",
        f"{report['created']}; {report['encoder']} FPN {report['architecture_kwargs'] or '(default decoder)'}, input "
        f"{report['input_size'][0]}x{report['input_size'][1]}; source {report['video']}; medians of {report['rounds']} "
        f"alternating rounds; load average before/after {report['load_average_before_after'][0][0]:.1f}/"
        f"{report['load_average_before_after'][1][0]:.1f}.",
        "",
        "| run | FPS | of bare | ratio per round | model busy |",
        "| --- | --- | --- | --- | --- |",
        f"| bare model (backend.infer on one preprocessed tensor) | {report['bare_fps']:.2f} | 100% | | 100% |",
    ]
    for name, result in report["pipelines"].items():
        what = "overlay video + JSONL" if name == "record" else "JSONL only"
        rounds = ", ".join(f"{ratio:.0%}" for ratio in result["ratios_per_round"])
        lines.append(f"| edgeseg run, {name} ({what}) | {result['fps']:.2f} | {result['ratio_to_bare']:.0%} | {rounds} "
                     f"| {result['model_busy_share']:.0%} |")
    lines += ["", "*Model busy*: the share of the run's wall time spent in inference (FPS x mean inference ms), "
              "measured within each run, so load that changes between runs does not move it; it does not see "
              "inference slowed by the pipeline's own threads, which the ratio to bare does.",
              "", "Mean ms per frame by stage (main thread: wait, preprocess, inference; finisher thread, overlapping the "
              "next inference: postprocess, overlay, write):", "",
              "| run | " + " | ".join(STAGES) + " |", "| --- |" + " --- |" * len(STAGES)]
    for name, result in report["pipelines"].items():
        lines.append(f"| {name} | " + " | ".join(f"{result['stage_ms'][stage]:.1f}" for stage in STAGES) + " |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
