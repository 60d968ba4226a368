"""Fixtures for the runtime tests: small generated images and videos, written with OpenCV in tmp_path."""

from __future__ import annotations

import socket
from pathlib import Path

import cv2
import numpy as np
import pytest


def lesion_image(width: int, height: int, shift: int = 0, seed: int = 0) -> np.ndarray:
    """A skin-coloured BGR image with a dark elliptical lesion, some noise."""
    rng = np.random.default_rng(seed)
    image = np.empty((height, width, 3), dtype=np.uint8)
    image[:] = (150, 170, 205)
    cv2.ellipse(image, (width // 2 + shift, height // 2), (width // 5, height // 5), 15, 0, 360, (60, 70, 110), -1)
    return cv2.add(image, rng.integers(0, 25, image.shape, dtype=np.uint8))


def write_video(path: Path, frames: int, width: int = 640, height: int = 480, fps: float = 30.0) -> Path:
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), fps, (width, height))
    assert writer.isOpened(), "OpenCV cannot write mp4v here"
    for index in range(frames):
        writer.write(lesion_image(width, height, shift=index * 3, seed=index))
    writer.release()
    return path


def count_video_frames(path: Path) -> tuple[int, tuple[int, int]]:
    capture = cv2.VideoCapture(str(path))
    assert capture.isOpened(), f"{path} does not open"
    count, size = 0, (0, 0)
    while True:
        ok, image = capture.read()
        if not ok:
            break
        count += 1
        size = (image.shape[1], image.shape[0])
    capture.release()
    return count, size


@pytest.fixture(autouse=True)
def not_quiet_after_the_test():
    """-q/--quiet sets a process-wide switch: a command run in-process with -q must not silence the next test."""
    yield
    from edgeseg.core.progress import set_quiet

    set_quiet(False)


@pytest.fixture
def video_20(tmp_path: Path) -> Path:
    """20 frames of 640x480 mp4v video with a moving lesion."""
    return write_video(tmp_path / "input.mp4", frames=20)


@pytest.fixture
def image_folder(tmp_path: Path) -> Path:
    """Three good images (two with ISIC ids, of different sizes) and one corrupt .jpg."""
    folder = tmp_path / "images"
    folder.mkdir()
    cv2.imwrite(str(folder / "ISIC_0000001.jpg"), lesion_image(120, 90, seed=1))
    cv2.imwrite(str(folder / "ISIC_0000002.png"), lesion_image(100, 100, seed=2))
    cv2.imwrite(str(folder / "visit3.jpg"), lesion_image(160, 120, seed=3))
    (folder / "ISIC_0000009.jpg").write_bytes(b"\xff\xd8\xff\xe0 this is not really a jpeg")
    return folder


def read_until_closed(sock: socket.socket) -> bytes:
    """Everything the server sends until it closes the connection (b"" when it closed without answering)."""
    data = b""
    try:
        while chunk := sock.recv(1 << 16):
            data += chunk
    except ConnectionResetError:  # closed with the request unread
        pass
    return data
