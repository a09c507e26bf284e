"""What an idle drone holds in memory (docs/drone.md, "Memory"): no task path until a task
arrives, no cryptography (ed25519 on libsodium), no CA bundle for a plain-HTTP relay, one
TLS context for an HTTPS one, host metrics read from /proc; and HTTP-proxy support kept
through all of it."""

from __future__ import annotations

import asyncio
import os
import ssl
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
from dragoon.drone.client import RelayLink
from dragoon.drone.metrics import Metrics, ProcHost
from dragoon.shared.h11transport import H11Transport
from dragoon.shared.keys import PrivateKey
from dragoon.shared.signers import KeyFileSigner

from tests.drone.conftest import Fleet
from tests.support.relay import wait_until
from tests.support.tls import count_default_contexts

LINUX = os.path.exists("/proc/self/maps")
# Extension modules only the task path loads: psutil (drone/spawn.py), ctypes
# (drone/release.py), decimal (fractions, for durations and sizes in shared/spec.py).
TASK_PATH_EXTENSIONS = ("_psutil_linux", "/_ctypes.", "/_decimal.")
# Never loaded by a drone with its own ed25519 key, idle or running a task: its requests'
# signatures and the checks of the relay's go through libsodium (shared/ed25519.py).
# cryptography's one extension (OpenSSL linked in) lives under cryptography/, bcrypt's
# under bcrypt/; libsodium is nacl/_sodium.
NEVER_MAPPED = ("/cryptography/", "/bcrypt/")
LIBSODIUM = "/nacl/_sodium"


def mapped(pid: int) -> str:
    return Path(f"/proc/{pid}/maps").read_text()


def drone_view(fleet: Fleet, name: str) -> dict[str, Any]:
    drones = fleet.pilot.get("/v1/workers").json()["drones"]
    return next(d for d in drones if d["name"] == fleet.name(name))


@pytest.mark.skipif(not LINUX, reason="reads /proc/PID/maps")
def test_an_idle_drone_maps_no_task_path_extension_until_a_task_arrives(fleet: Fleet) -> None:
    drone = fleet.drone("idle")
    assert drone.process is not None
    wait_until(lambda: drone_view(fleet, "idle").get("metrics"), message="a heartbeat")
    idle = mapped(drone.process.pid)
    assert [name for name in TASK_PATH_EXTENSIONS if name in idle] == []
    assert [name for name in NEVER_MAPPED if name in idle] == []
    assert LIBSODIUM in idle  # it signed its polls: the signing library is the one mapped

    task_id = fleet.submit("echo hi", drone="idle")
    assert fleet.wait_state(task_id)["state"] == "succeeded"
    assert fleet.output(task_id) == b"hi\n"
    after = mapped(drone.process.pid)
    assert "_psutil_linux" in after and "/_ctypes." in after  # loaded by the task, as meant
    # The task's relay signature was checked (it ran) without cryptography as well.
    assert [name for name in NEVER_MAPPED if name in after] == []


def test_a_plain_http_link_loads_no_ca_bundle_and_still_verifies(
        monkeypatch: pytest.MonkeyPatch) -> None:
    loads = count_default_contexts(monkeypatch)
    link = RelayLink("http://127.0.0.1:9/", signer())
    assert loads == []
    context = tls_contexts(link)
    assert len(context) == 1
    (only,) = context
    assert only.cert_store_stats()["x509_ca"] == 0
    assert only.verify_mode == ssl.CERT_REQUIRED and only.check_hostname


def test_an_https_link_loads_the_ca_bundle_once_whatever_the_proxy_variables(
        monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY"):
        monkeypatch.setenv(name, "http://127.0.0.1:9")
    monkeypatch.delenv("NO_PROXY", raising=False)
    monkeypatch.delenv("no_proxy", raising=False)
    loads = count_default_contexts(monkeypatch)
    link = RelayLink("https://relay.example/", signer())
    assert len(loads) == 1
    assert len(tls_contexts(link)) == 1  # the one context, shared by every proxy mount


def test_a_ca_cert_context_is_used_as_given() -> None:
    given = ssl.create_default_context()
    link = RelayLink("https://relay.example/", signer(), verify=given)
    assert tls_contexts(link) == {given}


def test_host_metrics_from_proc_are_the_figures_psutil_reads() -> None:
    psutil = pytest.importorskip("psutil")
    if not os.path.exists("/proc/stat"):
        pytest.skip("Linux only")
    host = ProcHost()
    total, used = host.memory()
    memory = psutil.virtual_memory()
    assert total == memory.total
    assert 0 < used < total
    assert host.boot_time() == psutil.boot_time()
    host.cpu_percent()
    assert 0.0 <= host.cpu_percent() <= 100.0


def test_metrics_report_every_field_without_psutil_on_linux(tmp_path: Path) -> None:
    if not os.path.exists("/proc/stat"):
        pytest.skip("Linux only")
    metrics = asyncio.run(Metrics(tmp_path).collect())
    disk = os.statvfs(tmp_path)
    assert metrics["disk_total"] == disk.f_blocks * disk.f_frsize
    for key in ("cpu_percent", "cpu_count", "load", "mem_total", "mem_used", "disk_free",
                "uptime"):
        assert key in metrics, key
    assert isinstance(Metrics(tmp_path).host, ProcHost)


def test_a_drone_behind_an_http_proxy_polls_and_runs_through_it(fleet: Fleet) -> None:
    with ForwardProxy() as proxy:
        drone = fleet.drone("proxied", start=False)
        drone.start(env={"HTTP_PROXY": proxy.url, "NO_PROXY": "", "no_proxy": ""})
        task_id = fleet.submit("echo via-proxy", drone="proxied")
        assert fleet.wait_state(task_id)["state"] == "succeeded"
        assert fleet.output(task_id) == b"via-proxy\n"
        assert any(path.endswith("/v1/worker/poll") for path in proxy.seen)
        assert any(path.endswith("/v1/worker/finish") for path in proxy.seen)


# ----- helpers -----


def signer() -> KeyFileSigner:
    return KeyFileSigner(PrivateKey.generate_ed25519())



def tls_contexts(link: RelayLink) -> set[ssl.SSLContext]:
    """The TLS contexts of the link's transports (httpx and httpcore internals: a test-only
    look, to see that the proxy mounts share one)."""
    client: httpx.AsyncClient = link._http
    transports = [client._transport, *(t for t in client._mounts.values() if t is not None)]
    return {t.ssl_context if isinstance(t, H11Transport)
            else t._pool._ssl_context for t in transports}  # type: ignore[attr-defined]


class ForwardProxy:
    """A plain HTTP forward proxy (absolute-form requests), recording each request's URL."""

    def __init__(self) -> None:
        self.seen: list[str] = []
        proxy = self
        upstream = httpx.Client(timeout=60.0, trust_env=False)

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:
                return

            def forward(self) -> None:
                proxy.seen.append(self.path.split("?", 1)[0])
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                headers = {k: v for k, v in self.headers.items()
                           if k.lower() not in ("host", "content-length", "connection",
                                                "proxy-connection", "transfer-encoding")}
                try:
                    answer = upstream.request(self.command, self.path, content=body,
                                              headers=headers)
                except httpx.HTTPError:
                    self.send_error(502)
                    return
                self.send_response(answer.status_code)
                for key, value in answer.headers.items():
                    if key.lower() not in ("content-length", "transfer-encoding", "connection",
                                           "content-encoding"):
                        self.send_header(key, value)
                self.send_header("Content-Length", str(len(answer.content)))
                self.end_headers()
                self.wfile.write(answer.content)

            do_GET = do_POST = do_PUT = do_DELETE = forward

        class Server(ThreadingHTTPServer):
            daemon_threads = True

            def handle_error(self, request: Any, client_address: Any) -> None:
                """Connections cut at teardown (drone stopped mid-poll) are expected."""

        self._server = Server(("127.0.0.1", 0), Handler)
        self._upstream = upstream
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def __enter__(self) -> ForwardProxy:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._upstream.close()


@pytest.fixture(autouse=True)
def _no_proxy_env_leaks(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """The tests' own clients talk to the relay directly."""
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy",
                 "all_proxy"):
        monkeypatch.delenv(name, raising=False)
    yield

