"""A bare-socket HTTP/1.1 client for the hostile-upload tests: the test decides how much of a
body goes out, so "answered before the body was sent" is shown, not timed."""

from __future__ import annotations

import socket
from urllib.parse import urlsplit


class RawHttp:
    """One HTTP/1.1 request on a bare socket: the test decides how much of the body goes out."""

    def __init__(self, url: str) -> None:
        parts = urlsplit(url)
        self.host = f"{parts.hostname}:{parts.port}"
        self.sock = socket.create_connection((parts.hostname, parts.port), timeout=20)

    def close(self) -> None:
        self.sock.close()

    def send_head(self, target: str, headers: dict[str, str], *, length: int,
                  first: bytes = b"") -> None:
        lines = [f"POST {target} HTTP/1.1", f"Host: {self.host}",
                 f"Content-Length: {length}", "Content-Type: application/octet-stream",
                 *(f"{k}: {v}" for k, v in headers.items())]
        self.sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode() + first)

    def read_answer(self) -> tuple[int, dict[str, str], bytes]:
        """Status, headers and body of the answer (read up to its Content-Length)."""
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = self.sock.recv(65536)
            assert chunk, f"the relay closed the connection without answering: {data!r}"
            data += chunk
        head, _, body = data.partition(b"\r\n\r\n")
        status_line, *header_lines = head.decode("latin-1").split("\r\n")
        headers = {k.strip().lower(): v.strip()
                   for k, v in (line.split(":", 1) for line in header_lines)}
        while len(body) < int(headers.get("content-length", "0")):
            chunk = self.sock.recv(65536)
            assert chunk, "the relay closed the connection in the middle of its answer"
            body += chunk
        return int(status_line.split()[1]), headers, body

    def closed_by_peer(self) -> bool:
        """True when the relay hung up (EOF, or a reset for bytes it never read)."""
        try:
            return self.sock.recv(65536) == b""
        except ConnectionResetError:
            return True
