"""``dragoon relay init/serve/migrate --database``: a relay on PostgreSQL from the admin CLI.

Real commands (subprocesses) against the real test server; each test makes its own
database. The password-bearing URL never shows in what the commands print.
"""

from __future__ import annotations

import os
import stat
import tomllib
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import psycopg
import pytest

from tests.support.pg import drop_database, new_database
from tests.support.relay import RelayProcess, dragoon, relay_db


@pytest.fixture
def url() -> Iterator[str]:
    database = new_database("cli")
    yield database
    drop_database(database)


def test_init_with_a_database_migrates_it_and_keeps_the_url_private(
    tmp_path: Path, url: str
) -> None:
    data = tmp_path / "relay"
    done = dragoon("relay", "init", "--data", str(data), "--database", url)
    assert "relay data directory ready" in done.stdout
    config = tomllib.loads((data / "relay.toml").read_text())
    assert config["database"] == url
    assert stat.S_IMODE(os.stat(data / "relay.toml").st_mode) == 0o600
    assert not (data / "relay.db").exists(), "the state is in PostgreSQL, not a file"
    with psycopg.connect(url) as conn:
        versions = [r[0] for r in conn.execute("SELECT version FROM schema_migrations")]
    assert versions and versions == sorted(versions) and versions[0] == 1
    # An operator goes to the database; the relay serves it.
    key = tmp_path / "k"
    from tests.support.relay import new_signer

    new_signer(key)
    dragoon("relay", "add-operator", "--data", str(data), "--name", "alice",
            "--key", f"{key}.pub", "--no-qr")
    with relay_db(data) as conn:
        assert [r["name"] for r in conn.execute("SELECT name FROM pilots")] == ["alice"]


def test_migrate_reports_the_schema_and_runs_nothing_twice(tmp_path: Path, url: str) -> None:
    data = tmp_path / "relay"
    dragoon("relay", "init", "--data", str(data), "--database", url)
    again = dragoon("relay", "migrate", "--data", str(data))
    assert "up to date" in again.stdout and "schema " in again.stdout
    sqlite = tmp_path / "lite"
    dragoon("relay", "init", "--data", str(sqlite))
    lite = dragoon("relay", "migrate", "--data", str(sqlite))
    assert "relay.db: schema" in lite.stdout and "up to date" in lite.stdout


def test_a_migrate_of_an_empty_database_applies_every_step(tmp_path: Path, url: str) -> None:
    data = tmp_path / "relay"
    dragoon("relay", "init", "--data", str(data))  # SQLite first
    done = dragoon("relay", "migrate", "--data", str(data), "--database", url)
    assert "applied 1" in done.stdout
    with psycopg.connect(url) as conn:
        assert conn.execute("SELECT COUNT(*) FROM tasks").fetchone()[0] == 0


def test_an_unreachable_database_is_one_line_with_the_password_masked(tmp_path: Path) -> None:
    data = tmp_path / "relay"
    bad = "postgresql://someone:hunter2secret@127.0.0.1:1/nowhere"
    done = dragoon("relay", "init", "--data", str(data), "--database", bad, check=False)
    assert done.returncode == 1
    assert "hunter2secret" not in done.stderr + done.stdout
    assert "cannot use the database postgresql://someone:***@127.0.0.1:1/nowhere" in done.stderr
    assert "Traceback" not in done.stderr
    assert not (data / "relay_key").exists(), "nothing written for a database it cannot use"
    wrong = dragoon("relay", "init", "--data", str(data), "--database", "mysql://x",
                    check=False)
    assert wrong.returncode == 1 and "postgresql://" in wrong.stderr


def test_serve_database_overrides_relay_toml(tmp_path: Path, url: str) -> None:
    """A data dir initialised on SQLite, served on an empty PostgreSQL database by the
    flag: serve migrates that database at start and keeps its state there."""
    data = tmp_path / "relay"
    with RelayProcess(data, backend="sqlite",
                      extra_args=["--database", url, "--log-level", "info"]) as relay:
        import httpx

        assert httpx.get(f"{relay.url}/healthz", timeout=10).status_code == 200
        with psycopg.connect(url) as conn:
            assert conn.execute("SELECT COUNT(*) FROM schema_migrations").fetchone()[0] >= 1
        answer = httpx.post(f"{relay.url}/v1/auth/challenge", timeout=10,
                            json={"fingerprint": "SHA256:" + "A" * 43})
        assert answer.status_code == 200
        with psycopg.connect(url) as conn:
            assert conn.execute("SELECT COUNT(*) FROM challenges").fetchone()[0] == 1
        assert "event=storage backend=postgresql" in relay.stderr_text()
    with relay_db(data) as lite:  # relay.db, untouched by the served relay
        assert lite.execute("SELECT COUNT(*) FROM challenges").fetchone()[0] == 0


def test_a_password_in_the_url_is_masked() -> None:
    from dragoon.relay.pg import masked

    parts = urlsplit("postgresql://u:p%40ss@h:1/d")
    assert masked(urlunsplit(parts)) == "postgresql://u:***@h:1/d"
