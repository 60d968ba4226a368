"""`edgeseg run --serve`: the live overlay and the lesion figures in any browser, for a device without a screen.

The page shows the overlay as MJPEG (an <img> every browser plays without plugins) and polls the
figures as JSON a few times a second. One ``LiveView`` holds only the newest frame: the pipeline
replaces it and never waits for a viewer, and each viewer's thread sends whatever is newest when it
is ready, so a slow browser skips frames instead of queueing them. The JPEG is encoded once per
frame, only while someone watches, at most at a camera's rate. The newest overlay is kept (a copy)
whether or not anyone watches, and the snapshot PNG is encoded from it only when asked: at most once
per frame and a few times a second, one encode at a time, whoever asks.

Served on every interface (0.0.0.0 or ::), the run prints this machine's LAN addresses, which a
tablet can open (``lan_addresses``), not its host name, which a clinic's network may not resolve.

The server is edgeseg's own, on the standard library, because the live view must hold on a clinic's
network against clients that do not play fair, and neither werkzeug's development server (a thread
per connection, no limit, a timeout per read) nor waitress (a fixed pool of 4 threads that MJPEG
viewers would each hold, a stalled viewer's output spooled to a temporary file, no deadline for a
request's headers) gives that. One thread waits for every request at once: it accepts a capped
number of connections a second (a flood waits in the kernel's queue, costing the pipeline nothing),
paces each address, caps how many connections may wait and gives each a deadline for its whole
request head; only a request that passes the checks (Host, Origin, token or cookie) gets a thread of
its own, from a capped number. Every limit is a field of ``ServeLimits``.

Every request needs the token printed when the run starts, on localhost too (other users of the
machine, and web pages that rebind a name to 127.0.0.1, must not see patient images). The first
visit with ``?token=`` moves it into an HttpOnly, SameSite=Strict cookie and redirects to the bare
address, as Jupyter does.
"""

from __future__ import annotations

import errno
import hmac
import ipaddress
import json
import logging
import os
import secrets
import selectors
import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import cached_property
from http import HTTPStatus
from importlib import resources
from string import Template
from typing import Any, cast
from urllib.parse import quote, unquote_to_bytes

import cv2
import numpy as np

from edgeseg.core.errors import EdgesegError

log = logging.getLogger("edgeseg.runtime")

DEFAULT_HOST = "127.0.0.1"
TOKEN_ENVIRONMENT = "EDGESEG_SERVE_TOKEN"  # a fixed token instead of a new one each run
HOSTS_ENVIRONMENT = "EDGESEG_SERVE_HOSTS"  # more names the device is reached by (a clinic's DNS name), comma-separated
TOKEN_MIN_LENGTH = 16
TOKEN_MAX_LENGTH = 256
STREAM_MAX_WIDTH = 1280  # wider frames are scaled down for the stream (snapshots keep full size)
JPEG_QUALITY = 80
STREAM_MAX_FPS = 30.0  # a camera's rate; the figures still update with every frame
SNAPSHOT_MIN_INTERVAL_S = 0.25  # a full-size PNG costs ~10 ms at 640x480: at most 4 a second, whoever loops on it
BOUNDARY = "edgeseg-frame"
LISTEN_BACKLOG = 1024  # connections the kernel holds until accepted (no descriptor of ours)
ACCEPTS_PER_ROUND = 64  # then a turn for the requests that have arrived
CLIENTS_TRACKED = 1024  # addresses whose connection rate is remembered


@dataclass(frozen=True)
class ServeLimits:
    """What clients may hold of the device, together; tests/runtime/test_serve*.py test each one."""

    connections_per_s: float = 200.0  # accepted at most, all clients together; more wait in the kernel's queue
    # Read from one address at most (a page needs about 5 a second); more wait their turn (their header timeout
    # starts then), and one that would wait header_timeout_s or longer is closed at once.
    client_connections_per_s: float = 20.0
    waiting_connections: int = 64  # connections whose request head has not arrived; when full, the oldest is closed
    header_timeout_s: float = 5.0  # from its turn to the end of the request head, however it trickles in
    header_bytes: int = 8192  # a larger request head gets 431
    streams: int = 8  # MJPEG viewers at once; one more gets 503
    requests: int = 8  # other answers (page, figures, snapshot) being sent at once; one more gets 503
    stream_send_timeout_s: float = 60.0  # an authorised viewer that reads nothing for this long is dropped
    send_timeout_s: float = 20.0  # any other answer must be taken within this


class ServeError(EdgesegError, RuntimeError):
    """The live view cannot start (a bad address, a port in use, a token too short)."""


@dataclass(frozen=True)
class ServeAddress:
    host: str
    port: int


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


def encode_png(image: np.ndarray) -> bytes:
    ok, encoded = cv2.imencode(".png", image)
    if not ok:
        raise ServeError("OpenCV could not encode the snapshot as PNG")
    return encoded.tobytes()


class LiveView:
    """The newest overlay (kept always; as JPEG while anyone watches) and its figures, shared with every viewer."""

    def __init__(self, snapshot_min_interval_s: float = SNAPSHOT_MIN_INTERVAL_S) -> None:
        self._condition = threading.Condition()
        self._sequence = 0  # JPEGs made so far
        self._last_encoded = float("-inf")
        self._jpeg: bytes | None = None
        self._snapshot: np.ndarray | None = None  # the newest full-size overlay: a fresh copy per frame, never changed
        self._figures: dict[str, Any] = {}
        self._viewers = 0
        self._closed = False
        self._snapshot_lock = threading.Lock()  # one PNG encode at a time
        self._snapshot_min_interval_s = snapshot_min_interval_s
        self._png: bytes | None = None
        self._png_sequence = 0
        self._png_encoded = float("-inf")
        self.frames_published = 0
        self.snapshot_encodes = 0

    @property
    def viewers(self) -> int:
        with self._condition:
            return self._viewers

    def publish(self, overlay: np.ndarray, figures: dict[str, Any]) -> None:
        """Replace the newest frame; never waits for a viewer.

        The JPEG is made only while someone watches, and at most STREAM_MAX_FPS times a second: a
        camera's rate is all a browser needs, and a pipeline running faster on a file keeps its speed.
        The overlay is copied every frame (a copy costs far less than an encode), for the snapshot,
        which is encoded only when asked; the figures are replaced every frame.
        """
        now = time.monotonic()
        encode = self.viewers > 0 and now - self._last_encoded >= 1.0 / STREAM_MAX_FPS
        jpeg = encode_jpeg(overlay) if encode else None
        snapshot = overlay.copy()  # the caller reuses its buffer
        with self._condition:
            if encode:
                self._jpeg, self._sequence, self._last_encoded = jpeg, self._sequence + 1, now
            self._snapshot = snapshot
            self._figures = figures
            self.frames_published += 1
            self._condition.notify_all()

    def figures(self) -> dict[str, Any]:
        with self._condition:
            return {
                **self._figures,
                "viewers": self._viewers,
                "frames_published": self.frames_published,
                "ended": self._closed,
            }

    def snapshot(self) -> np.ndarray | None:
        with self._condition:
            return self._snapshot

    def snapshot_png(self) -> bytes | None:
        """The newest overlay as PNG: encoded at most once per frame and once per snapshot_min_interval_s, by one
        thread at a time; every other request waits for that encode and takes the same bytes."""
        with self._snapshot_lock:
            with self._condition:
                sequence, overlay = self.frames_published, self._snapshot
            if overlay is None:
                return None
            now = time.monotonic()
            if sequence != self._png_sequence and now - self._png_encoded >= self._snapshot_min_interval_s:
                self._png, self._png_sequence, self._png_encoded = encode_png(overlay), sequence, now
                self.snapshot_encodes += 1
            return self._png

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


# --- HTTP: just what the page needs (GET, one request per connection), on bytes until a check passes ---


@dataclass(frozen=True)
class Request:
    method: str
    path: str
    query: dict[str, bytes]  # percent-decoded bytes: a token of any bytes is compared, never decoded
    headers: dict[str, str]  # lower-case names; values decoded as latin-1, which never fails


def parse_request(head: bytes) -> Request | None:
    """The request line and headers (without the final blank line); None when they are not HTTP/1.x."""
    request_line, *header_lines = head.split(b"\r\n")
    parts = request_line.split(b" ")
    if len(parts) != 3 or not parts[2].startswith(b"HTTP/1."):
        return None
    method, target, _ = parts
    path, _, query = target.partition(b"?")
    headers: dict[str, str] = {}
    for line in header_lines:
        name, colon, value = line.partition(b":")
        if not colon or not name or name != name.strip():
            return None
        key = name.decode("latin-1").lower()
        if key == "host" and key in headers:
            return None
        text = value.strip().decode("latin-1")
        headers[key] = f"{headers[key]}; {text}" if key == "cookie" and key in headers else text
    return Request(method.decode("latin-1"), path.decode("latin-1"), parse_query(query), headers)


def parse_query(query: bytes) -> dict[str, bytes]:
    fields: dict[str, bytes] = {}
    for pair in query.split(b"&"):
        name, _, value = pair.partition(b"=")
        if name:
            fields.setdefault(
                unquote_to_bytes(name.replace(b"+", b" ")).decode("latin-1"),
                unquote_to_bytes(value.replace(b"+", b" ")),
            )
    return fields


def cookies(request: Request) -> dict[str, str]:
    jar: dict[str, str] = {}
    for pair in request.headers.get("cookie", "").split(";"):
        name, _, value = pair.strip().partition("=")
        jar.setdefault(name, value)
    return jar


SECURITY_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
    "Cross-Origin-Resource-Policy": "same-origin",
    "Cache-Control": "no-store",  # patient images: nothing kept in any cache
    "Content-Security-Policy": "default-src 'none'; frame-ancestors 'none'",
}


def page_policy(nonce: str) -> str:
    return (
        "default-src 'none'; img-src 'self'; connect-src 'self'; "
        f"script-src 'nonce-{nonce}'; style-src 'nonce-{nonce}'; "
        "base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
    )


def http_head(status: int, content_type: str, length: int | None, headers: dict[str, str] | None = None) -> bytes:
    fields = {
        "Server": "edgeseg",
        "Connection": "close",
        "Content-Type": content_type,
        **SECURITY_HEADERS,
        **(headers or {}),
    }
    if length is not None:
        fields["Content-Length"] = str(length)
    lines = [f"HTTP/1.1 {status} {HTTPStatus(status).phrase}", *(f"{name}: {value}" for name, value in fields.items())]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


def http_response(
    status: int, body: bytes, content_type: str = "text/plain; charset=utf-8", headers: dict[str, str] | None = None
) -> bytes:
    return http_head(status, content_type, len(body), headers) + body


def text_response(status: int, message: str, headers: dict[str, str] | None = None) -> bytes:
    return http_response(status, f"edgeseg live view: {message}\n".encode(), headers=headers)


def page_html(nonce: str) -> str:
    template = Template(resources.files("edgeseg.runtime").joinpath("live_view.html").read_text(encoding="utf-8"))
    return template.substitute(nonce=nonce)


def host_name(host_header: str) -> str:
    """'Scope.local:8080' -> 'scope.local'; '[::1]:8080' -> '::1'."""
    if host_header.startswith("["):
        return host_header[1:].partition("]")[0].lower()
    name, colon, port = host_header.rpartition(":")
    return (name if colon and port.isdigit() else host_header).lower()


def is_ip_address(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


def known_host_names(address: ServeAddress) -> frozenset[str]:
    """The names a browser may call this device by; an IP address is always accepted (a rebinding attack needs a
    name)."""
    machine = socket.gethostname().lower()  # no DNS look-up: a device with a broken resolver must still start
    extra = [name.strip().lower() for name in os.environ.get(HOSTS_ENVIRONMENT, "").split(",") if name.strip()]
    return frozenset({"localhost", machine, f"{machine}.local", address.host.lower(), *extra})


class Gate:
    """Who may see the live view: a known Host, no foreign Origin, and the token (in the query) or its cookie."""

    def __init__(self, token: str, port: int, host_names: frozenset[str]) -> None:
        self.token = token_bytes(token)
        self.host_names = host_names
        self.cookie_name = f"edgeseg-live-{port}"  # browsers share cookies across ports: one name per run's port
        self.cookie_value = hmac.new(self.token, b"edgeseg live view cookie", "sha256").hexdigest()

    def refusal(self, request: Request) -> str | None:
        """Why the request is refused (403), or None."""
        host = request.headers.get("host")
        if host is None or not (is_ip_address(host_name(host)) or host_name(host) in self.host_names):
            return (
                "this device is not known by that name; open the address `edgeseg run` printed "
                f"(or add the name to {HOSTS_ENVIRONMENT})"
            )
        origin = request.headers.get("origin")
        if origin is not None and origin.lower() != f"http://{host}".lower():
            return "requests from other sites are refused"
        if "token" in request.query:
            if not hmac.compare_digest(request.query["token"], self.token):
                return "wrong token; open the address with ?token=... that `edgeseg run --serve` printed"
            return None
        if not hmac.compare_digest(
            cookies(request).get(self.cookie_name, "").encode("latin-1"), self.cookie_value.encode()
        ):
            return "open the address with ?token=... that `edgeseg run --serve` printed"
        return None

    def cookie(self) -> str:
        return f"{self.cookie_name}={self.cookie_value}; Path=/; HttpOnly; SameSite=Strict"


def token_bytes(token: str) -> bytes:
    return token.encode("utf-8", "surrogateescape")  # an environment variable may hold any bytes


def serve_token() -> str:
    token = os.environ.get(TOKEN_ENVIRONMENT)
    if token is None:
        return secrets.token_urlsafe(24)
    if not TOKEN_MIN_LENGTH <= len(token) <= TOKEN_MAX_LENGTH:
        raise ServeError(
            f"{TOKEN_ENVIRONMENT} must be {TOKEN_MIN_LENGTH} to {TOKEN_MAX_LENGTH} characters (it is {len(token)}); "
            "make one with: python -c 'import secrets; print(secrets.token_urlsafe(24))'"
        )
    return token


def raise_open_files_limit() -> None:
    """Soft limit on open files up to the hard one, so the run's own outputs have room whatever the clients do."""
    try:
        import resource
    except ImportError:  # Windows: no such limit
        return
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        except (ValueError, OSError):  # macOS refuses an unlimited soft limit; what is there stays
            log.debug("live view: could not raise the open-files limit from %d", soft)


EVERY_INTERFACE = ("0.0.0.0", "::")
# Private addresses that a UDP socket is "connected" to: connecting a UDP socket sends nothing, it only makes the
# system choose the interface (and so the address) it would send from: the one a tablet on that network reaches.
ROUTE_PROBES = ("10.255.255.254", "172.31.255.254", "192.168.255.254")
HOST_LOOKUP_TIMEOUT_S = 1.0  # a device with a broken resolver must still start


def lan_addresses() -> list[str]:
    """This machine's IPv4 addresses that another machine can reach: the outgoing interface's for each private
    network, then those its host name resolves to; never loopback. Empty without a network (a sandbox)."""
    found = []
    for text in [*outgoing_addresses(), *host_name_addresses()]:
        try:
            address = ipaddress.IPv4Address(text)
        except ValueError:
            continue
        if not (address.is_loopback or address.is_unspecified or address.is_multicast) and text not in found:
            found.append(text)
    return found


def outgoing_addresses() -> list[str]:
    """The address of the interface this machine would reach each of ROUTE_PROBES' networks from."""
    addresses = []
    for probe in ROUTE_PROBES:
        try:
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
                udp.connect((probe, 9))  # the discard port; no packet leaves
                addresses.append(udp.getsockname()[0])
        except OSError:  # no route to that network
            continue
    return addresses


def host_name_addresses(timeout: float = HOST_LOOKUP_TIMEOUT_S) -> list[str]:
    """The IPv4 addresses the host name resolves to (/etc/hosts, mDNS, DNS), given up after ``timeout``."""
    found: list[str] = []

    def look_up() -> None:
        try:
            infos = socket.getaddrinfo(socket.gethostname(), None, socket.AF_INET, socket.SOCK_STREAM)
        except OSError:
            return
        found.extend(str(info[4][0]) for info in infos)  # an AF_INET address: (host, port)

    thread = threading.Thread(target=look_up, name="edgeseg-host-lookup", daemon=True)
    thread.start()
    thread.join(timeout)
    return list(found) if not thread.is_alive() else []


def listening_socket(address: ServeAddress) -> socket.socket:
    family = socket.AF_INET6 if ":" in address.host else socket.AF_INET
    try:
        listener = socket.create_server((address.host, address.port), family=family, backlog=LISTEN_BACKLOG)
    except OSError as error:
        hint = (
            "choose another port with --serve PORT"
            if error.errno == errno.EADDRINUSE
            else "check the host is an address of this machine"
        )
        raise ServeError(
            f"--serve {address.host}:{address.port}: cannot listen there ({error.strerror}); {hint}"
        ) from None
    listener.setblocking(False)
    return listener


class RateBudget:
    """A token bucket: ``rate`` tokens a second, saved up to one second's worth; a token taken before it is
    there is a debt, paid back as tokens come."""

    def __init__(self, rate: float) -> None:
        self.rate = rate
        self.capacity = max(1.0, rate)
        self.tokens = self.capacity
        self.updated = time.monotonic()

    def seconds_to_token(self, now: float) -> float:
        if now > self.updated:
            self.tokens = min(self.capacity, self.tokens + (now - self.updated) * self.rate)
            self.updated = now
        return max(0.0, (1.0 - self.tokens) / self.rate)

    def take(self) -> None:
        self.tokens -= 1.0


@dataclass
class _Waiting:
    """A connection whose request head is still arriving, or waits for its address's turn to be read."""

    deadline: float
    read_from: float  # not read before this: its address's connection rate
    reading: bool = False  # in the selector
    head: bytearray = field(default_factory=bytearray)


class LiveServer:
    """Serves a LiveView in a background thread; ``with LiveServer(...) as server: print(server.url)``."""

    def __init__(self, view: LiveView, address: ServeAddress, limits: ServeLimits = ServeLimits()) -> None:
        self.view = view
        self.address = address
        self.limits = limits
        self.token = serve_token()
        raise_open_files_limit()
        self._listener = listening_socket(address)
        self.port = self._listener.getsockname()[1]
        self.gate = Gate(self.token, self.port, known_host_names(address))
        self._selector = selectors.DefaultSelector()
        self._selector.register(self._listener, selectors.EVENT_READ)
        self._budget = RateBudget(limits.connections_per_s)
        self._client_budgets: dict[str, RateBudget] = {}
        self.closed_at_once = 0  # connections from an address over its rate
        self._resume_accepting_at: float | None = None  # the listener is out of the selector until then
        self._waiting: dict[socket.socket, _Waiting] = {}  # in the order they connected: the first is the oldest
        self._lock = threading.Lock()
        self._answering: set[socket.socket] = set()
        self._busy = {"streams": 0, "requests": 0}
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._serve, name="edgeseg-serve", daemon=True)
        self._routes: dict[str, tuple[str, Callable[[socket.socket], None]]] = {
            "/": ("requests", self._send_page),
            "/stream.mjpg": ("streams", self._send_stream),
            "/figures.json": ("requests", self._send_figures),
            "/snapshot.png": ("requests", self._send_snapshot),
        }

    @cached_property
    def address_urls(self) -> list[str]:
        """Where a browser opens the live view: on every interface, one URL per LAN address of this machine
        (localhost where it has none), found once; else the address served."""
        hosts = [self.address.host]
        if self.address.host in EVERY_INTERFACE:
            hosts = lan_addresses() or ["localhost"]
        return [f"http://{f'[{host}]' if ':' in host else host}:{self.port}/" for host in hosts]

    @property
    def address_url(self) -> str:
        return self.address_urls[0]

    def token_url(self, address_url: str) -> str:
        """The address with the token: a browser that opens it once keeps the token in a cookie."""
        return f"{address_url}?token={quote(token_bytes(self.token), safe='')}"

    @property
    def url(self) -> str:
        return self.token_url(self.address_url)

    @property
    def waiting(self) -> int:
        return len(self._waiting)

    def busy(self, kind: str) -> int:
        with self._lock:
            return self._busy[kind]

    def __enter__(self) -> LiveServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.view.close()
        self._stopping.set()
        self._thread.join(timeout=5)
        with self._lock:
            answering = list(self._answering)
        for connection in answering:  # a thread blocked sending to a viewer that stopped reading wakes up now
            try:
                connection.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    # --- the waiting thread: every connection until its request head has arrived and been checked ---

    def _serve(self) -> None:
        try:
            while not self._stopping.is_set():
                events = self._selector.select(timeout=self._select_timeout())
                # Requests first, then newcomers: a connection whose request has arrived is answered before
                # newer ones can push it out of a full waiting list.
                for key, _ in events:
                    if key.fileobj is not self._listener:
                        self._receive(cast(socket.socket, key.fileobj))  # only sockets are registered
                if any(key.fileobj is self._listener for key, _ in events):
                    self._accept()
                self._close_expired()
                self._resume_accepting()
                now = time.monotonic()
                for connection, waiting in self._waiting.items():
                    self._read_when_due(connection, waiting, now)
        finally:
            for connection in list(self._waiting):
                self._close_waiting(connection)
            self._selector.close()
            self._listener.close()

    def _select_timeout(self) -> float:
        wake = [self._resume_accepting_at] if self._resume_accepting_at is not None else []
        wake += [waiting.read_from for waiting in self._waiting.values() if not waiting.reading]
        return min(0.25, max(0.0, min(wake, default=float("inf")) - time.monotonic()))

    def _accept(self) -> None:
        """Newcomers while the budget lasts, so that no flood makes the server work more than connections_per_s."""
        now = time.monotonic()
        for _ in range(ACCEPTS_PER_ROUND):
            if (pause := self._budget.seconds_to_token(now)) > 0:
                self._pause_accepting(pause)
                return
            try:
                connection, peer = self._listener.accept()
            except BlockingIOError:
                return
            except OSError as error:
                self._accept_failed(error)
                return
            self._budget.take()
            client = self._client_budget(peer[0])
            wait = client.seconds_to_token(now)
            if wait >= self.limits.header_timeout_s:  # it would wait longer than a request head may take
                connection.close()
                self.closed_at_once += 1
                continue
            client.take()
            self._admit(
                connection, _Waiting(deadline=now + wait + self.limits.header_timeout_s, read_from=now + wait), now
            )

    def _client_budget(self, client: str) -> RateBudget:
        if client not in self._client_budgets and len(self._client_budgets) >= CLIENTS_TRACKED:
            del self._client_budgets[next(iter(self._client_budgets))]  # the longest known
        return self._client_budgets.setdefault(client, RateBudget(self.limits.client_connections_per_s))

    def _admit(self, connection: socket.socket, waiting: _Waiting, now: float) -> None:
        if len(self._waiting) >= self.limits.waiting_connections:
            # The oldest goes, not the newcomer: a browser sends its request within milliseconds, so a
            # flood of half-open connections cannot keep a real viewer out.
            self._close_waiting(next(iter(self._waiting)))
        connection.setblocking(False)
        self._waiting[connection] = waiting
        self._read_when_due(connection, waiting, now)

    def _read_when_due(self, connection: socket.socket, waiting: _Waiting, now: float) -> None:
        if not waiting.reading and waiting.read_from <= now:
            self._selector.register(connection, selectors.EVENT_READ)
            waiting.reading = True

    def _pause_accepting(self, seconds: float) -> None:
        if self._resume_accepting_at is None:
            self._selector.unregister(self._listener)
        self._resume_accepting_at = time.monotonic() + seconds

    def _resume_accepting(self) -> None:
        if self._resume_accepting_at is not None and time.monotonic() >= self._resume_accepting_at:
            self._selector.register(self._listener, selectors.EVENT_READ)
            self._resume_accepting_at = None

    def _accept_failed(self, error: OSError) -> None:
        """Whatever accept() failed with, the listener rests a moment instead of spinning on it."""
        if error.errno in (errno.EMFILE, errno.ENFILE) and self._waiting:  # no descriptor left: free one
            log.warning("live view: out of file descriptors; closing the oldest waiting connection")
            self._close_waiting(next(iter(self._waiting)))
        self._pause_accepting(0.1)

    def _receive(self, connection: socket.socket) -> None:
        waiting = self._waiting.get(connection)
        if waiting is None:  # closed earlier in this round, to make room for a newer one
            return
        try:
            chunk = connection.recv(4096)
        except BlockingIOError:
            return
        except OSError:
            chunk = b""
        if not chunk:
            self._close_waiting(connection)
            return
        waiting.head += chunk
        end = waiting.head.find(b"\r\n\r\n")
        if end < 0 and len(waiting.head) <= self.limits.header_bytes:
            return
        self._stop_waiting(connection)
        if end < 0 or end + 4 > self.limits.header_bytes:
            self._reply(connection, text_response(431, f"request headers over {self.limits.header_bytes} bytes"))
            return
        try:
            self._dispatch(connection, parse_request(bytes(waiting.head[:end])))
        except Exception as error:  # a bug must not stop the server, nor print a traceback per request
            log.warning("live view: could not answer a request: %r", error)
            self._reply(connection, text_response(500, "internal error"))

    def _close_expired(self) -> None:
        now = time.monotonic()
        for connection in [connection for connection, waiting in self._waiting.items() if waiting.deadline <= now]:
            self._close_waiting(connection)

    def _stop_waiting(self, connection: socket.socket) -> None:
        if self._waiting.pop(connection).reading:
            self._selector.unregister(connection)

    def _close_waiting(self, connection: socket.socket) -> None:
        self._stop_waiting(connection)
        connection.close()

    def _dispatch(self, connection: socket.socket, request: Request | None) -> None:
        if request is None:
            self._reply(connection, text_response(400, "not an HTTP/1.x request"))
        elif request.method != "GET":
            self._reply(connection, text_response(405, "only GET", headers={"Allow": "GET"}))
        elif (refusal := self.gate.refusal(request)) is not None:
            self._reply(connection, text_response(403, refusal))
        elif request.path == "/" and "token" in request.query:  # the first visit: the token moves into a cookie
            self._reply(
                connection, text_response(303, "see /", headers={"Location": "/", "Set-Cookie": self.gate.cookie()})
            )
        elif request.path not in self._routes:
            self._reply(connection, text_response(404, "no such page"))
        else:
            kind, send = self._routes[request.path]
            self._start_answer(connection, kind, send)

    @staticmethod
    def _reply(connection: socket.socket, response: bytes) -> None:
        """A short answer from the waiting thread, which never blocks: it fits an empty socket buffer, or is lost."""
        try:
            connection.send(response)
        except OSError:
            pass
        connection.close()

    # --- answering threads: one per checked request, up to ServeLimits.streams and .requests ---

    def _start_answer(self, connection: socket.socket, kind: str, send: Callable[[socket.socket], None]) -> None:
        with self._lock:
            full = self._busy[kind] >= getattr(self.limits, kind)
            if not full:
                self._busy[kind] += 1
                self._answering.add(connection)
        if full:
            self._reply(
                connection, text_response(503, f"too many {kind} at once; try again", headers={"Retry-After": "1"})
            )
            return
        threading.Thread(
            target=self._answer, args=(connection, kind, send), name=f"edgeseg-serve-{kind}", daemon=True
        ).start()

    def _answer(self, connection: socket.socket, kind: str, send: Callable[[socket.socket], None]) -> None:
        try:
            connection.setblocking(True)
            connection.settimeout(
                self.limits.stream_send_timeout_s if kind == "streams" else self.limits.send_timeout_s
            )
            send(connection)
        except OSError:  # the viewer left, or stopped reading for longer than the timeout
            pass
        except Exception as error:  # a bug must not print a traceback per request
            log.warning("live view: could not answer a request: %r", error)
        finally:
            with self._lock:
                self._busy[kind] -= 1
                self._answering.discard(connection)
            connection.close()

    def _send_page(self, connection: socket.socket) -> None:
        nonce = secrets.token_urlsafe(16)
        connection.sendall(
            http_response(
                200,
                page_html(nonce).encode(),
                "text/html; charset=utf-8",
                {"Content-Security-Policy": page_policy(nonce)},
            )
        )

    def _send_figures(self, connection: socket.socket) -> None:
        connection.sendall(http_response(200, json.dumps(self.view.figures()).encode(), "application/json"))

    def _send_snapshot(self, connection: socket.socket) -> None:
        png = self.view.snapshot_png()
        if png is None:
            connection.sendall(text_response(503, "no frame yet", headers={"Retry-After": "1"}))
            return
        name = time.strftime("edgeseg-snapshot-%Y%m%d-%H%M%S.png")
        connection.sendall(
            http_response(200, png, "image/png", {"Content-Disposition": f'attachment; filename="{name}"'})
        )

    def _send_stream(self, connection: socket.socket) -> None:
        connection.sendall(http_head(200, f"multipart/x-mixed-replace; boundary={BOUNDARY}", None))
        with self.view.viewer():
            sequence = 0
            while not self.view.closed:
                sequence, jpeg = self.view.next_jpeg(sequence)
                if jpeg is not None:
                    connection.sendall(
                        b"--%s\r\nContent-Type: image/jpeg\r\nContent-Length: %d\r\n\r\n%s\r\n"
                        % (BOUNDARY.encode(), len(jpeg), jpeg)
                    )
