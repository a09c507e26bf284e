"""The pilot's client builds at most one TLS context: none that loads a CA bundle for a plain
`http://` relay, and one (not one per proxy variable) for an `https://` relay."""

from __future__ import annotations

import pytest
from dragoon.cockpit.client import RelayClient
from dragoon.shared.keys import PrivateKey
from dragoon.shared.signers import KeyFileSigner

from tests.support.tls import count_default_contexts

PROXY_VARIABLES = ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY")



@pytest.fixture
def proxies(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in PROXY_VARIABLES:
        monkeypatch.setenv(name, "http://127.0.0.1:9")
    monkeypatch.delenv("NO_PROXY", raising=False)
    monkeypatch.delenv("no_proxy", raising=False)


def signer() -> KeyFileSigner:
    return KeyFileSigner(PrivateKey.generate_ed25519())


@pytest.mark.usefixtures("proxies")
def test_a_plain_http_relay_loads_no_ca_bundle(monkeypatch: pytest.MonkeyPatch) -> None:
    loads = count_default_contexts(monkeypatch)
    RelayClient("http://127.0.0.1:9", signer=signer())
    assert loads == []


@pytest.mark.usefixtures("proxies")
def test_an_https_relay_loads_the_ca_bundle_once_whatever_the_proxy_variables(
        monkeypatch: pytest.MonkeyPatch) -> None:
    loads = count_default_contexts(monkeypatch)
    RelayClient("https://relay.example", signer=signer())
    assert len(loads) == 1
