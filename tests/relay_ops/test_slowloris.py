"""Connection exhaustion, from the attacker's side: slow-loris floods, trickled heads and
bodies, peers that never read, and more connections than the relay has file descriptors.

Each flood test checks what an operator cares about: ``/healthz`` and a signed pilot
request still answer (the latency is printed, never asserted), and the relay's log
grows by a bounded number of lines rather than a traceback per refused connection.
"""

from __future__ import annotations

import resource
import socket
import ssl
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from tests.relay.sse import EventStream
from tests.relay_ops.attackers import (
    PARTIAL_HEAD,
    LimitedRelay,
    SlowLoris,
    connect_from,
    is_closed_by_peer,
    log_lines,
    raise_own_fd_limit,
    read_until_closed,
    relay_fd_limits,
    timed,
)
from tests.support.relay import PilotSession, RelayProcess, wait_until
from tests.support.tls import self_signed_certificate

FLOOD = 5000
LOG_GROWTH_BOUND = 20  # lines; the unfixed relay wrote hundreds of thousands


def port_of(relay: RelayProcess) -> int:
    return int(relay.url.rsplit(":", 1)[1])


def honest_requests_answer(relay: RelayProcess, pilot: PilotSession, label: str) -> None:
    """/healthz from a fresh client and a signed pilot request on a fresh connection."""
    with timed() as health_time, httpx.Client(base_url=relay.url, timeout=10) as client:
        health = client.get("/healthz")
    pilot.reconnect()
    with timed() as signed_time:
        signed = pilot.get("/v1/workers", timeout=10)
    print(f"\n[{label}] /healthz {health.status_code} in {health_time[0] * 1000:.0f} ms; "
          f"signed GET /v1/workers {signed.status_code} in {signed_time[0] * 1000:.0f} ms")
    assert health.status_code == 200 and health.json() == {"ok": True}
    assert signed.status_code == 200 and "drones" in signed.json()


def trickling(loris: SlowLoris, every: float = 1.0) -> Callable[[], int]:
    """A wait_until condition body that keeps the slow connections trickling meanwhile."""
    last = [time.monotonic()]

    def still_open() -> int:
        if time.monotonic() - last[0] >= every:
            loris.trickle()
            last[0] = time.monotonic()
        return loris.open_count()

    return still_open


# --- floods -----------------------------------------------------------------------------------


def test_relay_answers_while_5000_slow_connections_are_open(tmp_path: Path) -> None:
    limit = raise_own_fd_limit(FLOOD + 1024)
    count = min(FLOOD, limit - 1024)
    if count < 1000:
        pytest.skip(f"this process may open only {limit} files")
    with RelayProcess(tmp_path / "relay", config={"header_timeout": 8}) as relay:
        pilot = relay.pilot("alice")
        before = log_lines(relay)
        with SlowLoris(port_of(relay), count) as loris:
            with timed() as took:
                wait_until(lambda: loris.send_head() >= count * 0.95, timeout=20,
                           message="the flood connected")
            loris.trickle()
            held = loris.open_count()
            print(f"\n{loris.send_head()} of {count} connected in {took[0]:.1f} s, {held} held")
            honest_requests_answer(relay, pilot, f"{held} slow connections open")
            # The header timeout reclaims every one of them although they keep trickling.
            still_open = trickling(loris)
            with timed() as reclaimed:
                wait_until(lambda: still_open() == 0, timeout=30,
                           message="the header timeout closed the slow connections")
            print(f"all closed by the header timeout {reclaimed[0]:.1f} s later")
        assert log_lines(relay) - before <= LOG_GROWTH_BOUND, relay.stderr_text()[-2000:]


def test_flood_past_the_fd_limit_leaves_the_relay_answering(tmp_path: Path) -> None:
    """3,000 slow connections against a relay allowed 1,024 descriptors: the unfixed relay ran
    out of descriptors, stopped answering and logged a traceback per failed accept."""
    raise_own_fd_limit(4096)
    with LimitedRelay(tmp_path / "relay", nofile=(1024, 1024)) as relay:
        pilot = relay.pilot("alice")
        before = log_lines(relay)
        with SlowLoris(port_of(relay), 3000) as loris:
            wait_until(lambda: loris.send_head() >= 2900 and loris.open_count() <= 1024,
                       timeout=20, message="the relay shed what it cannot hold")
            loris.trickle()
            honest_requests_answer(relay, pilot, f"{loris.open_count()} of 3000 slow held")
        grown = log_lines(relay) - before
        assert grown <= LOG_GROWTH_BOUND, relay.stderr_text()[-3000:]


def test_accept_errors_are_logged_at_most_once_a_second(tmp_path: Path) -> None:
    """Descriptors run out for another reason (the limit lowered under the relay): failed
    accepts make a line a second at most, never a traceback each (the unfixed relay wrote
    tens of thousands a second)."""
    raise_own_fd_limit(4096)
    with RelayProcess(tmp_path / "relay") as relay:
        assert relay.process is not None
        pid = relay.process.pid
        soft, hard = relay_fd_limits(pid)
        before = log_lines(relay)
        started = time.monotonic()
        resource.prlimit(pid, resource.RLIMIT_NOFILE, (64, hard))
        try:
            with SlowLoris(port_of(relay), 600) as loris:
                # Three reports: the storm went on across more than two seconds.
                def three_reports() -> bool:
                    loris.send_head()
                    return relay.stderr_text().count("accept failed") >= 3

                wait_until(three_reports, timeout=20, message="accept failures reported")
        finally:
            resource.prlimit(pid, resource.RLIMIT_NOFILE, (soft, hard))
        elapsed = time.monotonic() - started
        grown = log_lines(relay) - before
        text = relay.stderr_text()
        print(f"\n{grown} log lines in {elapsed:.1f} s of failing accepts")
        assert "Traceback" not in text, text[-3000:]
        assert text.count("accept failed") <= 2 * (elapsed + 2), text[-3000:]
        assert grown <= 3 * (elapsed + 2), text[-3000:]
        # Descriptors back: the relay accepts again by itself.
        answer = wait_until(lambda: _healthz_or_none(relay.url), timeout=15)
        assert answer.status_code == 200


def _healthz_or_none(url: str) -> httpx.Response | None:
    try:
        return httpx.get(f"{url}/healthz", timeout=2)
    except httpx.HTTPError:
        return None


def test_fd_soft_limit_is_raised_to_the_hard_limit_at_startup(tmp_path: Path) -> None:
    hard = min(4096, resource.getrlimit(resource.RLIMIT_NOFILE)[1])
    with LimitedRelay(tmp_path / "relay", nofile=(512, hard)) as relay:
        assert relay.process is not None
        assert relay_fd_limits(relay.process.pid) == (hard, hard)


# --- timeouts ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def quick_relay(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RelayProcess]:
    config = {"header_timeout": 1, "keepalive_timeout": 1, "body_timeout": 1,
              "body_min_rate": 64, "write_timeout": 1}
    with RelayProcess(tmp_path_factory.mktemp("quick") / "relay", config=config) as relay:
        yield relay


def test_header_timeout_closes_a_trickling_connection(quick_relay: RelayProcess) -> None:
    sock = connect_from(port_of(quick_relay))
    sock.sendall(PARTIAL_HEAD)
    sock.setblocking(False)

    def closed_while_trickling() -> bool:
        if is_closed_by_peer(sock):
            return True
        sock.send(b"X")  # one byte of a header name at a time
        return False

    with timed() as took:
        wait_until(closed_while_trickling, timeout=15, interval=0.2,
                   message="the trickling connection was closed")
    print(f"\ntrickled head closed after {took[0]:.1f} s")
    assert read_until_closed(sock).startswith(b"HTTP/1.1 408 ")
    sock.close()


def test_a_connection_that_sends_nothing_is_closed(quick_relay: RelayProcess) -> None:
    sock = connect_from(port_of(quick_relay))
    wait_until(lambda: is_closed_by_peer(sock), timeout=15, message="the silent one closed")
    sock.close()


def test_a_trickled_second_request_on_a_kept_alive_connection_is_closed(
    quick_relay: RelayProcess,
) -> None:
    sock = connect_from(port_of(quick_relay))
    sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: relay\r\n\r\n")
    first = sock.recv(65536)
    assert first.startswith(b"HTTP/1.1 200 ")
    sock.sendall(PARTIAL_HEAD)
    sock.setblocking(False)

    def closed_while_trickling() -> bool:
        if is_closed_by_peer(sock):
            return True
        sock.send(b"X")
        return False

    wait_until(closed_while_trickling, timeout=15, interval=0.2,
               message="the second, trickled request was cut off")
    sock.close()


def test_an_idle_kept_alive_connection_is_closed(quick_relay: RelayProcess) -> None:
    sock = connect_from(port_of(quick_relay))
    sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: relay\r\n\r\n")
    assert sock.recv(65536).startswith(b"HTTP/1.1 200 ")
    wait_until(lambda: is_closed_by_peer(sock), timeout=15, message="idle keep-alive closed")
    sock.close()


def test_a_trickled_body_is_cut_off(quick_relay: RelayProcess) -> None:
    sock = connect_from(port_of(quick_relay))
    sock.sendall(b"POST /v1/auth/challenge HTTP/1.1\r\nHost: relay\r\n"
                 b"Content-Type: application/json\r\nContent-Length: 4000\r\n\r\n{")
    sock.setblocking(False)

    def closed_while_trickling() -> bool:
        if is_closed_by_peer(sock):
            return True
        sock.send(b" ")
        return False

    wait_until(closed_while_trickling, timeout=15, interval=0.2,
               message="the trickled body was cut off")
    sock.close()


def test_a_peer_that_reads_no_answer_is_cut_off(quick_relay: RelayProcess) -> None:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect(("127.0.0.1", port_of(quick_relay)))
    request = b"GET /openapi.json HTTP/1.1\r\nHost: relay\r\n\r\n"
    sock.sendall(request * 400)  # pipelined, and not one byte of the answers is read
    wait_until(lambda: is_closed_by_peer(sock), timeout=20,
               message="the relay gave up on a peer that reads nothing")
    sock.close()


def test_a_head_over_max_header_size_is_refused(quick_relay: RelayProcess) -> None:
    """Fast, but endless: a head that never ends is refused at 16 KiB, not buffered."""
    sock = connect_from(port_of(quick_relay))
    sock.sendall(PARTIAL_HEAD + b"X-Pad: " + b"a" * 20_000)
    assert read_until_closed(sock).startswith(b"HTTP/1.1 400 ")
    sock.close()


def test_a_steady_request_is_not_cut_off_by_the_timeouts(quick_relay: RelayProcess) -> None:
    """Timeouts of one second, and a normal exchange of several requests still works."""
    with httpx.Client(base_url=quick_relay.url, timeout=10) as client:
        for _ in range(3):
            assert client.get("/healthz").status_code == 200
        answer = client.post("/v1/auth/challenge", json={"fingerprint": "SHA256:" + "A" * 43})
        assert answer.status_code == 200


# --- caps -------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def capped_relay(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RelayProcess]:
    config = {"trusted_proxies": [], "max_connections_per_peer": 5, "header_timeout": 20}
    with RelayProcess(tmp_path_factory.mktemp("capped") / "relay", config=config) as relay:
        yield relay


def test_per_peer_cap_refuses_quickly(capped_relay: RelayProcess) -> None:
    port = port_of(capped_relay)
    held = [connect_from(port, "127.0.0.3") for _ in range(5)]
    try:
        extra = connect_from(port, "127.0.0.3")
        with timed() as took:
            answer = read_until_closed(extra, timeout=10)
        print(f"\nper-peer refusal answered in {took[0] * 1000:.0f} ms")
        assert answer.startswith(b"HTTP/1.1 503 "), answer
        assert b"connections" in answer
        extra.close()
        # Another address is not affected.
        with httpx.Client(base_url=capped_relay.url, timeout=10,
                          transport=httpx.HTTPTransport(local_address="127.0.0.4")) as other:
            assert other.get("/healthz").status_code == 200
    finally:
        for sock in held:
            sock.close()
    # Their slots are freed as they close.
    with httpx.Client(base_url=capped_relay.url, timeout=10,
                      transport=httpx.HTTPTransport(local_address="127.0.0.3")) as again:
        assert wait_until(lambda: _status(again) == 200, timeout=10)


def _status(client: httpx.Client) -> int | None:
    try:
        return client.get("/healthz").status_code
    except httpx.HTTPError:
        return None


def test_a_spoofed_forwarded_for_does_not_escape_the_per_peer_cap(
    capped_relay: RelayProcess,
) -> None:
    """The cap counts the TCP peer; X-Forwarded-For from an untrusted peer means nothing."""
    port = port_of(capped_relay)
    held = [connect_from(port, "127.0.0.5") for _ in range(5)]
    try:
        extra = connect_from(port, "127.0.0.5")
        extra.sendall(b"GET /healthz HTTP/1.1\r\nHost: relay\r\nX-Forwarded-For: 203.0.113.9"
                      b"\r\n\r\n")
        assert read_until_closed(extra).startswith(b"HTTP/1.1 503 ")
        extra.close()
    finally:
        for sock in held:
            sock.close()


def test_total_cap_sheds_the_oldest_waiting_connection_not_a_busy_one(tmp_path: Path) -> None:
    with RelayProcess(tmp_path / "relay", config={"max_connections": 30}) as relay:
        pilot = relay.pilot("alice")
        # An event stream (busy) opened first: the oldest connection, but not one to shed.
        with EventStream(pilot) as stream, SlowLoris(port_of(relay), 40) as loris:
            wait_until(lambda: loris.send_head() >= 40 and loris.open_count() <= 29,
                       timeout=15, message="the relay shed slow connections over its cap")
            assert is_closed_by_peer(loris.sockets[0]), "the oldest waiting one goes first"
            honest_requests_answer(relay, pilot, "total cap 30")
            task = pilot.submit("echo still streaming", labels=["nowhere"])
            stream.next_matching("task", lambda t: t["id"] == task["id"])
            assert not stream.ended.is_set()


# --- TLS served by the relay itself ---------------------------------------------------------


@pytest.fixture(scope="module")
def tls_relay(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RelayProcess]:
    root = tmp_path_factory.mktemp("tls")
    cert, key = self_signed_certificate(root)
    with RelayProcess(root / "relay", config={"header_timeout": 1},
                      extra_args=["--tls-cert", str(cert), "--tls-key", str(key)]) as relay:
        yield relay


def test_a_tls_handshake_that_never_finishes_is_closed(tls_relay: RelayProcess) -> None:
    """asyncio's own handshake deadline is 60 s; the relay's is its header timeout."""
    sock = connect_from(port_of(tls_relay))
    sock.sendall(b"\x16\x03\x01")  # the first bytes of a ClientHello, and no more
    with timed() as took:
        wait_until(lambda: is_closed_by_peer(sock), timeout=20,
                   message="the stalled handshake was closed")
    print(f"\nstalled TLS handshake closed after {took[0]:.1f} s")
    sock.close()


def test_a_slow_head_over_tls_is_closed(tls_relay: RelayProcess) -> None:
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    raw = connect_from(port_of(tls_relay))
    sock = context.wrap_socket(raw, server_hostname="127.0.0.1")
    sock.sendall(PARTIAL_HEAD)
    assert read_until_closed(sock, timeout=15).startswith(b"HTTP/1.1 408 ")
    sock.close()
