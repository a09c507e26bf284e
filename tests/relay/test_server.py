"""The runner's refusals, decided before anything binds."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from dragoon.relay.config import RelayConfig
from dragoon.relay.server import (
    ServeError,
    ServeOptions,
    check_options,
    connection_limits,
    is_loopback,
    parse_bind,
)


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


@pytest.mark.parametrize(("setting", "value", "says"), [
    ("header_timeout", 0, "header_timeout in relay.toml must be a positive number of seconds"),
    ("session_recheck", "2", "session_recheck in relay.toml must be a positive number"),
    ("max_connections_per_peer", -1, "max_connections_per_peer in relay.toml must be a whole"),
    ("open_rate_total", -5, "open_rate_total in relay.toml must be a number"),
    ("trusted_proxies", "127.0.0.1", "trusted_proxies in relay.toml must be a list"),
    ("trusted_proxies", ["localhost"], "'localhost' is not an address or network"),
])
def test_bad_connection_settings_are_refused_in_one_line(
    tmp_path: Path, setting: str, value: object, says: str,
) -> None:
    config = RelayConfig(data_dir=tmp_path)
    setattr(config, setting, value)
    with pytest.raises(ServeError, match=re.escape(says)):
        connection_limits(config, 4096)


def test_default_connection_settings_give_a_cap_under_the_fd_limit(tmp_path: Path) -> None:
    limits = connection_limits(RelayConfig(data_dir=tmp_path), 4096)
    assert limits.max_connections == 3584
    assert limits.max_per_peer == 128
    assert "127.0.0.1" in limits.trusted and "203.0.113.1" not in limits.trusted
