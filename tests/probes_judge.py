"""Hostile judge endpoints on 127.0.0.1 for the probe tests (standard library only).

`HostileServer(mode)` accepts real TCP connections and misbehaves in one way:

* "trickle_body": a valid status line and headers (Content-Length of a full reply), then
  the body one byte every `interval_s`: each socket read succeeds, the reply never ends;
* "trickle_headers": the status line itself one byte every `interval_s`;
* "trickle_error": a 500 status and headers at once, then its error body trickled;
* "silent": reads the request and never answers (a hung judge).

`dead_url()` is a base URL on a port nobody listens on (connection refused).
"""

from __future__ import annotations

import socket
import threading
from typing import Any

_BODY = b'{"choices": [{"message": {"role": "assistant", "content": "Fine.\\nScore: 5"}}]}'


class HostileServer:
    """A loopback server that misbehaves as `mode` says; use as a context manager."""

    def __init__(self, mode: str, interval_s: float = 0.2):
        if mode not in ("trickle_body", "trickle_headers", "trickle_error", "silent"):
            raise ValueError(mode)
        self.mode, self.interval_s = mode, interval_s
        self.connections = 0
        self._stop = threading.Event()
        self._sock = socket.socket()
        self._sock.bind(("127.0.0.1", 0))
        self._sock.listen(64)
        self._sock.settimeout(0.05)
        self._threads: list[threading.Thread] = []

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self._sock.getsockname()[1]}/v1"

    def __enter__(self) -> "HostileServer":
        t = threading.Thread(target=self._accept, daemon=True)
        t.start()
        self._threads.append(t)
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(timeout=2)
        self._sock.close()

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self._sock.accept()
            except OSError:
                continue
            self.connections += 1
            t = threading.Thread(target=self._serve, args=(conn,), daemon=True)
            t.start()
            self._threads.append(t)

    def _serve(self, conn: socket.socket) -> None:
        with conn:
            conn.settimeout(0.05)
            try:
                conn.recv(65536)  # the request (small enough for one read on loopback)
            except OSError:
                pass
            status = b"500 Internal Server Error" if self.mode == "trickle_error" else b"200 OK"
            head = (b"HTTP/1.1 %s\r\nContent-Type: application/json\r\n"
                    b"Content-Length: %d\r\n\r\n" % (status, len(_BODY) * 1000))
            if self.mode in ("trickle_body", "trickle_error"):
                stream = head + _BODY * 1000
            elif self.mode == "trickle_headers":
                stream = head * 1000
            else:
                stream = b""
            sent = 0
            while not self._stop.is_set():
                if self.mode in ("trickle_body", "trickle_error") and sent == 0:
                    chunk, sent = head, len(head)
                elif sent < len(stream):
                    chunk, sent = stream[sent:sent + 1], sent + 1
                else:
                    chunk = b""
                try:
                    if chunk:
                        conn.sendall(chunk)
                except OSError:
                    return  # the client hung up: what a bounded client does
                self._stop.wait(self.interval_s)


def dead_url() -> str:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}/v1"
