"""shared.tls: one rule for "TLS failure" and for trusting a CA file, as pilot and drone use them.

The failures come from real handshakes: a local TLS server whose certificate
the client does not trust, met through httpx as both parts meet the relay.
"""

from __future__ import annotations

import socket
import ssl
import threading
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from dragoon.shared.tls import CaCertError, ca_context, is_tls_failure

from tests.support.tls import certificate_from_ca, private_ca


@pytest.fixture
def tls_server(tmp_path: Path) -> Iterator[tuple[str, Path, Path]]:
    """A TLS listener with a certificate from a private CA: (url, the CA, another CA)."""
    ca, ca_key = private_ca(tmp_path, "good-ca")
    other, _ = private_ca(tmp_path, "other-ca")
    cert, key = certificate_from_ca(tmp_path, ca, ca_key)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(0.2)
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            try:
                raw, _ = listener.accept()
            except TimeoutError:
                continue
            with raw:
                raw.settimeout(10)
                try:
                    with context.wrap_socket(raw, server_side=True) as conn:
                        conn.recv(65536)
                        conn.sendall(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n"
                                     b"connection: close\r\n\r\nok")
                except (ssl.SSLError, OSError):
                    pass

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield f"https://127.0.0.1:{listener.getsockname()[1]}", ca, other
    finally:
        stop.set()
        thread.join()
        listener.close()


def test_the_ca_that_signed_the_certificate_is_trusted(tls_server: tuple[str, Path, Path]) -> None:
    url, ca, _ = tls_server
    with httpx.Client(verify=ca_context(ca)) as client:
        assert client.get(url).text == "ok"


def test_an_untrusted_certificate_is_a_tls_failure(tls_server: tuple[str, Path, Path]) -> None:
    url, _, other = tls_server
    for verify in (ca_context(other), True):  # another private CA; the system's CAs
        with httpx.Client(verify=verify) as client, pytest.raises(httpx.ConnectError) as caught:
            client.get(url)
        assert is_tls_failure(caught.value)


def test_a_refused_connection_is_not_a_tls_failure() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    with httpx.Client() as client, pytest.raises(httpx.ConnectError) as caught:
        client.get(f"http://127.0.0.1:{port}/")
    assert not is_tls_failure(caught.value)


def test_an_unusable_ca_file_is_one_clear_error(tmp_path: Path) -> None:
    with pytest.raises(CaCertError, match="no such file"):
        ca_context(tmp_path / "missing.pem")
    junk = tmp_path / "junk.pem"
    junk.write_text("not a certificate\n")
    with pytest.raises(CaCertError, match=f"cannot use CA certificate {junk}: not PEM"):
        ca_context(junk)
    with pytest.raises(CaCertError, match="cannot use CA certificate"):
        ca_context(tmp_path)  # a directory
