"""Task output, blobs and stdin on PostgreSQL (relay/pg_output.py, pg_blobs.py, pg_stdin.py):
the file stores' semantics against the real local server, one fresh database per module."""

from __future__ import annotations

import asyncio
import hashlib
import secrets
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from dragoon.relay.blobs import BlobStore
from dragoon.relay.config import RelayConfig
from dragoon.relay.errors import ApiError
from dragoon.relay.output import Appended, Closed, Gap, Incomplete, OutputStore
from dragoon.relay.pg_blobs import PgBlobStore, parse_range
from dragoon.relay.pg_output import PgOutputStore
from dragoon.relay.pg_stdin import PgStdinStore
from dragoon.relay.stdin import (
    Accepted,
    StdinClosed,
    StdinGap,
    StdinRead,
    StdinState,
    StdinStore,
    WindowFull,
)
from dragoon.relay.stores import open_stores

from tests.support.pg import drop_database
from tests.support.pg_files import files_database

ALPHABET = "abcdefghijklmnopqrstuvwxyz234567"


def new_task() -> str:
    return "t-" + "".join(secrets.choice(ALPHABET) for _ in range(10))


@pytest.fixture(scope="module")
def url() -> Iterator[str]:
    database = files_database()
    yield database
    drop_database(database)


def count(url: str, sql: str, *args: object) -> int:
    with psycopg.connect(url) as conn:
        row = conn.execute(sql, args).fetchone()
    assert row is not None
    return int(row[0])


@pytest.fixture
def output(url: str) -> Iterator[PgOutputStore]:
    store = PgOutputStore(url, cap=1000)
    yield store
    store.close()


# -- task output ----------------------------------------------------------------------------


def test_chunks_append_at_the_length_resends_are_acknowledged_gaps_refused(
    output: PgOutputStore,
) -> None:
    task = new_task()

    async def go() -> None:
        assert await output.append(task, "stdout", 3, b"def") == Gap(0)
        assert await output.append(task, "stdout", 0, b"abc") == Appended(3)
        assert await output.append(task, "stdout", 3, b"def") == Appended(6)
        assert await output.append(task, "stdout", 0, b"abc") == Appended(6)  # a resend
        assert await output.append(task, "stdout", 4, b"efgh") == Appended(8)  # overlaps
        assert await output.append(task, "stdout", 9, b"x") == Gap(8)

    asyncio.run(go())
    assert output.read(task, "stdout", 0, 100) == b"abcdefgh"
    assert output.size(task, "stdout") == 8 and output.size(task, "stderr") == 0
    assert output.sizes(task) == {"stdout_size": 8, "stderr_size": 0, "order_size": 0,
                                  "output_truncated": False}
    assert output.has_log(task) and not output.has_log(new_task())


def test_sizes_of_a_page_match_each_task_s_sizes(output: PgOutputStore) -> None:
    tasks = [new_task() for _ in range(3)]
    asyncio.run(output.append(tasks[0], "stdout", 0, b"abc"))
    asyncio.run(output.append(tasks[1], "stderr", 0, b"de"))
    page = output.sizes_of(tasks)
    assert page == {task: output.sizes(task) for task in tasks}
    assert page[tasks[0]]["stdout_size"] == 3 and page[tasks[1]]["stderr_size"] == 2
    assert page[tasks[2]] == {"stdout_size": 0, "stderr_size": 0, "order_size": 0,
                              "output_truncated": False}
    assert output.sizes_of([]) == {}


def test_a_bad_task_id_or_stream_is_refused(output: PgOutputStore) -> None:
    with pytest.raises(ApiError) as refused:
        asyncio.run(output.append("../etc", "stdout", 0, b"x"))
    assert refused.value.status == 422
    with pytest.raises(ApiError):
        output.read(new_task(), "secrets", 0, 10)


def test_reads_by_range_across_chunks(output: PgOutputStore) -> None:
    task = new_task()
    pieces = [bytes([n]) * size for n, size in enumerate((1, 7, 64, 3, 100, 25), start=65)]
    whole = b"".join(pieces)

    async def go() -> None:
        at = 0
        for piece in pieces:
            assert await output.append(task, "stderr", at, piece) == Appended(at + len(piece))
            at += len(piece)

    asyncio.run(go())
    for offset in (0, 1, 5, 8, 71, 72, 150, len(whole) - 1, len(whole), len(whole) + 10):
        for limit in (1, 2, 9, 64, 1000):
            assert output.read(task, "stderr", offset, limit) == whole[offset:offset + limit]
    assert output.read(task, "stdout", 0, 10) == b""


def test_the_output_cap_truncates_and_drops_the_rest(url: str) -> None:
    store = PgOutputStore(url, cap=10)
    task = new_task()
    try:
        async def go() -> None:
            assert await store.append(task, "stdout", 0, b"123456") == Appended(6)
            # 4 bytes of room left for the task's whole output: stderr is cut there.
            assert await store.append(task, "stderr", 0, b"abcdef") == Appended(
                6, truncated_now=True)
            assert await store.append(task, "stdout", 6, b"more") == Appended(10)  # dropped
            assert await store.append(task, "stdout", 50, b"gap?") == Appended(54)

        asyncio.run(go())
        assert store.read(task, "stderr", 0, 100) == b"abcd"
        assert store.truncated(task) and store.cut(task, "stdout") and store.cut(task, "stderr")
        assert not store.cut(task, "order")
        assert store.sizes(task) == {"stdout_size": 6, "stderr_size": 4, "order_size": 0,
                                     "output_truncated": True}
    finally:
        store.close()


def test_the_order_has_its_own_cap(url: str) -> None:
    store = PgOutputStore(url, cap=4)
    task = new_task()
    try:
        async def go() -> None:
            assert await store.append(task, "order", 0, b"ab") == Appended(2)
            assert await store.append(task, "order", 2, b"cdef") == Appended(6)
            assert await store.append(task, "order", 6, b"gh") == Appended(8)  # past its cap
            assert await store.append(task, "stdout", 0, b"out") == Appended(3)

        asyncio.run(go())
        assert store.read(task, "order", 0, 100) == b"abcd"
        assert store.cut(task, "order") and not store.truncated(task)
        assert store.read(task, "stdout", 0, 100) == b"out"
    finally:
        store.close()


def test_a_closed_log_takes_resends_only(output: PgOutputStore) -> None:
    task = new_task()
    never_written = new_task()

    async def go() -> None:
        assert await output.append(task, "stdout", 0, b"hello") == Appended(5)
        assert await output.close_log(task, stdout_size=7, stderr_size=0) == Incomplete(5, 0, 0)
        assert not output.is_closed(task)
        assert await output.append(task, "stdout", 5, b"!!") == Appended(7)
        assert await output.close_log(task, stdout_size=7, stderr_size=0) == {
            "stdout_size": 7, "stderr_size": 0, "order_size": 0}
        assert output.is_closed(task)
        assert await output.append(task, "stdout", 7, b"late") == Closed(7)
        assert await output.append(task, "stdout", 0, b"hello") == Appended(7)
        assert await output.append(task, "stderr", 0, b"e") == Closed(0)
        # A task whose state is finished by other means: the route passes closed=True.
        assert await output.append(never_written, "stdout", 0, b"x", closed=True) == Closed(0)

    asyncio.run(go())
    assert output.read(task, "stdout", 0, 100) == b"hello!!"
    assert not output.has_log(never_written)


def test_concurrent_appends_to_many_tasks(url: str) -> None:
    tasks = [new_task() for _ in range(20)]
    chunk = 512

    def payload(task: str, n: int) -> bytes:
        return hashlib.sha256(f"{task}/{n}".encode()).digest() * (chunk // 32)

    store = PgOutputStore(url, cap=1 << 30)

    async def feed(task: str) -> None:
        for n in range(25):
            answer = await store.append(task, "stdout", n * chunk, payload(task, n))
            assert answer == Appended((n + 1) * chunk)

    async def go() -> None:
        await asyncio.gather(*(feed(task) for task in tasks))

    try:
        asyncio.run(go())
        for task in tasks:
            expected = b"".join(payload(task, n) for n in range(25))
            assert store.size(task, "stdout") == len(expected)
            assert store.read(task, "stdout", 0, 1 << 20) == expected
    finally:
        store.close()


def wait_for(condition: Any, what: str, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.01)


def test_chunks_queued_together_land_in_offset_order(output: PgOutputStore, url: str) -> None:
    """Chunks a drone sent together and the network reordered are sorted within a batch."""
    task, blocker = new_task(), new_task()
    with psycopg.connect(url) as holder:
        # The committer's first job waits on this row lock, so the next three queue up.
        holder.execute("INSERT INTO log_state (task) VALUES (%s)", (blocker,))
        holder.commit()
        holder.execute("SELECT 1 FROM log_state WHERE task = %s FOR UPDATE", (blocker,))

        async def go() -> list[Any]:
            first = asyncio.ensure_future(output.append(blocker, "stdout", 0, b"x"))
            await asyncio.to_thread(wait_for, lambda: count(
                url, "SELECT count(*) FROM pg_locks WHERE NOT granted") > 0, "the lock wait")
            rest = [asyncio.ensure_future(output.append(task, "stdout", at, data))
                    for at, data in ((6, b"ghi"), (3, b"def"), (0, b"abc"))]
            await asyncio.to_thread(wait_for, lambda: output._jobs.qsize() == 3, "the queue")
            holder.commit()
            return list(await asyncio.gather(first, *rest))

        answers = asyncio.run(go())
    assert answers == [Appended(1), Appended(9), Appended(6), Appended(3)]
    assert output.read(task, "stdout", 0, 100) == b"abcdefghi"


def test_an_acknowledged_append_survives_closing_and_reopening(url: str) -> None:
    task = new_task()
    first = PgOutputStore(url, cap=1000)
    try:
        assert asyncio.run(first.append(task, "stdout", 0, b"kept")) == Appended(4)
        assert asyncio.run(first.close_log(task, stdout_size=4, stderr_size=0)) == {
            "stdout_size": 4, "stderr_size": 0, "order_size": 0}
    finally:
        first.close()
    again = PgOutputStore(url, cap=1000)
    try:
        assert again.read(task, "stdout", 0, 10) == b"kept"
        assert again.is_closed(task)
        assert asyncio.run(again.append(task, "stdout", 4, b"more")) == Closed(4)
    finally:
        again.close()
    assert count(url, "SELECT count(*) FROM log_chunks WHERE task = %s", task) == 1


def test_a_lost_connection_fails_its_batch_then_the_store_reconnects(
    output: PgOutputStore, url: str
) -> None:
    task = new_task()
    assert asyncio.run(output.append(task, "stdout", 0, b"one")) == Appended(3)
    writer = output._writer
    assert writer is not None
    with psycopg.connect(url, autocommit=True) as admin:
        admin.execute("SELECT pg_terminate_backend(%s)", (writer.info.backend_pid,))
    # The committer finds its connection gone, connects again and does the batch anyway.
    assert asyncio.run(output.append(task, "stdout", 3, b"two")) == Appended(6)
    assert output.read(task, "stdout", 0, 10) == b"onetwo"


# -- blobs ----------------------------------------------------------------------------------


async def body(*pieces: bytes, fail_after: int | None = None) -> AsyncIterator[bytes]:
    for n, piece in enumerate(pieces):
        if fail_after is not None and n == fail_after:
            raise ConnectionResetError("the drone hung up")
        yield piece


@pytest.fixture
def blobs(url: str) -> Iterator[PgBlobStore]:
    store = PgBlobStore(url, pool_size=4, chunk=1000)
    yield store
    store.close()


def upload(store: PgBlobStore, data: bytes, *, sha256: str | None = None,
           size: int | None = None, cap: int = 1 << 30, pieces: int = 7,
           fail_after: int | None = None) -> None:
    step = max(len(data) // pieces, 1)
    parts = [data[i:i + step] for i in range(0, len(data), step)]

    async def go() -> None:
        received = await store.receive(
            body(*parts, fail_after=fail_after), sha256=sha256 or digest(data),
            size=len(data) if size is None else size, cap=cap)
        try:
            store.keep(received, sha256 or digest(data))
        except BaseException:
            store.discard(received)
            raise

    asyncio.run(go())


def digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def stored(url: str) -> tuple[int, int]:
    return (count(url, "SELECT count(*) FROM blobs"),
            count(url, "SELECT count(*) FROM blob_chunks"))


def test_a_blob_is_stored_by_hash_and_read_by_range(blobs: PgBlobStore) -> None:
    data = secrets.token_bytes(4321)  # five chunks of 1000, the last one shorter
    upload(blobs, data)
    assert blobs.exists(digest(data))
    assert blobs.read(digest(data)) == data
    for offset, limit in ((0, 1), (999, 2), (1000, 1000), (1500, 2000), (4320, 5), (4000, 321)):
        assert blobs.read(digest(data), offset, limit) == data[offset:offset + limit]
    assert not blobs.exists(digest(b"never stored"))


@pytest.mark.parametrize("case", ["hash", "short", "long", "cap", "hangup"])
def test_a_refused_upload_leaves_nothing(blobs: PgBlobStore, url: str, case: str) -> None:
    before = stored(url)
    data = secrets.token_bytes(2500)
    expected = {"hash": "hash_mismatch", "short": "size_mismatch", "long": "too_large",
                "cap": "too_large"}
    arguments: dict[str, Any] = {
        "hash": {"sha256": "0" * 64}, "short": {"size": 3000}, "long": {"size": 2000},
        "cap": {"cap": 2000, "size": 1999}, "hangup": {"fail_after": 4},
    }[case]
    if case == "hangup":
        with pytest.raises(ConnectionResetError):
            upload(blobs, data, **arguments)
    else:
        with pytest.raises(ApiError) as refused:
            upload(blobs, data, **arguments)
        assert refused.value.code == expected[case]
    assert stored(url) == before
    # Every connection went back to the pool: as many uploads as it holds still go through.
    for n in range(5):
        upload(blobs, f"after {case} {n}".encode())


def test_the_same_content_twice_is_stored_once_and_touched(blobs: PgBlobStore, url: str) -> None:
    data = secrets.token_bytes(3000)
    upload(blobs, data)
    chunks = count(url, "SELECT count(*) FROM blob_chunks c JOIN blobs b USING (blob_id)"
                        " WHERE b.sha256 = %s", digest(data))
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("UPDATE blobs SET stored_at = 0 WHERE sha256 = %s", (digest(data),))
    before = stored(url)
    upload(blobs, data, pieces=3)
    assert stored(url) == before and chunks == 3
    assert count(url, "SELECT count(*) FROM blobs WHERE sha256 = %s AND stored_at > 0",
                 digest(data)) == 1
    assert blobs.read(digest(data)) == data


def test_concurrent_uploads_of_one_content_keep_one_copy(blobs: PgBlobStore, url: str) -> None:
    data = secrets.token_bytes(2048)
    before = stored(url)

    async def one() -> None:
        received = await blobs.receive(body(data[:1024], data[1024:]), sha256=digest(data),
                                       size=len(data), cap=1 << 20)
        await asyncio.to_thread(blobs.keep, received, digest(data))

    async def go() -> None:
        await asyncio.gather(one(), one(), one())

    asyncio.run(go())
    assert stored(url) == (before[0] + 1, before[1] + 3)
    assert blobs.read(digest(data)) == data


def test_an_empty_blob(blobs: PgBlobStore) -> None:
    upload(blobs, b"")
    assert blobs.exists(digest(b"")) and blobs.read(digest(b"")) == b""


def download(store: PgBlobStore, sha256: str, range_header: str | None = None
             ) -> tuple[int, dict[str, str], bytes]:
    """Serve the blob's response through the ASGI interface, as uvicorn would."""
    messages: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        messages.append(message)

    headers = [] if range_header is None else [(b"range", range_header.encode())]
    scope = {"type": "http", "method": "GET", "headers": headers}
    asyncio.run(store.response(sha256, "out.bin")(scope, receive, send))
    start = messages[0]
    head = {k.decode(): v.decode() for k, v in start["headers"]}
    data = b"".join(m.get("body", b"") for m in messages[1:])
    assert not messages[-1].get("more_body", False)
    assert int(head["content-length"]) == len(data)
    return start["status"], head, data


def test_downloads_answer_ranges_with_206(blobs: PgBlobStore) -> None:
    data = secrets.token_bytes(2600)
    upload(blobs, data)
    sha = digest(data)
    status, head, whole = download(blobs, sha)
    assert (status, whole) == (200, data)
    assert head["x-dragoon-sha256"] == sha and head["accept-ranges"] == "bytes"
    assert head["content-disposition"] == 'attachment; filename="out.bin"'
    status, head, part = download(blobs, sha, "bytes=100-1999")
    assert (status, part, head["content-range"]) == (206, data[100:2000], "bytes 100-1999/2600")
    assert download(blobs, sha, "bytes=2500-")[2] == data[2500:]
    assert download(blobs, sha, "bytes=-10")[2] == data[-10:]
    assert download(blobs, sha, "bytes=2600-")[0] == 416
    assert download(blobs, sha, "bytes=0-1,5-6")[:1] == (200,)  # several ranges: all of it
    with pytest.raises(ApiError) as missing:
        blobs.response(digest(b"nothing"), "x")
    assert missing.value.status == 404


def test_parse_range() -> None:
    assert parse_range(None, 10) is None
    assert parse_range("bytes=2-4", 10) == (2, 5)
    assert parse_range("bytes=2-40", 10) == (2, 10)
    assert parse_range("bytes=-3", 10) == (7, 10)
    assert parse_range("bytes=10-", 10) is False
    assert parse_range("bytes=5-2", 10) is False
    assert parse_range("items=1-2", 10) is None
    assert parse_range("bytes=a-b", 10) is None


# -- stdin ----------------------------------------------------------------------------------


@pytest.fixture
def stdin(url: str) -> Iterator[PgStdinStore]:
    store = PgStdinStore(url, window=10)
    yield store
    store.close()


def test_stdin_goes_through_in_order_and_acknowledged_bytes_go(
    stdin: PgStdinStore, url: str
) -> None:
    task = new_task()

    async def go() -> None:
        assert await stdin.append(task, 0, b"hello", False) == Accepted(5, False)
        assert await stdin.append(task, 0, b"hello", False) == Accepted(5, False)  # a resend
        assert await stdin.append(task, 7, b"x", False) == StdinGap(5)
        assert await stdin.append(task, 5, b" world", False) == Accepted(11, False)
        assert await stdin.append(task, 11, b"!", False) == WindowFull(11)  # 11 held >= 10
        assert await stdin.state(task) == StdinState(11, 0, False, 2)
        assert await stdin.read(task, 0, 3) == StdinRead(b"hel", 0, False, False)
        assert await stdin.read(task, 3, 100) == StdinRead(b"lo world", 3, False, True)
        assert await stdin.read(task, 2, 100) == StdinGap(3)  # below what was acknowledged
        assert await stdin.read(task, 12, 100) == StdinGap(11)
        assert await stdin.append(task, 11, b"!", True) == Accepted(12, True)
        assert await stdin.append(task, 12, b"?", False) == StdinClosed(12)
        assert await stdin.append(task, 11, b"!", True) == Accepted(12, True)
        assert await stdin.read(task, 11, 100) == StdinRead(b"!", 11, True, True)

    asyncio.run(go())
    # Only the chunk holding unacknowledged bytes is left.
    assert count(url, 'SELECT count(*) FROM stdin_chunks WHERE task = %s', task) == 1
    assert task in stdin.held()
    asyncio.run(stdin.drop(task))
    assert task not in stdin.held()
    assert count(url, 'SELECT count(*) FROM stdin_chunks WHERE task = %s', task) == 0


def test_acknowledged_stdin_survives_reopening(url: str) -> None:
    task = new_task()
    first = PgStdinStore(url, window=100)
    try:
        assert asyncio.run(first.append(task, 0, b"abc", False)) == Accepted(3, False)
        assert asyncio.run(first.append(task, 3, b"def", True)) == Accepted(6, True)
    finally:
        first.close()
    again = PgStdinStore(url, window=100)
    try:
        assert asyncio.run(again.read(task, 0, 100)) == StdinRead(b"abcdef", 0, True, False)
    finally:
        again.close()


# -- the factory ----------------------------------------------------------------------------


def test_open_stores_picks_files_or_postgresql(tmp_path: Path, url: str) -> None:
    config = RelayConfig(data_dir=tmp_path)
    files = open_stores(config)
    try:
        assert isinstance(files.output, OutputStore) and isinstance(files.blobs, BlobStore)
        assert isinstance(files.stdin, StdinStore)
    finally:
        files.close()
    config.database = url  # type: ignore[attr-defined]
    rows = open_stores(config)
    try:
        assert isinstance(rows.output, PgOutputStore) and isinstance(rows.blobs, PgBlobStore)
        assert isinstance(rows.stdin, PgStdinStore)
        assert not (tmp_path / "logs").exists() or not any((tmp_path / "logs").iterdir())
    finally:
        rows.close()
    config.database = "mysql://nope"  # type: ignore[attr-defined]
    with pytest.raises(ValueError, match="postgresql"):
        open_stores(config)


# -- retention on rows ------------------------------------------------------------------------


def test_retention_removes_a_pruned_task_s_log_rows(output: PgOutputStore, url: str) -> None:
    from dragoon.relay.pg_retention import PgSpace
    from dragoon.relay.retention import Report

    task = new_task()
    asyncio.run(output.append(task, "stdout", 0, b"12345"))
    asyncio.run(output.append(task, "order", 0, b"ab"))
    space = PgSpace(url)
    try:
        dry = Report(cutoff=0, dry_run=True)
        assert space.remove_logs(task, dry, dry_run=True) == 7 and output.has_log(task)
        report = Report(cutoff=0, dry_run=False)
        assert space.remove_logs(task, report, dry_run=False) == 7
        assert (report.log_files, report.log_bytes) == (2, 7)
        assert space.remove_logs(task, report, dry_run=False) == 0  # already gone: no error
    finally:
        space.close()
    assert not output.has_log(task) and output.read(task, "stdout", 0, 10) == b""
    assert count(url, "SELECT count(*) FROM log_chunks WHERE task = %s", task) == 0


def test_retention_drops_old_unreferenced_blobs_and_spares_touched_ones(
    blobs: PgBlobStore, url: str, tmp_path: Path
) -> None:
    from dragoon.relay import db
    from dragoon.relay.pg_retention import PgSpace
    from dragoon.relay.retention import BLOB_GRACE, Report

    old, fresh, again = (secrets.token_bytes(1500) for _ in range(3))
    for data in (old, fresh, again):
        upload(blobs, data)
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("UPDATE blobs SET stored_at = 0 WHERE sha256 = ANY(%s)",
                     ([digest(old), digest(again)],))
    upload(blobs, again)  # stored again: touched, so within the grace once more
    records = db.connect(tmp_path / "relay.db")  # the relay's records: nothing refers to these

    def call(fn: Any, *args: Any) -> Any:
        return fn(records, *args)

    space = PgSpace(url)
    try:
        report = Report(cutoff=None, dry_run=False)
        freed = space.orphans(call, report, now=time.time())
        assert (report.orphan_files, freed) == (1, len(old))
        late = Report(cutoff=None, dry_run=False)
        assert space.remove_blob(digest(fresh), late, dry_run=False,
                                 now=time.time() + BLOB_GRACE + 1) == len(fresh)
        assert space.remove_blob(digest(old), late, dry_run=False, now=time.time()) == 0
        assert late.missing == 1
    finally:
        space.close()
        records.close()
    assert not blobs.exists(digest(old)) and not blobs.exists(digest(fresh))
    assert blobs.read(digest(again)) == again
    assert count(url, "SELECT count(*) FROM blob_chunks c WHERE NOT EXISTS"
                      " (SELECT 1 FROM blobs b WHERE b.blob_id = c.blob_id)") == 0


def test_a_database_that_does_not_answer_is_one_clear_error(tmp_path: Path) -> None:
    from dragoon.relay.stores import StoreError, masked

    config = RelayConfig(data_dir=tmp_path)
    config.database = "postgresql://relay:s3cret@127.0.0.1:1/nowhere"  # type: ignore[attr-defined]
    with pytest.raises(StoreError) as refused:
        open_stores(config)
    assert "does not answer" in str(refused.value) and "s3cret" not in str(refused.value)
    assert masked("postgresql://u:pw@h:5432/d") == "postgresql://u:***@h:5432/d"
    assert masked("postgresql://u@h/d") == "postgresql://u@h/d"
