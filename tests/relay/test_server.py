"""The runner's refusals, decided before anything binds."""

from __future__ import annotations

from pathlib import Path

import pytest
from dragoon.relay.server import ServeError, ServeOptions, check_options, is_loopback, parse_bind


@pytest.mark.parametrize("host", ["127.0.0.1", "::1", "localhost", "127.5.5.5"])
def test_loopback_addresses_need_no_tls(host: str) -> None:
    assert is_loopback(host)
    shown = f"[{host}]" if ":" in host else host
    assert check_options(ServeOptions(bind=f"{shown}:0"))[0] == host


@pytest.mark.parametrize("bind", ["0.0.0.0:8787", "[::]:8787", "192.0.2.7:443", "relay.example:1"])
def test_public_bind_without_tls_is_refused_unless_insecure(bind: str) -> None:
    with pytest.raises(ServeError, match="--insecure"):
        check_options(ServeOptions(bind=bind))
    assert check_options(ServeOptions(bind=bind, insecure=True))[1] == int(bind.rsplit(":", 1)[1])


def test_public_bind_with_tls_is_accepted(tmp_path: Path) -> None:
    options = ServeOptions(bind="0.0.0.0:8443", tls_cert=tmp_path / "c", tls_key=tmp_path / "k")
    assert check_options(options) == ("0.0.0.0", 8443)  # noqa: S104


def test_tls_cert_without_key_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ServeError, match="go together"):
        check_options(ServeOptions(bind="127.0.0.1:0", tls_cert=tmp_path / "c"))


@pytest.mark.parametrize("bind", ["8787", "host:", "host:port"])
def test_malformed_bind_is_refused(bind: str) -> None:
    with pytest.raises(ServeError, match="HOST:PORT"):
        parse_bind(bind)
