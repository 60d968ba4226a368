"""Throughput of `edgeseg run` against the bare model, in the same process run.

    python benchmarks/runtime_throughput.py MODEL.onnx [--frames 40] [--rounds 11] [--backend auto] [--label NAME]

A 640x480 video (generated with OpenCV, a moving dark lesion on skin tones) goes through
``run_pipeline``, the loop `edgeseg run` runs, in three configurations: "record" (overlay video
--save + --jsonl, headless, with this host's thread plan, edgeseg.runtime.thread_plan), "record
before the plan" (the same with FFmpeg's default encoder threads, x264's veryfast preset and the
finisher at normal priority: what `run` did before) and "measure" (--jsonl only). The bare model
is measured twice on the same backend object and the same frames (decoded beforehand), one frame
after another: end to end (the Segmenter's prepare, infer and finish, as `edgeseg bench` times
them) and the inference stage alone (the frames that get the closer look, --refine, run the
network twice in both, as in `run`; before, the bare model ran on the first frame only, which
gets none, so every ratio to it came out low). Each round runs the bare model and every
configuration back to back (in reverse order every other round), so a machine shared with other
work affects both sides alike; a ratio to bare is the median of the rounds' ratios, reported with
every round's figures and the per-stage means. The recordings' sizes and their PSNR against the
overlay frames they were encoded from say what the plan's encoder settings cost in quality.
Results: benchmarks/results/runtime_throughput_<label>_<backend>.json and .md (label: the model's file name).
"""

from __future__ import annotations

import argparse
import dataclasses
import itertools
import json
import os
import resource
import statistics
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

import cv2
import numpy as np

from edgeseg.core.drawing import OverlayRenderer
from edgeseg.core.files import portable_command, portable_path, write_text_atomic
from edgeseg.core.names import RUNTIME_BACKENDS
from edgeseg.core.segmenter import Segmenter
from edgeseg.loading.open import open_model
from edgeseg.runtime.recording import PyAVRecording, encoder_options
from edgeseg.runtime.run_loop import STAGES, RunOptions, run_pipeline
from edgeseg.runtime.sources import open_source
from edgeseg.runtime.thread_plan import ThreadPlan, this_host_plan

RESULTS_DIR = Path(__file__).resolve().parent / "results"
WIDTH, HEIGHT = 640, 480
RECORDINGS = ("record", "record_before_plan")
QUIET = 0.05  # a round in which other processes used less than this share of the CPU counts as quiet
MIN_QUIET_ROUNDS = 3
DESCRIPTIONS = {
    "record": "overlay video + JSONL, the thread plan",
    "record_before_plan": "overlay video + JSONL, as before the plan",
    "measure": "JSONL only",
}


def plan_before(plan: ThreadPlan) -> ThreadPlan:
    """What `run` did before the plan: FFmpeg's default encoder threads (0: a thread per core), veryfast, no nice."""
    return dataclasses.replace(plan, encoder_threads=0, x264_preset="veryfast", finisher_nice=0)


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


def decoded_frames(video: Path) -> list[np.ndarray]:
    capture = cv2.VideoCapture(str(video))
    images = []
    while (read := capture.read())[0]:
        images.append(read[1])
    capture.release()
    assert images, f"{video}: no frame"
    return images


def bare_throughput(segmenter: Segmenter, images: list[np.ndarray]) -> float:
    """Frames per second of the inference stage alone (with the closer look where a frame gets one), frame by frame."""
    for image in images[:3]:
        segmenter.infer(segmenter.prepare(image))
    seconds = 0.0
    for image in images:
        prepared = segmenter.prepare(image)
        start = time.perf_counter()
        segmenter.infer(prepared)
        seconds += time.perf_counter() - start
    return len(images) / seconds


def bare_end_to_end(segmenter: Segmenter, images: list[np.ndarray]) -> float:
    """Frames per second of prepare, infer and finish, one frame after another (`edgeseg bench`), decoding aside."""
    for image in images[:3]:
        segmenter.finish(segmenter.infer(segmenter.prepare(image)))
    start = time.perf_counter()
    for image in images:
        segmenter.finish(segmenter.infer(segmenter.prepare(image)))
    return len(images) / (time.perf_counter() - start)


def pipeline_run(segmenter: Segmenter, video: Path, options: RunOptions) -> dict:
    with open_source(str(video)) as source:
        summary = run_pipeline(segmenter, source, options)
    result = {"fps": summary.fps, "frames": summary.frames, "stage_ms": summary.stage_ms}
    if options.save_video is not None:
        result["video_bytes"] = options.save_video.stat().st_size
    return result


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model", type=Path, help="an edgeseg ONNX (or TensorRT engine)")
    parser.add_argument(
        "--frames",
        type=int,
        default=40,
        help="frames per run (default 40: short runs, so a "
        "change in the machine's load rarely falls between the runs of one round)",
    )
    parser.add_argument("--rounds", type=int, default=11, help="rounds of bare and pipeline runs (default 11)")
    parser.add_argument("--backend", choices=("auto", *RUNTIME_BACKENDS), default="auto")
    parser.add_argument("--threads", type=int, default=None, help="onnxruntime threads (default: the thread plan's)")
    parser.add_argument(
        "--label", help="names the record: runtime_throughput_LABEL_BACKEND (default: the model's file name)"
    )
    parser.add_argument("--out", type=Path, default=RESULTS_DIR)
    return parser.parse_args()


def busy_cpu_seconds() -> tuple[float, float] | None:
    """(CPU seconds every process has used, CPU seconds this one has) so far; None where /proc/stat is missing."""
    try:
        fields = Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]
    except OSError:
        return None
    user, nice, system, _idle, _iowait, irq, softirq, steal = (int(value) for value in fields[:8])
    own = resource.getrusage(resource.RUSAGE_SELF)
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK"), own.ru_utime + own.ru_stime


def others_share(before: tuple[float, float] | None, seconds: float) -> float | None:
    """The share of the CPU that other processes used since ``before`` (over ``seconds``)."""
    after = busy_cpu_seconds()
    if before is None or after is None:
        return None
    others = (after[0] - before[0]) - (after[1] - before[1])
    return max(0.0, others) / (seconds * (os.cpu_count() or 1))


def measure_rounds(segmenter: Segmenter, video: Path, rounds: int, configurations: dict[str, RunOptions]) -> list[dict]:
    """Each round: the bare model, then each configuration, the order reversed every other round."""
    pipeline_run(segmenter, video, RunOptions(max_frames=5))  # warm up every stage once
    images = decoded_frames(video)  # the bare model gets the very frames `run` gets (some need a second look)
    bare = {"bare_fps": bare_throughput, "bare_end_to_end_fps": bare_end_to_end}
    measured = []
    for number in range(rounds):
        result, before, started = {}, busy_cpu_seconds(), time.perf_counter()
        order = [*bare, *configurations]
        for name in order if number % 2 == 0 else reversed(order):  # so a drift in load hits both sides
            if name in bare:
                result[name] = bare[name](segmenter, images)
            else:
                result[name] = pipeline_run(segmenter, video, configurations[name])
        result["others_cpu_share"] = others_share(before, time.perf_counter() - started)
        measured.append(result)
        print(
            f"round {number + 1}: bare {result['bare_end_to_end_fps']:.2f} FPS end to end, "
            f"{result['bare_fps']:.2f} inference; "
            + ", ".join(f"{name} {result[name]['fps']:.2f} FPS" for name in configurations)
            + f"; other processes {result['others_cpu_share'] or 0:.0%} of the CPU",
            file=sys.stderr,
        )
    return measured


def is_quiet(measured: dict) -> bool:
    return measured["others_cpu_share"] is not None and measured["others_cpu_share"] < QUIET


def quiet_rounds(rounds: list[dict]) -> list[dict]:
    """The rounds in which other processes left the CPU alone, where there are enough of them; else every round."""
    quiet = [r for r in rounds if is_quiet(r)]
    return quiet if len(quiet) >= MIN_QUIET_ROUNDS else rounds


def summarize(rounds: list[dict], names: list[str]) -> dict:
    """Each configuration's medians over the quiet rounds (``quiet_rounds``); ratios per round over all of them."""
    summary, every_round, rounds = {}, rounds, quiet_rounds(rounds)
    for name in names:
        fps = statistics.median(r[name]["fps"] for r in rounds)
        ratios = [r[name]["fps"] / r["bare_end_to_end_fps"] for r in rounds]
        stages = {stage: statistics.median(r[name]["stage_ms"].get(stage, 0.0) for r in rounds) for stage in STAGES}
        # Share of the run's wall time the model was running: immune to load that shifts between runs.
        busy = statistics.median(r[name]["fps"] * r[name]["stage_ms"]["inference"] / 1000 for r in rounds)
        summary[name] = {
            "fps": fps,
            "ratio_to_bare_end_to_end": statistics.median(ratios),
            "ratios_per_round": [r[name]["fps"] / r["bare_end_to_end_fps"] for r in every_round],
            "ratio_to_bare_inference": statistics.median(r[name]["fps"] / r["bare_fps"] for r in rounds),
            "model_busy_share": busy,
            "stage_ms": stages,
        }
    return summary


def overlay_frames(segmenter: Segmenter, video: Path, frames: int) -> list[np.ndarray]:
    """The overlays `run` would record for the video's first ``frames`` frames (no HUD: it changes every run)."""
    renderer, overlays = OverlayRenderer(), []
    with open_source(str(video)) as source:
        for frame in itertools.islice(source.frames(), frames):
            overlays.append(renderer.render(frame.image, segmenter.segment(frame.image)).copy())
    return overlays


def recording_quality(overlays: list[np.ndarray], plan: ThreadPlan, path: Path) -> dict:
    """Size and mean PSNR (dB, against the frames encoded) of the overlays recorded as H.264 under ``plan``."""
    options = encoder_options(".mp4", plan)
    recording = PyAVRecording(path, (WIDTH, HEIGHT), 30.0, "libx264", "mp4", options)
    for index, overlay in enumerate(overlays):
        recording.write(overlay, round(index * 1000 / 30))
    recording.close()
    capture = cv2.VideoCapture(str(path))
    psnr = []
    for overlay in overlays:
        ok, decoded = capture.read()
        assert ok, f"{path}: fewer frames than written"
        psnr.append(cv2.PSNR(overlay, decoded))
    capture.release()
    return {
        "encoder_options": options,
        "bytes": path.stat().st_size,
        "frames": len(overlays),
        "mean_psnr_db": statistics.fmean(psnr),
    }


def main() -> int:
    args = parse_args()
    load_before = os.getloadavg()
    plan = this_host_plan()
    with tempfile.TemporaryDirectory(prefix="edgeseg-bench-") as scratch:
        scratch = Path(scratch)
        video = write_test_video(scratch / "input.mp4", args.frames)
        configurations = {
            "record": RunOptions(save_video=scratch / "overlay.mp4", jsonl=scratch / "record.jsonl"),
            "record_before_plan": RunOptions(
                save_video=scratch / "before.mp4", jsonl=scratch / "before.jsonl", thread_plan=plan_before(plan)
            ),
            "measure": RunOptions(jsonl=scratch / "measure.jsonl"),
        }
        with open_model(args.model, args.backend, threads=args.threads) as segmenter:
            rounds = measure_rounds(segmenter, video, args.rounds, configurations)
            overlays = overlay_frames(segmenter, video, args.frames)
        quality = {
            name: recording_quality(overlays, configurations[name].thread_plan or plan, scratch / f"{name}.mp4")
            for name in RECORDINGS
        }
    backend = segmenter.backend
    report = {
        "benchmark": "runtime_throughput",
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "command": portable_command(sys.argv),
        "model": portable_path(args.model),
        "backend": backend.name,
        "precision": backend.precision,
        "input_size": list(backend.card.input_size),
        "encoder": backend.card.encoder,
        "architecture_kwargs": backend.card.architecture_kwargs,
        "video": f"{WIDTH}x{HEIGHT} mp4v, {args.frames} frames",
        "threads": args.threads,
        "thread_plan": dataclasses.asdict(plan),
        "rounds": args.rounds,
        "load_average_before_after": [load_before, os.getloadavg()],
        "quiet_rounds": [number for number, r in enumerate(rounds) if is_quiet(r)],
        "medians_over": "the quiet rounds"
        if quiet_rounds(rounds) is not rounds
        else f"all rounds (fewer than {MIN_QUIET_ROUNDS} quiet ones)",
        "bare_fps": statistics.median(r["bare_fps"] for r in quiet_rounds(rounds)),
        "bare_end_to_end_fps": statistics.median(r["bare_end_to_end_fps"] for r in quiet_rounds(rounds)),
        "pipelines": summarize(rounds, list(configurations)),
        "recording_quality": quality,
        "per_round": rounds,
        "host": host_summary(),
    }
    args.out.mkdir(parents=True, exist_ok=True)
    stem = f"runtime_throughput_{args.label or args.model.name.split('.')[0]}_{backend.name}"
    write_text_atomic(args.out / f"{stem}.json", json.dumps(report, indent=2) + "\n")
    write_text_atomic(args.out / f"{stem}.md", markdown(report))
    print(markdown(report))
    return 0


def host_summary() -> dict:
    try:
        from edgeseg.core.host import host_info
    except ImportError:
        return {}
    return host_info()


def markdown(report: dict) -> str:
    cpu = (report["host"].get("cpu") or {}) if report["host"] else {}
    shares = ", ".join(
        "?" if r["others_cpu_share"] is None else f"{r['others_cpu_share']:.0%}" for r in report["per_round"]
    )
    lines = [
        f"# edgeseg run throughput: {Path(report['model']).name} on {report['backend']} ({report['precision']})",
        "",
        f"{report['created']}; `{report['command']}`; CPU {cpu.get('model', '?')}, {cpu.get('usable_cores', '?')} "
        f"cores; {report['encoder']} FPN {report['architecture_kwargs'] or '(default decoder)'}, input "
        f"{report['input_size'][0]}x{report['input_size'][1]}; source {report['video']}; {report['rounds']} "
        f"alternating rounds, {len(report['quiet_rounds'])} of them quiet (other processes used under {QUIET:.0%} of "
        f"the CPU; per round: {shares}); medians over {report['medians_over']}; load average before/after "
        f"{report['load_average_before_after'][0][0]:.1f}/{report['load_average_before_after'][1][0]:.1f}.",
        "",
        f"Thread plan: {plan_text(report['thread_plan'])}.",
        "",
        "| run | FPS | of bare end to end | of bare inference | ratio per round, all rounds (to end to end) "
        "| model busy |",
        "| --- | --- | --- | --- | --- | --- |",
        f"| bare model end to end (prepare, infer, finish on the same frames, one after another) | "
        f"{report['bare_end_to_end_fps']:.2f} | 100% | | | |",
        f"| bare model inference (Segmenter.infer on the same frames) | {report['bare_fps']:.2f} | | 100% | | 100% |",
    ]
    for name, result in report["pipelines"].items():
        rounds = ", ".join(f"{ratio:.0%}" for ratio in result["ratios_per_round"])
        lines.append(
            f"| edgeseg run, {name} ({DESCRIPTIONS[name]}) | {result['fps']:.2f} | "
            f"{result['ratio_to_bare_end_to_end']:.0%} | {result['ratio_to_bare_inference']:.0%} | {rounds} "
            f"| {result['model_busy_share']:.0%} |"
        )
    return "\n".join(lines + stage_lines(report) + quality_lines(report)) + "\n"


def plan_text(plan: dict) -> str:
    return (
        f"{plan['cores']} cores; onnxruntime {plan['inference_threads']} intra-op threads, spinning "
        f"{'on' if plan['inference_spinning'] else 'off'}; encoder {plan['encoder_threads']} thread(s), x264 "
        f"{plan['x264_preset']}; finisher nice +{plan['finisher_nice']}"
    )


def stage_lines(report: dict) -> list[str]:
    lines = [
        "",
        "*Model busy*: the share of the run's wall time spent in inference (FPS x mean inference ms), "
        "measured within each run, so load that changes between runs does not move it; it does not see "
        "inference slowed by the pipeline's own threads, which the ratio to bare does.",
        "",
        "Mean ms per frame by stage (main thread: wait, preprocess, inference; finisher thread, overlapping "
        "the next inference: postprocess, overlay, write):",
        "",
        "| run | " + " | ".join(STAGES) + " |",
        "| --- |" + " --- |" * len(STAGES),
    ]
    for name, result in report["pipelines"].items():
        lines.append(f"| {name} | " + " | ".join(f"{result['stage_ms'][stage]:.1f}" for stage in STAGES) + " |")
    return lines


def quality_lines(report: dict) -> list[str]:
    lines = [
        "",
        "The recordings: the same overlay frames (without the HUD) encoded as H.264 yuv420p .mp4 with each "
        "configuration's encoder options; PSNR of the decoded frames against those encoded:",
        "",
        "| recording | encoder options | size | per frame | mean PSNR |",
        "| --- | --- | --- | --- | --- |",
    ]
    for name, quality in report["recording_quality"].items():
        options = ", ".join(f"{key}={value}" for key, value in quality["encoder_options"].items())
        lines.append(
            f"| {name} | {options} | {quality['bytes'] / 1024:.0f} KiB | "
            f"{quality['bytes'] / quality['frames'] / 1024:.1f} KiB | {quality['mean_psnr_db']:.1f} dB |"
        )
    return lines


if __name__ == "__main__":
    sys.exit(main())
