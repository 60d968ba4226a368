"""The loop behind `edgeseg run`: source -> Segmenter -> overlay, window and files.

Three threads overlap the work: the source's reader (capture, decoding), the main thread
(preprocess and inference, and the window, which must live on the main thread), and a finisher
(postprocess, overlay, video encoding, masks, JSONL) that works on frame N while the model runs
on frame N+1, at a lower priority so that it takes the gaps between the model's runs rather than
the model's cores (edgeseg.runtime.thread_plan). Ctrl-C, `q` in the window and the end of the
stream all stop it the same way: the writer drains its queue and every output is closed properly.
"""

from __future__ import annotations

import json
import logging
import os
import queue
import sys
import threading
import time
from collections import defaultdict
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import cv2
import numpy as np

from edgeseg.core.drawing import HudInfo, OverlayRenderer
from edgeseg.core.errors import EdgesegError
from edgeseg.core.files import atomic_output, new_file_mode, write_bytes_atomic, write_mask
from edgeseg.core.names import MASK_SUFFIX
from edgeseg.core.preprocess import as_bgr8
from edgeseg.core.segmenter import Pending, Segmentation, Segmenter
from edgeseg.runtime.photos import PhotoOutputs, PhotoResults
from edgeseg.runtime.recording import Recording, even_size, open_recording
from edgeseg.runtime.sources import Frame, Source
from edgeseg.runtime.thread_plan import ThreadPlan, lower_this_thread_priority, this_host_plan

if TYPE_CHECKING:  # the server loads only when --serve asks for it
    from edgeseg.runtime.serve import LiveView

log = logging.getLogger("edgeseg.runtime")

WINDOW = "edgeseg"
# Mean milliseconds per frame. Main thread: wait (for the reader), preprocess, inference, display;
# finisher thread, overlapping the next frame's inference: postprocess, overlay, write.
STAGES = ("wait", "preprocess", "inference", "postprocess", "display", "overlay", "write")


class OutputError(EdgesegError, RuntimeError):
    """Post-processing or writing an output failed (a full disk, a folder that cannot be written)."""


@dataclass
class RunOptions:
    show: bool = False
    save_video: Path | None = None  # overlay video, .mp4 (H.264) or .webm (VP9), written atomically
    save_masks: Path | None = None  # folder for 0/255 masks at the image's own size
    jsonl: Path | None = None  # one record per frame
    max_frames: int | None = None
    snapshot_dir: Path = Path(".")  # where `s` in the window saves snapshots
    live_view: LiveView | None = None  # --serve: the overlay and figures for browsers
    photos: PhotoOutputs | None = None  # photos: a line per image, and overlays, masks and results.csv
    thread_plan: ThreadPlan | None = None  # the encoder's threads and the finisher's priority; None: this host's


@dataclass
class RunSummary:
    frames: int = 0
    dropped: int = 0
    skipped: list[str] = field(default_factory=list)
    seconds: float = 0.0
    stage_ms: dict[str, float] = field(default_factory=dict)  # mean per processed frame
    interrupted: bool = False  # Ctrl-C or `q`
    source_lost: bool = False  # a live source that failed and did not come back
    snapshots: list[Path] = field(default_factory=list)

    @property
    def fps(self) -> float:
        return self.frames / self.seconds if self.seconds > 0 else 0.0


def display_available() -> bool:
    """Whether a window can be shown: on Linux that needs an X11 or Wayland display."""
    if sys.platform.startswith("linux"):
        return bool(os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"))
    return True


def mask_filename(frame: Frame) -> str:
    """ISIC ids keep the official naming (ISIC_0000000_segmentation.png); other names get the same suffix."""
    return frame.name + MASK_SUFFIX


def frame_record(number: int, frame: Frame, segmentation: Segmentation, latency_ms: float) -> dict[str, Any]:
    height, width = frame.image.shape[:2]
    record = {
        "index": number,
        "source_index": frame.index,
        "name": frame.name,
        "timestamp": round(frame.timestamp, 6),
        "width": width,
        "height": height,
        "timings_ms": {stage: round(ms, 3) for stage, ms in segmentation.timings_ms.items()},
        "latency_ms": round(latency_ms, 3),
    }
    record.update(segmentation.measurements.to_dict())
    return record


@dataclass
class _Item:
    number: int
    frame: Frame
    pending: Pending  # prepared and inferred on the main thread; finished by the finisher


class _Finisher:
    """The thread after inference: postprocess, HUD and overlay, and every output file.

    It runs while the main thread infers the next frame. Items arrive in order through a short
    queue, so a slow disk holds the main thread back (file sources lose no frame) and a live
    source's reader drops frames instead of latency building up.
    """

    def __init__(self, segmenter: Segmenter, options: RunOptions, fps: float, live: bool) -> None:
        self.segmenter = segmenter
        self.live = live
        self.options = options
        self.plan = options.thread_plan or this_host_plan()
        self.fps = fps
        self.stage_ms: dict[str, float] = defaultdict(float)
        self.error: BaseException | None = None
        self.latest_overlay: tuple[Frame, np.ndarray] | None = None  # for the window, drawn on the main thread
        self._lock = threading.Lock()
        self._queue: queue.Queue = queue.Queue(maxsize=4)
        self._renderer = OverlayRenderer()
        self.photos = PhotoResults(options.photos) if options.photos is not None else None
        self._video: Recording | None = None
        self._first_timestamp: float | None = None
        self._video_size: tuple[int, int] | None = None
        self._fps_estimate = 0.0
        self._previous = time.perf_counter()
        self._thread = threading.Thread(target=self._run, name="edgeseg-finisher", daemon=True)
        self._thread.start()

    @property
    def needs_overlay(self) -> bool:
        photos = self.options.photos is not None and self.options.photos.needs_overlay
        return self.options.save_video is not None or self.options.show or self.options.live_view is not None or photos

    def put(self, item: _Item) -> None:
        if self.error is not None:
            raise OutputError(f"post-processing or writing the outputs failed: {self.error}") from self.error
        self._queue.put(item)

    def take_overlay(self) -> tuple[Frame, np.ndarray] | None:
        with self._lock:
            latest, self.latest_overlay = self.latest_overlay, None
        return latest

    def finish(self) -> None:
        self._queue.put(None)
        self._thread.join()
        if self.error is not None:
            raise OutputError(f"post-processing or writing the outputs failed: {self.error}") from self.error

    def _run(self) -> None:
        lower_this_thread_priority(self.plan.finisher_nice)  # before the encoder starts: its threads inherit it
        try:
            with ExitStack() as outputs:
                jsonl = self._open_jsonl(outputs)
                if self.photos is not None:
                    outputs.callback(self.photos.close)  # results.csv, also after Ctrl-C: a row per image done
                if self.options.save_masks is not None:
                    self.options.save_masks.mkdir(parents=True, exist_ok=True)
                while (item := self._queue.get()) is not None:
                    self._finish_one(item, outputs, jsonl)
        except BaseException as error:  # reported by put()/finish() on the main thread
            self.error = error
            while self._queue.get() is not None:  # keep the main thread from blocking on a full queue
                pass

    def _open_jsonl(self, outputs: ExitStack):
        """The per-frame records' stream: stdout for '-', else a file."""
        if self.options.jsonl is None:
            return None
        if str(self.options.jsonl) == "-":
            return sys.stdout  # everything else `edgeseg run` prints goes to stderr
        self.options.jsonl.parent.mkdir(parents=True, exist_ok=True)
        # Streamed, not atomic: a long live run can be followed with `tail -f`, and every line
        # written is a whole record, so an interrupted run still leaves valid JSONL.
        stream = outputs.enter_context(open(self.options.jsonl, "w", encoding="utf-8"))
        os.chmod(self.options.jsonl, new_file_mode())  # a file replaced with --overwrite would keep its old mode
        return stream

    def _finish_one(self, item: _Item, outputs: ExitStack, jsonl) -> None:
        image = item.frame.image
        segmentation = self.segmenter.finish(item.pending)
        now = time.perf_counter()
        rate = 1.0 / max(now - self._previous, 1e-6)
        self._fps_estimate = rate if item.number == 0 else 0.9 * self._fps_estimate + 0.1 * rate
        self._previous = now
        latency_ms = (now - item.frame.captured) * 1000
        backend = self.segmenter.backend
        overlay = None
        if self.needs_overlay:
            # A photo's overlay has the lesion's size only: speed lines mean nothing on a still image.
            hud = None
            if self.photos is None:
                hud = HudInfo(self._fps_estimate, latency_ms, backend.name, backend.precision)
            overlay = self._renderer.render(image, segmentation, hud)
            if self.options.show:
                with self._lock:
                    self.latest_overlay = (item.frame, overlay.copy())  # the renderer reuses its canvas
        drawn = time.perf_counter()
        if self.photos is not None:
            self.photos.add(item.frame, segmentation, overlay)
        if self.options.save_video is not None and overlay is not None:
            self._record(overlay, item.frame, outputs, self.options.save_video)
        if self.options.save_masks is not None:
            write_mask(self.options.save_masks / mask_filename(item.frame), segmentation.mask)
        if jsonl is not None or self.options.live_view is not None:
            record = frame_record(item.number, item.frame, segmentation, latency_ms)
        if jsonl is not None:
            jsonl.write(json.dumps(record) + "\n")
            jsonl.flush()
        if self.options.live_view is not None and overlay is not None:
            self.options.live_view.publish(
                overlay,
                {
                    **record,
                    "fps": round(self._fps_estimate, 2),
                    "backend": backend.name,
                    "precision": backend.precision,
                },
            )
        self.stage_ms["postprocess"] += segmentation.timings_ms["postprocess"]
        self.stage_ms["overlay"] += (drawn - now) * 1000
        self.stage_ms["write"] += (time.perf_counter() - drawn) * 1000

    def _record(self, overlay: np.ndarray, frame: Frame, outputs: ExitStack, path: Path) -> None:
        """The overlay as the next frame of the --save video, opened at the first frame's size."""
        if self._video is None or self._video_size is None:
            self._video, self._video_size = self._open_video(outputs, path, overlay.shape)
        self._video.write(self._fit(overlay, self._video_size), self._video_milliseconds(frame))

    def _open_video(self, outputs: ExitStack, path: Path, shape: tuple[int, ...]) -> tuple[Recording, tuple[int, int]]:
        temporary = outputs.enter_context(atomic_output(path))
        height, width = shape[:2]
        size = even_size(width, height)
        video = open_recording(path, temporary, size, self.fps, self.plan)
        outputs.callback(video.close)  # closed (and flushed) before atomic_output renames the file
        log.info("recording %s as %s", path, video.codec)
        return video, size

    def _video_milliseconds(self, frame: Frame) -> int:
        """A live frame's capture time since the first one; a file's frame time from its index and frame rate."""
        if self._first_timestamp is None:
            self._first_timestamp = frame.timestamp
        if self.live:
            return round((frame.timestamp - self._first_timestamp) * 1000)
        return round(frame.index * 1000 / self.fps)

    @staticmethod
    def _fit(image: np.ndarray, video_size: tuple[int, int]) -> np.ndarray:
        """A video has one frame size: images of other sizes (a folder source) are resized to it."""
        if (image.shape[1], image.shape[0]) == video_size:
            return image
        return cv2.resize(image, video_size, interpolation=cv2.INTER_AREA)


def run_pipeline(segmenter: Segmenter, source: Source, options: RunOptions) -> RunSummary:
    """Process ``source`` until it ends, ``max_frames`` is reached, Ctrl-C, or `q` in the window."""
    summary = RunSummary()
    stage_ms: dict[str, float] = defaultdict(float)
    finisher = _Finisher(segmenter, options, fps=source.fps or 30.0, live=source.live)
    window = _Window(finisher, options, summary) if options.show else None
    started = time.perf_counter()
    try:
        frames = source.frames()
        while options.max_frames is None or summary.frames < options.max_frames:
            waited = time.perf_counter()
            frame = next(frames, None)
            if frame is None:
                break
            stage_ms["wait"] += (time.perf_counter() - waited) * 1000
            frame.image = as_bgr8(frame.image)  # a pipeline may deliver grey, BGRA or 16-bit; the overlay needs BGR
            pending = segmenter.infer(segmenter.prepare(frame.image))
            stage_ms["preprocess"] += pending.timings_ms["preprocess"]
            stage_ms["inference"] += pending.timings_ms["inference"]
            finisher.put(_Item(summary.frames, frame, pending))
            summary.frames += 1
            if window is not None:
                shown = time.perf_counter()
                stop = window.update()
                stage_ms["display"] += (time.perf_counter() - shown) * 1000
                if stop:
                    summary.interrupted = True
                    break
    except KeyboardInterrupt:
        summary.interrupted = True
        log.warning("interrupted: finishing the outputs")
    finally:
        source.close()
        finisher.finish()
        summary.seconds = time.perf_counter() - started  # including the frames still being finished
        if window is not None:
            cv2.destroyAllWindows()
    summary.dropped, summary.skipped, summary.source_lost = source.dropped, list(source.skipped), source.lost
    for stage, total in {**stage_ms, **finisher.stage_ms}.items():
        summary.stage_ms[stage] = total / summary.frames if summary.frames else 0.0
    return summary


class _Window:
    """The overlay window (main thread only): shows the newest finished overlay, handles `q` and `s`."""

    def __init__(self, finisher: _Finisher, options: RunOptions, summary: RunSummary) -> None:
        self.finisher, self.options, self.summary = finisher, options, summary
        self.opened = False
        self.last: tuple[Frame, np.ndarray] | None = None

    def update(self) -> bool:
        """True when the user asks to stop (`q`, Esc, or closing the window)."""
        latest = self.finisher.take_overlay()
        if latest is not None:
            cv2.imshow(WINDOW, latest[1])
            self.opened, self.last = True, latest
        key = cv2.waitKey(1) & 0xFF
        if key == ord("s") and self.last is not None:
            self.summary.snapshots.append(save_snapshot(self.last[1], self.options.snapshot_dir, self.last[0]))
        closed = self.opened and cv2.getWindowProperty(WINDOW, cv2.WND_PROP_VISIBLE) < 1
        return key in (ord("q"), 27) or closed


def save_snapshot(overlay: np.ndarray, folder: Path, frame: Frame) -> Path:
    stamp = time.strftime("%Y%m%d-%H%M%S", time.localtime(frame.timestamp))
    path = folder / f"edgeseg-snapshot-{stamp}-{frame.index:06d}.png"
    ok, encoded = cv2.imencode(".png", overlay)
    if not ok:
        raise OSError(f"{path}: OpenCV could not encode the snapshot")
    write_bytes_atomic(path, encoded.tobytes())
    log.info("snapshot saved: %s", path)
    return path
