"""Overlay recordings that play in a browser: H.264 in .mp4 or VP9 in .webm, encoded with PyAV.

PyAV's wheels bundle FFmpeg with libx264 and libvpx. Where PyAV or its encoder is missing (a
system PyAV built without libx264, say), an .mp4 is written by OpenCV as mp4v instead, with a
warning: it plays in VLC or ffplay, not in a browser. Frames carry their own timestamps (capture
times for a live source), so a recording plays at the speed it happened even when frames were
dropped.
"""

from __future__ import annotations

import logging
from fractions import Fraction
from pathlib import Path
from typing import Protocol

import cv2
import numpy as np

from edgeseg.runtime.thread_plan import ThreadPlan, this_host_plan

log = logging.getLogger("edgeseg.runtime")

RECORDING_SUFFIXES = (".mp4", ".webm")
TIME_BASE = Fraction(1, 1000)  # timestamps in milliseconds
# (codec, container format, encoder options); the threads, and x264's preset, come from the thread plan.
BROWSER_CODECS = {
    ".mp4": ("libx264", "mp4", {"crf": "23"}),
    ".webm": ("libvpx-vp9", "webm", {"deadline": "realtime", "cpu-used": "8", "row-mt": "1", "crf": "32", "b": "0"}),
}


class Recording(Protocol):
    codec: str  # what the file holds, for the user

    def write(self, bgr: np.ndarray, milliseconds: int) -> None: ...

    def close(self) -> None: ...


def even_size(width: int, height: int) -> tuple[int, int]:
    """H.264 and VP9 in 4:2:0 need even sides."""
    return max(2, width - width % 2), max(2, height - height % 2)


class PyAVRecording:
    """A browser-playable video written with PyAV; timestamps in ms, always increasing."""

    def __init__(
        self, path: Path, size: tuple[int, int], fps: float, codec: str, container_format: str, options: dict[str, str]
    ) -> None:
        import av
        from av.video.stream import VideoStream

        self.codec = codec
        self._video_frame = av.VideoFrame  # imported once here, not on every frame
        # faststart moves the index to the front, so a browser starts playing before the whole file arrives.
        self._container = av.open(
            str(path),
            mode="w",
            format=container_format,
            options={"movflags": "+faststart"} if container_format == "mp4" else {},
        )
        try:
            stream = self._container.add_stream(codec, rate=Fraction(fps).limit_denominator(1001), options=options)
            if not isinstance(stream, VideoStream):
                raise ValueError(f"{codec} is not a video codec")
            stream.width, stream.height = size
            stream.pix_fmt = "yuv420p"
            stream.codec_context.time_base = TIME_BASE
            self._stream = stream
        except Exception:
            self._container.close()
            raise
        self._last_pts = -1

    def write(self, bgr: np.ndarray, milliseconds: int) -> None:
        frame = self._video_frame.from_ndarray(np.ascontiguousarray(bgr), format="bgr24")
        frame.pts = max(milliseconds, self._last_pts + 1)
        frame.time_base = TIME_BASE
        self._last_pts = frame.pts
        for packet in self._stream.encode(frame):
            self._container.mux(packet)

    def close(self) -> None:
        try:
            for packet in self._stream.encode():  # flush the encoder's delayed frames
                self._container.mux(packet)
        finally:
            self._container.close()


class OpenCVRecording:
    """The fallback: mp4v in .mp4 through OpenCV (fixed frame rate; not playable in browsers)."""

    codec = "mp4v"

    def __init__(self, path: Path, size: tuple[int, int], fps: float) -> None:
        self._writer = cv2.VideoWriter(str(path), cv2.VideoWriter.fourcc(*"mp4v"), fps, size)
        if not self._writer.isOpened():
            raise OSError(f"{path}: OpenCV cannot write an mp4v video here")

    def write(self, bgr: np.ndarray, milliseconds: int) -> None:
        self._writer.write(bgr)

    def close(self) -> None:
        self._writer.release()


def browser_codec_problem(suffix: str) -> str | None:
    """Why a browser-playable recording cannot be written here, or None when it can."""
    codec = BROWSER_CODECS[suffix][0]
    try:
        import av
    except ImportError:
        return "PyAV is not installed (pip install av)"
    try:
        av.codec.Codec(codec, "w")
    except Exception:
        return f"this PyAV's FFmpeg has no {codec} encoder (PyPI's av wheels have it)"
    return None


def encoder_options(suffix: str, plan: ThreadPlan) -> dict[str, str]:
    """The encoder's options for a recording of this suffix under ``plan``: its threads, and x264's preset."""
    codec, _, options = BROWSER_CODECS[suffix]
    planned = {"threads": str(plan.encoder_threads)}  # FFmpeg's default: a thread per core, taken from inference
    if codec == "libx264":
        planned["preset"] = plan.x264_preset
    return {**options, **planned}


def open_recording(
    path: Path, temporary: Path, size: tuple[int, int], fps: float, plan: ThreadPlan | None = None
) -> Recording:
    """A recording for ``path`` (its suffix picks the format), written to ``temporary`` until it is complete.

    ``plan`` sets the encoder's threads and preset (default: this host's plan).
    """
    suffix = path.suffix.lower()
    problem = browser_codec_problem(suffix)
    if problem is None:
        codec, container_format, _ = BROWSER_CODECS[suffix]
        options = encoder_options(suffix, plan or this_host_plan())
        return PyAVRecording(temporary, size, fps, codec, container_format, options)
    if suffix == ".webm":
        raise OSError(f"{path}: cannot write WebM: {problem}; or save to a .mp4 path")
    log.warning(
        "%s: %s, so the video is written as mp4v, which browsers do not play (VLC and ffplay do)", path, problem
    )
    return OpenCVRecording(temporary, size, fps)
