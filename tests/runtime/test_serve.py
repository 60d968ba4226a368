"""The live view (`edgeseg run --serve`): addresses, the newest-frame hand-off, the HTTP endpoints, tokens, stalled viewers."""

from __future__ import annotations

import json
import socket
import threading
import time
import urllib.error
import urllib.request

import cv2
import numpy as np
import pytest

from edgeseg.runtime.serve import (BOUNDARY, STREAM_MAX_FPS, LiveServer, LiveView, ServeAddress, ServeError, encode_jpeg,
                                   parse_serve_address)


def overlay(number: int, width: int = 320, height: int = 240) -> np.ndarray:
    image = np.zeros((height, width, 3), dtype=np.uint8)
    cv2.putText(image, str(number), (20, height // 2), cv2.FONT_HERSHEY_SIMPLEX, 2, (255, 255, 255), 3)
    return image


def figures(number: int) -> dict:
    return {"index": number, "lesion_present": True, "max_diameter_px": 10.0 + number}


@pytest.mark.parametrize(("text", "expected"), [
    ("8080", ServeAddress("127.0.0.1", 8080)),
    ("0.0.0.0:9000", ServeAddress("0.0.0.0", 9000)),
    ("localhost:0", ServeAddress("localhost", 0)),
    ("[::1]:8080", ServeAddress("::1", 8080)),
])
def test_serve_addresses(text, expected):
    assert parse_serve_address(text) == expected


@pytest.mark.parametrize("text", ["http", "8080x", ":8080", "host:70000", ""])
def test_bad_serve_addresses_say_what_to_give(text):
    with pytest.raises(ServeError, match="--serve"):
        parse_serve_address(text)


def test_only_loopback_addresses_go_without_a_token():
    assert ServeAddress("127.0.0.1", 1).loopback and ServeAddress("::1", 1).loopback and ServeAddress("localhost", 1).loopback
    assert not ServeAddress("0.0.0.0", 1).loopback and not ServeAddress("clinic-box.local", 1).loopback


def test_nothing_is_encoded_while_nobody_watches():
    view = LiveView()
    view.publish(overlay(1), figures(1))
    assert view.next_jpeg(0, timeout=0.05) == (0, None)
    assert view.snapshot() is None
    assert view.figures()["index"] == 1 and view.figures()["viewers"] == 0


def test_a_viewer_gets_only_the_newest_frame_and_publishing_never_waits_for_it():
    view = LiveView()
    with view.viewer():
        started = time.perf_counter()
        for number in range(10):  # the viewer reads nothing meanwhile
            view.publish(overlay(number), figures(number))
            time.sleep(1.5 / STREAM_MAX_FPS)
        publishing_s = time.perf_counter() - started
        sequence, jpeg = view.next_jpeg(0, timeout=0.05)
    assert sequence == 10, "the viewer must get the newest frame, not the first it missed"
    assert jpeg == encode_jpeg(overlay(9))
    assert publishing_s < 10 * 1.5 / STREAM_MAX_FPS + 1.0, f"10 publishes took {publishing_s:.2f} s"


def test_the_stream_keeps_to_a_cameras_rate_while_the_figures_follow_every_frame():
    view = LiveView()
    with view.viewer():
        for number in range(50):  # far faster than STREAM_MAX_FPS
            view.publish(overlay(number), figures(number))
        sequence, _ = view.next_jpeg(0, timeout=0.05)
    assert sequence == 1
    assert view.figures()["index"] == 49 and view.figures()["frames_published"] == 50


def test_wide_frames_are_scaled_down_for_the_stream_but_not_for_snapshots():
    view = LiveView()
    with view.viewer():
        view.publish(overlay(1, width=2560, height=1440), figures(1))
        _, jpeg = view.next_jpeg(0, timeout=0.05)
        snapshot = view.snapshot()
    assert cv2.imdecode(np.frombuffer(jpeg, np.uint8), cv2.IMREAD_COLOR).shape == (720, 1280, 3)
    assert snapshot.shape == (1440, 2560, 3)


class Publisher:
    """Publishes numbered frames until stopped, as the run loop's finisher does."""

    def __init__(self, view: LiveView, interval_s: float = 0.01) -> None:
        self.view, self.interval_s = view, interval_s
        self.longest_publish_s = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        number = 0
        while not self._stop.is_set():
            started = time.perf_counter()
            self.view.publish(overlay(number), figures(number))
            self.longest_publish_s = max(self.longest_publish_s, time.perf_counter() - started)
            number += 1
            time.sleep(self.interval_s)

    def __enter__(self) -> Publisher:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def get(url: str) -> tuple[int, bytes, dict]:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.status, response.read(), dict(response.headers)
    except urllib.error.HTTPError as error:
        return error.code, error.read(), dict(error.headers)


def read_parts(url: str, count: int) -> list[bytes]:
    """The first ``count`` JPEGs of an MJPEG stream."""
    parts = []
    with urllib.request.urlopen(url, timeout=5) as response:
        assert response.headers["Content-Type"] == f"multipart/x-mixed-replace; boundary={BOUNDARY}"
        while len(parts) < count:
            line = response.readline()
            if line.lower().startswith(b"content-length:"):
                length = int(line.split(b":")[1])
                response.readline()
                parts.append(response.read(length))
    return parts


def test_page_stream_figures_and_snapshot_over_http():
    view = LiveView()
    with LiveServer(view, ServeAddress("127.0.0.1", 0)) as server, Publisher(view):
        assert server.token is None and server.url == f"http://127.0.0.1:{server.port}/"
        status, page, _ = get(server.url)
        assert status == 200 and b'src="stream.mjpg"' in page and b'href="snapshot.png"' in page
        parts = read_parts(server.url + "stream.mjpg", 3)
        images = [cv2.imdecode(np.frombuffer(part, np.uint8), cv2.IMREAD_COLOR) for part in parts]
        assert all(image.shape == (240, 320, 3) for image in images)
        status, body, _ = get(server.url + "figures.json")
        assert status == 200 and json.loads(body)["index"] > 0
        status, png, headers = get(server.url + "snapshot.png")
        assert status == 200 and "attachment" in headers["Content-Disposition"]
        assert cv2.imdecode(np.frombuffer(png, np.uint8), cv2.IMREAD_COLOR).shape == (240, 320, 3)
        assert get(server.url + "nothing-here")[0] == 404


def test_any_other_interface_needs_the_token(monkeypatch):
    monkeypatch.setenv("EDGESEG_SERVE_TOKEN", "s3cret-token")
    view = LiveView()
    with LiveServer(view, ServeAddress("0.0.0.0", 0)) as server, Publisher(view):
        assert server.url.endswith("/?token=s3cret-token")
        base = f"http://127.0.0.1:{server.port}/"
        for path in ("", "stream.mjpg", "figures.json", "snapshot.png"):
            status, body, _ = get(base + path)
            assert status == 403 and b"token" in body, path
            assert get(base + path + "?token=wrong")[0] == 403
        status, page, _ = get(base + "?token=s3cret-token")
        assert status == 200 and b'src="stream.mjpg?token=s3cret-token"' in page
        assert len(read_parts(base + "stream.mjpg?token=s3cret-token", 1)) == 1


def test_a_viewer_that_stops_reading_holds_up_neither_the_pipeline_nor_other_viewers():
    view = LiveView()
    with LiveServer(view, ServeAddress("127.0.0.1", 0)) as server, Publisher(view, interval_s=0.005) as publisher:
        stalled = socket.create_connection(("127.0.0.1", server.port))
        stalled.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        stalled.sendall(b"GET /stream.mjpg HTTP/1.1\r\nHost: x\r\n\r\n")  # and never reads a byte
        time.sleep(1.0)  # long enough for its socket buffers to fill
        assert view.viewers == 1
        parts = read_parts(server.url + "stream.mjpg", 20)
        stalled.close()
    assert len(parts) == 20
    assert publisher.longest_publish_s < 0.5, f"a publish waited {publisher.longest_publish_s:.2f} s"


def test_a_port_in_use_is_a_clear_error():
    taken = socket.create_server(("127.0.0.1", 0))
    try:
        with pytest.raises(ServeError, match="choose another port"):
            LiveServer(LiveView(), ServeAddress("127.0.0.1", taken.getsockname()[1]))
    finally:
        taken.close()
