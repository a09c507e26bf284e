"""A hop that loses answers: it forwards each request to the real relay and, for the ones a
test picks, drops the connection instead of passing the answer on.

What a pilot sees when a replica is killed after its commit, before its answer (issue 15),
or when a balancer answers 502 for a replica that went away: the relay did the work, the
client does not know. ``cut(method, path)`` returning True loses that answer (the
request *was* forwarded, so the relay has acted on it); ``bad_gateway`` answers a
balancer's 502 in its place rather than closing.
"""

from __future__ import annotations

import socket
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx

Picker = Callable[[str, str], bool]


class _QuietServer(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request: Any, client_address: Any) -> None:
        """A client that hung up at teardown is expected, not news."""


class AnswerLosingProxy:
    def __init__(self, upstream: str, *, cut: Picker, bad_gateway: bool = False) -> None:
        self.upstream = upstream.rstrip("/")
        self.cut = cut
        self.bad_gateway = bad_gateway
        self.forwarded: list[tuple[str, str, int]] = []  # (method, path, relay's status)
        self.lost: list[tuple[str, str]] = []  # the answers dropped
        self._http = httpx.Client(timeout=60.0)
        self._lock = threading.Lock()
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:
                return

            def do_GET(self) -> None:
                proxy._forward(self, "GET")

            def do_POST(self) -> None:
                proxy._forward(self, "POST")

        self.server = _QuietServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self._thread.start()

    def _forward(self, handler: BaseHTTPRequestHandler, method: str) -> None:
        length = int(handler.headers.get("Content-Length") or 0)
        body = handler.rfile.read(length) if length else b""
        headers = {k: v for k, v in handler.headers.items()
                   if k.lower() not in ("host", "content-length", "connection")}
        answer = self._http.request(method, self.upstream + handler.path, content=body,
                                    headers=headers)
        with self._lock:
            self.forwarded.append((method, handler.path, answer.status_code))
            lose = self.cut(method, handler.path)
            if lose:
                self.lost.append((method, handler.path))
        if lose and self.bad_gateway:
            self._answer(handler, 502, b"<html>502 Bad Gateway</html>", "text/html")
        elif lose:
            handler.close_connection = True
            handler.connection.shutdown(socket.SHUT_RDWR)
        else:
            self._answer(handler, answer.status_code, answer.content,
                         answer.headers.get("content-type", "text/plain"))

    @staticmethod
    def _answer(handler: BaseHTTPRequestHandler, status: int, content: bytes,
                content_type: str) -> None:
        handler.send_response(status)
        handler.send_header("Content-Type", content_type)
        handler.send_header("Content-Length", str(len(content)))
        handler.send_header("Connection", "close")  # no pooled connection outlives close()
        handler.end_headers()
        handler.close_connection = True
        handler.wfile.write(content)

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self._http.close()


def first_n(n: int, method: str, prefix: str) -> Picker:
    """A picker losing the answers of the first ``n`` requests ``method`` to ``prefix``…"""
    left = [n]

    def pick(seen_method: str, path: str) -> bool:
        if seen_method == method and path.split("?")[0].startswith(prefix) and left[0] > 0:
            left[0] -= 1
            return True
        return False
    return pick
