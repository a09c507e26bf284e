"""shared.trust: the one reading of authorized_pilots and known_drones, the drone's X25519 key,
its certificate, and the enrollment binding (docs/security.md, "Trust roots")."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest
from dragoon.shared.errors import SignatureError
from dragoon.shared.keys import PrivateKey
from dragoon.shared.trust import (
    KnownDrone,
    TrustFileError,
    X25519Key,
    binding_holds,
    binding_message,
    certify_x25519,
    check_x25519_certificate,
    make_binding,
    parse_authorized_pilots,
    parse_known_drones,
    pilot_keys_from,
    read_authorized_pilots,
    read_known_drones,
    write_authorized_pilots,
    write_known_drones,
)

from tests.support.keys import KeyMaker

ALICE = PrivateKey.generate_ed25519("alice@laptop").public_key
BOB = PrivateKey.generate_ed25519("bob").public_key


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_authorized_pilots_reads_keys_comments_and_blank_lines() -> None:
    text = f"# who may give orders\n\n{ALICE.openssh()}\n   \n  # indented comment\n" \
           f"{BOB.openssh(with_comment=False)}\n{ALICE.openssh(with_comment=False)} again\n"
    keys = parse_authorized_pilots(text, source="authorized_pilots")
    assert keys == [ALICE, BOB]  # the repeated key once
    assert keys[0].comment == "alice@laptop"


@pytest.mark.parametrize("kind", ["rsa", "ecdsa-p256", "ecdsa-p384", "ecdsa-p521"])
def test_authorized_pilots_takes_every_key_type_dragoon_accepts(keys: KeyMaker,
                                                                kind: str) -> None:
    line = Path(f"{keys.make(kind)}.pub").read_text().strip()
    [key] = parse_authorized_pilots(line + "\n", source="f")
    assert key.openssh() == line


@pytest.mark.parametrize(("line", "reason"), [
    (f'from="10.0.0.1" {ALICE.openssh()}', "options before the key are not allowed"),
    (f"no-pty,command=\"id\" {ALICE.openssh()}", "options before the key are not allowed"),
    (f"restrict {ALICE.openssh()}", "options before the key are not allowed"),
    ("ssh-ed25519 not*base64 alice", "not valid base64"),
    ("ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIA== short", "malformed"),
    ("ssh-dss AAAAB3NzaC1kc3MAAACBAP alice", "'ssh-dss' is not a key type"),
    ("hello world", "'hello' is not a key type"),
    ("ssh-ed25519", "not an OpenSSH public key line"),
    (f"ssh-rsa {ALICE.openssh().split()[1]}", "line says ssh-rsa but the key is ssh-ed25519"),
], ids=["from", "command", "restrict", "bad-base64", "truncated", "dss", "words", "no-body",
        "type-lies"])
def test_authorized_pilots_refuses_a_bad_line_by_file_and_line(line: str, reason: str) -> None:
    with pytest.raises(TrustFileError, match=reason) as caught:
        parse_authorized_pilots(f"{ALICE.openssh()}\n# c\n{line}\n", source="/d/authorized_pilots")
    assert str(caught.value).startswith("/d/authorized_pilots, line 3: ")


def test_authorized_pilots_file_is_written_0600_atomically_and_read_back(tmp_path: Path) -> None:
    path = tmp_path / "authorized_pilots"
    old = os.umask(0)
    try:
        write_authorized_pilots(path, [ALICE, BOB])
    finally:
        os.umask(old)
    assert mode(path) == 0o600
    assert read_authorized_pilots(path) == [ALICE, BOB]
    assert [p.name for p in tmp_path.iterdir()] == ["authorized_pilots"]  # no temp left
    assert read_authorized_pilots(tmp_path / "none") == []


def test_a_file_that_is_not_text_is_named(tmp_path: Path) -> None:
    path = tmp_path / "authorized_pilots"
    path.write_bytes(b"\xff\xfe\x00")
    with pytest.raises(TrustFileError, match="not a text file"):
        read_authorized_pilots(path)


def test_pilot_keys_from_a_file_or_a_line(tmp_path: Path) -> None:
    pub = tmp_path / "alice.pub"
    pub.write_text(ALICE.openssh() + "\n")
    assert pilot_keys_from(str(pub)) == [ALICE]
    assert pilot_keys_from(BOB.openssh()) == [BOB]
    private = tmp_path / "id"
    private.write_text("-----BEGIN OPENSSH PRIVATE KEY-----\nxx\n")
    with pytest.raises(TrustFileError, match="private key; give its public half"):
        pilot_keys_from(str(private))
    with pytest.raises(TrustFileError, match="no such file"):
        pilot_keys_from(str(tmp_path / "missing.pub"))
    (tmp_path / "empty").write_text("# nothing\n")
    with pytest.raises(TrustFileError, match="holds no public key"):
        pilot_keys_from(str(tmp_path / "empty"))


def test_known_drones_round_trip_0600(tmp_path: Path) -> None:
    path = tmp_path / "cfg" / "known_drones"
    one = KnownDrone("box-1", ALICE, b"\x01" * 32)
    two = KnownDrone("box-2", BOB, b"\x02" * 32)
    write_known_drones(path, [two, one])
    assert mode(path) == 0o600
    assert read_known_drones(path) == {"box-1": one, "box-2": two}
    lines = [line for line in path.read_text().splitlines() if not line.startswith("#")]
    assert lines[0] == f"box-1 {ALICE.openssh(with_comment=False)} {'AQEB' * 10}AQE="


@pytest.mark.parametrize(("line", "reason"), [
    (f"box-1 {ALICE.openssh(with_comment=False)}", "expected NAME ssh-ed25519 BASE64"),
    (f"box-1 {ALICE.openssh(with_comment=False)} AAAA", "is 32 bytes, not 3"),
    (f"box-1 {ALICE.openssh(with_comment=False)} not-b64!", "not base64"),
    (f"bad/name {ALICE.openssh(with_comment=False)} {'A' * 43}=", "bad/name"),
], ids=["no-x25519", "short-x25519", "bad-x25519", "bad-name"])
def test_known_drones_refuses_a_bad_line(line: str, reason: str) -> None:
    with pytest.raises(TrustFileError, match=reason):
        parse_known_drones(line + "\n", source="known_drones")


def test_known_drones_names_a_drone_once() -> None:
    line = f"box-1 {ALICE.openssh(with_comment=False)} {'A' * 43}="
    with pytest.raises(TrustFileError, match="line 2: drone box-1 is listed twice"):
        parse_known_drones(f"{line}\n{line}\n", source="known_drones")


def test_x25519_key_is_saved_0600_and_never_shown(tmp_path: Path) -> None:
    key = X25519Key.generate()
    path = tmp_path / "drone_x25519"
    key.save(path)
    assert mode(path) == 0o600
    assert X25519Key.load(path) == key
    assert len(key.public) == 32 and key.public != key.secret
    from dragoon.shared.trust import x25519_text

    assert x25519_text(key.secret) not in repr(key)
    path.write_text("x25519-private AAAA\n")
    with pytest.raises(TrustFileError, match="32 bytes"):
        X25519Key.load(path)


def test_the_certificate_binds_the_x25519_key_to_the_drone_key() -> None:
    drone = PrivateKey.generate_ed25519()
    x25519 = X25519Key.generate().public
    signature = certify_x25519(drone, x25519)
    check_x25519_certificate(drone.public_key, x25519, signature)
    with pytest.raises(SignatureError):
        check_x25519_certificate(drone.public_key, b"\x00" * 32, signature)
    with pytest.raises(SignatureError):
        check_x25519_certificate(ALICE, x25519, signature)


def test_the_binding_covers_name_and_both_keys() -> None:
    key, x25519 = b"k" * 32, b"x" * 32
    message = binding_message("box-1", ALICE, x25519)
    assert message == (b"dragoon-enroll-v1\nbox-1\n"
                       + ALICE.openssh(with_comment=False).encode() + b"\n"
                       + b"eHh4" * 10 + b"eHg=")
    binding = make_binding(key, "box-1", ALICE, x25519)
    assert binding_holds(key, "box-1", ALICE, x25519, binding)
    assert not binding_holds(key, "box-2", ALICE, x25519, binding)
    assert not binding_holds(key, "box-1", BOB, x25519, binding)
    assert not binding_holds(key, "box-1", ALICE, b"y" * 32, binding)
    assert not binding_holds(b"K" * 32, "box-1", ALICE, x25519, binding)
