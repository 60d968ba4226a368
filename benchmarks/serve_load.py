"""Load on the live view: does `edgeseg run --serve` keep its speed with browsers watching?

    python benchmarks/serve_load.py [MODEL] [--seconds 25] [--rounds 2]

Runs the real command, `edgeseg run MODEL --source VIDEO --loop --no-show --jsonl ...`, on a looping
640x480 video of synthetic lesions, in two configurations back to back (in alternating order, each
`--rounds` times, so a busy machine affects both alike):

- "no viewer": no --serve;
- "6 viewers": --serve, with 5 viewers reading the MJPEG stream as fast as it comes and a sixth that
  reads for 3 s, stops reading for 10 s (its socket buffers fill), then reads again.

The viewers are separate processes, as browsers are: five `curl`s (a browser on a tablet costs the
device only the sending, and curl is the cheapest stand-in on one machine) and the stalled one. FPS is counted from the run's own per-frame
records, over the seconds in which every viewer was connected (the same window without viewers).
Also recorded: frames each viewer received, whether the stalled viewer got frames again, and the
run's peak resident memory (a frame queue that grew would show there).
Results: benchmarks/results/serve-load-<cpu|gpu>.json and .md.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from datetime import datetime, timezone
from pathlib import Path

import cv2

from edgeseg.files import portable_path, write_text_atomic
from edgeseg.host import host_info
from edgeseg.synthetic import make_sample

RESULTS_DIR = Path(__file__).resolve().parent / "results"
READERS = 5
STALL_S = 10.0
PART_HEADER = b"Content-Type: image/jpeg"
RUN_LOG = Path(tempfile.gettempdir()) / "edgeseg-serve-load-run.log"  # the latest run's stderr


def lesion_video(path: Path, samples: int = 30, repeats: int = 4) -> Path:
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 30.0, (640, 480))
    for index in range(samples):
        image, _ = make_sample(1, index, 480)
        frame = cv2.copyMakeBorder(image, 0, 0, 80, 80, cv2.BORDER_REFLECT)
        for _ in range(repeats):
            writer.write(frame)
    writer.release()
    return path


def count_parts(sock: socket.socket, seconds: float) -> int:
    """Reads the stream for ``seconds``; the number of JPEG parts that began in that time."""
    sock.settimeout(0.5)
    parts, deadline = 0, time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            chunk = sock.recv(1 << 16)
        except socket.timeout:
            continue
        if not chunk:
            break
        parts += chunk.count(PART_HEADER)
    return parts


def stalled_viewer(port: int, seconds: float) -> None:
    """Reads for 3 s, stops reading for STALL_S (its socket buffers fill), reads again; prints both counts."""
    sock = socket.create_connection(("127.0.0.1", port))
    sock.sendall(b"GET /stream.mjpg HTTP/1.1\r\nHost: localhost\r\n\r\n")
    before = count_parts(sock, 3.0)
    time.sleep(STALL_S)
    print(json.dumps([before, count_parts(sock, max(1.0, seconds - 3.0 - STALL_S))]))


class Viewers:
    """READERS curl processes reading the stream into files (a browser elsewhere costs the device only the
    sending; curl is the cheapest stand-in on this machine) and one stalled viewer in Python."""

    def __init__(self, port: int, seconds: float, work: Path) -> None:
        url = f"http://127.0.0.1:{port}/stream.mjpg"
        self.files = [work / f"viewer-{index}.mjpg" for index in range(READERS)]
        self.readers = [subprocess.Popen(["curl", "-s", "--max-time", f"{seconds:.0f}", "-o", str(path), url]) for path in self.files]
        self.stalled = subprocess.Popen([sys.executable, __file__, "--stalled-viewer", str(port), str(seconds)], stdout=subprocess.PIPE, text=True)

    def results(self) -> tuple[list[int], list[int]]:
        for reader in self.readers:
            reader.wait(timeout=60)
        stalled = json.loads(self.stalled.communicate(timeout=60)[0])
        parts = [path.read_bytes().count(PART_HEADER) for path in self.files]
        for path in self.files:
            path.unlink()
        return parts, stalled


def fps_between(records: list[dict], start: float, end: float) -> float:
    stamps = [record["timestamp"] for record in records if start <= record["timestamp"] <= end]
    return (len(stamps) - 1) / (stamps[-1] - stamps[0]) if len(stamps) > 1 else 0.0


def run_once(model: list[str], video: Path, seconds: float, with_viewers: bool, work: Path) -> dict:
    jsonl = work / f"frames-{with_viewers}-{time.monotonic_ns()}.jsonl"
    command = [sys.executable, "-m", "edgeseg", "run", *model, "--source", str(video), "--loop", "--no-show", "--jsonl", str(jsonl)]
    if with_viewers:
        command += ["--serve", "127.0.0.1:0"]
    process = subprocess.Popen(command, stderr=subprocess.PIPE, text=True, env={**os.environ, "PYTHONFAULTHANDLER": "1"})
    port = wait_for_start(process, with_viewers)
    warm = 3.0  # the model's first runs and the viewers' connections settle
    time.sleep(warm)
    start = time.time()
    viewers = Viewers(port, seconds, work) if with_viewers else None
    rss_start = memory_mib(process.pid, "VmRSS")
    time.sleep(seconds)
    end = time.time()
    reader_parts, stalled_parts = viewers.results() if viewers else ([], [])
    rss_end, rss_peak = memory_mib(process.pid, "VmRSS"), memory_mib(process.pid, "VmHWM")
    stop(process)
    records = [json.loads(line) for line in jsonl.read_text().splitlines()]
    return {
        "viewers": READERS + 1 if viewers else 0,
        "fps": round(fps_between(records, start + 1.0, end - 1.0), 2),
        "frames": len(records),
        "reader_parts": reader_parts,
        "stalled_parts_before_after": [stalled_parts] if stalled_parts else [],
        "rss_mib_start_end_peak": [rss_start, rss_end, rss_peak],
    }


def keep_log(process: subprocess.Popen) -> None:
    with open(RUN_LOG, "w", encoding="utf-8") as log:
        for line in process.stderr:
            log.write(line)
            log.flush()


def wait_for_start(process: subprocess.Popen, serving: bool) -> int:
    """The port the run serves on (0 without --serve), once the model is open."""
    port = 0
    for line in process.stderr:
        if match := re.search(r"live view: http://[^:]+:(\d+)/", line):
            port = int(match.group(1))
            break
        if line.startswith("model ") and not serving:
            break
    threading.Thread(target=keep_log, args=(process,), daemon=True).start()  # keep the pipe drained
    return port


def stop(process: subprocess.Popen) -> None:
    """SIGTERM ends a run cleanly, as Ctrl-C does; one that does not end is dumped (faulthandler) and reported."""
    process.terminate()
    try:
        process.wait(timeout=60)
    except subprocess.TimeoutExpired:
        process.send_signal(signal.SIGABRT)  # PYTHONFAULTHANDLER=1: every thread's stack to its stderr
        process.wait(timeout=30)
        raise RuntimeError(f"edgeseg run did not stop within 60 s of SIGTERM; its threads are in {RUN_LOG}") from None


def memory_mib(pid: int, field: str) -> float:
    """VmRSS (now) or VmHWM (peak) of a process, from /proc (Linux)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return round(int(line.split()[1]) / 1024, 1)
    return float("nan")


def markdown(report: dict) -> str:
    lines = [
        "# Live view under load (`edgeseg run --serve`)",
        "",
        f"{report['date']}; CPU: {report['host']['cpu']['model']}, {report['host']['cpu']['usable_cores']} cores; GPU: {report['host']['gpus']}; "
        f"model {report['model']}; {report['seconds']} s per run, {report['rounds']} rounds in alternating order.",
        f"5 viewers read the MJPEG stream continuously; a sixth stops reading for {STALL_S:.0f} s mid-run. "
        f"Load average afterwards: {', '.join(f'{load:.1f}' for load in report['host']['load_average_after'])} "
        "(other work on the machine shows up as noise between rounds).",
        "",
        "| round | FPS, no viewer | FPS, 6 viewers | ratio | frames per reader | stalled viewer: frames before / after | RSS MiB start / end (6 viewers) |",
        "|---|---|---|---|---|---|---|",
    ]
    for number, pair in enumerate(report["rounds_results"], start=1):
        alone, watched = pair["no viewer"], pair["6 viewers"]
        lines.append(f"| {number} | {alone['fps']:.1f} | {watched['fps']:.1f} | {watched['fps'] / alone['fps']:.3f} | "
                     f"{', '.join(map(str, watched['reader_parts']))} | {' / '.join(map(str, watched['stalled_parts_before_after'][0]))} | "
                     f"{watched['rss_mib_start_end_peak'][0]} / {watched['rss_mib_start_end_peak'][1]} |")
    lines += ["", f"Median ratio (6 viewers / none): **{report['median_ratio']:.3f}** (target >= 0.90).",
              f"Peak resident memory of any run: {report['peak_rss_mib']} MiB."]
    return "\n".join(lines) + "\n"


def main() -> None:
    if sys.argv[1:2] == ["--stalled-viewer"]:
        return stalled_viewer(int(sys.argv[2]), float(sys.argv[3]))
    if shutil.which("curl") is None:
        sys.exit("serve_load: needs curl for its viewers (apt install curl)")
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("model", nargs="?", help="model file [edgeseg's default model]")
    parser.add_argument("--seconds", type=float, default=25.0)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    model = [args.model] if args.model else []
    rounds = []
    with tempfile.TemporaryDirectory() as folder:
        work = Path(folder)
        video = lesion_video(work / "lesions.avi")
        for number in range(args.rounds):
            order = (False, True) if number % 2 == 0 else (True, False)
            results = {with_viewers: run_once(model, video, args.seconds, with_viewers, work) for with_viewers in order}
            rounds.append({"no viewer": results[False], "6 viewers": results[True]})
            print(f"round {number + 1}: {results[False]['fps']:.1f} FPS alone, {results[True]['fps']:.1f} with viewers", flush=True)
    host = host_info()
    report = {
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "host": {"cpu": host["cpu"], "gpus": host["gpus"], "load_average_after": list(os.getloadavg())},
        "model": portable_path(args.model) if args.model else "edgeseg default model",
        "seconds": args.seconds,
        "rounds": args.rounds,
        "rounds_results": rounds,
        "median_ratio": round(statistics.median(pair["6 viewers"]["fps"] / pair["no viewer"]["fps"] for pair in rounds), 3),
        "peak_rss_mib": max(run["rss_mib_start_end_peak"][2] for pair in rounds for run in pair.values()),
    }
    name = "serve-load-gpu" if host["gpus"] else "serve-load-cpu"
    write_text_atomic(RESULTS_DIR / f"{name}.json", json.dumps(report, indent=2) + "\n")
    write_text_atomic(RESULTS_DIR / f"{name}.md", markdown(report))
    print(markdown(report))


if __name__ == "__main__":
    main()
