"""`edgeseg run --serve`: the live overlay and the lesion figures in any browser, for a device without a screen.

The page shows the overlay as MJPEG (an <img> every browser plays without plugins) and polls the
figures as JSON a few times a second. One ``LiveView`` holds only the newest frame: the pipeline
replaces it and never waits for a viewer, and each viewer's thread sends whatever is newest when it
is ready, so a slow browser skips frames instead of queueing them, and a browser that stops reading
holds up only its own thread (until its socket times out). The JPEG is encoded once per frame, and
only while someone is watching, at most at a camera's rate (30 a second).

The server is werkzeug's threaded WSGI server (pure Python, one thread per viewer), which suits a
handful of viewers on a clinic's network. It listens on localhost unless told otherwise; on any other
interface every request needs the token printed when the run starts.
"""

from __future__ import annotations

import errno
import hmac
import ipaddress
import json
import logging
import os
import secrets
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from importlib import resources
from string import Template
from typing import Any

import cv2
import numpy as np
from werkzeug.exceptions import HTTPException
from werkzeug.routing import Map, Rule
from werkzeug.serving import WSGIRequestHandler, make_server
from werkzeug.wrappers import Request, Response

from edgeseg.errors import EdgesegError

log = logging.getLogger("edgeseg.runtime")

DEFAULT_HOST = "127.0.0.1"
TOKEN_ENVIRONMENT = "EDGESEG_SERVE_TOKEN"  # a fixed token instead of a new one each run
STREAM_MAX_WIDTH = 1280  # wider frames are scaled down for the stream (snapshots keep full size)
JPEG_QUALITY = 80
STREAM_MAX_FPS = 30.0  # a camera's rate; the figures still update with every frame
VIEWER_SOCKET_TIMEOUT_S = 60.0  # a viewer that reads nothing for this long is dropped
BOUNDARY = "edgeseg-frame"


class ServeError(EdgesegError, RuntimeError):
    """The live view cannot start (a bad address, a port in use)."""


@dataclass(frozen=True)
class ServeAddress:
    host: str
    port: int

    @property
    def loopback(self) -> bool:
        if self.host == "localhost":
            return True
        try:
            return ipaddress.ip_address(self.host).is_loopback
        except ValueError:  # a host name: reachable from elsewhere, so it needs the token
            return False


def parse_serve_address(text: str) -> ServeAddress:
    """'8080' (localhost), 'HOST:8080', '0.0.0.0:8080' (every interface) or '[::]:8080'."""
    host, separator, port_text = text.rpartition(":")
    if not separator:
        host = DEFAULT_HOST
    host = host.strip("[]")
    if not host:
        raise ServeError(f"--serve {text!r}: give PORT (localhost) or HOST:PORT, e.g. 8080 or 0.0.0.0:8080")
    if not port_text.isdigit() or not 0 <= int(port_text) <= 65535:
        raise ServeError(f"--serve {text!r}: the port must be a number from 0 to 65535 (0 picks a free one)")
    return ServeAddress(host, int(port_text))


def encode_jpeg(image: np.ndarray, max_width: int = STREAM_MAX_WIDTH, quality: int = JPEG_QUALITY) -> bytes:
    height, width = image.shape[:2]
    if width > max_width:
        image = cv2.resize(image, (max_width, round(height * max_width / width)), interpolation=cv2.INTER_AREA)
    ok, encoded = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, quality])
    if not ok:
        raise ServeError("OpenCV could not encode a frame as JPEG for the live view")
    return encoded.tobytes()


class LiveView:
    """The newest overlay (as JPEG, while anyone watches) and its figures, shared with every viewer."""

    def __init__(self) -> None:
        self._condition = threading.Condition()
        self._sequence = 0  # JPEGs made so far
        self._last_encoded = float("-inf")
        self._jpeg: bytes | None = None
        self._snapshot: np.ndarray | None = None  # the newest full-size overlay, kept while anyone watches
        self._figures: dict[str, Any] = {}
        self._viewers = 0
        self._closed = False
        self.frames_published = 0

    @property
    def viewers(self) -> int:
        with self._condition:
            return self._viewers

    def publish(self, overlay: np.ndarray, figures: dict[str, Any]) -> None:
        """Replace the newest frame; never waits for a viewer.

        The JPEG (and the snapshot copy) is made only while someone watches, and at most
        STREAM_MAX_FPS times a second: a camera's rate is all a browser needs, and a pipeline running
        faster on a file keeps its speed. The figures are replaced every frame.
        """
        now = time.monotonic()
        encode = self.viewers > 0 and now - self._last_encoded >= 1.0 / STREAM_MAX_FPS
        jpeg = encode_jpeg(overlay) if encode else None
        with self._condition:
            if encode:
                if self._snapshot is None or self._snapshot.shape != overlay.shape:
                    self._snapshot = np.empty_like(overlay)
                np.copyto(self._snapshot, overlay)
                self._jpeg, self._sequence, self._last_encoded = jpeg, self._sequence + 1, now
            self._figures = figures
            self.frames_published += 1
            self._condition.notify_all()

    def figures(self) -> dict[str, Any]:
        with self._condition:
            return {**self._figures, "viewers": self._viewers, "frames_published": self.frames_published, "ended": self._closed}

    def snapshot(self) -> np.ndarray | None:
        with self._condition:
            return None if self._snapshot is None else self._snapshot.copy()

    def next_jpeg(self, after: int, timeout: float = 1.0) -> tuple[int, bytes | None]:
        """The newest JPEG once one newer than ``after`` exists; (after, None) on timeout or when closed."""
        with self._condition:
            self._condition.wait_for(lambda: self._closed or self._sequence > after, timeout)
            if self._closed or self._sequence <= after:
                return after, None
            return self._sequence, self._jpeg

    @property
    def closed(self) -> bool:
        with self._condition:
            return self._closed

    @contextmanager
    def viewer(self) -> Iterator[None]:
        with self._condition:
            self._viewers += 1
        try:
            yield
        finally:
            with self._condition:
                self._viewers -= 1

    def close(self) -> None:
        """End every stream (the run is over)."""
        with self._condition:
            self._closed = True
            self._condition.notify_all()


def mjpeg_parts(view: LiveView) -> Iterator[bytes]:
    """One multipart part per new frame, for as long as the run lasts and the viewer reads."""
    with view.viewer():
        sequence = 0
        while not view.closed:
            sequence, jpeg = view.next_jpeg(sequence)
            if jpeg is not None:
                yield b"--%s\r\nContent-Type: image/jpeg\r\nContent-Length: %d\r\n\r\n%s\r\n" % (BOUNDARY.encode(), len(jpeg), jpeg)


def page_html(token: str | None) -> str:
    template = Template(resources.files("edgeseg.runtime").joinpath("live_view.html").read_text(encoding="utf-8"))
    return template.substitute(query=f"?token={token}" if token else "")


class LiveViewApp:
    """The WSGI application: the page, the MJPEG stream, the figures and a full-size PNG snapshot."""

    def __init__(self, view: LiveView, token: str | None) -> None:
        self.view = view
        self.token = token
        self.routes = Map([
            Rule("/", endpoint="page"),
            Rule("/stream.mjpg", endpoint="stream"),
            Rule("/figures.json", endpoint="figures"),
            Rule("/snapshot.png", endpoint="snapshot"),
        ])

    def __call__(self, environ, start_response):
        request = Request(environ)
        return self.respond(request)(environ, start_response)

    def respond(self, request: Request) -> Response:
        if self.token is not None and not hmac.compare_digest(request.args.get("token", ""), self.token):
            return Response("edgeseg live view: add ?token=... (printed when `edgeseg run --serve` started)\n", 403, mimetype="text/plain")
        adapter = self.routes.bind_to_environ(request.environ)
        try:
            endpoint, _ = adapter.match()
        except HTTPException as error:  # NotFound, MethodNotAllowed: responses themselves
            return error
        return getattr(self, endpoint)()

    def page(self) -> Response:
        return Response(page_html(self.token), mimetype="text/html", headers={"Cache-Control": "no-store"})

    def stream(self) -> Response:
        return Response(mjpeg_parts(self.view), mimetype=f"multipart/x-mixed-replace; boundary={BOUNDARY}",
                        headers={"Cache-Control": "no-store"}, direct_passthrough=True)

    def figures(self) -> Response:
        return Response(json.dumps(self.view.figures()), mimetype="application/json", headers={"Cache-Control": "no-store"})

    def snapshot(self) -> Response:
        overlay = self.view.snapshot()
        if overlay is None:
            return Response("no frame yet\n", 503, mimetype="text/plain")
        ok, png = cv2.imencode(".png", overlay)
        if not ok:
            return Response("could not encode the snapshot\n", 500, mimetype="text/plain")
        name = time.strftime("edgeseg-snapshot-%Y%m%d-%H%M%S.png")
        return Response(png.tobytes(), mimetype="image/png", headers={"Content-Disposition": f'attachment; filename="{name}"'})


class _QuietHandler(WSGIRequestHandler):
    timeout = VIEWER_SOCKET_TIMEOUT_S  # socketserver applies it to each connection

    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        log.debug("live view: %s %s", self.requestline, code)


def listening_socket(address: ServeAddress) -> socket.socket:
    family = socket.AF_INET6 if ":" in address.host else socket.AF_INET
    try:
        return socket.create_server((address.host, address.port), family=family, backlog=16)
    except OSError as error:
        hint = "choose another port with --serve PORT" if error.errno == errno.EADDRINUSE else "check the host is an address of this machine"
        raise ServeError(f"--serve {address.host}:{address.port}: cannot listen there ({error.strerror}); {hint}") from None


class LiveServer:
    """Serves a LiveView in a background thread; ``with LiveServer(...) as server: print(server.url)``."""

    def __init__(self, view: LiveView, address: ServeAddress) -> None:
        self.view = view
        self.address = address
        self.token = None if address.loopback else serve_token()
        listening = listening_socket(address)
        try:
            self._server = make_server(address.host, address.port, LiveViewApp(view, self.token), threaded=True,
                                       request_handler=_QuietHandler, fd=listening.fileno())
        finally:
            listening.close()  # werkzeug holds its own duplicate of the socket
        self.port = self._server.socket.getsockname()[1]
        self._thread = threading.Thread(target=self._server.serve_forever, name="edgeseg-serve", daemon=True)

    @property
    def url(self) -> str:
        host = socket.gethostname() if self.address.host in ("0.0.0.0", "::") else self.address.host
        host = f"[{host}]" if ":" in host else host
        return f"http://{host}:{self.port}/" + (f"?token={self.token}" if self.token else "")

    def __enter__(self) -> LiveServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.view.close()
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)


def serve_token() -> str:
    return os.environ.get(TOKEN_ENVIRONMENT) or secrets.token_urlsafe(16)
