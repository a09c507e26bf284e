"""The drone's reachability log: one line per change, and a TLS failure named as one."""

from __future__ import annotations

import logging

import pytest
from dragoon.drone.client import Reachability


def test_one_line_per_change_and_a_tls_failure_after_an_outage_gets_its_own(
        caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="dragoon.drone")
    link = Reachability()
    for _ in range(3):
        link.failed("ConnectError: [Errno 111] Connection refused")
    for _ in range(3):  # the relay is back, with a certificate the drone does not trust
        link.failed("ConnectError: [SSL: CERTIFICATE_VERIFY_FAILED]", tls=True)
    link.ok()
    link.ok()
    lines = [(r.levelname, r.getMessage()) for r in caplog.records]
    assert [level for level, _ in lines] == ["WARNING", "ERROR", "INFO"]
    assert lines[0][1].startswith("relay unreachable (ConnectError: [Errno 111]")
    assert lines[1][1].startswith("relay unreachable: TLS failure (ConnectError: [SSL: ")
    assert "ca_cert" in lines[1][1] and "retrying" in lines[1][1]
    assert lines[2][1] == "relay reachable"
