"""Relay replicas on PostgreSQL: a single relay's figures per backend, 10,000 drones, failover.

Run from the checkout (a PostgreSQL server must answer, as for the tests: ``DRAGOON_TEST_PG``
or the local one; Debian's ``haproxy`` must be installed)::

    .venv/bin/python bench/bench_replicas.py [--quick] [--json FILE] [--only PART]

Three parts (issue 15), each on real ``dragoon relay serve`` subprocesses on loopback:

- **single** — bench_relay.py's dispatch and signed-request figures and bench_table.py's
  tiny-task figure, on three set-ups: one relay on SQLite, one relay on PostgreSQL, and
  three replicas on one PostgreSQL database (tests/support/replicas.py ``ReplicaSet``).
  On the replicas, dispatch is measured *across* replicas, talking to them directly: the
  drone's long-poll is held by replica k, the pilot's submit goes to replica k+1, so the
  wake-up travels over LISTEN/NOTIFY every time. The signed ``GET /v1/tasks/{id}``
  spreads its 16 keep-alive connections over the three replicas directly. The tiny task
  (a real drone process, the pilot's own ``RelayClient``) goes through the HAProxy, as a
  deployment has it: every request goes to the next replica in turn.
- **drones** — N simulated drones (bench_relay.py's: each its own ed25519 key and its own
  connection, holding a signed ``POST /v1/worker/poll`` with ``wait=25`` and re-polling),
  spread over three replicas directly (drone i on replica i mod 3; the HAProxy is left
  out so that its own connection cap and CPU are not in the figure). Per replica: RSS and
  CPU over a window that includes a full re-poll cycle; the database connections by
  ``application_name`` (``pg_stat_activity``), per replica by matching client ports, and
  the CPU of the PostgreSQL backends serving them. The script raises its RLIMIT_NOFILE as
  far as the kernel allows (the replicas inherit it); N is lowered when the limit is too
  small for it, and the table says so.
- **failover** — tests/replicas/test_failover.py's scene, timed: three replicas behind
  HAProxy, real drone processes (tests/drone/conftest.py ``Fleet``), a task streaming 150
  lines while one replica is killed with SIGKILL; then one task per drone and six short
  tasks. Figures: the time from the kill until a task has completed on every drone, and
  until every task is done; lines lost or duplicated in the streamed output, tasks not
  succeeded, and tasks run other than exactly once (checked as the test checks).

The load average (``/proc/loadavg``) is printed before and after each part: the machine is
shared, and the figures move with it.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import resource
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any

REPO = Path(__file__).resolve().parents[1]
for entry in (REPO, REPO / "bench"):
    if str(entry) not in sys.path:
        sys.path.insert(0, str(entry))

import bench_relay  # noqa: E402
import bench_table  # noqa: E402
from bench_relay import Connection, enroll_drone, new_signer, percentile, signed  # noqa: E402

from tests.drone.conftest import Fleet  # noqa: E402
from tests.support.relay import (  # noqa: E402
    PilotSession,
    RelayProcess,
    configured_database,
    drop_released_databases,
)
from tests.support.replicas import ReplicaSet  # noqa: E402
from tests.support.sealing import trust_drone  # noqa: E402

Row = tuple[str, str, str]
POLL_WAIT = 25  # a drone's default long-poll, as bench_relay.py's idle drones hold it


@dataclass
class Counts:
    dispatch: int
    signed: int
    tiny: int
    drones: int
    window: float
    failover_drones: int


FULL = Counts(dispatch=300, signed=4000, tiny=100, drones=10_000, window=30.0,
              failover_drones=4)
QUICK = Counts(dispatch=40, signed=600, tiny=10, drones=300, window=5.0, failover_drones=2)


def load() -> str:
    """The 1, 5 and 15 minute load averages, as ``uptime`` prints them."""
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


def raise_fd_limit(wanted: int) -> int:
    """Soft and hard RLIMIT_NOFILE up to ``wanted`` (root may raise the hard limit up to
    fs.nr_open); else the soft limit up to the hard one. Returns the soft limit in force."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    with contextlib.suppress(OSError):
        ceiling = int(Path("/proc/sys/fs/nr_open").read_text())
        target = min(wanted, ceiling)
        if target > hard:
            with contextlib.suppress(ValueError, OSError):
                resource.setrlimit(resource.RLIMIT_NOFILE, (target, target))
                return target
    with contextlib.suppress(ValueError, OSError):
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        return hard
    return soft


# --- the set-ups ------------------------------------------------------------------------------


@dataclass
class Setup:
    """What a part drives: the replicas' own URLs, their pids, and the URL clients dial."""

    name: str
    urls: list[str]
    pids: list[int]
    front: str  # the balancer's URL for replicas, the relay's own for one relay
    pilot: PilotSession
    enroller: RelayProcess  # its data dir mints join tokens naming ``front``
    database: str


@contextlib.contextmanager
def one_relay(root: Path, backend: str, config: dict[str, Any] | None = None) -> Iterator[Setup]:
    relay = RelayProcess(root, backend=backend, config=config)
    with relay:
        try:
            assert relay.process is not None
            yield Setup(f"1 relay, {backend}", [relay.url], [relay.process.pid], relay.url,
                        relay.pilot("bench"), relay, configured_database(root))
        finally:
            relay.kill9()  # a graceful stop waits on held long-polls; not under test


@contextlib.contextmanager
def three_replicas(root: Path, config: dict[str, Any] | None = None, *,
                   balancer: bool = True) -> Iterator[Setup]:
    with ReplicaSet(root, count=3, config=config, balancer=balancer) as replicas:
        pids = [r.process.pid for r in replicas.replicas if r.process is not None]
        yield Setup("3 replicas, postgresql", [r.url for r in replicas.replicas], pids,
                    replicas.url, replicas.pilot("bench"), replicas.replicas[0],
                    configured_database(replicas.replicas[0].data_dir))


# --- part 1: dispatch, signed requests, tiny task --------------------------------------------


async def _dispatch(urls: list[str], pilot: PilotSession, count: int) -> list[float]:
    """bench_relay.py's dispatch, the poll held by replica k and the submit sent to k+1."""
    drone = new_signer()
    setup = await Connection(urls[0]).open()
    await enroll_drone(urls[0], pilot, "bench-dispatch", drone, setup)
    pollers = [await Connection(u).open() for u in urls]
    submitters = [await Connection(u).open() for u in urls]
    latencies: list[float] = []
    for k in range(count):
        poller = pollers[k % len(urls)]
        submitter = submitters[(k + 1) % len(urls)]
        submit_body = bench_relay.task_body(pilot, "bench-dispatch", "true")
        poll = json.dumps({"wait": POLL_WAIT, "running": []}).encode()
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
    for conn in (setup, *pollers, *submitters):
        conn.close()
    return latencies


def dispatch_mean(urls: list[str]) -> float | None:
    """The relays' own dispatch histogram (``dispatched_at - created_at``), pooled."""
    import httpx

    total = count = 0.0
    for url in urls:
        for line in httpx.get(f"{url}/metrics").text.splitlines():
            if line.startswith("dragoon_relay_dispatch_latency_seconds_sum"):
                total += float(line.split()[1])
            elif line.startswith("dragoon_relay_dispatch_latency_seconds_count"):
                count += float(line.split()[1])
    return total / count if count else None


async def _signed_rps(urls: list[str], pilot: PilotSession, task_id: str, total: int,
                      connections: int = 16) -> float:
    """bench_relay.py's signed GET, its keep-alive connections dealt over ``urls``."""
    path = f"/v1/tasks/{task_id}"
    batches = [[signed(pilot.signer, "GET", path, token=pilot.token)
                for _ in range(total // connections)] for _ in range(connections)]
    conns = [await Connection(urls[i % len(urls)]).open() for i in range(connections)]

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


def single_figures(work: Path, setup: Setup, counts: Counts) -> dict[str, float]:
    ms = [x * 1000 for x in asyncio.run(_dispatch(setup.urls, setup.pilot, counts.dispatch))]
    figures: dict[str, float] = {"dispatch_p50_ms": percentile(ms, 0.5),
                                 "dispatch_p99_ms": percentile(ms, 0.99)}
    mean = dispatch_mean(setup.urls)
    if mean is not None:
        figures["dispatch_relay_mean_ms"] = mean * 1000
    pilot = setup.pilot
    drone = new_signer()

    async def one_task() -> str:
        conn = await Connection(setup.urls[0]).open()
        await enroll_drone(setup.urls[0], pilot, "bench-signed", drone, conn)
        body = bench_relay.task_body(pilot, "bench-signed", "true")
        answer = await conn.request("POST", "/v1/tasks", signed(pilot.signer, "POST",
                                    "/v1/tasks", "", body, pilot.token), body)
        conn.close()
        return str(answer.json()["id"])

    task_id = asyncio.run(one_task())
    figures["signed_get_rps"] = asyncio.run(_signed_rps(setup.urls, pilot, task_id,
                                                        counts.signed))
    # The tiny task: a real drone process and the pilot's RelayClient, both on ``front``.
    fleet = Fleet(work, setup.enroller, pilot)
    try:
        proc = fleet.drone(bench_table.DRONE, slots=bench_table.SLOTS, poll_wait=float(POLL_WAIT))
        trust_drone(pilot.env, proc.data_dir)  # as `dragoon drones trust` would
        front = SimpleNamespace(url=setup.front)
        tiny = asyncio.run(bench_table.tiny_latency(front, pilot, counts.tiny))  # type: ignore[arg-type]
    finally:
        fleet.close()
    figures.update({"tiny_p50_ms": tiny["tiny_p50_ms"], "tiny_p99_ms": tiny["tiny_p99_ms"]})
    return figures


def part_single(work: Path, counts: Counts) -> dict[str, Any]:
    results: dict[str, Any] = {}
    makers: list[tuple[str, Callable[[], contextlib.AbstractContextManager[Setup]]]] = [
        ("sqlite", lambda: one_relay(work / "single-sqlite" / "relay", "sqlite")),
        ("postgresql", lambda: one_relay(work / "single-pg" / "relay", "postgresql")),
        ("replicas", lambda: three_replicas(work / "single-replicas")),
    ]
    for key, make in makers:
        print(f"  {key} …", file=sys.stderr, flush=True)
        (work / f"tiny-{key}").mkdir(parents=True, exist_ok=True)
        with make() as setup:
            results[key] = single_figures(work / f"tiny-{key}", setup, counts)
        drop_released_databases()
    return results


# --- part 2: many long-polling drones over three replicas ------------------------------------


def proc_cpu(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def database_connections(database: str, pids: list[int]) -> tuple[dict[str, int],
                                                                    list[dict[str, int]],
                                                                    list[int]]:
    """The database's connections by application_name, the same per replica (matched by the
    client port each replica's socket uses), and the server backends' pids."""
    from urllib.parse import urlsplit

    import psutil
    import psycopg

    name = urlsplit(database).path.lstrip("/")
    ports: dict[int, int] = {}
    for index, pid in enumerate(pids):
        for conn in psutil.Process(pid).net_connections(kind="tcp"):
            if conn.raddr and conn.raddr.port == (urlsplit(database).port or 5432):
                ports[conn.laddr.port] = index
    with psycopg.connect(database, autocommit=True) as db:
        rows = db.execute("SELECT pid, application_name, client_port FROM pg_stat_activity "
                          "WHERE datname = %s AND pid <> pg_backend_pid()", (name,)).fetchall()
    total: Counter[str] = Counter()
    each: list[Counter[str]] = [Counter() for _ in pids]
    for _pid, app, port in rows:
        label = app or "(unnamed)"
        total[label] += 1
        if port in ports:
            each[ports[port]][label] += 1
    return dict(total), [dict(c) for c in each], [int(r[0]) for r in rows]


async def _many_drones(setup: Setup, count: int, window: float) -> dict[str, Any]:
    import httpx

    urls, pilot = setup.urls, setup.pilot
    signers = [new_signer() for _ in range(count)]
    enrollers = [await Connection(urls[k % len(urls)]).open() for k in range(12)]
    started = time.monotonic()

    async def enroll_range(conn: Connection, indices: range) -> None:
        for i in indices:
            await enroll_drone(conn_url(conn), pilot, f"many-{i:05d}", signers[i], conn)

    def conn_url(conn: Connection) -> str:
        return f"http://{conn.host}:{conn.port}"

    await asyncio.gather(*(enroll_range(c, range(k, count, len(enrollers)))
                           for k, c in enumerate(enrollers)))
    for conn in enrollers:
        conn.close()
    enroll_s = time.monotonic() - started
    before = {pid: bench_relay._proc_stat(pid)[0] for pid in setup.pids}
    stop = asyncio.Event()
    dialing = asyncio.Semaphore(200)  # open connections in waves, not 10,000 SYNs at once
    errors: Counter[str] = Counter()

    async def drone_loop(signer: Any, url: str) -> None:
        async with dialing:
            conn = await Connection(url).open()
        try:
            while not stop.is_set():
                body = json.dumps({"wait": POLL_WAIT, "running": []}).encode()
                conn.send("POST", "/v1/worker/poll",
                          signed(signer, "POST", "/v1/worker/poll", "", body), body)
                receive = asyncio.ensure_future(conn.receive())
                halt = asyncio.ensure_future(stop.wait())
                await asyncio.wait({receive, halt}, return_when=asyncio.FIRST_COMPLETED)
                halt.cancel()
                if not receive.done():
                    receive.cancel()
                    return
                if receive.exception() is not None:
                    errors[type(receive.exception()).__name__] += 1
                    conn.close()
                    await asyncio.sleep(1)
                    async with dialing:
                        conn = await Connection(url).open()
                elif receive.result().status != 200:
                    errors[f"HTTP {receive.result().status}"] += 1
                    await asyncio.sleep(1)
        finally:
            conn.close()

    loops = [asyncio.create_task(drone_loop(s, urls[i % len(urls)]))
             for i, s in enumerate(signers)]
    online = 0
    polls_from = time.monotonic()
    deadline = polls_from + 300
    async with httpx.AsyncClient(timeout=30) as http:
        asked = 0
        while online < count and time.monotonic() < deadline:
            await asyncio.sleep(1)
            # Any replica's count is the fleet's (one database); one busy taking connections
            # may not answer in time: the next is asked the next second.
            asked += 1
            try:
                text = (await http.get(f"{urls[asked % len(urls)]}/metrics")).text
            except httpx.HTTPError as exc:
                errors[f"metrics {type(exc).__name__}"] += 1
                continue
            for line in text.splitlines():
                if line.startswith('dragoon_relay_drones{state="online"}'):
                    online = int(float(line.split()[1]))
    online_s = time.monotonic() - polls_from
    await asyncio.sleep(3)  # the last connections settle
    connections, per_replica_conns, backends = database_connections(setup.database, setup.pids)
    cpu_start = {pid: proc_cpu(pid) for pid in setup.pids}
    pg_start = {pid: proc_cpu(pid) for pid in backends if Path(f"/proc/{pid}").exists()}
    client_start = time.process_time()
    errors_start = sum(errors.values())
    clock = time.monotonic()
    await asyncio.sleep(window)
    elapsed = time.monotonic() - clock
    replicas = []
    for index, pid in enumerate(setup.pids):
        rss, cpu_end = bench_relay._proc_stat(pid)
        replicas.append({"rss_mib": rss / 2**20, "rss_before_mib": before[pid] / 2**20,
                         "cpu_percent": (cpu_end - cpu_start[pid]) / elapsed * 100,
                         "db_connections": sum(per_replica_conns[index].values()),
                         "db_connections_by_name": per_replica_conns[index]})
    pg_cpu = sum(proc_cpu(pid) - t for pid, t in pg_start.items()
                 if Path(f"/proc/{pid}").exists()) / elapsed * 100
    client_cpu = (time.process_time() - client_start) / elapsed * 100
    window_errors = sum(errors.values()) - errors_start
    stop.set()
    await asyncio.gather(*loops, return_exceptions=True)
    return {"drones": count, "online": online, "enroll_s": enroll_s, "online_s": online_s,
            "window_s": elapsed, "replicas": replicas, "db_connections": connections,
            "db_connections_total": sum(connections.values()),
            "pg_backends_cpu_percent": pg_cpu, "client_cpu_percent": client_cpu,
            "poll_errors_in_window": window_errors, "poll_errors": dict(errors)}


def part_drones(work: Path, counts: Counts, fd_limit: int) -> dict[str, Any]:
    # Each simulated drone is one fd here and one in a replica (~fd_limit / 3 each): keep
    # room for the replicas' own files, the enrolling connections and the database's.
    count = min(counts.drones, fd_limit - 2000)
    # Ten thousand drone inits from one address is the bench, not traffic: no rate limits.
    config = {"offline_after": 300, "open_burst_per_peer": 0, "open_burst_total": 0}
    with three_replicas(work / "drones", config, balancer=False) as setup:
        result = asyncio.run(_many_drones(setup, count, counts.window))
    drop_released_databases()
    result["wanted"] = counts.drones
    result["fd_limit"] = fd_limit
    return result


# --- part 3: failover -------------------------------------------------------------------------


def part_failover(work: Path, counts: Counts) -> dict[str, Any]:
    from tests.replicas.test_failover import LINES, Pilot, through_failures

    root = work / "failover"
    with ReplicaSet(root / "relays", count=3,
                    config={"sweep_interval": 0.2, "offline_after": 30}) as replicas:
        pilot = replicas.pilot("alice")
        fleet = Fleet(root, replicas.replicas[0], pilot)  # enrolls with the balancer's URL
        names = [f"d{i + 1}" for i in range(counts.failover_drones)]
        # Submits go through the pilot's own client, which sends one whose answer the kill
        # cut again under the same signed order (reads are simply made again).
        submitter = Pilot(replicas.url, pilot)
        try:
            for name in names:
                drone = fleet.drone(name, labels=("fo",), slots=4, poll_wait=10.0)
                trust_drone(pilot.env, drone.data_dir)
            runs = root / "runs"
            # Every drone has taken a task before the kill: all are polling.
            for name in names:
                warm = submitter.submit("true", drone=fleet.name(name))
                through_failures(lambda t=warm: fleet.wait_state(t, timeout=60))
            streaming = submitter.submit(
                f'echo "$DRAGOON_TASK_ID" >> {runs}; '
                f'for i in $(seq 1 {LINES}); do echo "line $i"; sleep 0.02; done',
                drone=fleet.name("d1"))
            through_failures(lambda: fleet.wait_state(streaming, "running", timeout=30))
            time.sleep(0.5)  # some of the output is through, most of it is to come
            replicas.replicas[1].kill9()
            killed_at, killed_wall = time.monotonic(), time.time()
            probes = {name: submitter.submit(f'echo "$DRAGOON_TASK_ID" >> {runs}',
                                             drone=fleet.name(name)) for name in names}
            short = [submitter.submit(f'echo "$DRAGOON_TASK_ID" >> {runs}; echo short {i}',
                                      labels=["fo"]) for i in range(6)]
            states: dict[str, str] = {}
            served: dict[str, float] = {}
            for name, task_id in probes.items():
                task = through_failures(lambda t=task_id: fleet.wait_state(t, timeout=60))
                states[task_id] = task["state"]
                served[name] = time.monotonic() - killed_at
            every_drone_s = max(served.values())
            for task_id in [streaming, *short]:
                task = through_failures(lambda t=task_id: fleet.wait_state(t, timeout=60))
                states[task_id] = task["state"]
            every_task_s = time.monotonic() - killed_at
            output = through_failures(lambda: fleet.output(streaming, whole=True))
            shorts_ok = sum(through_failures(lambda t=t: fleet.output(t, whole=True))
                            == f"short {i}\n".encode() for i, t in enumerate(short))
            ran = Counter(runs.read_text().split())
            up = replicas.up()
            # Any task that did not run exactly once, named, for whoever reads the figure.
            kinds = {streaming: "streaming", **{t: f"probe {n}" for n, t in probes.items()},
                     **{t: f"short {i}" for i, t in enumerate(short)}}
            off = {}
            for task_id in {*kinds, *ran}:
                if ran[task_id] != 1:
                    seen = through_failures(lambda t=task_id: fleet.task(t))
                    off[task_id] = {"kind": kinds.get(task_id, "not submitted by the bench"),
                                    "runs": ran[task_id], "state": seen.get("state"),
                                    "drone": seen.get("drone"),
                                    "created_after_kill_s": round(
                                        float(seen.get("created_at") or 0) - killed_wall, 3)}
            resent = len(submitter.resent)
        finally:
            submitter.close()
            fleet.close()
    drop_released_databases()
    got = Counter(output.decode(errors="replace").splitlines())
    want = Counter(f"line {i}" for i in range(1, LINES + 1))
    every = [streaming, *probes.values(), *short]
    return {
        "drones": len(names), "tasks": len(every),
        "every_drone_served_s": every_drone_s, "every_task_done_s": every_task_s,
        "served_s_by_drone": served,
        "output_exact": output == "".join(f"line {i}\n" for i in range(1, LINES + 1)).encode(),
        "lines_lost": sum((want - got).values()), "lines_extra": sum((got - want).values()),
        "short_outputs_exact": shorts_ok,
        "tasks_not_succeeded": sum(states[t] != "succeeded" for t in every),
        "tasks_not_run_once": sum(ran[t] != 1 for t in every) + sum(
            1 for t in ran if t not in every),
        "replicas_up_after": up, "not_run_once": off, "submits_sent_again": resent,
    }


# --- the table --------------------------------------------------------------------------------


def table(results: dict[str, Any]) -> list[Row]:
    rows: list[Row] = []
    single = results.get("single")
    if single:
        names = {"sqlite": "1 relay, SQLite", "postgresql": "1 relay, PostgreSQL",
                 "replicas": "3 replicas, PostgreSQL"}
        labels = [("dispatch p50", "dispatch_p50_ms", "ms"), ("dispatch p99", "dispatch_p99_ms",
                  "ms"), ("dispatch, relay's own view (mean)", "dispatch_relay_mean_ms", "ms"),
                  ("signed GET /v1/tasks/{id}, 16 connections", "signed_get_rps", "req/s"),
                  ("tiny task submit -> output + exit p50", "tiny_p50_ms", "ms"),
                  ("tiny task p99", "tiny_p99_ms", "ms")]
        for key, figures in single.items():
            for label, field, unit in labels:
                if field in figures:
                    value = figures[field]
                    text = f"{value:,.0f} {unit}" if unit == "req/s" else f"{value:.2f} {unit}"
                    rows.append((f"{names[key]}: {label}", text, ""))
    drones = results.get("drones")
    if drones:
        note = "" if drones["drones"] == drones["wanted"] else \
            f"(fd limit {drones['fd_limit']})"
        rows.append((f"{drones['online']} of {drones['drones']} drones online, 3 replicas",
                     f"{drones['online_s']:.0f} s", note))
        rows.append(("  enrolling them (mint + init, 12 connections)",
                     f"{drones['enroll_s']:.0f} s", ""))
        for i, replica in enumerate(drones["replicas"]):
            rows.append((f"  replica {i}: RSS (before the polls {replica['rss_before_mib']:.0f})",
                         f"{replica['rss_mib']:.0f} MiB", ""))
            rows.append((f"  replica {i}: CPU over {drones['window_s']:.0f} s",
                         f"{replica['cpu_percent']:.1f} %", "of a core"))
            rows.append((f"  replica {i}: database connections",
                         str(replica["db_connections"]), ""))
        by_name = ", ".join(f"{k} {v}" for k, v in sorted(drones["db_connections"].items()))
        rows.append(("  database connections, all replicas",
                     str(drones["db_connections_total"]), by_name))
        rows.append(("  PostgreSQL backends' CPU", f"{drones['pg_backends_cpu_percent']:.1f} %",
                     "of a core"))
        rows.append(("  the simulating client's CPU", f"{drones['client_cpu_percent']:.1f} %",
                     "of a core"))
        rows.append(("  poll errors in the window", str(drones["poll_errors_in_window"]),
                     json.dumps(drones["poll_errors"]) if drones["poll_errors"] else ""))
    fail = results.get("failover")
    if fail:
        rows += [
            (f"failover: kill -9, a task done on each of {fail['drones']} drones",
             f"{fail['every_drone_served_s']:.2f} s", "after the kill"),
            (f"failover: all {fail['tasks']} tasks done", f"{fail['every_task_done_s']:.2f} s",
             "after the kill"),
            ("failover: streamed lines lost / duplicated",
             f"{fail['lines_lost']} / {fail['lines_extra']}", "aim 0 / 0"),
            ("failover: tasks not succeeded / not run exactly once",
             f"{fail['tasks_not_succeeded']} / {fail['tasks_not_run_once']}", "aim 0 / 0"),
        ]
    for part, (before, after) in results.get("load", {}).items():
        rows.append((f"load average, {part}", f"{before} -> {after}", "1 5 15 min"))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="small counts, a smoke run")
    parser.add_argument("--json", type=Path, help="write the figures here too")
    parser.add_argument("--only", choices=["single", "drones", "failover"], action="append")
    args = parser.parse_args()
    counts = QUICK if args.quick else FULL
    fd_limit = raise_fd_limit(max(65536, 2 * counts.drones + 10_000))
    results: dict[str, Any] = {"quick": args.quick, "fd_limit": fd_limit, "load": {}}
    parts: dict[str, Callable[[Path], Any]] = {
        "single": lambda w: part_single(w, counts),
        "drones": lambda w: part_drones(w, counts, fd_limit),
        "failover": lambda w: part_failover(w, counts),
    }
    try:
        with tempfile.TemporaryDirectory(prefix="bench-replicas-") as tmp:
            for name, part in parts.items():
                if args.only and name not in args.only:
                    continue
                before = load()
                print(f"{name} … (load {before})", file=sys.stderr, flush=True)
                results[name] = part(Path(tmp))
                results["load"][name] = (before, load())
                if args.json:  # after each part: a later part that fails keeps these
                    args.json.write_text(json.dumps(results, indent=2) + "\n")
    finally:
        drop_released_databases(every=True)
    rows = table(results)
    width = max(len(r[0]) for r in rows)
    print(f"{'measure':<{width}}  {'result':>18}  note")
    for label, value, note in rows:
        print(f"{label:<{width}}  {value:>18}  {note}")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
