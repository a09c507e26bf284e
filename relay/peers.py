"""Who is on the other end: the key a peer is counted under, and trusted reverse proxies.

Limits per peer count by *address*, and an address is only worth what it costs
an attacker: an IPv4 address each, but an IPv6 host is usually handed a whole
/64, so IPv6 peers are counted by their /64. A reverse proxy on the same host
carries every client through one address; it is exempt from per-address caps,
and the address it names in ``X-Forwarded-For`` is believed from it alone.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Mapping
from typing import Any

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


def parse_address(text: str) -> IPAddress | None:
    try:
        address = ipaddress.ip_address(text.strip().strip("[]"))
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def peer_key(host: str) -> str:
    """What a per-peer limit counts under: the IPv4 address, or the IPv6 /64."""
    address = parse_address(host)
    if address is None:
        return host  # a unix socket or a name: counted as given
    if isinstance(address, ipaddress.IPv6Address):
        return str(ipaddress.IPv6Network((address, 64), strict=False))
    return str(address)


class TrustedProxies:
    """The networks whose connections are reverse proxies, from ``trusted_proxies``."""

    def __init__(self, networks: Iterable[str]) -> None:
        parsed: list[IPNetwork] = []
        for text in networks:
            try:
                parsed.append(ipaddress.ip_network(str(text).strip(), strict=False))
            except ValueError as exc:
                raise ValueError(f"trusted_proxies: {text!r} is not an address or network") from exc
        self.networks = tuple(parsed)

    def __contains__(self, host: object) -> bool:
        if not isinstance(host, str) or not self.networks:
            return False
        address = parse_address(host)
        return address is not None and any(address in net for net in self.networks)

    def client_of(self, peer: str, headers: Mapping[str, str]) -> str:
        """The client behind ``peer``: the last X-Forwarded-For hop not itself a proxy of ours.

        From any other peer the header is the client's own words and is ignored.
        """
        if peer not in self:
            return peer
        hops = [hop.strip() for hop in headers.get("x-forwarded-for", "").split(",")]
        for hop in reversed(hops):
            if not hop:
                continue
            if parse_address(hop) is None:
                return peer  # a malformed chain: count the proxy, do not guess
            if hop not in self:
                return hop
        return peer


def scope_peer(scope: Mapping[str, Any]) -> str:
    """The TCP peer's host of an ASGI scope ("" when the server does not say)."""
    client = scope.get("client")
    return str(client[0]) if client else ""
