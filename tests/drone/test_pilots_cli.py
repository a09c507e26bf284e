"""`dragoon drone authorize | revoke | pilots`: the box's own edits of authorized_pilots, local
only; bad input is one line, exit 2, and the file is left exactly as it was."""

from __future__ import annotations

import stat
import subprocess
import sys
from pathlib import Path

import pytest
from dragoon.drone import config
from dragoon.shared.keys import PrivateKey
from dragoon.shared.trust import read_authorized_pilots, write_authorized_pilots

from tests.support.relay import REPO

ALICE = PrivateKey.generate_ed25519("alice@laptop").public_key
BOB = PrivateKey.generate_ed25519("bob@desk").public_key


def drone(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "dragoon", "drone", *args], capture_output=True,
                          text=True, cwd=REPO, timeout=30)


@pytest.fixture
def data(tmp_path: Path) -> Path:
    """A drone data dir as `drone join` leaves it, as far as these verbs look: its settings
    and an authorized_pilots holding alice."""
    root = tmp_path / "data"
    root.mkdir()
    config.save(config.DroneSettings(name="box-1", relay="http://127.0.0.1:1"),
                root / "drone.toml")
    write_authorized_pilots(root / "authorized_pilots", [ALICE])
    return root


def test_authorize_a_key_file_then_a_key_line(data: Path, tmp_path: Path) -> None:
    pub = tmp_path / "bob.pub"
    pub.write_text(BOB.openssh() + "\n")
    done = drone("authorize", str(pub), "--data", str(data))
    assert done.returncode == 0, done.stderr
    assert done.stdout == f"authorized: {BOB.fingerprint} ssh-ed25519 bob@desk\n"
    assert read_authorized_pilots(data / "authorized_pilots") == [ALICE, BOB]
    assert stat.S_IMODE((data / "authorized_pilots").stat().st_mode) == 0o600
    again = drone("authorize", BOB.openssh(), "--data", str(data))
    assert again.returncode == 0
    assert again.stdout.startswith("already authorized: ")
    listed = drone("pilots", "--data", str(data))
    assert listed.stdout.splitlines() == [f"{ALICE.fingerprint} ssh-ed25519 alice@laptop",
                                          f"{BOB.fingerprint} ssh-ed25519 bob@desk"]


def test_revoke_by_fingerprint_or_key_file(data: Path, tmp_path: Path) -> None:
    write_authorized_pilots(data / "authorized_pilots", [ALICE, BOB])
    done = drone("revoke", ALICE.fingerprint, "--data", str(data))
    assert done.returncode == 0, done.stderr
    assert done.stdout == f"revoked: {ALICE.fingerprint} ssh-ed25519 alice@laptop\n"
    pub = tmp_path / "bob.pub"
    pub.write_text(BOB.openssh() + "\n")
    assert drone("revoke", str(pub), "--data", str(data)).returncode == 0
    assert read_authorized_pilots(data / "authorized_pilots") == []


@pytest.mark.parametrize(("args", "says"), [
    (("authorize", f"no-pty {BOB.openssh()}"), "options before the key are not allowed"),
    (("authorize", "ssh-ed25519 AAAA!! x"), "not valid base64"),
    (("authorize", "ssh-dss AAAA x"), "'ssh-dss' is not a key type"),
    (("authorize", "/no/such.pub"), "no such file"),
    (("revoke", BOB.fingerprint), "is not in"),
    (("revoke", "/no/such.pub"), "no such file"),
], ids=["options", "base64", "dss", "missing-file", "revoke-absent", "revoke-missing-file"])
def test_bad_input_is_exit_2_and_changes_nothing(data: Path, args: tuple[str, ...],
                                                 says: str) -> None:
    before = (data / "authorized_pilots").read_bytes()
    done = drone(*args, "--data", str(data))
    assert done.returncode == 2
    [line] = done.stderr.splitlines()
    assert line.startswith(f"dragoon drone {args[0]}: ") and says in line, line
    assert (data / "authorized_pilots").read_bytes() == before


def test_a_dir_that_is_not_a_drones_is_refused(tmp_path: Path) -> None:
    done = drone("authorize", ALICE.openssh(), "--data", str(tmp_path))
    assert done.returncode == 2
    assert "is not a drone's data dir" in done.stderr
    assert not (tmp_path / "authorized_pilots").exists()


def test_a_damaged_file_is_named_with_its_line(data: Path) -> None:
    (data / "authorized_pilots").write_text(f"{ALICE.openssh()}\nfrom=\"x\" {BOB.openssh()}\n")
    done = drone("pilots", "--data", str(data))
    assert done.returncode == 1
    assert f"{data / 'authorized_pilots'}, line 2: options" in done.stderr
