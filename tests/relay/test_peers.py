"""relay/peers.py: what a per-peer limit counts under, and whose X-Forwarded-For counts."""

from __future__ import annotations

import pytest
from dragoon.relay.peers import TrustedProxies, peer_key


def test_ipv4_peers_count_by_address() -> None:
    assert peer_key("203.0.113.7") == "203.0.113.7"
    assert peer_key("::ffff:203.0.113.7") == "203.0.113.7"


def test_ipv6_peers_count_by_their_64() -> None:
    assert peer_key("2001:db8:1:2:aaaa::1") == peer_key("2001:db8:1:2:bbbb::2")
    assert peer_key("2001:db8:1:2::1") != peer_key("2001:db8:1:3::1")


def test_forwarded_for_is_believed_from_a_trusted_proxy_only() -> None:
    trusted = TrustedProxies(["127.0.0.0/8", "::1"])
    headers = {"x-forwarded-for": "198.51.100.4"}
    assert trusted.client_of("127.0.0.1", headers) == "198.51.100.4"
    assert trusted.client_of("203.0.113.9", headers) == "203.0.113.9"
    assert TrustedProxies([]).client_of("127.0.0.1", headers) == "127.0.0.1"


def test_the_client_is_the_last_hop_that_is_not_a_proxy_of_ours() -> None:
    trusted = TrustedProxies(["127.0.0.1", "10.0.0.0/8"])
    # The client may prepend anything it likes; only what our proxies appended counts.
    headers = {"x-forwarded-for": "1.2.3.4, 198.51.100.4, 10.0.0.2"}
    assert trusted.client_of("127.0.0.1", headers) == "198.51.100.4"
    assert trusted.client_of("127.0.0.1", {}) == "127.0.0.1"
    assert trusted.client_of("127.0.0.1", {"x-forwarded-for": "junk"}) == "127.0.0.1"


def test_a_bad_trusted_proxy_entry_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match="not an address or network"):
        TrustedProxies(["127.0.0.1", "localhost"])
