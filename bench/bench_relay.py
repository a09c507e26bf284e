"""Relay benchmarks on loopback: dispatch latency, signed-request cost, 1,000 idle drones, output.

Run from the checkout: ``.venv/bin/python bench/bench_relay.py`` (about two
minutes; ``--quick`` for a smaller, faster pass). Every part starts its own
real ``dragoon relay serve`` subprocess in a temporary directory, drives it
over loopback with a small raw HTTP/1.1 client (so the client costs little
next to the relay on a shared machine), prints a table, and stops by itself.

What is measured, and how:

- dispatch: a drone holds a long-poll; the pilot submits a task for it; the
  time from writing the submit request to the drone's poll answer carrying the
  task. p50/p99 over N tasks. Each poll is given 20 ms to park before the
  submit; the relay's own view (its dispatch histogram) is printed beside.
- signed GET /v1/tasks/{id}: requests/s of one relay process over HTTP with
  16 keep-alive connections, requests signed beforehand; then the same route
  in-process (ASGI calls, no HTTP) with and without the RE-V1 middleware. The
  unsigned app is built here by swapping the middleware for one that sets the
  pilot directly: no flag in the relay can switch verification off.
- 1,000 drones each holding a 25 s long-poll on one relay: its resident memory
  and its CPU use over a window that includes a full re-poll cycle.
- output: ``POST /v1/worker/log`` with 64 KiB chunks in offset order, one
  stream, one request at a time; MB/s (1 MB = 10^6 bytes). Then shaped as a
  drone ships (drone/shipper.py): 4 tasks' streams side by side, each with 4
  chunks in flight, with 64 KiB chunks and with the drone's own 256 KiB.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, MutableMapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from dragoon.shared import orders  # noqa: E402
from dragoon.shared.keys import PrivateKey  # noqa: E402
from dragoon.shared.request_auth import sign_request  # noqa: E402
from dragoon.shared.signers import KeyFileSigner, Signer  # noqa: E402

from tests.support.relay import PilotSession, RelayProcess  # noqa: E402

CHUNK = 64 * 1024
DRONE_TASKS = 4  # streams shipping at once in the drone-shaped append bench
DRONE_WINDOW = 4  # chunks in flight per stream: drone/shipper.py's WINDOW


# --- a raw HTTP/1.1 keep-alive client ---------------------------------------------------------


@dataclass
class Answer:
    status: int
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


class Connection:
    """One keep-alive connection; one request at a time. Cheaper per request than httpx."""

    def __init__(self, url: str) -> None:
        parts = urlsplit(url)
        self.host = parts.hostname or "127.0.0.1"
        self.port = parts.port or 80
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def open(self) -> Connection:
        self.reader, self.writer = await asyncio.open_connection(self.host, self.port)
        return self

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()

    def send(self, method: str, target: str, headers: dict[str, str], body: bytes = b"") -> None:
        assert self.writer is not None
        head = [f"{method} {target} HTTP/1.1", f"Host: {self.host}:{self.port}",
                f"Content-Length: {len(body)}"]
        head += [f"{name}: {value}" for name, value in headers.items()]
        self.writer.write(("\r\n".join(head) + "\r\n\r\n").encode("latin-1") + body)

    async def receive(self) -> Answer:
        assert self.reader is not None
        head = await self.reader.readuntil(b"\r\n\r\n")
        status = int(head[9:12])
        fields = {}
        for line in head.decode("latin-1").split("\r\n")[1:]:
            name, _, value = line.partition(":")
            fields[name.strip().lower()] = value.strip()
        if fields.get("transfer-encoding") == "chunked":
            parts = []
            while True:
                size = int((await self.reader.readuntil(b"\r\n")).strip(), 16)
                data = await self.reader.readexactly(size + 2)
                if size == 0:
                    break
                parts.append(data[:-2])
            return Answer(status, b"".join(parts))
        return Answer(status, await self.reader.readexactly(int(fields.get("content-length", 0))))

    async def request(self, method: str, target: str, headers: dict[str, str],
                      body: bytes = b"") -> Answer:
        self.send(method, target, headers, body)
        return await self.receive()


def signed(signer: Signer, method: str, path: str, query: str = "", body: bytes = b"",
           token: str | None = None, not_before: int = 0) -> dict[str, str]:
    """RE-V1 headers; ``not_before`` is a relay's replay floor, as a client learns it after a
    restart (a relay started this second refuses what was signed before it)."""
    timestamp = max(int(time.time()), not_before)
    headers = sign_request(signer, method=method, path=path, query=query, body=body, token=token,
                           timestamp=timestamp)
    if body:
        headers["Content-Type"] = "application/json"
    return headers


def target(path: str, query: str) -> str:
    return f"{path}?{query}" if query else path


async def enroll_drone(url: str, pilot: PilotSession, name: str, signer: Signer,
                       conn: Connection, *, slots: int = 1) -> None:
    """Mint a join token through the API and redeem it: no CLI subprocess per drone."""
    body = json.dumps({"name": name, "labels": [], "ttl": 3600}).encode()
    minted = await conn.request("POST", "/v1/workers",
                                signed(pilot.signer, "POST", "/v1/workers", "", body,
                                       pilot.token), body)
    if minted.status != 200:
        raise RuntimeError(f"mint {name}: {minted.status} {minted.body!r}")
    from dragoon.shared.enrollment import JoinToken

    token = JoinToken.decode(minted.json()["token"])
    init = json.dumps({"name": name, "secret": token.secret,
                       "public_key": signer.public_key.openssh(), "labels": [], "slots": slots,
                       "hostname": "bench", "version": "bench"}).encode()
    answer = await conn.request("POST", "/v1/worker/init",
                                {"Content-Type": "application/json"}, init)
    if answer.status != 200:
        raise RuntimeError(f"init {name}: {answer.status} {answer.body!r}")


def new_signer() -> KeyFileSigner:
    return KeyFileSigner(PrivateKey.generate_ed25519("bench"))


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(fraction * (len(ordered) - 1)))]


def relay_dispatch_mean(url: str) -> float | None:
    import httpx

    text = httpx.get(f"{url}/metrics").text
    values = {}
    for line in text.splitlines():
        if line.startswith("dragoon_relay_dispatch_latency_seconds_"):
            name, _, value = line.partition(" ")
            values[name.rsplit("_", 1)[1]] = float(value)
    return values["sum"] / values["count"] if values.get("count") else None


# --- 1. dispatch latency ----------------------------------------------------------------------


def task_body(pilot: PilotSession, drone: str, command: str) -> bytes:
    """A submit body sealed (shared/sealed_task.py) with the pilot's signed order, as the
    client makes them (tests/support/relay.py ``PilotSession.seal``)."""
    sealed = pilot.seal({"drone": drone, "spec": {"command": command}})
    return json.dumps({**sealed.body,
                       **orders.sign_order(pilot.signer, sealed.order()).wire()}).encode()


async def _dispatch(url: str, pilot: PilotSession, count: int) -> list[float]:
    drone = new_signer()
    setup = await Connection(url).open()
    await enroll_drone(url, pilot, "bench-dispatch", drone, setup)
    poller = await Connection(url).open()
    submitter = await Connection(url).open()
    latencies: list[float] = []
    for _ in range(count):
        submit_body = task_body(pilot, "bench-dispatch", "true")  # signed before the clock
        poll = json.dumps({"wait": 25, "running": []}).encode()
        poller.send("POST", "/v1/worker/poll", signed(drone, "POST", "/v1/worker/poll", "", poll),
                    poll)
        await asyncio.sleep(0.02)  # let the poll park on the relay: the case being measured
        headers = signed(pilot.signer, "POST", "/v1/tasks", "", submit_body, pilot.token)
        started = time.perf_counter()
        submitter.send("POST", "/v1/tasks", headers, submit_body)
        answer = await poller.receive()
        latencies.append(time.perf_counter() - started)
        created = await submitter.receive()
        tasks = answer.json()["tasks"]
        if created.status != 201 or [t["id"] for t in tasks] != [created.json()["id"]]:
            raise RuntimeError(f"dispatch went wrong: {created.status} {answer.body!r}")
        finish = json.dumps({"task": tasks[0]["id"], "state": "succeeded", "exit_code": 0,
                             "stdout_size": 0, "stderr_size": 0}).encode()
        done = await setup.request("POST", "/v1/worker/finish",
                                   signed(drone, "POST", "/v1/worker/finish", "", finish), finish)
        if done.status != 200:
            raise RuntimeError(f"finish: {done.status} {done.body!r}")
    for conn in (setup, poller, submitter):
        conn.close()
    return latencies


def bench_dispatch(work: Path, count: int) -> list[tuple[str, str, str]]:
    with RelayProcess(work / "dispatch") as relay:
        pilot = relay.pilot("bench")
        latencies = asyncio.run(_dispatch(relay.url, pilot, count))
        relay_mean = relay_dispatch_mean(relay.url)
    ms = [x * 1000 for x in latencies]
    rows = [
        (f"dispatch latency p50 ({count} tasks)", f"{percentile(ms, 0.5):.2f} ms", "<= 5 ms"),
        (f"dispatch latency p99 ({count} tasks)", f"{percentile(ms, 0.99):.2f} ms", ""),
    ]
    if relay_mean is not None:
        rows.append(("dispatch, relay's own view (mean)", f"{relay_mean * 1000:.2f} ms", ""))
    return rows


# --- 2. signed request throughput -------------------------------------------------------------


async def _http_throughput(url: str, pilot: PilotSession, task_id: str, total: int,
                           connections: int) -> float:
    path = f"/v1/tasks/{task_id}"
    batches = [[signed(pilot.signer, "GET", path, token=pilot.token)
                for _ in range(total // connections)] for _ in range(connections)]
    conns = [await Connection(url).open() for _ in range(connections)]

    async def run(conn: Connection, batch: list[dict[str, str]]) -> None:
        for headers in batch:
            answer = await conn.request("GET", path, headers)
            if answer.status != 200:
                raise RuntimeError(f"GET {path}: {answer.status} {answer.body!r}")

    started = time.perf_counter()
    await asyncio.gather(*(run(c, b) for c, b in zip(conns, batches, strict=True)))
    elapsed = time.perf_counter() - started
    for conn in conns:
        conn.close()
    return sum(map(len, batches)) / elapsed


Scope = MutableMapping[str, Any]
ASGIApp = Callable[[Scope, Callable[[], Awaitable[Any]], Callable[[Any], Awaitable[None]]],
                   Awaitable[None]]


class _PilotWithoutSignature:
    """Bench-only stand-in for the RE-V1 middleware: it sets the pilot and checks nothing."""

    def __init__(self, app: ASGIApp, principal: Any) -> None:
        self.app = app
        self.principal = principal

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        from dragoon.relay.auth import PRINCIPAL_KEY

        scope[PRINCIPAL_KEY] = self.principal
        await self.app(scope, receive, send)


async def _asgi_throughput(app: ASGIApp, path: str, headers: list[list[tuple[bytes, bytes]]],
                           concurrency: int) -> float:
    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def one(request_headers: list[tuple[bytes, bytes]]) -> None:
        status = 0

        async def send(message: dict[str, Any]) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]

        scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1",
                 "method": "GET", "scheme": "http", "path": path, "raw_path": path.encode(),
                 "root_path": "", "query_string": b"", "headers": request_headers,
                 "client": ("127.0.0.1", 50000), "server": ("127.0.0.1", 8787)}
        await app(scope, receive, send)
        if status != 200:
            raise RuntimeError(f"in-process GET {path}: {status}")

    async def worker(batch: list[list[tuple[bytes, bytes]]]) -> None:
        for request_headers in batch:
            await one(request_headers)

    batches = [headers[i::concurrency] for i in range(concurrency)]
    started = time.perf_counter()
    await asyncio.gather(*(worker(b) for b in batches))
    return len(headers) / (time.perf_counter() - started)


def _in_process(data_dir: Path, pilot: PilotSession, task_id: str, total: int) -> tuple[float,
                                                                                      float]:
    from dragoon.relay.app import create_app
    from dragoon.relay.auth import PilotPrincipal, SignedRequests, token_hash
    from dragoon.relay.config import RelayConfig
    from starlette.middleware import Middleware

    path = f"/v1/tasks/{task_id}"
    assert pilot.token is not None
    principal = PilotPrincipal("bench", pilot.signer.fingerprint, token_hash(pilot.token))
    signed_app = create_app(RelayConfig.load(data_dir))
    bare_app = create_app(RelayConfig.load(data_dir))
    bare_app.user_middleware = [
        Middleware(_PilotWithoutSignature, principal=principal)
        if m.cls is SignedRequests else m for m in bare_app.user_middleware
    ]

    def raw(headers: dict[str, str]) -> list[tuple[bytes, bytes]]:
        return [(k.lower().encode(), v.encode()) for k, v in headers.items()]

    plain_headers = [raw({"Authorization": f"Bearer {pilot.token}"}) for _ in range(total)]
    with_sig = without = 0.0
    try:
        # Best of three rounds, alternating, to damp the noise of a shared machine.
        for _ in range(3):
            floor = signed_app.state.relay.replay.floor
            signed_headers = [raw(signed(pilot.signer, "GET", path, token=pilot.token,
                                         not_before=floor)) for _ in range(total)]
            with_sig = max(with_sig,
                           asyncio.run(_asgi_throughput(signed_app, path, signed_headers, 16)))
            without = max(without,
                          asyncio.run(_asgi_throughput(bare_app, path, plain_headers, 16)))
    finally:
        signed_app.state.relay.close()
        bare_app.state.relay.close()
    return with_sig, without


def bench_signed(work: Path, total: int) -> list[tuple[str, str, str]]:
    with RelayProcess(work / "signed") as relay:
        pilot = relay.pilot("bench")
        relay.drone("bench-1")
        task_id = pilot.submit("true", drone="bench-1")["id"]
        http_rps = asyncio.run(_http_throughput(relay.url, pilot, task_id, total, 16))
    # In-process after the subprocess stopped, on the same data dir: nothing else uses it.
    in_signed, in_bare = _in_process(relay.data_dir, pilot, task_id, total)
    cost_us = (1 / in_signed - 1 / in_bare) * 1e6
    return [
        ("signed GET /v1/tasks/{id}, HTTP, 1 relay process", f"{http_rps:,.0f} req/s", ""),
        ("same, in-process ASGI, signed", f"{in_signed:,.0f} req/s", ""),
        ("same, in-process ASGI, no signature check", f"{in_bare:,.0f} req/s", ""),
        ("signed / unsigned throughput", f"{in_signed / in_bare:.2f}", ""),
        ("RE-V1 check per request (verify + nonce)", f"{cost_us:,.0f} us", ""),
    ]


# --- 3. 1,000 idle long-polling drones --------------------------------------------------------


def _proc_stat(pid: int) -> tuple[int, float]:
    """(resident bytes, CPU seconds) of a process, from /proc."""
    rss = 0
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            rss = int(line.split()[1]) * 1024
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    ticks = os.sysconf("SC_CLK_TCK")
    return rss, (int(fields[11]) + int(fields[12])) / ticks


async def _idle_drones(url: str, pilot: PilotSession, count: int, pid: int,
                       window: float) -> tuple[int, float, int, float]:
    signers = [new_signer() for _ in range(count)]
    setup = [await Connection(url).open() for _ in range(16)]

    async def enroll_range(conn: Connection, indices: range) -> None:
        for i in indices:
            await enroll_drone(url, pilot, f"idle-{i:04d}", signers[i], conn)

    await asyncio.gather(*(enroll_range(c, range(k, count, len(setup)))
                           for k, c in enumerate(setup)))
    for conn in setup:
        conn.close()
    rss_before, _ = _proc_stat(pid)
    stop = asyncio.Event()

    async def drone_loop(signer: Signer) -> None:
        conn = await Connection(url).open()
        try:
            while not stop.is_set():
                body = json.dumps({"wait": 25, "running": []}).encode()
                conn.send("POST", "/v1/worker/poll",
                          signed(signer, "POST", "/v1/worker/poll", "", body), body)
                receive = asyncio.ensure_future(conn.receive())
                halt = asyncio.ensure_future(stop.wait())
                await asyncio.wait({receive, halt}, return_when=asyncio.FIRST_COMPLETED)
                halt.cancel()
                if not receive.done():
                    receive.cancel()
                    return
                if receive.result().status != 200:
                    raise RuntimeError(f"poll: {receive.result().status}")
        finally:
            conn.close()

    loops = [asyncio.create_task(drone_loop(s)) for s in signers]
    online = 0
    deadline = time.monotonic() + 120
    import httpx

    async with httpx.AsyncClient() as http:
        while online < count and time.monotonic() < deadline:
            await asyncio.sleep(0.5)
            text = (await http.get(f"{url}/metrics")).text
            for line in text.splitlines():
                if line.startswith('dragoon_relay_drones{state="online"}'):
                    online = int(float(line.split()[1]))
    rss_start, cpu_start = _proc_stat(pid)
    clock = time.monotonic()
    await asyncio.sleep(window)
    rss_end, cpu_end = _proc_stat(pid)
    cpu_share = (cpu_end - cpu_start) / (time.monotonic() - clock)
    stop.set()
    await asyncio.gather(*loops, return_exceptions=True)
    return max(rss_start, rss_end), cpu_share, online, rss_before


def bench_idle(work: Path, count: int, window: float) -> list[tuple[str, str, str]]:
    # A thousand drone inits in seconds from one address is the bench, not traffic: no limits.
    config = {"offline_after": 300, "open_burst_per_peer": 0, "open_burst_total": 0}
    with RelayProcess(work / "idle", config=config) as relay:
        pilot = relay.pilot("bench")
        assert relay.process is not None
        rss, cpu, online, rss_before = asyncio.run(
            _idle_drones(relay.url, pilot, count, relay.process.pid, window))
    return [
        (f"{online} drones long-polling: relay RSS", f"{rss / 2**20:.0f} MiB", "<= 250 MB"),
        ("  the same relay before the polls", f"{rss_before / 2**20:.0f} MiB", ""),
        (f"  relay CPU while idle ({window:.0f} s window)", f"{cpu * 100:.1f} % of a core", ""),
    ]


# --- 4. output append throughput --------------------------------------------------------------


async def _append(url: str, pilot: PilotSession, megabytes: int, chunk: int) -> float:
    drone = new_signer()
    name = f"bench-output-{chunk // 1024}k"
    conn = await Connection(url).open()
    await enroll_drone(url, pilot, name, drone, conn)
    body = task_body(pilot, name, "yes")
    task = (await conn.request("POST", "/v1/tasks",
                               signed(pilot.signer, "POST", "/v1/tasks", "", body, pilot.token),
                               body)).json()["id"]
    poll = json.dumps({"wait": 5, "running": []}).encode()
    handed = await conn.request("POST", "/v1/worker/poll",
                                signed(drone, "POST", "/v1/worker/poll", "", poll), poll)
    assert [t["id"] for t in handed.json()["tasks"]] == [task], handed.body
    chunks = megabytes * 10**6 // chunk
    data = os.urandom(chunk)
    requests = []
    for i in range(chunks):
        query = f"task={task}&stream=stdout&offset={i * chunk}"
        requests.append((query, signed(drone, "POST", "/v1/worker/log", query, data)))
    started = time.perf_counter()
    for query, headers in requests:
        headers = {**headers, "Content-Type": "application/octet-stream"}
        answer = await conn.request("POST", f"/v1/worker/log?{query}", headers, data)
        if answer.status != 200:
            raise RuntimeError(f"log append: {answer.status} {answer.body!r}")
    elapsed = time.perf_counter() - started
    conn.close()
    return chunks * chunk / elapsed / 1e6


async def _append_drone(url: str, pilot: PilotSession, megabytes: int, chunk: int, *,
                        tasks: int = DRONE_TASKS, window: int = DRONE_WINDOW) -> float:
    """What a drone does (drone/shipper.py): per stream, ``window`` chunks in flight at once
    (one connection each, as httpx's pool opens them), the next round from the highest
    offset acknowledged; ``tasks`` streams shipping side by side. A chunk that overtook its
    predecessor and was answered ``offset_gap`` is signed again and resent, as the shipper does.
    """
    drone = new_signer()
    name = f"bench-drone-{chunk // 1024}k-{tasks}x{window}"
    setup = await Connection(url).open()
    await enroll_drone(url, pilot, name, drone, setup, slots=tasks)
    ids = []
    for _ in range(tasks):
        body = task_body(pilot, name, "yes")
        ids.append((await setup.request(
            "POST", "/v1/tasks", signed(pilot.signer, "POST", "/v1/tasks", "", body, pilot.token),
            body)).json()["id"])
    handed: list[str] = []
    while len(handed) < tasks:
        poll = json.dumps({"wait": 5, "running": handed}).encode()
        answer = await setup.request("POST", "/v1/worker/poll",
                                     signed(drone, "POST", "/v1/worker/poll", "", poll), poll)
        handed += [t["id"] for t in answer.json()["tasks"]]
    setup.close()
    per_task = megabytes * 10**6 // tasks // chunk * chunk
    data = os.urandom(chunk)

    def request(task: str, offset: int) -> tuple[str, dict[str, str]]:
        query = f"task={task}&stream=stdout&offset={offset}"
        headers = signed(drone, "POST", "/v1/worker/log", query, data)
        return query, {**headers, "Content-Type": "application/octet-stream"}

    presigned = {(task, o): request(task, o) for task in ids for o in range(0, per_task, chunk)}
    resent = 0

    async def post(conn: Connection, task: str, offset: int) -> int:
        nonlocal resent
        prepared = presigned.pop((task, offset), None)
        if prepared is None:  # a resend: a nonce is used once, so it is signed anew
            resent += 1
            prepared = request(task, offset)
        query, headers = prepared
        answer = await conn.request("POST", f"/v1/worker/log?{query}", headers, data)
        if answer.status == 200:
            return int(answer.json()["next_offset"])
        if answer.status == 409 and answer.json().get("error") == "offset_gap":
            return -1
        raise RuntimeError(f"log append: {answer.status} {answer.body!r}")

    async def ship(task: str) -> None:
        conns = [await Connection(url).open() for _ in range(window)]
        acked = 0
        while acked < per_task:
            offsets = range(acked, min(per_task, acked + window * chunk), chunk)
            posts = (post(c, task, o) for c, o in zip(conns, offsets, strict=False))
            results = await asyncio.gather(*posts)
            acked = max(acked, *results)
        for conn in conns:
            conn.close()

    started = time.perf_counter()
    await asyncio.gather(*(ship(task) for task in ids))
    elapsed = time.perf_counter() - started
    if resent:
        print(f"  ({resent} chunks resent after offset_gap)", file=sys.stderr)
    return tasks * per_task / elapsed / 1e6


def bench_output(work: Path, megabytes: int) -> list[tuple[str, str, str]]:
    with RelayProcess(work / "output") as relay:
        pilot = relay.pilot("bench")
        rate = asyncio.run(_append(relay.url, pilot, megabytes, CHUNK))
        # The largest chunk the relay takes (max_log_chunk), for comparison.
        big = asyncio.run(_append(relay.url, pilot, megabytes, 256 * 1024))
        window = asyncio.run(_append_drone(relay.url, pilot, megabytes, CHUNK))
        drone = asyncio.run(_append_drone(relay.url, pilot, megabytes, 256 * 1024))
    shape = f"{DRONE_TASKS} tasks x {DRONE_WINDOW} in flight"
    return [(f"output append, 64 KiB chunks, {megabytes} MB", f"{rate:.0f} MB/s", ">= 100 MB/s"),
            (f"output append, 256 KiB chunks, {megabytes} MB", f"{big:.0f} MB/s", ""),
            (f"output append, 64 KiB chunks, {shape}", f"{window:.0f} MB/s", ">= 100 MB/s"),
            (f"output append, 256 KiB chunks (a drone's), {shape}", f"{drone:.0f} MB/s", "")]


# --- main -------------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="smaller counts, about 30 s")
    parser.add_argument("--only", choices=["dispatch", "signed", "idle", "output"])
    args = parser.parse_args()
    quick = args.quick
    rows: list[tuple[str, str, str]] = []
    with tempfile.TemporaryDirectory(prefix="dragoon-bench-") as tmp:
        work = Path(tmp)
        parts: dict[str, Callable[[], list[tuple[str, str, str]]]] = {
            "dispatch": lambda: bench_dispatch(work, 100 if quick else 500),
            "signed": lambda: bench_signed(work, 1000 if quick else 4000),
            "idle": lambda: bench_idle(work, 200 if quick else 1000, 5 if quick else 30),
            "output": lambda: bench_output(work, 64 if quick else 256),
        }
        for name, part in parts.items():
            if args.only in (None, name):
                print(f"running {name} …", file=sys.stderr, flush=True)
                rows += part()
    width = max(len(r[0]) for r in rows)
    print(f"{'measure':<{width}}  {'result':>18}  target")
    for label, value, goal in rows:
        print(f"{label:<{width}}  {value:>18}  {goal}")


if __name__ == "__main__":
    main()
