"""A failed ``dragoon drone join`` leaves no half-made data dir behind.

Each failure is a real one: a token that does not parse, a relay that is down,
a relay whose TLS certificate is not trusted, a token already used, a name
another drone took first. A data dir that did not exist must not exist after;
one that existed must hold exactly what it held before.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.relay import REPO, RelayProcess
from tests.support.tls import self_signed_certificate


def join(token: str, data: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "dragoon", "drone", "join", token, "--data",
                           str(data)], capture_output=True, text=True, timeout=60, cwd=REPO,
                          check=False)


def snapshot(root: Path) -> dict[str, tuple[int, bytes | None]]:
    """Every path under ``root`` with its mode and (for files) its bytes."""
    found: dict[str, tuple[int, bytes | None]] = {}
    for path in [root, *sorted(root.rglob("*"))]:
        info = path.lstat()
        found[str(path.relative_to(root))] = (
            info.st_mode, path.read_bytes() if path.is_file() else None)
    return found


def assert_failed_cleanly(done: subprocess.CompletedProcess[str], *fragments: str,
                          code: int = 1) -> None:
    assert done.returncode == code, done
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("dragoon drone join: "), done.stderr
    for fragment in fragments:
        assert fragment in lines[0], done.stderr


@pytest.fixture(scope="module")
def relay(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RelayProcess]:
    with RelayProcess(tmp_path_factory.mktemp("join-relay") / "relay") as process:
        yield process
        process.kill9()


def test_a_bad_token_makes_no_data_dir(tmp_path: Path) -> None:
    data = tmp_path / "new" / "data"
    assert_failed_cleanly(join("not-a-token", data))
    assert list(tmp_path.iterdir()) == []


def test_a_relay_that_is_down_leaves_no_data_dir_and_an_existing_one_unchanged(
        tmp_path: Path) -> None:
    with RelayProcess(tmp_path / "relay") as relay:
        token = relay.enroll("down-drone")
        relay.kill9()  # the token names a relay that no longer answers
    data = tmp_path / "fresh" / "data"
    assert_failed_cleanly(join(token, data), "cannot reach the relay")
    assert not (tmp_path / "fresh").exists()

    existing = tmp_path / "existing"
    existing.mkdir(mode=0o755)
    (existing / "notes.txt").write_text("mine\n")
    before = snapshot(existing)
    assert_failed_cleanly(join(token, existing), "cannot reach the relay")
    assert snapshot(existing) == before  # no key, no folders, no mode tightened


def test_an_untrusted_tls_certificate_leaves_no_data_dir(tmp_path: Path) -> None:
    cert, key = self_signed_certificate(tmp_path)
    with RelayProcess(tmp_path / "relay",
                      extra_args=["--tls-cert", str(cert), "--tls-key", str(key)]) as relay:
        assert relay.url.startswith("https://")
        token = relay.enroll("tls-drone")
        data = tmp_path / "data"
        done = join(token, data)
        relay.kill9()
    assert_failed_cleanly(done, "TLS failure", "--ca-cert", code=6)  # 6: TLS, as the pilot's
    assert "CERTIFICATE_VERIFY_FAILED" in done.stderr
    assert not data.exists()


def test_a_used_token_and_a_taken_name_leave_nothing(relay: RelayProcess,
                                                     tmp_path: Path) -> None:
    token = relay.enroll("taken-drone")
    second = relay.enroll("taken-drone")  # minted while the name was still free
    first = join(token, tmp_path / "first")
    assert first.returncode == 0, first.stderr
    assert (tmp_path / "first" / "drone.toml").is_file()

    again = tmp_path / "again"
    assert_failed_cleanly(join(token, again), "refused")
    assert not again.exists()

    other = tmp_path / "other"
    other.mkdir()
    os.chmod(other, 0o750)  # noqa: S103 - a loose mode a successful join would tighten
    before = snapshot(other)
    assert_failed_cleanly(join(second, other), "refused")
    assert snapshot(other) == before
