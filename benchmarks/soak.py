"""Soak: does `edgeseg run` hold its memory and speed for a long run, and ride out a camera that drops out?

    python benchmarks/soak.py [MODEL] [--minutes 10] [--dropout-s 5]

1. Long run: `edgeseg run MODEL --source VIDEO --loop --no-show --jsonl ... --save overlay.mp4` on a
   looping 640x480 video of synthetic lesions for --minutes. Every 10 s: the run's resident memory
   (VmRSS) and its FPS over those 10 s (from its own per-frame records).
   Pass: memory grows < 5% after the first minute; FPS over the last minute within 5% of the first.
2. Drop-out: a fake camera (an MJPEG stream over HTTP, served by edgeseg's own live-view server and
   read by `edgeseg run --source http://...` as a live source) stops for --dropout-s seconds and
   comes back on the same address. Pass: the run reconnects by itself and goes on; the gap is logged.

Results: benchmarks/results/soak-<cpu|gpu>.json and .md; the plot of memory and FPS over time in
docs/soak-<cpu|gpu>.png.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from datetime import datetime, timezone
from pathlib import Path

from edgeseg.core.files import atomic_output, portable_path, write_text_atomic
from edgeseg.core.host import host_info
from edgeseg.runtime.serve import LiveServer, LiveView, ServeAddress

sys.path.insert(0, str(Path(__file__).resolve().parent))
from serve_load import lesion_video, memory_mib  # one synthetic video for both benchmarks

RESULTS_DIR = Path(__file__).resolve().parent / "results"
DOCS_DIR = Path(__file__).resolve().parents[1] / "docs"  # images live in docs/, figures in results/
SAMPLE_S = 10.0


def records_since(jsonl: Path, position: int) -> tuple[list[dict], int]:
    """Whole JSON lines appended to ``jsonl`` after byte ``position``, and the new position."""
    with open(jsonl, "rb") as stream:
        stream.seek(position)
        data = stream.read()
    complete = data[: data.rfind(b"\n") + 1]
    return [json.loads(line) for line in complete.splitlines()], position + len(complete)


def long_run(model: list[str], video: Path, minutes: float, work: Path) -> list[dict]:
    """Samples of (seconds, RSS MiB, FPS) every SAMPLE_S over a looping run of ``minutes``."""
    jsonl = work / "soak.jsonl"
    command = [
        sys.executable,
        "-m",
        "edgeseg",
        "run",
        *model,
        "--source",
        str(video),
        "--loop",
        "--no-show",
        "--jsonl",
        str(jsonl),
        "--save",
        str(work / "soak.mp4"),
    ]
    process = subprocess.Popen(command, stderr=subprocess.DEVNULL)
    while not jsonl.exists() or jsonl.stat().st_size == 0:
        time.sleep(0.2)
    samples, position, started = [], 0, time.monotonic()
    while time.monotonic() - started < minutes * 60:
        time.sleep(SAMPLE_S)
        records, position = records_since(jsonl, position)
        stamps = [record["timestamp"] for record in records]
        fps = (len(stamps) - 1) / (stamps[-1] - stamps[0]) if len(stamps) > 1 else 0.0
        samples.append(
            {
                "seconds": round(time.monotonic() - started, 1),
                "rss_mib": memory_mib(process.pid, "VmRSS"),
                "fps": round(fps, 2),
            }
        )
        print(f"{samples[-1]['seconds']:6.0f} s  RSS {samples[-1]['rss_mib']:.1f} MiB  {fps:.1f} FPS", flush=True)
    process.terminate()  # SIGTERM: the run ends cleanly, as with Ctrl-C
    process.wait(timeout=120)
    return samples


class FakeCamera:
    """Frames of a video as an MJPEG stream at 30 FPS on a fixed port; ``drop_out`` stops it for a while."""

    def __init__(self, video: Path, port: int) -> None:
        import cv2

        capture = cv2.VideoCapture(str(video))
        self.frames = [frame for ok, frame in iter(capture.read, (False, None)) if ok][:120]
        capture.release()
        self.address = ServeAddress("127.0.0.1", port)
        self._stop = threading.Event()
        self._server: LiveServer | None = None
        self._start()
        threading.Thread(target=self._publish, daemon=True).start()

    def _start(self) -> None:
        self.view = LiveView()
        self._server = LiveServer(self.view, self.address).__enter__()

    def _publish(self) -> None:
        index = 0
        while not self._stop.is_set():
            self.view.publish(self.frames[index % len(self.frames)], {})
            index += 1
            time.sleep(1 / 30)

    def drop_out(self, seconds: float) -> None:
        self._server.__exit__(None, None, None)
        time.sleep(seconds)
        self._start()

    def close(self) -> None:
        self._stop.set()
        self._server.__exit__(None, None, None)


def dropout_run(model: list[str], video: Path, dropout_s: float, work: Path) -> dict:
    """A live run whose camera stops for ``dropout_s``: did it come back, and how long was the gap?"""
    camera = FakeCamera(video, port=free_port())
    jsonl = work / "dropout.jsonl"
    command = [
        sys.executable,
        "-m",
        "edgeseg",
        "run",
        *model,
        "--source",
        f"http://127.0.0.1:{camera.address.port}/stream.mjpg",
        "--no-show",
        "--jsonl",
        str(jsonl),
    ]
    process = subprocess.Popen(command, stderr=subprocess.PIPE, text=True)
    time.sleep(15)
    dropped_at = time.time()
    camera.drop_out(dropout_s)
    time.sleep(15)
    process.terminate()  # SIGTERM: the run ends cleanly, as with Ctrl-C
    _, log = process.communicate(timeout=60)
    camera.close()
    stamps = [json.loads(line)["timestamp"] for line in jsonl.read_text().splitlines()]
    gaps = [later - earlier for earlier, later in itertools.pairwise(stamps)]
    return {
        "dropout_s": dropout_s,
        "frames_before": sum(stamp < dropped_at for stamp in stamps),
        "frames_after": sum(stamp > dropped_at + dropout_s for stamp in stamps),
        "longest_gap_s": round(max(gaps), 2),
        "reconnect_log": [line for line in log.splitlines() if re.search(r"reopening|is back|did not come back", line)],
        "exit_code": process.returncode,
    }


def free_port() -> int:
    import socket

    with socket.create_server(("127.0.0.1", 0)) as probe:
        return probe.getsockname()[1]


def verdict(samples: list[dict]) -> dict:
    after_first_minute = [sample for sample in samples if sample["seconds"] > 60]
    base_rss = after_first_minute[0]["rss_mib"]
    first = statistics.mean(sample["fps"] for sample in samples if 60 < sample["seconds"] <= 120)
    last = statistics.mean(sample["fps"] for sample in samples[-6:])
    return {
        "rss_growth_after_first_minute": round(max(s["rss_mib"] for s in after_first_minute) / base_rss - 1, 4),
        "fps_second_minute": round(first, 2),
        "fps_last_minute": round(last, 2),
        "fps_change": round(last / first - 1, 4),
    }


def plot(samples: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    seconds = [sample["seconds"] / 60 for sample in samples]
    figure, (memory, speed) = plt.subplots(2, 1, figsize=(8, 5), sharex=True)
    memory.plot(seconds, [sample["rss_mib"] for sample in samples])
    memory.set_ylabel("resident MiB")
    speed.plot(seconds, [sample["fps"] for sample in samples])
    speed.set_ylabel("FPS (10 s windows)")
    speed.set_xlabel("minutes")
    figure.suptitle("edgeseg run, looping video with JSONL and recording")
    figure.tight_layout()
    with atomic_output(path) as temporary:
        figure.savefig(temporary, dpi=80)


def markdown(report: dict) -> str:
    v, d, cpu = report["verdict"], report["dropout"], report["host"]["cpu"]
    loads = ", ".join(f"{x:.1f}" for x in report["host"]["load_average_after"])
    return "\n".join(
        [
            "# Soak: `edgeseg run` for a long time, and a camera that drops out",
            "",
            f"{report['date']}; CPU: {cpu['model']}, {cpu['usable_cores']} cores; GPU: {report['host']['gpus']}; "
            f"model {report['model']}.",
            f"Long run: {report['minutes']} min on a looping 640x480 video with --jsonl and --save (H.264); "
            f"samples every 10 s (docs/soak-{report['kind']}.png). Load average afterwards: {loads}.",
            "",
            f"- Resident memory after the first minute grew by at most {v['rss_growth_after_first_minute']:.1%} "
            "(target < 5%).",
            f"- FPS: {v['fps_second_minute']:.1f} in the second minute, {v['fps_last_minute']:.1f} in the last "
            f"({v['fps_change']:+.1%}; target within 5%).",
            f"- Drop-out: the fake camera stopped for {d['dropout_s']:.0f} s; the run reconnected by itself "
            f"({d['frames_before']} frames before, {d['frames_after']} after, longest gap {d['longest_gap_s']} s, "
            f"exit code {d['exit_code']}).",
            "  Its log:",
            *[f"  `{line}`" for line in d["reconnect_log"]],
            "",
        ]
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("model", nargs="?", help="model file [edgeseg's default model]")
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--dropout-s", type=float, default=5.0)
    args = parser.parse_args()
    model = [args.model] if args.model else []
    with tempfile.TemporaryDirectory() as folder:
        work = Path(folder)
        video = lesion_video(work / "lesions.avi")
        dropout = dropout_run(model, video, args.dropout_s, work)
        samples = long_run(model, video, args.minutes, work)
    host = host_info()
    kind = "gpu" if host["gpus"] else "cpu"
    report = {
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "host": {"cpu": host["cpu"], "gpus": host["gpus"], "load_average_after": list(os.getloadavg())},
        "model": portable_path(args.model) if args.model else "edgeseg default model",
        "kind": kind,
        "minutes": args.minutes,
        "samples": samples,
        "verdict": verdict(samples),
        "dropout": dropout,
    }
    write_text_atomic(RESULTS_DIR / f"soak-{kind}.json", json.dumps(report, indent=2) + "\n")
    write_text_atomic(RESULTS_DIR / f"soak-{kind}.md", markdown(report))
    plot(samples, DOCS_DIR / f"soak-{kind}.png")
    print(markdown(report))


if __name__ == "__main__":
    main()
