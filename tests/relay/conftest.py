"""Relay tests run against real ``dragoon relay serve`` subprocesses (tests/support/relay.py)."""

from tests.support.relay_fixtures import pilot, relay

__all__ = ["pilot", "relay"]
