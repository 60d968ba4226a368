"""The live view (`edgeseg run --serve`): addresses, the newest-frame hand-off, the HTTP endpoints, the token and its
cookie, Host and Origin, the security headers, the snapshot cache, and each of ServeLimits.

Requests go over raw sockets, so a test can send any bytes a hostile client would.
"""

from __future__ import annotations

import ipaddress
import json
import re
import resource
import socket
import subprocess
import sys
import threading
import time
from dataclasses import replace

import cv2
import numpy as np
import pytest

from edgeseg.runtime.serve import (
    BOUNDARY,
    STREAM_MAX_FPS,
    LiveServer,
    LiveView,
    ServeAddress,
    ServeError,
    ServeLimits,
    encode_jpeg,
    parse_serve_address,
)

from .conftest import read_until_closed

LOCAL = ServeAddress("127.0.0.1", 0)
OTHER_MACHINES = pytest.mark.skipif(
    not sys.platform.startswith("linux"), reason="needs Linux: 127.0.0.2 and up as other machines"
)
# The rates are tested on their own; elsewhere a test may ask as fast as it likes.
FAST = ServeLimits(connections_per_s=10_000, client_connections_per_s=10_000)


def overlay(number: int, width: int = 320, height: int = 240) -> np.ndarray:
    image = np.zeros((height, width, 3), dtype=np.uint8)
    cv2.putText(image, str(number), (20, height // 2), cv2.FONT_HERSHEY_SIMPLEX, 2, (255, 255, 255), 3)
    return image


def figures(number: int) -> dict:
    return {"index": number, "lesion_present": True, "max_diameter_px": 10.0 + number}


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("8080", ServeAddress("127.0.0.1", 8080)),
        ("0.0.0.0:9000", ServeAddress("0.0.0.0", 9000)),
        ("localhost:0", ServeAddress("localhost", 0)),
        ("[::1]:8080", ServeAddress("::1", 8080)),
    ],
)
def test_serve_addresses(text, expected):
    assert parse_serve_address(text) == expected


@pytest.mark.parametrize("text", ["http", "8080x", ":8080", "host:70000", ""])
def test_bad_serve_addresses_say_what_to_give(text):
    with pytest.raises(ServeError, match="--serve"):
        parse_serve_address(text)


def test_nothing_is_encoded_while_nobody_watches_but_the_newest_overlay_is_kept_for_a_snapshot():
    view = LiveView()
    assert view.snapshot_png() is None, "no frame yet"
    view.publish(overlay(1), figures(1))
    view.publish(overlay(2), figures(2))
    assert view.next_jpeg(0, timeout=0.05) == (0, None)
    assert view.snapshot_encodes == 0, "nothing is encoded until a snapshot is asked for"
    assert np.array_equal(view.snapshot(), overlay(2))
    assert view.figures()["index"] == 2 and view.figures()["viewers"] == 0


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

    def __init__(self, view: LiveView, interval_s: float = 0.01, image: np.ndarray | None = None) -> None:
        self.view, self.interval_s, self.image = view, interval_s, image
        self.longest_publish_s = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        number = 0
        while not self._stop.is_set():
            started = time.perf_counter()
            self.view.publish(overlay(number) if self.image is None else self.image, figures(number))
            self.longest_publish_s = max(self.longest_publish_s, time.perf_counter() - started)
            number += 1
            time.sleep(self.interval_s)

    def __enter__(self) -> Publisher:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def send_request(
    port: int,
    target: bytes = b"/",
    headers: dict[bytes, bytes] | None = None,
    host: bytes | None = b"127.0.0.1",
    method: bytes = b"GET",
    source: str = "127.0.0.1",
) -> socket.socket:
    """A request from ``source``: any address of 127/8 on Linux, which the server sees as another machine."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=10, source_address=(source, 0))
    lines = [method + b" " + target + b" HTTP/1.1"]
    if host is not None:
        lines.append(b"Host: " + host)
    lines += [name + b": " + value for name, value in (headers or {}).items()]
    sock.sendall(b"\r\n".join(lines) + b"\r\n\r\n")
    return sock


def read_response(sock: socket.socket) -> tuple[int, dict[str, str], bytes]:
    """Status, headers (lower-case names) and body of a response that ends when the server closes."""
    data = read_until_closed(sock)
    sock.close()
    if not data:
        return 0, {}, b""  # closed without an answer
    head, _, body = data.partition(b"\r\n\r\n")
    status_line, *lines = head.decode("latin-1").split("\r\n")
    fields = {name.lower(): value.strip() for name, _, value in (line.partition(":") for line in lines)}
    return int(status_line.split()[1]), fields, body


def get(
    port: int,
    target: bytes = b"/",
    headers: dict[bytes, bytes] | None = None,
    host: bytes | None = b"127.0.0.1",
    method: bytes = b"GET",
    source: str = "127.0.0.1",
) -> tuple[int, dict[str, str], bytes]:
    return read_response(send_request(port, target, headers, host, method, source))


def with_token(server: LiveServer, path: bytes) -> bytes:
    return path + b"?token=" + server.token.encode()


def read_parts(sock: socket.socket, count: int) -> list[bytes]:
    """The first ``count`` JPEGs of an MJPEG stream answered on ``sock``."""
    stream = sock.makefile("rb")
    status = stream.readline()
    assert b" 200 " in status, status
    parts = []
    while len(parts) < count:
        line = stream.readline()
        assert line, "the stream ended"
        if line.lower().startswith(b"content-type: multipart"):
            assert line.strip().endswith(f"boundary={BOUNDARY}".encode())
        if line.lower().startswith(b"content-length:"):
            length = int(line.split(b":")[1])
            stream.readline()
            parts.append(stream.read(length))
    return parts


def wait_until(condition, timeout: float = 10.0, what: str = "") -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(0.02)


def is_closed_by_server(sock: socket.socket, timeout: float = 10.0) -> bool:
    """True once the server closes the connection without answering; False if it is still open after ``timeout``."""
    sock.settimeout(timeout)
    try:
        return sock.recv(1) == b""
    except TimeoutError:
        return False
    except ConnectionResetError:
        return True


def test_page_stream_figures_and_snapshot_over_http():
    view = LiveView()
    with LiveServer(view, LOCAL, FAST) as server, Publisher(view):
        assert server.address_url == f"http://127.0.0.1:{server.port}/"
        assert re.fullmatch(rf"http://127\.0\.0\.1:{server.port}/\?token=[A-Za-z0-9_-]{{32}}", server.url)
        parts = read_parts(send_request(server.port, with_token(server, b"/stream.mjpg")), 3)
        images = [cv2.imdecode(np.frombuffer(part, np.uint8), cv2.IMREAD_COLOR) for part in parts]
        assert all(image.shape == (240, 320, 3) for image in images)
        status, _, body = get(server.port, with_token(server, b"/figures.json"))
        assert status == 200 and json.loads(body)["index"] > 0
        status, headers, png = get(server.port, with_token(server, b"/snapshot.png"))
        assert (
            status == 200 and headers["content-type"] == "image/png" and "attachment" in headers["content-disposition"]
        )
        assert cv2.imdecode(np.frombuffer(png, np.uint8), cv2.IMREAD_COLOR).shape == (240, 320, 3)
        assert get(server.port, with_token(server, b"/nothing-here"))[0] == 404


def test_every_request_needs_the_token_on_localhost_too():
    view = LiveView()
    with LiveServer(view, LOCAL, FAST) as server, Publisher(view):
        for path in (b"/", b"/stream.mjpg", b"/figures.json", b"/snapshot.png", b"/nothing-here"):
            status, _, body = get(server.port, path)
            assert status == 403 and b"?token=" in body, path
            assert get(server.port, path + b"?token=wrong")[0] == 403, path
            assert get(server.port, path + b"?tok=" + server.token.encode())[0] == 403, path
        assert view.viewers == 0


BAD_TOKENS = [
    b"%C3%A9",
    b"%FF",
    b"%FF%FE%00",
    b"%C3",
    b"%",
    b"%zz",
    b"\xff\xfe",
    b"\xc3\xa9",
    b"",
    b"+",
    b"%00",
    b"a" * 4000,
    b"%E2%80%AE",
    b"token%0D%0ASet-Cookie:%20x=1",
]


def test_a_bad_token_of_any_bytes_gets_403_and_no_traceback(capfd, caplog):
    view = LiveView()
    with LiveServer(view, LOCAL, FAST) as server:
        for token in BAD_TOKENS:
            for path in (b"/", b"/figures.json", b"/snapshot.png", b"/stream.mjpg"):
                status, headers, body = get(server.port, path + b"?token=" + token)
                assert status == 403, (path, token)
                assert "set-cookie" not in headers
        status, _, _ = get(
            server.port, b"/figures.json", headers={b"Cookie": b"edgeseg-live-%d=\xff\xfe\xc3" % server.port}
        )
        assert status == 403
    captured = capfd.readouterr()
    assert "Traceback" not in captured.err + captured.out
    assert not [record for record in caplog.records if record.levelno >= 30], "a bad token must not log a warning"


def test_the_first_visit_moves_the_token_into_an_httponly_strict_cookie_and_redirects_to_the_bare_address():
    view = LiveView()
    with LiveServer(view, LOCAL, FAST) as server, Publisher(view):
        status, headers, _ = get(server.port, with_token(server, b"/"))
        assert status == 303 and headers["location"] == "/"
        cookie, *attributes = [part.strip() for part in headers["set-cookie"].split(";")]
        assert {"HttpOnly", "SameSite=Strict", "Path=/"} <= set(attributes)
        name, _, value = cookie.partition("=")
        assert name == f"edgeseg-live-{server.port}" and value and server.token not in value
        carried = {b"Cookie": cookie.encode()}
        status, _, page = get(server.port, b"/", headers=carried)
        assert status == 200 and server.token.encode() not in page
        assert b'src="stream.mjpg"' in page and b'href="snapshot.png"' in page and b"fetch(figuresUrl" in page
        assert get(server.port, b"/figures.json", headers=carried)[0] == 200
        assert len(read_parts(send_request(server.port, b"/stream.mjpg", headers=carried), 1)) == 1
        forged = {
            b"Cookie": f"{name}={value[:-1]}0".encode() if not value.endswith("0") else f"{name}={value[:-1]}1".encode()
        }
        assert get(server.port, b"/figures.json", headers=forged)[0] == 403
        other_port = {b"Cookie": f"edgeseg-live-{server.port + 1}={value}".encode()}
        assert get(server.port, b"/figures.json", headers=other_port)[0] == 403
        assert get(server.port, b"/figures.json?token=wrong", headers=carried)[0] == 403, (
            "a wrong token is refused even with the cookie"
        )


def test_a_fixed_token_of_any_characters_travels_percent_encoded_and_a_short_one_is_refused(monkeypatch):
    monkeypatch.setenv("EDGESEG_SERVE_TOKEN", "clinic token/&é+%=<script>")
    with LiveServer(LiveView(), LOCAL, FAST) as server:
        target = server.url.split(str(server.port), 1)[1].encode()
        assert get(server.port, target)[0] == 303
    monkeypatch.setenv("EDGESEG_SERVE_TOKEN", "short")
    with pytest.raises(ServeError, match="EDGESEG_SERVE_TOKEN must be 16"):
        LiveServer(LiveView(), LOCAL, FAST)


def test_the_host_must_be_an_address_or_a_name_of_this_device_and_the_origin_this_page(monkeypatch):
    monkeypatch.setenv("EDGESEG_SERVE_HOSTS", "scope-3.clinic.lan, other.lan")
    view = LiveView()
    with LiveServer(view, LOCAL, FAST) as server:
        figures_url = with_token(server, b"/figures.json")
        port = str(server.port).encode()
        for host in (
            b"127.0.0.1:" + port,
            b"127.0.0.1",
            b"[::1]:" + port,
            b"192.168.1.20:" + port,
            b"localhost:" + port,
            b"LOCALHOST",
            socket.gethostname().encode() + b":" + port,
            b"scope-3.clinic.lan:" + port,
        ):
            assert get(server.port, figures_url, host=host)[0] == 200, host
        for host in (
            b"attacker.example:" + port,
            b"attacker.example",
            b"localhost.attacker.example",
            b"127.0.0.1.nip.io:" + port,
            b"",
            b"\xff\xfe",
        ):
            status, _, body = get(server.port, figures_url, host=host)
            assert status == 403 and b"not known by that name" in body, host
        assert get(server.port, figures_url, host=None)[0] == 403, "no Host at all"
        assert get(server.port, figures_url, headers={b"Host": b"127.0.0.1"})[0] == 400, "two Host headers"
        same = {b"Origin": b"http://127.0.0.1:" + port}
        assert get(server.port, figures_url, host=b"127.0.0.1:" + port, headers=same)[0] == 200
        for origin in (b"http://attacker.example", b"null", b"https://127.0.0.1:" + port, b"http://127.0.0.1:1"):
            assert get(server.port, figures_url, host=b"127.0.0.1:" + port, headers={b"Origin": origin})[0] == 403, (
                origin
            )


def test_every_response_carries_the_security_headers_and_no_versions():
    view = LiveView()
    with LiveServer(view, LOCAL, FAST) as server, Publisher(view):
        stream = send_request(server.port, with_token(server, b"/stream.mjpg"))
        read_parts(stream, 1)
        responses = {path: get(server.port, path) for path in (with_token(server, b"/"), b"/figures.json", b"/nothing")}
        responses.update(
            {
                with_token(server, path): get(server.port, with_token(server, path))
                for path in (b"/figures.json", b"/snapshot.png", b"/nothing")
            }
        )
        cookie = responses[with_token(server, b"/")][1]["set-cookie"].split(";")[0].encode()
        responses[b"/ (page)"] = page = get(server.port, b"/", headers={b"Cookie": cookie})
        stream.close()
    assert sorted(status for status, _, _ in responses.values()) == [200, 200, 200, 303, 403, 403, 404]
    for path, (_, headers, _) in responses.items():
        assert headers["x-content-type-options"] == "nosniff", path
        assert headers["referrer-policy"] == "no-referrer", path
        assert headers["x-frame-options"] == "DENY", path
        assert "frame-ancestors 'none'" in headers["content-security-policy"], path
        assert headers["cache-control"] == "no-store", path
        assert headers["server"] == "edgeseg", path
    page_policy = page[1]["content-security-policy"]
    nonce = re.search(r"'nonce-([^']+)'", page_policy).group(1)
    assert "unsafe-inline" not in page_policy and "default-src 'none'" in page_policy
    assert page[2].count(f'nonce="{nonce}"'.encode()) == 2, (
        "the page's one <style> and one <script> carry this response's nonce"
    )


def test_the_snapshot_is_encoded_once_per_frame_however_many_ask_at_once():
    view = LiveView(snapshot_min_interval_s=0.0)
    with LiveServer(view, LOCAL, replace(FAST, requests=32)) as server, view.viewer():
        view.publish(overlay(1, 1280, 960), figures(1))
        answers: list[tuple[int, bytes]] = []
        requests = [
            threading.Thread(target=lambda: answers.append(get(server.port, with_token(server, b"/snapshot.png"))[::2]))
            for _ in range(24)
        ]
        for request in requests:
            request.start()
        for request in requests:
            request.join()
        assert [status for status, _ in answers] == [200] * 24
        assert len({png for _, png in answers}) == 1 and view.snapshot_encodes == 1
        time.sleep(1.5 / STREAM_MAX_FPS)  # the next frame the stream takes
        view.publish(overlay(2, 1280, 960), figures(2))
        _, _, newer = get(server.port, with_token(server, b"/snapshot.png"))
        assert newer != answers[0][1] and view.snapshot_encodes == 2
        get(server.port, with_token(server, b"/snapshot.png"))
        assert view.snapshot_encodes == 2, "the same frame is not encoded twice"


def test_snapshots_are_encoded_at_most_once_per_interval_whatever_the_frame_rate():
    view = LiveView(snapshot_min_interval_s=3600.0)
    with view.viewer():
        view.publish(overlay(1), figures(1))
        first = view.snapshot_png()
        time.sleep(1.5 / STREAM_MAX_FPS)
        view.publish(overlay(2), figures(2))
        assert view.snapshot_png() == first and view.snapshot_encodes == 1


def test_when_too_many_connections_wait_for_their_request_the_oldest_is_closed_at_once():
    view = LiveView()
    limits = replace(FAST, waiting_connections=4, header_timeout_s=60.0)
    with LiveServer(view, LOCAL, limits) as server:
        half_open = []
        for _ in range(4):
            half_open.append(socket.create_connection(("127.0.0.1", server.port)))
            half_open[-1].sendall(b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n")
        wait_until(lambda: server.waiting == 4, what="four waiting connections")
        newest = socket.create_connection(("127.0.0.1", server.port))
        assert is_closed_by_server(half_open[0]), "the oldest waiting connection must be closed to make room"
        wait_until(lambda: server.waiting == 4, what="the newcomer to wait in its place")
        assert not any(is_closed_by_server(sock, timeout=0.2) for sock in half_open[1:])
        status, _, _ = get(server.port, with_token(server, b"/figures.json"))
        assert status == 200, "a real request gets through a full waiting list"
        assert server.waiting <= 4
        for sock in [*half_open, newest]:
            sock.close()


@OTHER_MACHINES
def test_connections_from_one_address_beyond_its_rate_are_closed_at_once_and_other_addresses_still_get_in():
    with LiveServer(
        LiveView(), LOCAL, replace(FAST, client_connections_per_s=0.1)
    ) as server:  # one now, the next in 10 s
        figures_url = with_token(server, b"/figures.json")
        assert get(server.port, figures_url, source="127.0.0.2")[0] == 200
        assert [get(server.port, figures_url, source="127.0.0.2")[0] for _ in range(5)] == [0] * 5, "closed unanswered"
        assert server.closed_at_once == 5
        assert get(server.port, figures_url, source="127.0.0.3")[0] == 200


@OTHER_MACHINES
def test_connections_from_one_address_beyond_its_rate_wait_their_turn_unless_it_comes_after_their_deadline():
    limits = replace(
        FAST, client_connections_per_s=1.0, header_timeout_s=3.5
    )  # turns at 0, 1, 2, 3 s; the fifth's at 4 s
    with LiveServer(LiveView(), LOCAL, limits) as server:
        sockets = [
            socket.create_connection(("127.0.0.1", server.port), timeout=10, source_address=("127.0.0.2", 0))
            for _ in range(5)
        ]
        for sock in sockets:
            sock.sendall(b"GET " + with_token(server, b"/figures.json") + b" HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        assert [read_response(sock)[0] for sock in sockets] == [200, 200, 200, 200, 0], "a client that loops is paced"
        assert server.closed_at_once == 1


@OTHER_MACHINES
def test_beyond_the_total_rate_connections_wait_in_the_kernels_queue_and_are_answered_later():
    with LiveServer(LiveView(), LOCAL, replace(FAST, connections_per_s=0.5)) as server:  # one now, the next in 2 s
        first = send_request(server.port, with_token(server, b"/figures.json"), source="127.0.0.2")
        assert read_response(first)[0] == 200
        second = send_request(server.port, with_token(server, b"/figures.json"), source="127.0.0.3")
        assert not is_closed_by_server(second, timeout=0.5), "not accepted yet: held in the queue, not closed"
        second.settimeout(10)
        assert read_response(second)[0] == 200
        assert server.closed_at_once == 0


def test_a_request_head_must_arrive_within_the_header_timeout_however_it_trickles():
    view = LiveView()
    with LiveServer(view, LOCAL, replace(FAST, header_timeout_s=0.5)) as server:
        silent = socket.create_connection(("127.0.0.1", server.port))
        trickling = socket.create_connection(("127.0.0.1", server.port))
        trickling.sendall(b"GET /figures.json?token=" + server.token.encode() + b" HTTP/1.1\r\n")
        started, cut = time.monotonic(), False
        while time.monotonic() - started < 10 and not cut:
            try:
                trickling.sendall(b"X")  # one byte every 50 ms never resets the deadline
            except OSError:
                cut = True
            cut = cut or is_closed_by_server(trickling, timeout=0.05)
        assert cut, "a slow sender must be cut at the header timeout"
        assert is_closed_by_server(silent)
        assert server.waiting == 0
        trickling.close()
        silent.close()


def test_a_request_head_over_the_size_limit_gets_431():
    with LiveServer(LiveView(), LOCAL, replace(FAST, header_bytes=1024)) as server:
        status, _, _ = get(server.port, with_token(server, b"/figures.json"), headers={b"X-Padding": b"a" * 2000})
        assert status == 431
        assert get(server.port, with_token(server, b"/figures.json"), headers={b"X-Padding": b"a" * 500})[0] == 200


def test_only_get_and_http_are_answered():
    with LiveServer(LiveView(), LOCAL, FAST) as server:
        assert get(server.port, with_token(server, b"/figures.json"), method=b"POST")[0] == 405
        sock = socket.create_connection(("127.0.0.1", server.port), timeout=10)
        sock.sendall(b"\x16\x03\x01 hello\r\n\r\n")  # a TLS hello or any other noise
        assert read_response(sock)[0] == 400


def test_streams_beyond_the_cap_get_503_until_one_ends():
    view = LiveView()
    with LiveServer(view, LOCAL, replace(FAST, streams=2)) as server, Publisher(view):
        streams = [send_request(server.port, with_token(server, b"/stream.mjpg")) for _ in range(2)]
        for stream in streams:
            read_parts(stream, 1)
        status, headers, _ = get(server.port, with_token(server, b"/stream.mjpg"))
        assert status == 503 and headers["retry-after"] == "1"
        assert get(server.port, with_token(server, b"/figures.json"))[0] == 200, (
            "other requests are not held up by the streams"
        )
        streams.pop().close()
        wait_until(lambda: server.busy("streams") == 1, what="the closed stream's thread to end")
        streams.append(send_request(server.port, with_token(server, b"/stream.mjpg")))
        assert len(read_parts(streams[-1], 1)) == 1
        for stream in streams:
            stream.close()


def stalled_client(port: int, target: bytes) -> socket.socket:
    """A client that asks and then reads nothing, with a receive buffer as small as the kernel allows."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect(("127.0.0.1", port))
    sock.sendall(b"GET " + target + b" HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
    return sock


def test_other_requests_beyond_the_cap_get_503_and_a_client_that_does_not_read_is_dropped_at_the_send_timeout():
    view = LiveView(snapshot_min_interval_s=0.0)
    noise = np.random.default_rng(0).integers(
        0, 256, (1500, 2000, 3), dtype=np.uint8
    )  # a 9 MB PNG: more than any socket buffer
    with LiveServer(view, LOCAL, replace(FAST, requests=1, send_timeout_s=1.0)) as server, view.viewer():
        view.publish(noise, figures(1))
        stalled = stalled_client(server.port, with_token(server, b"/snapshot.png"))
        wait_until(lambda: server.busy("requests") == 1, what="the snapshot to be sending")
        status, headers, _ = get(server.port, with_token(server, b"/figures.json"))
        assert status == 503 and headers["retry-after"] == "1"
        wait_until(lambda: server.busy("requests") == 0, timeout=20, what="the stalled client to be dropped")
        assert get(server.port, with_token(server, b"/figures.json"))[0] == 200
        stalled.close()


def test_a_viewer_that_stops_reading_is_dropped_at_the_stream_send_timeout():
    view = LiveView()
    noise = np.random.default_rng(0).integers(
        0, 256, (720, 1280, 3), dtype=np.uint8
    )  # ~1 MB JPEGs fill the buffers fast
    with LiveServer(view, LOCAL, replace(FAST, stream_send_timeout_s=1.0)) as server, Publisher(view, 0.02, noise):
        stalled = stalled_client(server.port, with_token(server, b"/stream.mjpg"))
        wait_until(lambda: view.viewers == 1, what="the stream to start")
        wait_until(
            lambda: view.viewers == 0 and server.busy("streams") == 0,
            timeout=30,
            what="the stalled viewer to be dropped",
        )
        stalled.close()


def test_a_viewer_that_stops_reading_holds_up_neither_the_pipeline_nor_other_viewers():
    view = LiveView()
    with LiveServer(view, LOCAL, FAST) as server, Publisher(view, interval_s=0.005) as publisher:
        stalled = stalled_client(server.port, with_token(server, b"/stream.mjpg"))
        time.sleep(1.0)  # long enough for its socket buffers to fill
        assert view.viewers == 1
        parts = read_parts(send_request(server.port, with_token(server, b"/stream.mjpg")), 20)
        stalled.close()
    assert len(parts) == 20
    assert publisher.longest_publish_s < 0.5, f"a publish waited {publisher.longest_publish_s:.2f} s"


def test_serving_raises_the_open_files_soft_limit_to_the_hard_limit():
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    low = min(64, hard)
    script = (
        "import resource; from edgeseg.runtime.serve import LiveServer, LiveView, ServeAddress; "
        "before = resource.getrlimit(resource.RLIMIT_NOFILE)[0]; LiveServer(LiveView(), ServeAddress('127.0.0.1', 0)); "
        "print(before, *resource.getrlimit(resource.RLIMIT_NOFILE))"
    )
    result = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        timeout=60,
        preexec_fn=lambda: resource.setrlimit(resource.RLIMIT_NOFILE, (low, hard)),
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == [str(low), str(hard), str(hard)]


def test_a_port_in_use_is_a_clear_error():
    taken = socket.create_server(("127.0.0.1", 0))
    try:
        with pytest.raises(ServeError, match="choose another port"):
            LiveServer(LiveView(), ServeAddress("127.0.0.1", taken.getsockname()[1]))
    finally:
        taken.close()


def test_the_snapshot_answers_with_the_newest_frame_when_nobody_watches_the_stream(video_20):
    from edgeseg.core.names import default_model_path
    from edgeseg.runtime.backends import open_segmenter
    from edgeseg.runtime.run_loop import RunOptions, run_pipeline
    from edgeseg.runtime.sources import open_source

    view = LiveView()
    with LiveServer(view, LOCAL, FAST) as server:
        with open_segmenter(default_model_path(), "onnxruntime-cpu") as segmenter:
            summary = run_pipeline(segmenter, open_source(str(video_20)), RunOptions(live_view=view, max_frames=6))
        status, headers, png = get(server.port, with_token(server, b"/snapshot.png"))
    assert summary.frames == 6 and view.viewers == 0 and view.figures()["index"] == 5
    assert status == 200 and headers["content-type"] == "image/png" and png.startswith(b"\x89PNG")
    assert cv2.imdecode(np.frombuffer(png, np.uint8), cv2.IMREAD_COLOR).shape == (480, 640, 3)
    assert view.snapshot_encodes == 1 and view.next_jpeg(0, timeout=0.01) == (0, None), "no JPEG while nobody watches"


def test_lan_addresses_are_this_machines_reachable_ipv4_addresses():
    from edgeseg.runtime.serve import lan_addresses

    found = lan_addresses()
    assert all(not ipaddress.IPv4Address(address).is_loopback for address in found)
    try:
        listed = subprocess.run(
            ["ip", "-4", "-o", "addr", "show", "scope", "global"], capture_output=True, text=True, timeout=10
        ).stdout
    except (OSError, subprocess.SubprocessError):
        pytest.skip("no `ip` command to list this machine's addresses with")
    interfaces = set(re.findall(r"\binet (\d+\.\d+\.\d+\.\d+)/", listed))
    if interfaces:
        assert set(found) & interfaces, f"none of {found} is an address of this machine's interfaces {interfaces}"


def test_lan_addresses_leave_out_loopback_and_every_interface_serves_them(monkeypatch):
    from edgeseg.runtime import serve

    monkeypatch.setattr(serve, "outgoing_addresses", lambda: ["192.168.1.23", "192.168.1.23", "10.0.0.5"])
    monkeypatch.setattr(serve, "host_name_addresses", lambda: ["127.0.1.1", "10.0.0.5", "not-an-address"])
    assert serve.lan_addresses() == ["192.168.1.23", "10.0.0.5"]
    with LiveServer(LiveView(), ServeAddress("0.0.0.0", 0)) as server:
        assert server.address_urls == [f"http://192.168.1.23:{server.port}/", f"http://10.0.0.5:{server.port}/"]
        assert server.url.startswith(f"http://192.168.1.23:{server.port}/?token=")
    with LiveServer(LiveView(), LOCAL) as server:
        assert server.address_urls == [f"http://127.0.0.1:{server.port}/"], "a named host is served as given"


def test_without_a_network_every_interface_falls_back_to_localhost(monkeypatch):
    from edgeseg.runtime import serve

    monkeypatch.setattr(serve, "outgoing_addresses", lambda: [])
    monkeypatch.setattr(serve, "host_name_addresses", lambda: ["127.0.0.1"])
    with LiveServer(LiveView(), ServeAddress("0.0.0.0", 0)) as server:
        assert server.address_urls == [f"http://localhost:{server.port}/"]


SANDBOX_CHECK = (
    "from edgeseg.runtime.serve import LiveServer, LiveView, ServeAddress, lan_addresses\n"
    "assert lan_addresses() == [], lan_addresses()\n"
    "with LiveServer(LiveView(), ServeAddress('0.0.0.0', 0)) as server:\n"
    "    print(server.address_urls[0])\n"
)


def test_in_a_sandbox_without_a_network_the_address_is_localhost():
    """A network namespace of its own (unshare -rn): no interface but a loopback that is down."""
    try:
        done = subprocess.run(
            ["unshare", "-rn", sys.executable, "-c", SANDBOX_CHECK], capture_output=True, text=True, timeout=60
        )
    except (OSError, subprocess.SubprocessError):
        pytest.skip("unshare is not available here")
    if done.returncode != 0 and "unshare" in done.stderr:
        pytest.skip(f"this machine allows no network namespace: {done.stderr.strip()}")
    assert done.returncode == 0, done.stderr
    assert re.fullmatch(r"http://localhost:\d+/\n", done.stdout), done.stdout
