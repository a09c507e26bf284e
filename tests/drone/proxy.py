"""A man in the middle for the rejection tests: forwards the drone's requests to the real relay
and rewrites the tasks in poll answers, as an attacker on the network (or a stolen relay
database) could. The drone must refuse every such task before it spawns anything."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx

Tamper = Callable[[dict[str, Any]], dict[str, Any]]


class _QuietServer(ThreadingHTTPServer):
    def handle_error(self, request: Any, client_address: Any) -> None:
        """Connections cut at teardown (drone stopped mid-poll) are expected, not news."""


class TamperingProxy:
    def __init__(self, upstream: str) -> None:
        self.upstream = upstream.rstrip("/")
        self.tamper: Tamper | None = None
        self.tampered = 0
        self.seen: list[dict[str, Any]] = []  # every task that passed, as the relay sent it
        self.inject: list[dict[str, Any]] = []  # added to every poll answer that carries tasks
        self.answer_hook: Callable[[dict[str, Any]], dict[str, Any]] | None = None
        # A request whose path this returns True for gets a 503, as from a relay that is away.
        self.unavailable: Callable[[str], bool] | None = None
        # One it returns True for gets the 422 a relay answers a query it does not take (an
        # older relay, asked for a stream it does not know).
        self.refuse: Callable[[str], bool] | None = None
        self._http = httpx.Client(timeout=60.0)
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:
                return

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length)
                if proxy.unavailable is not None and proxy.unavailable(self.path):
                    self.send_error(503)
                    return
                if proxy.refuse is not None and proxy.refuse(self.path):
                    refusal = json.dumps({"error": "invalid", "detail": "bad query"}).encode()
                    self.send_response(422)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(refusal)))
                    self.end_headers()
                    self.wfile.write(refusal)
                    return
                headers = {k: v for k, v in self.headers.items()
                           if k.lower() not in ("host", "content-length", "connection")}
                try:
                    answer = proxy._http.post(proxy.upstream + self.path, content=body,
                                              headers=headers)
                except (httpx.HTTPError, RuntimeError):
                    self.send_error(502)
                    return
                content = answer.content
                if self.path.startswith("/v1/worker/poll") and answer.status_code == 200:
                    content = proxy._rewrite(content)
                self.send_response(answer.status_code)
                self.send_header("Content-Type", answer.headers.get("content-type", "text/plain"))
                self.send_header("Content-Length", str(len(content)))
                self.end_headers()
                self.wfile.write(content)

        self.server = _QuietServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self._thread.start()

    def _rewrite(self, content: bytes) -> bytes:
        answer = json.loads(content)
        if self.answer_hook is not None:
            answer = self.answer_hook(answer)
        self.seen.extend(answer.get("tasks") or [])
        if answer.get("tasks") and self.inject:
            answer["tasks"] = answer["tasks"] + self.inject
        if self.tamper is not None and answer.get("tasks"):
            answer["tasks"] = [self.tamper(task) for task in answer["tasks"]]
            self.tampered += len(answer["tasks"])
        return json.dumps(answer).encode()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self._http.close()
