"""Backup while serving, restore into an empty dir, and carry on as if nothing happened.

The round trip runs under load: a real drone streams a task's output into a
real relay, the backup is taken mid-stream, the relay moves on past it and
stops, the backup is restored and served on the same address, and the drone,
never restarted, ships the rest from where the restored relay says it is.

Backup and restore are SQLite's: every relay here is on SQLite whatever
DRAGOON_TEST_BACKEND says, and a PostgreSQL relay's backup is refused with the
way to take one (pg_dump, docs/storage.md).
"""

from __future__ import annotations

import io
import json
import sqlite3
import tarfile
from pathlib import Path

import pytest
from dragoon.shared.order import OrderReader

from tests.drone.conftest import Fleet
from tests.support import records
from tests.support import relay as relay_support
from tests.support.relay import RelayProcess, dragoon, wait_until

GATE_COMMAND = ("i=0; while [ ! -e {gate} ]; do i=$((i+1)); echo line-$i; sleep 0.002; done;"
                " echo done")


@pytest.fixture(autouse=True)
def _on_sqlite(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(relay_support, "BACKEND", "sqlite")


def test_a_postgresql_relay_is_backed_up_with_pg_dump(tmp_path: Path) -> None:
    with RelayProcess(tmp_path / "relay", backend="postgresql") as relay:
        relay.pilot()
        done = dragoon("relay", "backup", "--data", str(relay.data_dir),
                       str(tmp_path / "b.tar"), check=False)
    assert done.returncode == 1
    assert "PostgreSQL" in done.stderr and "pg_dump" in done.stderr
    assert not (tmp_path / "b.tar").exists()


def relay_bytes(fleet: Fleet, task_id: str) -> int:
    return int(fleet.task(task_id)["stdout_size"])


def archived(archive: Path, name: str) -> bytes:
    with tarfile.open(archive) as tar:
        member = tar.extractfile(name)
        assert member is not None
        return member.read()


def test_backup_mid_stream_restores_a_relay_that_drone_and_pilot_carry_on_with(
    tmp_path: Path,
) -> None:
    config = {"sweep_interval": 0.2}
    relay = RelayProcess(tmp_path / "relay", config=config)
    relay.start()
    fleet = Fleet(tmp_path, relay, relay.pilot("alice"))
    restored: RelayProcess | None = None
    gate = tmp_path / "gate"
    try:
        drone = fleet.drone("d1")
        task_id = fleet.submit(GATE_COMMAND.format(gate=gate), drone="d1", timeout=600)
        wait_until(lambda: relay_bytes(fleet, task_id) > 3000, timeout=30,
                   message="output streaming")

        archive = tmp_path / "backups" / "relay.tar"
        archive.parent.mkdir()
        out = dragoon("relay", "backup", "--data", str(relay.data_dir), str(archive)).stdout
        assert out.startswith(f"backup written: {archive}")
        assert archive.stat().st_mode & 0o777 == 0o600
        at_backup = archived(archive, f"logs/{task_id}/stdout")
        assert len(at_backup) > 3000
        key = records.task_key(fleet.pilot, task_id)  # the archive holds sealed records
        assert records.open_stream(key, task_id, "order", archived(
            archive, f"logs/{task_id}/order")).startswith(b"dragoon-order 1\n")
        assert b"line-1\n" not in at_backup
        assert records.open_stream(key, task_id, "stdout", at_backup).startswith(b"line-1\n")
        # The relay serves on past the backup before it goes.
        wait_until(lambda: relay_bytes(fleet, task_id) > len(at_backup) + 3000, timeout=30,
                   message="output beyond the backup")
        relay.stop()

        target = tmp_path / "restored"
        done = dragoon("relay", "restore", "--data", str(target), str(archive)).stdout
        assert done.startswith(f"restored into {target}")
        assert (target / "logs" / task_id / "stdout").read_bytes() == at_backup
        with sqlite3.connect(target / "relay.db") as conn:
            recorded = conn.execute("SELECT size FROM log_sizes WHERE task = ? AND"
                                    " stream = 'stdout'", (task_id,)).fetchone()[0]
        assert recorded == len(at_backup)  # the log is exactly as long as the database says
        assert (target / "relay_key").read_bytes() == (relay.data_dir / "relay_key").read_bytes()
        assert {p.stat().st_mode & 0o777 for p in target.rglob("*") if p.is_file()} == {0o600}

        restored = RelayProcess(target, config=config)
        restored._port = relay._port  # the same address: drone and pilot keep their URL
        restored.start()
        fleet.relay = restored
        fleet.pilot.reconnect()
        # The pilot's session from before the backup still works: no new login.
        assert fleet.task(task_id)["state"] == "running"
        gate.touch()
        task = fleet.wait_state(task_id, timeout=120)
        assert task["state"] == "succeeded"
        output = fleet.output(task_id, whole=True)
        assert fleet.stored(task_id).startswith(at_backup)  # resumed at the backup's end
        lines = output.decode().splitlines()
        assert lines[-1] == "done"
        assert lines[:-1] == [f"line-{i}" for i in range(1, len(lines))]  # no gap, no repeat
        # The order resumed from the restored relay's offset too: it counts each byte once.
        reader = OrderReader()
        runs = reader.feed(fleet.output(task_id, "order", whole=True))
        assert reader.broken is None and sum(r.size for r in runs) == len(output)
        # The drone, never restarted, resent from the offset the restored relay asked for.
        assert f"relay holds {len(at_backup)} bytes, resuming there" in drone.log_text()
        assert drone.process is not None and drone.process.poll() is None
        # Same signing key: the drone accepts new work from the restored relay.
        after = fleet.wait_state(fleet.submit("echo after", drone="d1"), timeout=60)
        assert after["state"] == "succeeded"
        assert fleet.output(after["id"]) == b"after\n"
    finally:
        gate.touch()
        fleet.close()
        relay.kill9()
        if restored is not None:
            restored.kill9()


@pytest.fixture
def archive(tmp_path: Path) -> Path:
    data = tmp_path / "relay"
    RelayProcess(data)  # init only
    path = tmp_path / "relay.tar.gz"
    dragoon("relay", "backup", "--data", str(data), str(path))
    return path


def test_restore_refuses_a_directory_that_is_not_empty(tmp_path: Path, archive: Path) -> None:
    target = tmp_path / "busy"
    target.mkdir()
    (target / "something").write_text("mine")
    answer = dragoon("relay", "restore", "--data", str(target), str(archive), check=False)
    assert answer.returncode == 1
    assert answer.stderr.strip() == (f"dragoon relay: {target} is not an empty directory;"
                                     " restore only into a new one")
    assert [p.name for p in target.iterdir()] == ["something"]


def test_a_compressed_backup_restores_into_an_empty_dir(tmp_path: Path, archive: Path) -> None:
    target = tmp_path / "fresh"
    target.mkdir()
    dragoon("relay", "restore", "--data", str(target), str(archive))
    assert {p.name for p in target.iterdir()} >= {"relay.db", "relay_key", "relay.toml", "logs",
                                                  "blobs"}
    assert target.stat().st_mode & 0o777 == 0o700
    with RelayProcess(target) as relay:
        assert relay.pilot("carol").get("/v1/tasks").status_code == 200


def hostile(tmp_path: Path, archive: Path, extra: tarfile.TarInfo, content: bytes = b"") -> Path:
    """The genuine archive plus one member an attacker added."""
    path = tmp_path / "hostile.tar"
    with tarfile.open(archive) as src, tarfile.open(path, "w") as dst:
        for member in src.getmembers():
            dst.addfile(member, src.extractfile(member))
        dst.addfile(extra, io.BytesIO(content) if extra.isreg() else None)
    return path


def member(name: str, kind: bytes = tarfile.REGTYPE, *, size: int = 0,
           link: str = "") -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.size = size
    info.linkname = link
    return info


@pytest.mark.parametrize(("extra", "reason"), [
    (member("../escaped", size=4), "'../escaped', which is no part of a relay data directory"),
    (member("/tmp/absolute", size=4), "'/tmp/absolute', which is no part"),
    (member("logs/t-aaaaaaaaaa/../../../escaped", size=4), "which is no part"),
    (member("logs/t-aaaaaaaaaa/stdout", tarfile.SYMTYPE, link="/etc/passwd"),
     "'logs/t-aaaaaaaaaa/stdout', which is not a regular file"),
    (member("metrics.token", tarfile.LNKTYPE, link="../outside"), "not a regular file"),
    (member("blobs/ab/" + "cd" * 32, size=4), "which is no part"),  # not under its own prefix
])
def test_restore_refuses_a_hostile_archive_and_writes_nothing(
    tmp_path: Path, archive: Path, extra: tarfile.TarInfo, reason: str
) -> None:
    bad = hostile(tmp_path, archive, extra, b"evil" if extra.isreg() else b"")
    target = tmp_path / "target"
    answer = dragoon("relay", "restore", "--data", str(target), str(bad), check=False)
    assert answer.returncode == 1
    assert reason in answer.stderr and len(answer.stderr.strip().splitlines()) == 1
    assert not target.exists()
    assert not (tmp_path / "escaped").exists() and not Path("/tmp/absolute").exists()


def test_restore_refuses_what_is_not_a_relay_backup(tmp_path: Path) -> None:
    junk = tmp_path / "junk.tar"
    junk.write_bytes(b"not a tar file at all" * 100)
    answer = dragoon("relay", "restore", "--data", str(tmp_path / "t1"), str(junk), check=False)
    assert answer.returncode == 1 and "not a readable tar archive" in answer.stderr
    keyless = tmp_path / "keyless.tar"
    with tarfile.open(keyless, "w") as tar:
        manifest = json.dumps({"format": 1, "schema_version": 1}).encode()
        info = member("dragoon-backup.json", size=len(manifest))
        tar.addfile(info, io.BytesIO(manifest))
    answer = dragoon("relay", "restore", "--data", str(tmp_path / "t2"), str(keyless),
                     check=False)
    assert answer.returncode == 1 and "has no relay.db" in answer.stderr
    assert not (tmp_path / "t2").exists()


def test_the_archived_database_never_claims_more_log_than_the_archive_holds(
    tmp_path: Path,
) -> None:
    """A log pruned or cut between the database copy and its turn comes down in the copy."""
    from dragoon.relay import backup
    from dragoon.relay.config import RelayConfig

    data = tmp_path / "relay"
    RelayProcess(data)  # init only
    task = "t-aaaaaaaaaa"
    with sqlite3.connect(data / "relay.db") as conn:
        conn.execute("INSERT INTO tasks (id, state, drone, target, spec, pilot, created_at,"
                     " expires_at, lost_after) VALUES (?, 'running', 'd1', '{}', '{}', 'p', 0,"
                     " 0, 0)", (task,))
        conn.executemany("INSERT INTO log_sizes VALUES (?, ?, ?)",
                         [(task, "stdout", 100), (task, "stderr", 40)])
        conn.execute("INSERT INTO storage VALUES ('d1', 140)")
    (data / "logs" / task).mkdir()
    (data / "logs" / task / "stdout").write_bytes(b"x" * 60)  # 40 bytes fewer than recorded
    archive = tmp_path / "relay.tar"
    summary = backup.backup(RelayConfig.load(data), archive)
    assert summary.missing == [f"logs/{task}/stdout (short: 60 of 100)",
                               f"logs/{task}/stderr"]
    target = tmp_path / "restored"
    backup.restore(archive, target)
    assert (target / "logs" / task / "stdout").read_bytes() == b"x" * 60
    with sqlite3.connect(target / "relay.db") as conn:
        assert dict(conn.execute("SELECT stream, size FROM log_sizes")) == {"stdout": 60,
                                                                           "stderr": 0}
        assert conn.execute("SELECT bytes FROM storage").fetchone()[0] == 60


def test_a_finished_task_s_log_goes_in_whole_and_its_count_is_set_right(tmp_path: Path) -> None:
    """Its drone has forgotten it, so no byte of it may be cut: a count that missed the last
    chunk (a crash between the append and the count) is corrected in the archive."""
    from dragoon.relay import backup
    from dragoon.relay.config import RelayConfig

    data = tmp_path / "relay"
    RelayProcess(data)  # init only
    task = "t-bbbbbbbbbb"
    with sqlite3.connect(data / "relay.db") as conn:
        conn.execute("INSERT INTO tasks (id, state, drone, target, spec, pilot, created_at,"
                     " expires_at, lost_after) VALUES (?, 'succeeded', 'd1', '{}', '{}', 'p',"
                     " 0, 0, 0)", (task,))
        conn.execute("INSERT INTO log_sizes VALUES (?, 'stdout', 60)", (task,))
        conn.execute("INSERT INTO storage VALUES ('d1', 60)")
    (data / "logs" / task).mkdir()
    (data / "logs" / task / "stdout").write_bytes(b"y" * 100)
    (data / "logs" / task / "stderr").write_bytes(b"e" * 7)  # never counted at all
    archive = tmp_path / "relay.tar"
    assert backup.backup(RelayConfig.load(data), archive).missing == []
    target = tmp_path / "restored"
    backup.restore(archive, target)
    assert (target / "logs" / task / "stdout").read_bytes() == b"y" * 100
    with sqlite3.connect(target / "relay.db") as conn:
        assert dict(conn.execute("SELECT stream, size FROM log_sizes")) == {"stdout": 100,
                                                                           "stderr": 7}
        assert conn.execute("SELECT bytes FROM storage").fetchone()[0] == 107
