"""Artifacts and fetched files from the relay's side (issue 13, piece 4): what it stores is
sealed, and whatever it does to it the pilot notices.

A real relay and drone; the attacker is whoever can edit the relay's blob store on disk:
a byte flipped, a record cut, two records swapped, the final record cut or shortened.
Every download of such a file fails with one line, and nothing is left where the pilot
asked for the file. The relay's listing, database, blobs and log hold neither the
artifact's path, nor the fetched path, nor a byte of either file. A download cut halfway
resumes from the record where it stopped (HTTP Range over the sealed records).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import sqlite3
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from dragoon.cockpit.client import RelayClient, RelayError
from dragoon.cockpit.client.config import SessionStore
from dragoon.cockpit.client.identity import signer_for
from dragoon.shared import e2e

from tests.cli.conftest import Pilot
from tests.cli.test_files import run_task
from tests.support.relay import RelayProcess

RECORD = e2e.BLOB_RECORD + e2e.OVERHEAD
MARKER = "zq-sealed-marker-7f3a"
SIZE = 300000  # five records: four whole, one short and final


def client_for(pilot: Pilot) -> RelayClient:
    session = SessionStore(pilot.env).load()
    assert session is not None
    return RelayClient(session.relay, signer=signer_for(session.key, env=pilot.env),
                       token=session.token, env=pilot.env)


def make_artifact(pilot: Pilot, drone: str, name: str) -> tuple[str, str]:
    """A task leaving ``out/NAME`` (SIZE bytes: MARKER, then noise); its id and the file's
    SHA-256. Nothing of the file or its name is printed: the task's output is not what
    this test is about."""
    task_id, out = run_task(pilot, drone, "--artifact", "out/*", "--", (
        f"mkdir -p out && {{ printf {MARKER}; head -c {SIZE - len(MARKER)} /dev/urandom; }}"
        f" > out/{name} && sha256sum out/{name} | cut -c1-64"))
    return task_id, out.strip()


def blob_of(relay: RelayProcess, sha256: str) -> Path:
    return relay.data_dir / "blobs" / sha256[:2] / sha256


def artifact_blob(relay: RelayProcess, task_id: str) -> Path:
    with sqlite3.connect(relay.data_dir / "relay.db") as db:
        (sha256,) = db.execute("SELECT sha256 FROM artifacts WHERE task = ?",
                               (task_id,)).fetchone()
    return blob_of(relay, sha256)


def flip(data: bytes) -> bytes:
    middle = RECORD + 1000
    return data[:middle] + bytes([data[middle] ^ 1]) + data[middle + 1:]


def cut_record(data: bytes) -> bytes:
    return data[:RECORD] + data[2 * RECORD:]


def swap_records(data: bytes) -> bytes:
    return data[:RECORD] + data[2 * RECORD:3 * RECORD] + data[RECORD:2 * RECORD] + data[
        3 * RECORD:]


def drop_final(data: bytes) -> bytes:
    return data[:4 * RECORD]


def shorten_final(data: bytes) -> bytes:
    return data[:-10]


TAMPERINGS: list[Callable[[bytes], bytes]] = [flip, cut_record, swap_records, drop_final,
                                              shorten_final]


@pytest.mark.parametrize("tamper", TAMPERINGS, ids=lambda f: f.__name__)
def test_an_artifact_the_relay_altered_fails_to_download_and_leaves_nothing(
        pilot: Pilot, drone: str, relay: RelayProcess, tmp_path: Path,
        tamper: Callable[[bytes], bytes]) -> None:
    task_id, digest = make_artifact(pilot, drone, "model.bin")
    stored = artifact_blob(relay, task_id)
    honest = stored.read_bytes()
    assert len(honest) == e2e.blob_size(SIZE) and MARKER.encode() not in honest
    stored.write_bytes(tamper(honest))
    target = tmp_path / "model.bin"
    done = pilot.cli("artifact", task_id, "out/model.bin", "-o", str(target))
    assert done.returncode == 8, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "corrupt or altered" in lines[0], lines
    assert list(tmp_path.iterdir()) == []  # no file, no part file
    # The same store put right: the same command saves the file.
    stored.write_bytes(honest)
    pilot.ok("artifact", task_id, "out/model.bin", "-o", str(target))
    assert hashlib.sha256(target.read_bytes()).hexdigest() == digest


def test_metadata_the_relay_moved_between_artifacts_does_not_open(
        pilot: Pilot, drone: str, relay: RelayProcess) -> None:
    task_id, _ = run_task(pilot, drone, "--artifact", "out/*", "--",
                          "mkdir -p out && echo a > out/a.txt && echo b > out/b.txt")
    with sqlite3.connect(relay.data_dir / "relay.db") as db:
        rows = dict(db.execute("SELECT path, meta FROM artifacts WHERE task = ?", (task_id,)))
        assert set(rows) == {"0", "1"}  # by index: the relay holds no path
        db.execute("UPDATE artifacts SET meta = ? WHERE task = ? AND path = '0'",
                   (rows["1"], task_id))
    listed = pilot.json("artifacts", task_id)
    assert [a["path"] for a in listed if not a.get("sealed")] == ["out/b.txt"]
    moved = [a for a in listed if a.get("sealed")]
    assert len(moved) == 1 and moved[0]["path"] == "?0" and "does not open" in moved[0]["sealed"]


def test_the_relay_holds_no_path_and_no_byte_of_artifacts_and_fetched_files(
        pilot: Pilot, drone: str, relay: RelayProcess, tmp_path: Path) -> None:
    task_id, _ = make_artifact(pilot, drone, f"{MARKER}-artifact.bin")
    work = pilot.ok("run", drone, "--", f"printf {MARKER}-content > fetch-{MARKER}.txt; pwd")
    fetched = f"{work.strip()}/fetch-{MARKER}.txt"
    target = tmp_path / "fetched.txt"
    pilot.ok("fetch", drone, fetched, "-o", str(target))
    assert target.read_text() == f"{MARKER}-content"
    listed = pilot.json("artifacts", task_id)
    assert [a["path"] for a in listed] == [f"out/{MARKER}-artifact.bin"]

    # What the relay shows: the artifact listing, the task.
    relay_view = json.dumps([pilot_get(pilot, f"/v1/tasks/{task_id}/artifact"),
                             pilot_get(pilot, f"/v1/tasks/{task_id}")])
    assert MARKER not in relay_view and "artifact.bin" not in relay_view
    # What it keeps: every table, the database files byte for byte, every blob.
    with sqlite3.connect(relay.data_dir / "relay.db") as db:
        dump = "\n".join(db.iterdump())
        fetch_rows = db.execute("SELECT * FROM fetches").fetchall()
    assert fetch_rows and MARKER not in dump and "fetch-" + MARKER not in dump
    for name in ("relay.db", "relay.db-wal"):
        path = relay.data_dir / name
        if path.exists():
            assert MARKER.encode() not in path.read_bytes(), name
    for blob in (relay.data_dir / "blobs").rglob("*"):
        if blob.is_file():
            assert MARKER.encode() not in blob.read_bytes(), blob
    assert MARKER not in relay.stderr_text()  # nor its log


def pilot_get(pilot: Pilot, path: str) -> Any:
    async def go() -> Any:
        async with client_for(pilot) as client:
            response = await client._call("GET", path)
            return response.json()

    return asyncio.run(go())


def test_a_download_cut_halfway_resumes_at_the_record_where_it_stopped(
        pilot: Pilot, drone: str, tmp_path: Path) -> None:
    task_id, digest = make_artifact(pilot, drone, "weights.bin")
    ranges: list[str | None] = []

    async def go() -> Path:
        async with client_for(pilot) as client:
            real = client._stream

            @asynccontextmanager
            async def cut_once(request: httpx.Request) -> AsyncIterator[httpx.Response]:
                ranges.append(request.headers.get("Range"))
                async with real(request) as response:
                    if len(ranges) == 1:
                        whole = response.aiter_bytes

                        async def halfway(chunk_size: int | None = None) -> AsyncIterator[bytes]:
                            sent = 0
                            async for data in whole(chunk_size):
                                yield data
                                sent += len(data)
                                if sent >= SIZE // 2:
                                    raise httpx.ReadError("connection cut halfway")

                        response.aiter_bytes = halfway  # type: ignore[method-assign]
                    yield response

            client._stream = cut_once  # type: ignore[method-assign]
            listed = {a["path"]: a for a in await client.artifacts(task_id=task_id)}
            return await client.download_artifact(task_id=task_id,
                                                  artifact=listed["out/weights.bin"],
                                                  dest=tmp_path / "weights.bin")

    saved = asyncio.run(go())
    assert hashlib.sha256(saved.read_bytes()).hexdigest() == digest
    assert ranges[0] is None and len(ranges) == 2, ranges
    start = int(str(ranges[1]).removeprefix("bytes=").removesuffix("-"))
    assert start > 0 and start % RECORD == 0  # a record boundary, past what was opened
    assert sorted(p.name for p in tmp_path.iterdir()) == ["weights.bin"]


def test_a_fetched_file_the_relay_altered_fails_and_leaves_nothing(
        pilot: Pilot, drone: str, relay: RelayProcess, tmp_path: Path) -> None:
    work = pilot.ok("run", drone, "--", f"head -c {SIZE} /dev/urandom > big.bin; pwd")
    remote = f"{work.strip()}/big.bin"

    async def go() -> None:
        async with client_for(pilot) as client:
            for tamper in TAMPERINGS:
                fetch = await client.request_fetch(drone=drone, path=remote)
                while fetch.get("state") == "pending":
                    fetch = await client.fetch_status(fetch_id=fetch["id"], wait=5)
                assert fetch["state"] == "ready", fetch
                stored = blob_of(relay, str(fetch["sha256"]))
                honest = stored.read_bytes()
                stored.write_bytes(tamper(honest))
                target = tmp_path / "big.bin"
                with pytest.raises(RelayError) as failed:
                    await client.download_fetch(fetch=fetch, drone=drone, path=remote,
                                                dest=target)
                assert "corrupt or altered" in str(failed.value), tamper.__name__
                assert list(tmp_path.iterdir()) == [], tamper.__name__
                stored.write_bytes(honest)
                # Asked as another path, the same fetch is refused: the pilot checks the
                # path it opens is the one it asked for.
                with pytest.raises(RelayError, match="another path"):
                    await client.download_fetch(fetch=fetch, drone=drone, path="/elsewhere",
                                                dest=target)
            saved = await client.download_fetch(fetch=fetch, drone=drone, path=remote,
                                                dest=tmp_path / "big.bin")
            assert saved.stat().st_size == SIZE

    asyncio.run(go())
