"""A real HTTP receiver for webhook tests (a threaded ``http.server`` on 127.0.0.1) that answers POSTs with the
status codes it is given, in order (200 once they run out), and keeps every request; and the signature check of
the Standard Webhooks scheme written out by hand, independent of the service's code."""

from __future__ import annotations

import base64
import hashlib
import hmac
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


@dataclass(frozen=True)
class Received:
    path: str
    headers: dict[str, str]
    body: bytes
    at: float


@dataclass
class Receiver:
    url: str
    statuses: list[int]
    requests: list[Received] = field(default_factory=list)
    location: str | None = None
    """The ``Location`` header of redirect answers."""
    trickle_s: float | None = None
    """Send the answer's body one byte at a time, this many seconds apart (a receiver that never finishes)."""


@contextmanager
def webhook_receiver(statuses: Sequence[int] = ()) -> Iterator[Receiver]:
    lock = threading.Lock()
    receiver = Receiver("", list(statuses))

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
            with lock:
                receiver.requests.append(Received(self.path, dict(self.headers.items()), body, time.time()))
                status = receiver.statuses.pop(0) if receiver.statuses else 200
            self.send_response(status)
            if receiver.location and 300 <= status < 400:
                self.send_header("Location", receiver.location)
            answer = (b"boom " * 1000) if status >= 500 else b"ok"
            self.send_header("Content-Length", str(len(answer)))
            self.end_headers()
            if receiver.trickle_s is None:
                self.wfile.write(answer)
                return
            try:
                for byte in answer:
                    self.wfile.write(bytes([byte]))
                    self.wfile.flush()
                    time.sleep(receiver.trickle_s)
            except OSError:  # the sender stopped reading
                pass

        def log_message(self, *_: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    receiver.url = f"http://127.0.0.1:{server.server_address[1]}/hooks/sparsegrad"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield receiver
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


def expected_signature(secret: str, request: Received) -> str:
    """``v1,`` + base64 HMAC-SHA256, keyed with the secret's base64 part, of ``{webhook-id}.{timestamp}.{body}``."""
    headers = {k.lower(): v for k, v in request.headers.items()}
    key = base64.b64decode(secret[len("whsec_"):])
    signed = f"{headers['webhook-id']}.{headers['webhook-timestamp']}.".encode() + request.body
    return "v1," + base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode()
