"""Trust roots end to end (docs/security.md, "Trust roots"): a real relay, real `dragoon enroll`
and `dragoon drone join`, and the pilot's check of the drone's keys, including against a relay
whose database was edited after the drone's init (a hostile relay swapping a drone's keys)."""

from __future__ import annotations

import base64
import sqlite3
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from dragoon.shared.enrollment import JoinToken
from dragoon.shared.keys import PrivateKey, PublicKey
from dragoon.shared.trust import (
    X25519Key,
    certify_x25519,
    read_authorized_pilots,
    read_known_drones,
    x25519_fingerprint,
    x25519_text,
)

from tests.cli.conftest import Pilot, make_pilot
from tests.support.relay import REPO, RelayProcess, dragoon, wait_until


@pytest.fixture
def me(relay: RelayProcess, tmp_path: Path) -> Pilot:
    """A pilot of this test alone (its own pending enrollments and known_drones), logged in."""
    pilot = make_pilot(relay, tmp_path, "tr" + tmp_path.name[-8:].replace("_", ""))
    pilot.login()
    return pilot


def join(token: str, data: Path, *, check: bool = True) -> subprocess.CompletedProcess[str]:
    done = subprocess.run([sys.executable, "-m", "dragoon", "drone", "join", token, "--data",
                           str(data)], capture_output=True, text=True, cwd=REPO, timeout=60)
    if check:
        assert done.returncode == 0, done.stderr
    return done


def known(pilot: Pilot) -> dict[str, object]:
    return dict(read_known_drones(pilot.home / "config" / "dragoon" / "known_drones"))


def pending_file(pilot: Pilot) -> Path:
    return pilot.home / "state" / "dragoon" / "pending-enrollments.json"


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def name_for(pilot: Pilot, short: str) -> str:
    return f"{short}-{pilot.home.name[-6:]}".lower().replace("_", "")


def test_enroll_join_and_listing_confirm_the_drone(me: Pilot, tmp_path: Path) -> None:
    name = name_for(me, "tr-ok")
    other = PrivateKey.generate_ed25519("carol@desk").public_key
    (tmp_path / "carol.pub").write_text(other.openssh() + "\n")
    token_text = me.ok("enroll", name, "--authorize", str(tmp_path / "carol.pub")).strip()
    token = JoinToken.decode(token_text)
    assert token_text.startswith("dragoon-join-v2.")
    assert token.binding_key is not None
    mine = PublicKey.from_openssh(Path(f"{me.key}.pub").read_text())
    assert [PublicKey.from_openssh(line) for line in token.pilots] == [mine, other]
    assert mode(pending_file(me)) == 0o600
    assert base64.b64encode(token.binding_key).decode() in pending_file(me).read_text()

    data = tmp_path / "drone"
    out = join(token_text, data).stdout
    assert "2 pilot key(s)" in out and "no pilot binding" not in out
    assert read_authorized_pilots(data / "authorized_pilots") == [mine, other]
    for secret_file in ("authorized_pilots", "drone_x25519", "drone_key"):
        assert mode(data / secret_file) == 0o600, secret_file
    x25519 = X25519Key.load(data / "drone_x25519").public
    drone_key = PublicKey.from_openssh((data / "drone_key.pub").read_text())

    assert name not in known(me)
    done = me.cli("drones")
    assert done.returncode == 0, done.stderr
    assert f"dragoon: drone {name} confirmed by its enrollment binding: " \
           f"{drone_key.fingerprint}" in done.stderr
    entry = read_known_drones(me.home / "config" / "dragoon" / "known_drones")[name]
    assert entry.ed25519 == drone_key and entry.x25519 == x25519
    assert mode(me.home / "config" / "dragoon" / "known_drones") == 0o600
    assert not pending_file(me).exists()  # nothing pending: the file goes
    # Said once: the next listing has nothing pending.
    assert "confirmed" not in me.cli("drones").stderr
    # The relay keeps and shows what the drone sent, not the X25519 private key.
    view = next(d for d in me.json("drones") if d["name"] == name)
    assert view["x25519_public_key"] == x25519_text(x25519)
    assert view["binding"] and view["x25519_signature"]


def test_enroll_wait_confirms_when_the_drone_joins(me: Pilot, tmp_path: Path) -> None:
    name = name_for(me, "tr-wait")
    waiting = me.popen("enroll", name, "--wait")
    try:
        assert waiting.stdout is not None
        token = waiting.stdout.readline().decode().strip()
        join(token, tmp_path / "drone")
        _out, err = waiting.communicate(timeout=30)
    finally:
        if waiting.poll() is None:
            waiting.kill()
            waiting.wait()
    assert waiting.returncode == 0, err
    assert f"waiting for drone {name} to join" in err.decode()
    assert f"drone {name} confirmed" in err.decode()
    assert name in known(me)


@pytest.mark.parametrize("swap", ["x25519", "ed25519"])
def test_a_relay_that_swaps_the_drones_keys_is_refused(me: Pilot, relay: RelayProcess,
                                                       tmp_path: Path, swap: str) -> None:
    name = name_for(me, f"tr-evil-{swap[:2]}")
    join(me.ok("enroll", name).strip(), tmp_path / "drone")
    # The hostile relay: after the drone's init, its database says other keys, with a
    # certificate the attacker made for them (it holds both keys it put in).
    attacker = PrivateKey.generate_ed25519()
    evil_x25519 = X25519Key.generate().public

    db = sqlite3.connect(relay.data_dir / "relay.db", timeout=30)
    try:
        with db:
            if swap == "x25519":
                # Only the encryption key: the drone's certificate no longer matches either,
                # but the binding is what the pilot checks first.
                db.execute("UPDATE drones SET x25519_public_key = ? WHERE name = ?",
                           (x25519_text(evil_x25519), name))
            else:
                db.execute("UPDATE drones SET public_key = ?, fingerprint = ?,"
                           " x25519_public_key = ?, x25519_signature = ? WHERE name = ?",
                           (attacker.public_key.openssh(), attacker.public_key.fingerprint,
                            x25519_text(evil_x25519), certify_x25519(attacker, evil_x25519),
                            name))
    finally:
        db.close()
    done = me.cli("drones")
    assert done.returncode == 1
    [line] = done.stderr.splitlines()
    assert line.startswith(f"dragoon: drone {name}: REFUSED, its keys do not match the "
                           "enrollment binding this pilot made")
    if swap == "ed25519":
        assert f"ed25519 {attacker.public_key.fingerprint}" in line
    assert f"x25519 {x25519_fingerprint(evil_x25519)}" in line
    assert name not in known(me)
    # Still pending: every listing says so, until the pilot enrolls the name again.
    assert me.cli("drones").returncode == 1
    assert name not in known(me)


def test_an_admin_token_binds_nothing_until_the_pilot_trusts_the_fingerprint(
        me: Pilot, relay: RelayProcess, tmp_path: Path) -> None:
    name = name_for(me, "tr-admin")
    token = dragoon("relay", "enroll", "--data", str(relay.data_dir), "--drone", name,
                    "--url", relay.url, "--authorize", f"{me.key}.pub").stdout.strip()
    parsed = JoinToken.decode(token)
    assert parsed.binding_key is None and len(parsed.pilots) == 1
    data = tmp_path / "drone"
    out = join(token, data).stdout
    drone_key = PublicKey.from_openssh((data / "drone_key.pub").read_text())
    assert f"dragoon drones trust {name} {drone_key.fingerprint}" in out
    assert read_authorized_pilots(data / "authorized_pilots") == [
        PublicKey.from_openssh(Path(f"{me.key}.pub").read_text())]

    assert me.cli("drones").returncode == 0
    assert name not in known(me)  # no binding: nothing is believed on the relay's word

    wrong = PrivateKey.generate_ed25519().public_key.fingerprint
    refused = me.cli("drones", "trust", name, wrong)
    assert refused.returncode == 1
    assert f"its key is not {wrong}" in refused.stderr
    assert f"ed25519 {drone_key.fingerprint}" in refused.stderr
    assert name not in known(me)
    malformed = me.cli("drones", "trust", name, "SHA256:short")
    assert malformed.returncode == 2
    assert malformed.stderr.startswith("dragoon: trust: 'SHA256:short' is not a key fingerprint")
    unknown_verb = me.cli("drones", "trusst", name, wrong)
    assert unknown_verb.returncode == 2 and len(unknown_verb.stderr.splitlines()) == 1
    assert me.cli("drones", "trust", "no-such-drone-x", wrong).returncode == 4

    done = me.cli("drones", "trust", name, drone_key.fingerprint)
    assert done.returncode == 0, done.stderr
    x25519 = X25519Key.load(data / "drone_x25519").public
    assert done.stdout.strip() == (f"trusted: {name} {drone_key.fingerprint} (x25519 "
                                   f"{x25519_fingerprint(x25519)}), added to known_drones")
    assert known(me)[name] == read_known_drones(
        me.home / "config" / "dragoon" / "known_drones")[name]


def test_a_v1_token_straight_from_the_relay_joins_with_no_pilot(me: Pilot, relay: RelayProcess,
                                                                tmp_path: Path) -> None:
    """What `POST /v1/workers` answers is the relay's half: a drone given it as it is
    obeys no pilot yet and proves nothing to anyone (docs/protocol.md, "Join token")."""
    name = name_for(me, "tr-v1")
    session = relay.pilot("tr-v1-" + tmp_path.name[-6:].replace("_", ""))
    answer = session.post("/v1/workers", json={"name": name})
    assert answer.status_code == 200, answer.text
    assert answer.json()["token"].startswith("dragoon-join-v1.")
    data = tmp_path / "drone"
    out = join(answer.json()["token"], data).stdout
    assert "0 pilot key(s)" in out and "no pilot is authorized yet" in out
    assert read_authorized_pilots(data / "authorized_pilots") == []
    wait_until(lambda: any(d["name"] == name for d in me.json("drones")), timeout=10)
    assert name not in known(me)


def test_replacing_a_name_needs_the_pilots_binding_again(me: Pilot, tmp_path: Path) -> None:
    """`enroll --replace`: while the new drone has not joined, the relay still shows the old
    one (another enrollment): still pending, no refusal; once it joins, its binding replaces
    the known_drones entry."""
    name = name_for(me, "tr-repl")
    join(me.ok("enroll", name).strip(), tmp_path / "old")
    assert me.cli("drones").returncode == 0
    old = read_known_drones(me.home / "config" / "dragoon" / "known_drones")[name]

    token = me.ok("enroll", name, "--replace").strip()
    waiting = me.cli("drones")
    assert waiting.returncode == 0 and "REFUSED" not in waiting.stderr
    assert known(me)[name] == old
    join(token, tmp_path / "new")
    done = me.cli("drones")
    assert done.returncode == 0, done.stderr
    new = read_known_drones(me.home / "config" / "dragoon" / "known_drones")[name]
    assert new.ed25519 == PublicKey.from_openssh((tmp_path / "new" / "drone_key.pub").read_text())
    assert new != old
