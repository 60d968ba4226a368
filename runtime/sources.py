"""Frame sources for `edgeseg run`: one loop for a camera, a video, images, a stream or a pipeline.

What a ``--source`` string means: the kinds read through a capture are the entries of SOURCE_KINDS
(at the end of this module), tried in order: all digits (``0``) is camera index N; ``csi://N`` is a
Jetson CSI camera (sensor id N) through GStreamer; a string with '!' is a GStreamer pipeline;
``scheme://...`` is a stream URL (RTSP/HTTP); a character device (``/dev/video0``, or a link to one
such as ``/dev/v4l/by-id/...``) that is no glob is a camera. A string none of them takes is files: a
glob of images, a folder, an image or a video file. (A file whose name is all digits is reached as
``./0``.) A new kind of source is one more entry there (CONTRIBUTING.md, "Add a source").

A folder is walked with its subfolders, as a glob's '**' is: hidden folders and files are skipped,
and so are folders named ``edgeseg-results`` (edgeseg's own outputs) below it; a folder or file
reached twice through links is read once. Each image is named after its path below the folder all
the images share, without its suffix (``a/ISIC_0000001``), so outputs keep the subfolders and two
images of the same name in different folders never write over each other's outputs.

Files (a video, an image, a folder or glob of images) are read ahead by a thread and every frame is
processed. Live sources (a camera, an RTSP/HTTP URL, a GStreamer pipeline) are read by a capture
thread that keeps only the newest frame, so latency never builds up when the model is slower than
the camera; the frames skipped that way are counted as dropped. A live source that fails is
reopened with backoff, and the run ends cleanly if it does not come back.
"""

from __future__ import annotations

import glob
import logging
import os
import queue
import re
import stat
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any, Protocol

import cv2
import numpy as np

from edgeseg.core.errors import EdgesegError
from edgeseg.core.files import ImageReadError, read_image
from edgeseg.core.names import IMAGE_SUFFIXES

log = logging.getLogger("edgeseg.runtime")

URL_PATTERN = re.compile(r"^[a-zA-Z][a-zA-Z0-9+.-]*://")
CSI_PREFIX = "csi://"
CSI_DEFAULTS = (1920, 1080, 30)  # width, height, fps asked of a CSI camera when --width/--height/--fps are not given
LIST_CAMERAS = "List cameras with `v4l2-ctl --list-devices` (package v4l-utils)"
OPEN_TIMEOUT_S = 10.0
MAX_GLOB_DEPTH = 32  # folders a '**' descends: deeper than any image collection, and a bound on a hostile tree
RECURSIVE_PART = re.compile(r"(?:^|(?<=/))\*\*(?:/|$)")  # a '**' that is a whole path component
RECONNECT_DELAYS_S = (0.5, 1.0, 2.0, 4.0)
RESULTS_FOLDER = "edgeseg-results"  # where `edgeseg run` writes photos' results; never walked into as input


class SourceError(EdgesegError, RuntimeError):
    """A source that cannot be opened; the message names it and says what to check."""


@dataclass
class Frame:
    index: int  # position in the source; gaps in a live source are dropped frames
    image: np.ndarray  # BGR uint8
    name: str  # images: the path below the shared folder without suffix ("a/ISIC_0000001"); else "frame_000123"
    timestamp: float  # wall-clock time of capture (seconds since the epoch)
    captured: float  # time.perf_counter() at capture, for latency
    label: str | None = None  # images: the path below the shared folder ("a/ISIC_0000001.jpg"), as lines show it


class Capture(Protocol):
    """What the live reader needs from cv2.VideoCapture (tests pass fakes)."""

    def read(self) -> tuple[bool, np.ndarray | None]: ...

    def release(self) -> None: ...


class Source:
    """Frames from somewhere. Iterate ``frames()``; ``close()`` stops any reader thread."""

    description = ""
    live = False
    fps: float | None = None  # frame rate the source reports, if it does

    def __init__(self) -> None:
        self.dropped = 0  # live frames replaced by a newer one before they were processed
        self.skipped: list[str] = []  # files that could not be read, with the reason
        self.lost = False  # a live source that failed and did not come back

    def frames(self) -> Iterator[Frame]:
        raise NotImplementedError

    def close(self) -> None:
        pass

    def __enter__(self) -> Source:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# --- files: read ahead, every frame processed ----------------------------------------------------


@dataclass
class _End:
    error: Exception | None = None


class _ReadAhead(Source):
    """Reads a file source in a thread, a few frames ahead of the consumer; with ``loop``, again and again."""

    def __init__(self, depth: int = 4, loop: bool = False) -> None:
        super().__init__()
        self.loop = loop
        self._queue: queue.Queue = queue.Queue(maxsize=depth)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _one_pass(self) -> Iterator[tuple[np.ndarray, str | None, str | None]]:
        """Each image of the source once, with its name and label (None: named after its frame number)."""
        raise NotImplementedError

    def _rewind(self) -> None:
        pass

    def _offer(self, item: Frame | _End) -> bool:
        """Queue ``item``, waiting while the queue is full; False once the source is closed."""
        while not self._stop.is_set():
            try:
                self._queue.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def _fill(self) -> None:
        index = 0
        try:
            while True:
                first = index
                for image, name, label in self._one_pass():
                    frame = Frame(index, image, name or f"frame_{index:06d}", time.time(), time.perf_counter(), label)
                    if not self._offer(frame):
                        return
                    index += 1
                if not self.loop or index == first:  # a pass that gave nothing would loop for ever
                    break
                self._rewind()
            self._offer(_End())
        except Exception as error:  # handed to the consumer, which raises it
            self._offer(_End(error))

    def frames(self) -> Iterator[Frame]:
        self._thread = threading.Thread(target=self._fill, name="edgeseg-reader", daemon=True)
        self._thread.start()
        while not isinstance(item := self._queue.get(), _End):
            yield item
        if item.error is not None:
            raise item.error

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)


class ImageFiles(_ReadAhead):
    """Still images; an unreadable one is reported once, recorded in ``skipped`` and passed over.

    Each is named after its path below ``root``, the folder all of them share (``image_names``).
    """

    def __init__(self, paths: list[Path], description: str, loop: bool = False) -> None:
        super().__init__(loop=loop)
        self.paths = paths
        self.description = description
        self.root, self.names, self.labels = image_names(paths)

    def _one_pass(self) -> Iterator[tuple[np.ndarray, str | None, str | None]]:
        for path, name, label in zip(self.paths, self.names, self.labels, strict=True):
            try:
                image = read_image(path)
            except ImageReadError as error:
                if str(error) not in self.skipped:  # a looping source meets it again each pass
                    log.warning("skipped %s", error)
                    self.skipped.append(str(error))
                continue
            yield image, name, label


def image_names(paths: list[Path]) -> tuple[Path, list[str], list[str]]:
    """The folder the images share, and each image's name and label: its path below that folder without its
    suffix (photos/a/x.jpg, photos/b/x.jpg: a/x, b/x), and with it (a/x.jpg). Two images that differ only in
    their suffix (x.jpg, x.png) keep it in their names (x_jpg, x_png), so their outputs differ too."""
    if not paths:
        return Path("."), [], []
    root = Path(os.path.commonpath([os.path.dirname(os.path.abspath(path)) for path in paths]))
    relative = [Path(os.path.relpath(os.path.abspath(path), root)) for path in paths]
    stems = [path.with_suffix("").as_posix() for path in relative]
    counts = Counter(stem.lower() for stem in stems)  # x.jpg and X.png share their outputs on a case-blind disk
    names = [
        f"{stem}_{path.suffix[1:]}" if counts[stem.lower()] > 1 else stem
        for stem, path in zip(stems, relative, strict=True)
    ]
    return root, names, [path.as_posix() for path in relative]


class VideoFile(_ReadAhead):
    def __init__(self, path: Path, loop: bool = False) -> None:
        super().__init__(loop=loop)
        self.path = path
        self.description = f"video {path}" + (" (looping)" if loop else "")
        self._capture = cv2.VideoCapture(str(path))
        if not self._capture.isOpened():
            raise SourceError(
                f"{path}: OpenCV cannot open this video (corrupt, or a codec this OpenCV build lacks); convert it, "
                "e.g. to MJPG .avi or mp4v .mp4 with ffmpeg."
            )
        self.fps = self._capture.get(cv2.CAP_PROP_FPS) or None

    def _one_pass(self) -> Iterator[tuple[np.ndarray, str | None, str | None]]:
        read = 0
        while True:
            ok, image = self._capture.read()
            if not ok:
                self._check_complete(read)
                return
            read += 1
            yield image, None, None

    def _check_complete(self, read: int) -> None:
        """A video that stops before the frame count its header gives is truncated or corrupt: said once."""
        expected = int(self._capture.get(cv2.CAP_PROP_FRAME_COUNT) or 0)
        problem = (
            f"{self.path}: the video ended after {read} of its {expected} frames (truncated or corrupt); "
            "the frames before were processed"
        )
        if expected > 0 and read < expected - 1 and problem not in self.skipped:
            log.warning("%s", problem)
            self.skipped.append(problem)

    def _rewind(self) -> None:
        if not self._capture.set(cv2.CAP_PROP_POS_FRAMES, 0):  # a format that cannot seek is opened again
            self._capture.release()
            self._capture = cv2.VideoCapture(str(self.path))

    def close(self) -> None:
        super().close()
        self._capture.release()


class CaptureFrames(_ReadAhead):
    """Every frame of a capture that ends (a recording read through its own reader), read ahead, none dropped;
    with ``loop`` the capture is opened again at its end."""

    def __init__(self, open_capture: Callable[[], Capture], description: str, loop: bool = False) -> None:
        super().__init__(loop=loop)
        self.description = description + (" (looping)" if loop else "")
        self._open_capture = open_capture
        self._capture = open_capture()
        get = getattr(self._capture, "get", None)
        self.fps = (get(cv2.CAP_PROP_FPS) or None) if get else None

    def _one_pass(self) -> Iterator[tuple[np.ndarray, str | None, str | None]]:
        while True:
            ok, image = self._capture.read()
            if not ok or image is None:
                return
            yield image, None, None

    def _rewind(self) -> None:
        self._capture.release()
        self._capture = self._open_capture()

    def close(self) -> None:
        super().close()
        self._capture.release()


# --- live sources: newest frame only ---------------------------------------------------------------


class LiveSource(Source):
    """A capture thread that keeps only the newest frame; a failing source is reopened with backoff."""

    live = True

    def __init__(
        self,
        open_capture: Callable[[], Capture],
        description: str,
        reconnect_delays: tuple[float, ...] = RECONNECT_DELAYS_S,
    ) -> None:
        super().__init__()
        self.description = description
        self._open_capture = open_capture
        self._reconnect_delays = reconnect_delays
        self._capture: Capture = open_capture()
        get = getattr(self._capture, "get", None)
        self.fps = (get(cv2.CAP_PROP_FPS) or None) if get else None
        self._condition = threading.Condition()
        self._latest: Frame | None = None
        self._ended = False
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _read_loop(self) -> None:
        index = 0
        try:
            while not self._stop.is_set():
                ok, image = self._capture.read()
                if not ok or image is None:
                    if self._stop.is_set() or not self._reconnect():
                        return
                    continue
                frame = Frame(index, image, f"frame_{index:06d}", time.time(), time.perf_counter())
                index += 1
                with self._condition:
                    if self._latest is not None:
                        self.dropped += 1
                    self._latest = frame
                    self._condition.notify()
        finally:
            with self._condition:
                self._ended = True
                self._condition.notify()

    def _reconnect(self) -> bool:
        self._capture.release()
        attempts = len(self._reconnect_delays)
        for attempt, delay in enumerate(self._reconnect_delays, start=1):
            log.warning(
                "%s stopped delivering frames; reopening in %.1f s (attempt %d of %d)",
                self.description,
                delay,
                attempt,
                attempts,
            )
            if self._stop.wait(delay):
                return False
            try:
                self._capture = self._open_capture()
                log.warning("%s is back", self.description)
                return True
            except SourceError as error:
                log.debug("reopen failed: %s", error)
        log.error("%s did not come back after %d attempts; ending the run", self.description, attempts)
        self.lost = True
        return False

    def frames(self) -> Iterator[Frame]:
        self._thread = threading.Thread(target=self._read_loop, name="edgeseg-capture", daemon=True)
        self._thread.start()
        while True:
            with self._condition:
                while self._latest is None and not self._ended:
                    self._condition.wait()
                frame, self._latest = self._latest, None
            if frame is None:
                return
            yield frame

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        if self._capture is not None:
            self._capture.release()


def _silenced_open(open_capture: Callable[[], Any], description: str, timeout: float = OPEN_TIMEOUT_S) -> Any:
    """Open a capture in a thread, so a driver that hangs cannot hold the run for more than ``timeout``."""
    result: dict[str, Any] = {}

    def attempt() -> None:
        try:
            result["capture"] = open_capture()
        except Exception as error:  # reported below with the source's name
            result["error"] = error

    previous = cv2.utils.logging.getLogLevel()
    cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_SILENT)  # our message replaces OpenCV's noise
    try:
        thread = threading.Thread(target=attempt, daemon=True)
        thread.start()
        thread.join(timeout)
    finally:
        cv2.utils.logging.setLogLevel(previous)
    if thread.is_alive():
        raise SourceError(
            f"{description} did not open within {timeout:.0f} s; check that it is connected and not in use."
        )
    if "error" in result:
        raise result["error"]
    return result["capture"]


def open_camera(
    camera: int | str, width: int | None = None, height: int | None = None, fps: float | None = None
) -> cv2.VideoCapture:
    """Camera index N, or a V4L2 device path (``/dev/video0``, ``/dev/v4l/by-id/...``) opened with CAP_V4L2."""

    def attempt() -> cv2.VideoCapture:
        capture = cv2.VideoCapture(camera, cv2.CAP_V4L2) if isinstance(camera, str) else cv2.VideoCapture(camera)
        if not capture.isOpened():
            capture.release()
            raise SourceError(_camera_not_opened(camera))
        for prop, value in (
            (cv2.CAP_PROP_FRAME_WIDTH, width),
            (cv2.CAP_PROP_FRAME_HEIGHT, height),
            (cv2.CAP_PROP_FPS, fps),
        ):
            if value:
                capture.set(prop, value)
        return capture

    capture = _silenced_open(attempt, f"camera {camera}")
    got = (
        int(capture.get(cv2.CAP_PROP_FRAME_WIDTH)),
        int(capture.get(cv2.CAP_PROP_FRAME_HEIGHT)),
        capture.get(cv2.CAP_PROP_FPS),
    )
    if (width and got[0] != width) or (height and got[1] != height) or (fps and abs(got[2] - fps) > 0.5):
        log.warning(
            "camera %s gives %dx%d at %.0f fps (asked for %sx%s at %s fps)",
            camera,
            got[0],
            got[1],
            got[2],
            width,
            height,
            fps,
        )
    return capture


def _camera_not_opened(camera: int | str) -> str:
    if isinstance(camera, str):
        return (
            f"camera {camera} did not open: another program is using it, or it is not a capture node (a USB camera "
            f"often has a second /dev/videoN for metadata only). {LIST_CAMERAS} and pass --source /dev/videoN."
        )
    return (
        f"camera {camera} did not open: there is no such camera, or another program is using it. "
        f"{LIST_CAMERAS} and pass the N of /dev/videoN (--camera N, --source N or --source /dev/videoN)."
    )


def csi_pipeline(sensor_id: int, width: int | None = None, height: int | None = None, fps: float | None = None) -> str:
    """The GStreamer pipeline for a Jetson CSI camera: Argus (ISP) in NVMM memory, converted to BGR for OpenCV.

    ``appsink drop=1 max-buffers=1`` keeps only the newest frame in GStreamer too, so no latency builds up there.
    """
    width, height = width or CSI_DEFAULTS[0], height or CSI_DEFAULTS[1]
    rate = Fraction(fps or CSI_DEFAULTS[2]).limit_denominator(1001)
    return (
        f"nvarguscamerasrc sensor-id={sensor_id} ! "
        f"video/x-raw(memory:NVMM),width={width},height={height},framerate={rate.numerator}/{rate.denominator} ! "
        "nvvidconv ! video/x-raw,format=BGRx ! videoconvert ! video/x-raw,format=BGR ! appsink drop=1 max-buffers=1"
    )


def open_stream(spec: str) -> cv2.VideoCapture:
    """An RTSP/HTTP URL (FFmpeg) or a GStreamer pipeline (a string with '!')."""
    gstreamer = "!" in spec

    def attempt() -> cv2.VideoCapture:
        capture = cv2.VideoCapture(spec, cv2.CAP_GSTREAMER) if gstreamer else cv2.VideoCapture(spec)
        if capture.isOpened():
            return capture
        capture.release()
        if gstreamer and not has_gstreamer():
            raise SourceError(
                "this OpenCV was built without GStreamer (the PyPI opencv-python wheels are), so it cannot open a "
                "GStreamer pipeline; on a Jetson use JetPack's system OpenCV (python3-opencv), whose build has it."
            )
        kind = "GStreamer pipeline" if gstreamer else "stream"
        raise SourceError(
            f"{kind} {spec!r} did not open; check the address or pipeline (try it with gst-launch-1.0 / ffplay)."
        )

    return _silenced_open(attempt, "GStreamer pipeline" if gstreamer else f"stream {spec}")


def has_gstreamer() -> bool:
    return bool(re.search(r"GStreamer:\s+YES", cv2.getBuildInformation()))


def images_below(folder: Path) -> list[Path]:
    """The images in ``folder`` and its subfolders (as ``folders_below`` walks them), each file once."""
    found = []
    for below in folders_below(str(folder)):
        for name in _visible_names(below or os.curdir):
            path = Path(below, name)
            if path.suffix.lower() in IMAGE_SUFFIXES and path.is_file():
                found.append(path)
    return unique_files(found)


def unique_files(paths: Iterable[Path]) -> list[Path]:
    """``paths`` sorted, each file once: a link to a file listed already, or a folder reached again through a
    link, adds nothing. The most direct path to a file is kept: not a link, then through the fewest folders."""
    unique: dict[str, Path] = {}
    for path in sorted(paths, key=lambda path: (path.is_symlink(), len(path.parts), path)):
        unique.setdefault(os.path.realpath(path), path)
    return sorted(unique.values())


def matching_paths(pattern: str) -> list[str]:
    """The files ``glob.glob(pattern, recursive=True)`` matches, with each '**' walking every real folder once and
    at most MAX_GLOB_DEPTH deep: a link that loops back (glob follows it until the OS refuses, about 40 times;
    two such links multiply that) repeats nothing. A pattern ending in '**' gives what each folder holds."""
    recursive = RECURSIVE_PART.search(pattern)
    if recursive is None:
        return glob.glob(pattern)
    head, tail = pattern[: recursive.start()], pattern[recursive.end() :]
    bases = glob.glob(head) if glob.has_magic(head) else [head]
    return [
        path
        for base in bases
        for folder in folders_below(base)
        for path in matching_paths(os.path.join(glob.escape(folder), tail or "*"))
    ]


def folders_below(base: str) -> Iterator[str]:
    """``base`` ('' for the current folder) and the folders below it, links followed and hidden ones skipped as
    glob's '**' does (and RESULTS_FOLDER); each real folder once (by device and inode), at most MAX_GLOB_DEPTH
    below ``base``."""
    seen: set[tuple[int, int]] = set()
    stack = [(base, 0)]
    while stack:
        folder, depth = stack.pop()
        try:
            info = os.stat(folder or os.curdir)
        except OSError:
            continue
        if not stat.S_ISDIR(info.st_mode) or (info.st_dev, info.st_ino) in seen:
            continue
        seen.add((info.st_dev, info.st_ino))
        yield folder
        if depth < MAX_GLOB_DEPTH:
            children = sorted(os.path.join(folder, name) for name in _visible_names(folder or os.curdir))
            stack.extend((child, depth + 1) for child in reversed(children))


def _visible_names(folder: str) -> list[str]:
    """What a folder holds, as a walk takes it: hidden names and edgeseg's own results folders left out."""
    try:
        return [name for name in os.listdir(folder) if not name.startswith(".") and name != RESULTS_FOLDER]
    except OSError:
        return []


def open_source(
    source: str | None = None,
    camera: int | None = None,
    width: int | None = None,
    height: int | None = None,
    fps: float | None = None,
    loop: bool = False,
) -> Source:
    """The source for a camera index or a --source string: the first of SOURCE_KINDS that matches it (camera,
    CSI camera, pipeline, URL, camera device), else image files or a video.

    ``loop`` replays a video, image files or a recorded kind from the start whenever they end (a demo, a soak test).
    """
    if (source is None) == (camera is None):
        raise SourceError("give exactly one of a camera index (--camera N) or a source (--source PATH/URL/PIPELINE)")
    if source is None:
        return open_kind(CAMERA_INDEX, str(camera), width, height, fps, loop)
    kind = find_source_kind(source)
    if kind is None:
        return _file_source(source, loop)
    return open_kind(kind, source, width, height, fps, loop)


def open_kind(
    kind: SourceKind, text: str, width: int | None, height: int | None, fps: float | None, loop: bool
) -> Source:
    """``text`` opened as ``kind``: a live source (newest frame only), or every frame of a recording."""
    open_capture, description = kind.opener(text, width, height, fps)
    if not kind.live:
        return CaptureFrames(open_capture, description, loop)
    if loop:
        raise SourceError(f"--loop replays a video or image files; {description} is live and runs until stopped")
    return LiveSource(open_capture, description)


def is_glob(text: str) -> bool:
    return any(char in text for char in "*?[")


def glob_images(pattern: str) -> list[Path]:
    """The images a glob matches (a '**' walks subfolders as ``folders_below`` does), each file once."""
    matches = (Path(path) for path in matching_paths(os.path.expanduser(pattern)))
    paths = unique_files(path for path in matches if path.suffix.lower() in IMAGE_SUFFIXES)
    if not paths:
        raise SourceError(f"no images match {pattern!r} (looked for {', '.join(sorted(IMAGE_SUFFIXES))})")
    return paths


def folder_images(folder: Path) -> list[Path]:
    paths = images_below(folder)
    if not paths:
        raise SourceError(
            f"{folder}: no images in this folder or below it (looked for {', '.join(sorted(IMAGE_SUFFIXES))})"
        )
    return paths


def is_image_input(text: str) -> bool:
    """Whether a command-line word names images: a glob, a folder, or a file with an image suffix."""
    path = Path(text).expanduser()
    return is_glob(text) or path.is_dir() or path.suffix.lower() in IMAGE_SUFFIXES


def open_images(inputs: list[str], loop: bool = False) -> ImageFiles:
    """Images named by several words (a shell's expansion of photos/*.jpg): image files, folders and globs."""
    paths: list[Path] = []
    for text in inputs:
        path = Path(text).expanduser()
        if is_glob(text):
            paths += glob_images(text)
        elif path.is_dir():
            paths += folder_images(path)
        elif not path.exists():
            raise SourceError(f"{path}: no such image, folder or model file")
        elif path.suffix.lower() in IMAGE_SUFFIXES:
            paths.append(path)
        else:
            raise SourceError(
                f"{path}: not an image ({', '.join(IMAGE_SUFFIXES)}); give a video or a camera with --source"
            )
    paths = unique_files(paths)
    if len(paths) == 1:
        return ImageFiles(paths, f"image {paths[0]}", loop)
    return ImageFiles(paths, f"{len(paths)} images" + (f" in {inputs[0]}" if len(inputs) == 1 else ""), loop)


def _file_source(source: str, loop: bool) -> Source:
    """Image files (a glob, a folder, one image) or a video."""
    if is_glob(source):
        paths = glob_images(source)
        return ImageFiles(paths, f"{len(paths)} images matching {source}", loop)
    path = Path(source).expanduser()
    if str(path).startswith("/dev/") and not path.exists():
        raise SourceError(
            f"{path}: no such camera device. {LIST_CAMERAS}, then pass --source /dev/videoN (or --source N)."
        )
    if path.is_dir():
        paths = folder_images(path)
        return ImageFiles(paths, f"{len(paths)} images in {path}", loop)
    if not path.exists():
        raise SourceError(
            f"{path}: no such file or folder. Pass a video, an image, a folder or glob of images, a camera "
            "(N, /dev/videoN, csi://N), a URL or a GStreamer pipeline."
        )
    if path.suffix.lower() in IMAGE_SUFFIXES:
        return ImageFiles([path], f"image {path}", loop)
    return VideoFile(path, loop)


# --- kinds of --source string: each one an entry in SOURCE_KINDS -------------------------------------

Opener = Callable[[str, int | None, int | None, float | None], tuple[Callable[[], Capture], str]]


@dataclass(frozen=True)
class SourceKind:
    """A kind of --source string read through a capture (a camera, a stream, a pipeline): how to tell it and open it.

    ``matches(text)`` says whether ``text`` is this kind. ``opener(text, width, height, fps)`` checks ``text``
    (a SourceError naming the fix when it is wrong) and gives a function that opens the capture, called again
    to reconnect or replay, and the source's name for messages ("camera 0"). A live kind keeps only the newest
    frame; any other is a recording, read to its end with every frame processed.
    """

    name: str
    matches: Callable[[str], bool]
    opener: Opener
    live: bool = True


def _is_camera_index(text: str) -> bool:
    return text.isascii() and text.isdigit()


def _camera_index_opener(
    text: str, width: int | None, height: int | None, fps: float | None
) -> tuple[Callable[[], Capture], str]:
    index = int(text)
    return (lambda: open_camera(index, width, height, fps)), f"camera {index}"


def _is_csi(text: str) -> bool:
    return text.startswith(CSI_PREFIX)


def _csi_opener(
    source: str, width: int | None, height: int | None, fps: float | None
) -> tuple[Callable[[], Capture], str]:
    sensor = source[len(CSI_PREFIX) :]
    if not (sensor.isascii() and sensor.isdigit()):
        raise SourceError(
            f"{source!r}: a CSI camera is csi://N with N the sensor id (0 for the first camera), e.g. csi://0"
        )
    if not has_gstreamer():
        raise SourceError(
            f"{source}: a CSI camera is read through GStreamer (nvarguscamerasrc), and this OpenCV was built "
            "without it (the PyPI opencv-python wheels are). On the Jetson use JetPack's system OpenCV: "
            "`sudo apt install python3-opencv`, a venv made with `python3 -m venv --system-site-packages`, "
            "and no opencv-python wheel installed in it."
        )
    pipeline = csi_pipeline(int(sensor), width, height, fps)

    def open_csi() -> cv2.VideoCapture:
        try:
            return open_stream(pipeline)
        except SourceError as error:
            raise SourceError(
                f"CSI camera {sensor} did not open: check its ribbon cable and sensor id, that the size and frame "
                "rate are a mode the sensor has (--width/--height/--fps), and that nvargus-daemon runs "
                f"(`sudo systemctl restart nvargus-daemon`). {error}"
            ) from error

    return open_csi, f"CSI camera {sensor}"


def _is_pipeline(text: str) -> bool:
    return "!" in text


def _pipeline_opener(
    text: str, width: int | None, height: int | None, fps: float | None
) -> tuple[Callable[[], Capture], str]:
    return (lambda: open_stream(text)), "GStreamer pipeline"


def _is_url(text: str) -> bool:
    return URL_PATTERN.match(text) is not None


def _url_opener(
    text: str, width: int | None, height: int | None, fps: float | None
) -> tuple[Callable[[], Capture], str]:
    return (lambda: open_stream(text)), f"stream {text}"


def _is_camera_device(text: str) -> bool:
    """A device node, or a link to one; a glob is images even where it names a device."""
    return not is_glob(text) and _is_char_device(Path(text).expanduser())


def _camera_device_opener(
    text: str, width: int | None, height: int | None, fps: float | None
) -> tuple[Callable[[], Capture], str]:
    path = Path(text).expanduser()
    return (lambda: open_camera(str(path), width, height, fps)), f"camera {path}"


def _is_char_device(path: Path) -> bool:
    """True for a device node such as /dev/video0, or a link to one (/dev/v4l/by-id/...)."""
    try:
        return stat.S_ISCHR(path.stat().st_mode)  # stat() follows links
    except (OSError, ValueError):
        return False


CAMERA_INDEX = SourceKind("camera index", _is_camera_index, _camera_index_opener)

# Consulted in this order; the first that matches opens the source, and a string none matches is files.
# A kind goes before any that would also match it: csi://N before the stream URL, which takes any scheme://.
SOURCE_KINDS: tuple[SourceKind, ...] = (
    CAMERA_INDEX,
    SourceKind("CSI camera", _is_csi, _csi_opener),
    SourceKind("GStreamer pipeline", _is_pipeline, _pipeline_opener),
    SourceKind("stream URL", _is_url, _url_opener),
    SourceKind("camera device", _is_camera_device, _camera_device_opener),
)


def find_source_kind(text: str) -> SourceKind | None:
    """The first of SOURCE_KINDS that ``text`` is; None for files (images, a folder, a glob, a video)."""
    return next((kind for kind in SOURCE_KINDS if kind.matches(text)), None)
