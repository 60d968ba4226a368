"""Load on the live view: does `edgeseg run --serve` keep its speed with browsers watching?

    python benchmarks/serve_load.py [MODEL] [--seconds 25] [--rounds 2]

Runs the real command, `edgeseg run MODEL --source VIDEO --loop --no-show --jsonl ...`, on a looping
640x480 video of synthetic lesions, in two configurations back to back (in alternating order, each
`--rounds` times, so a busy machine affects both alike):

- "no viewer": no --serve;
- "6 viewers, 2 snapshot loops": --serve, with 5 viewers reading the MJPEG stream as fast as it comes,
  a sixth that reads for 3 s, stops reading for 10 s (its socket buffers fill), then reads again, and
  two clients that request /snapshot.png back to back from another address (127.0.0.2, which the
  server counts as another machine), as the issue's snapshot loop did.

The clients are separate processes, as browsers are: five `curl`s (a browser on a tablet costs the
device only the sending, and curl is the cheapest stand-in on one machine), the stalled one and the
snapshot loops. Every request carries the token the run prints. FPS is counted from the run's own
per-frame records, over the seconds in which every client was connected (the same window without).
Also recorded: frames each viewer received, whether the stalled viewer got frames again, snapshots
each loop received and the requests the server closed unanswered (beyond its per-address rate), and
the run's peak resident memory (a frame queue that grew would show there).
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

from edgeseg.core.files import portable_command, portable_path, write_text_atomic
from edgeseg.core.host import host_info
from edgeseg.core.synthetic import make_sample

RESULTS_DIR = Path(__file__).resolve().parent / "results"
READERS = 5
SNAPSHOT_LOOPS = 2
SNAPSHOT_SOURCE = "127.0.0.2"  # Linux routes all of 127/8 to loopback: the server sees another machine
WATCHED = f"{READERS + 1} viewers, {SNAPSHOT_LOOPS} snapshot loops"
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
        except TimeoutError:
            continue
        if not chunk:
            break
        parts += chunk.count(PART_HEADER)
    return parts


def stalled_viewer(port: int, token: str, seconds: float) -> None:
    """Reads for 3 s, stops reading for STALL_S (its socket buffers fill), reads again; prints both counts."""
    sock = socket.create_connection(("127.0.0.1", port))
    sock.sendall(f"GET /stream.mjpg?token={token} HTTP/1.1\r\nHost: localhost\r\n\r\n".encode())
    before = count_parts(sock, 3.0)
    time.sleep(STALL_S)
    print(json.dumps([before, count_parts(sock, max(1.0, seconds - 3.0 - STALL_S))]))


def snapshot_loop(port: int, token: str, seconds: float) -> None:
    """Requests /snapshot.png back to back for ``seconds``; prints [PNGs received, requests closed unanswered]."""
    received = unanswered = 0
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        with socket.create_connection(("127.0.0.1", port), timeout=10, source_address=(SNAPSHOT_SOURCE, 0)) as sock:
            sock.sendall(f"GET /snapshot.png?token={token} HTTP/1.1\r\nHost: localhost\r\n\r\n".encode())
            data = b""
            try:
                while chunk := sock.recv(1 << 16):
                    data += chunk
            except ConnectionResetError:  # closed with the request unread
                pass
        received += data.startswith(b"HTTP/1.1 200") and b"\r\n\r\n\x89PNG" in data
        unanswered += not data
    print(json.dumps([received, unanswered]))


class Viewers:
    """READERS curl processes reading the stream into files (a browser elsewhere costs the device only the
    sending; curl is the cheapest stand-in on this machine), one stalled viewer and the snapshot loops in Python."""

    def __init__(self, port: int, token: str, seconds: float, work: Path) -> None:
        url = f"http://127.0.0.1:{port}/stream.mjpg?token={token}"
        self.files = [work / f"viewer-{index}.mjpg" for index in range(READERS)]
        self.readers = [
            subprocess.Popen(["curl", "-s", "--max-time", f"{seconds:.0f}", "-o", str(path), url])
            for path in self.files
        ]
        self.stalled = self._helper("--stalled-viewer", port, token, seconds)
        self.loops = [self._helper("--snapshot-loop", port, token, seconds) for _ in range(SNAPSHOT_LOOPS)]

    @staticmethod
    def _helper(role: str, port: int, token: str, seconds: float) -> subprocess.Popen:
        return subprocess.Popen(
            [sys.executable, __file__, role, str(port), token, str(seconds)], stdout=subprocess.PIPE, text=True
        )

    def results(self) -> tuple[list[int], list[int], list[list[int]]]:
        for reader in self.readers:
            reader.wait(timeout=60)
        stalled = json.loads(self.stalled.communicate(timeout=60)[0])
        loops = [json.loads(loop.communicate(timeout=60)[0]) for loop in self.loops]
        parts = [path.read_bytes().count(PART_HEADER) for path in self.files]
        for path in self.files:
            path.unlink()
        return parts, stalled, loops


def fps_between(records: list[dict], start: float, end: float) -> float:
    stamps = [record["timestamp"] for record in records if start <= record["timestamp"] <= end]
    return (len(stamps) - 1) / (stamps[-1] - stamps[0]) if len(stamps) > 1 else 0.0


def run_once(model: list[str], video: Path, seconds: float, with_viewers: bool, work: Path) -> dict:
    jsonl = work / f"frames-{with_viewers}-{time.monotonic_ns()}.jsonl"
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
    ]
    if with_viewers:
        command += ["--serve", "127.0.0.1:0"]
    process = subprocess.Popen(
        command, stderr=subprocess.PIPE, text=True, env={**os.environ, "PYTHONFAULTHANDLER": "1"}
    )
    port, token = wait_for_start(process, with_viewers)
    warm = 3.0  # the model's first runs and the viewers' connections settle
    time.sleep(warm)
    start = time.time()
    viewers = Viewers(port, token, seconds, work) if with_viewers else None
    rss_start = memory_mib(process.pid, "VmRSS")
    time.sleep(seconds)
    end = time.time()
    reader_parts, stalled_parts, snapshot_loops = viewers.results() if viewers else ([], [], [])
    rss_end, rss_peak = memory_mib(process.pid, "VmRSS"), memory_mib(process.pid, "VmHWM")
    stop(process)
    records = [json.loads(line) for line in jsonl.read_text().splitlines()]
    return {
        "viewers": READERS + 1 if viewers else 0,
        "snapshot_loops_received_unanswered": snapshot_loops,
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


def wait_for_start(process: subprocess.Popen, serving: bool) -> tuple[int, str]:
    """The port the run serves on and its token (0 and "" without --serve), once the model is open."""
    port, token = 0, ""
    for line in process.stderr:
        if match := re.search(r"http://[^:/]+:(\d+)/\?token=(\S+)", line):
            port, token = int(match.group(1)), match.group(2)
            break
        if line.startswith("model ") and not serving:
            break
    threading.Thread(target=keep_log, args=(process,), daemon=True).start()  # keep the pipe drained
    return port, token


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
    host, cpu = report["host"], report["host"]["cpu"]
    loads = ", ".join(f"{load:.1f}" for load in host["load_average_after"])
    lines = [
        "# Live view under load (`edgeseg run --serve`)",
        "",
        f"{report['date']}; CPU: {cpu['model']}, {cpu['usable_cores']} cores; GPU: {host['gpus']}; "
        f"model {report['model']}; {report['seconds']} s per run, {report['rounds']} rounds in alternating order.",
        f"5 viewers read the MJPEG stream continuously; a sixth stops reading for {STALL_S:.0f} s mid-run; "
        f"{SNAPSHOT_LOOPS} clients request /snapshot.png back to back from another address. `{report['command']}`. "
        f"Load average afterwards: {loads} (other work on the machine shows up as noise between rounds).",
        "",
        f"| round | FPS, no viewer | FPS, {WATCHED} | ratio | frames per reader "
        "| stalled viewer: frames before / after "
        "| snapshots received / closed unanswered, per loop | RSS MiB start / end (watched) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for number, pair in enumerate(report["rounds_results"], start=1):
        alone, watched = pair["no viewer"], pair[WATCHED]
        loops = ", ".join(
            f"{received} / {unanswered}" for received, unanswered in watched["snapshot_loops_received_unanswered"]
        )
        readers = ", ".join(map(str, watched["reader_parts"]))
        stalled = " / ".join(map(str, watched["stalled_parts_before_after"][0]))
        lines.append(
            f"| {number} | {alone['fps']:.1f} | {watched['fps']:.1f} | {watched['fps'] / alone['fps']:.3f} | "
            f"{readers} | {stalled} | "
            f"{loops} | {watched['rss_mib_start_end_peak'][0]} / {watched['rss_mib_start_end_peak'][1]} |"
        )
    lines += [
        "",
        f"Median ratio (watched / none): **{report['median_ratio']:.3f}** (target >= 0.90).",
        f"Peak resident memory of any run: {report['peak_rss_mib']} MiB.",
    ]
    return "\n".join(lines) + "\n"


def main() -> None:
    if sys.argv[1:2] == ["--stalled-viewer"]:
        return stalled_viewer(int(sys.argv[2]), sys.argv[3], float(sys.argv[4]))
    if sys.argv[1:2] == ["--snapshot-loop"]:
        return snapshot_loop(int(sys.argv[2]), sys.argv[3], float(sys.argv[4]))
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
            rounds.append({"no viewer": results[False], WATCHED: results[True]})
            print(
                f"round {number + 1}: {results[False]['fps']:.1f} FPS alone, {results[True]['fps']:.1f} watched",
                flush=True,
            )
    host = host_info()
    report = {
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "command": portable_command(sys.argv),
        "host": {"cpu": host["cpu"], "gpus": host["gpus"], "load_average_after": list(os.getloadavg())},
        "model": portable_path(args.model) if args.model else "edgeseg default model",
        "seconds": args.seconds,
        "rounds": args.rounds,
        "rounds_results": rounds,
        "median_ratio": round(statistics.median(pair[WATCHED]["fps"] / pair["no viewer"]["fps"] for pair in rounds), 3),
        "peak_rss_mib": max(run["rss_mib_start_end_peak"][2] for pair in rounds for run in pair.values()),
    }
    name = "serve-load-gpu" if host["gpus"] else "serve-load-cpu"
    write_text_atomic(RESULTS_DIR / f"{name}.json", json.dumps(report, indent=2) + "\n")
    write_text_atomic(RESULTS_DIR / f"{name}.md", markdown(report))
    print(markdown(report))


if __name__ == "__main__":
    main()
