"""Who a task is encrypted for (docs/security.md, "Who a task is encrypted for"), from the
attacker's side: a real relay and a real drone process; the pilot's resolution
(cockpit/client/recipients.py) run against the relay as the spine will run it, while the
test plays the thief and edits the running relay's database (as a stolen relay would
serve it): a pilot's X25519 key swapped, the drone's signed pilots list edited or
replayed, the drone's keys reported otherwise than known_drones. Each is refused, in one
line naming what was refused; the honest answer gives the expected recipients, a second
pilot added on the box with `dragoon drone authorize` included."""

from __future__ import annotations

import asyncio
import sqlite3
import stat
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from dragoon.cockpit.client import RelayClient
from dragoon.cockpit.client.config import SessionStore
from dragoon.cockpit.client.recipients import (
    Recipient,
    Recipients,
    RecipientsRefused,
    recipients_for_drone,
    recipients_for_labels,
)
from dragoon.shared.keys import PrivateKey, PublicKey
from dragoon.shared.pilots_list import (
    certify_pilot_x25519,
    check_pilot_x25519_certificate,
    make_pilots_list,
    parse_pilots_list,
    sign_pilots_list,
)
from dragoon.shared.signers import KeyFileSigner
from dragoon.shared.trust import (
    X25519Key,
    read_authorized_pilots,
    x25519_fingerprint,
    x25519_text,
)

from tests.cli.conftest import Pilot, make_pilot
from tests.drone.conftest import DroneProcess
from tests.support.relay import REPO, RelayProcess, wait_until

LABEL = "rcpt"


class Box:
    """The drone of this module: its name, data dir and keys."""

    def __init__(self, name: str, drone: DroneProcess, relay: RelayProcess) -> None:
        self.name = name
        self.drone = drone
        self.relay = relay
        self.data = drone.data_dir
        self.key = PublicKey.from_openssh((self.data / "drone_key.pub").read_text())
        self.x25519 = X25519Key.load(self.data / "drone_x25519").public


def pilot_key_file(pilot: Pilot) -> Path:
    return pilot.home / "config" / "dragoon" / "pilot.x25519"


def public_of(pilot: Pilot) -> PublicKey:
    return PublicKey.from_openssh(Path(f"{pilot.key}.pub").read_text())


def me_as_recipient(pilot: Pilot) -> Recipient:
    return Recipient(public_of(pilot).fingerprint, X25519Key.load(pilot_key_file(pilot)).public)


def resolve(pilot: Pilot, name: str | None = None, labels: list[str] | None = None
            ) -> Recipients:
    """The pilot's own resolution, in this process, with its session, key and files."""
    session = SessionStore(pilot.env).load()
    assert session is not None

    async def go() -> Recipients:
        async with RelayClient(session.relay, signer=KeyFileSigner.from_file(pilot.key),
                               token=session.token) as client:
            if labels is not None:
                return await recipients_for_labels(client, labels, env=pilot.env)
            assert name is not None
            return await recipients_for_drone(client, name, env=pilot.env)

    return asyncio.run(go())


def refusal(pilot: Pilot, name: str) -> str:
    with pytest.raises(RecipientsRefused) as caught:
        resolve(pilot, name)
    text = str(caught.value)
    assert len(text.splitlines()) == 1
    assert text.startswith(f"drone {name}: REFUSED, ")
    return text


@pytest.fixture(scope="module")
def me(relay: RelayProcess, tmp_path_factory: pytest.TempPathFactory) -> Pilot:
    pilot = make_pilot(relay, tmp_path_factory.mktemp("rcpt-me"), "rcptme")
    pilot.login()
    return pilot


@pytest.fixture(scope="module")
def bob(relay: RelayProcess, tmp_path_factory: pytest.TempPathFactory) -> Pilot:
    pilot = make_pilot(relay, tmp_path_factory.mktemp("rcpt-bob"), "rcptbob")
    pilot.login()
    return pilot


@pytest.fixture(scope="module")
def box(me: Pilot, relay: RelayProcess, tmp_path_factory: pytest.TempPathFactory
        ) -> Iterator[Box]:
    """A drone enrolled by ``me`` (so it obeys ``me`` alone), running, confirmed."""
    name = "rcpt-box"
    drone = DroneProcess(tmp_path_factory.mktemp("rcpt-drone") / "data")
    drone.join(me.ok("enroll", name, "--labels", LABEL).strip(), labels=(LABEL,))
    drone.configure(poll_wait=1.0)  # a change to authorized_pilots goes out within a poll
    drone.start()
    try:
        wait_until(lambda: listed(relay, name) is not None, timeout=30,
                   message="the drone's pilots list at the relay")
        assert me.cli("drones").returncode == 0  # confirms the enrollment: known_drones
        yield Box(name, drone, relay)
    finally:
        drone.stop()


@pytest.fixture
def db(relay: RelayProcess) -> Iterator[sqlite3.Connection]:
    """The thief's own connection to the running relay's database."""
    conn = sqlite3.connect(relay.data_dir / "relay.db", timeout=30, isolation_level=None)
    conn.row_factory = sqlite3.Row
    try:
        yield conn
    finally:
        conn.close()


def listed(relay: RelayProcess, name: str) -> dict[str, Any] | None:
    conn = sqlite3.connect(relay.data_dir / "relay.db", timeout=30)
    conn.row_factory = sqlite3.Row
    try:
        row = conn.execute("SELECT * FROM drone_pilots WHERE drone = ?", (name,)).fetchone()
        return None if row is None else dict(row)
    finally:
        conn.close()


def drone_cli(*args: str) -> subprocess.CompletedProcess[str]:
    done = subprocess.run([sys.executable, "-m", "dragoon", "drone", *args],
                          capture_output=True, text=True, cwd=REPO, timeout=60)
    assert done.returncode == 0, done.stderr
    return done


def obeys(box: Box, key: Path | str) -> bool:
    return PublicKey.from_openssh(Path(key).read_text()) in read_authorized_pilots(
        box.data / "authorized_pilots")


def edit_on_the_box(box: Box, verb: str, key: Path | str) -> int:
    """``dragoon drone authorize|revoke KEY`` on the box (when it changes anything); the
    version of the signed list the drone then publishes."""
    before = listed_version(box)
    if obeys(box, key) == (verb == "authorize"):
        return before
    drone_cli(verb, str(key), "--data", str(box.data))
    return wait_until(lambda: (v := listed_version(box)) > before and v, timeout=30,
                      message=f"a pilots list newer than version {before}")


def authorize(box: Box, key: Path | str) -> int:
    return edit_on_the_box(box, "authorize", key)


def revoke(box: Box, key: Path | str) -> int:
    return edit_on_the_box(box, "revoke", key)


def listed_version(box: Box) -> int:
    row = listed(box.relay, box.name)
    return -1 if row is None else int(row["version"])


# ----- the honest relay ----------------------------------------------------------------


def test_login_makes_the_pilot_key_0600_and_publishes_it_certified(
        me: Pilot, relay: RelayProcess, db: sqlite3.Connection) -> None:
    path = pilot_key_file(me)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    key = X25519Key.load(path)
    row = db.execute("SELECT * FROM pilot_x25519 WHERE fingerprint = ?",
                     (public_of(me).fingerprint,)).fetchone()
    assert row["x25519_public_key"] == x25519_text(key.public)
    check_pilot_x25519_certificate(public_of(me), key.public, row["x25519_signature"])
    assert x25519_text(key.secret) not in relay.stderr_text()
    me.login()  # a second login keeps the key it has
    assert X25519Key.load(path) == key


def test_the_recipients_are_the_drone_and_the_pilots_it_obeys(
        me: Pilot, bob: Pilot, box: Box, tmp_path: Path) -> None:
    revoke(box, f"{bob.key}.pub")  # whatever an earlier test left
    alone = resolve(me, box.name)
    assert alone.drones == (Recipient(box.key.fingerprint, box.x25519),)
    assert alone.pilots == (me_as_recipient(me),)
    assert alone.without_key == () and alone.unlisted == () and alone.unknown == ()

    # A second pilot, authorized on the box (not via the relay), logged in: a recipient.
    authorize(box, f"{bob.key}.pub")
    both = resolve(me, box.name)
    assert both.pilots == (me_as_recipient(me), me_as_recipient(bob))
    assert both.drones == alone.drones

    # A pilot the box obeys who never published a key is named, not a recipient.
    carol = PrivateKey.generate_ed25519("carol").public_key
    (tmp_path / "carol.pub").write_text(carol.openssh() + "\n")
    authorize(box, tmp_path / "carol.pub")
    with_carol = resolve(me, box.name)
    assert with_carol.pilots == both.pilots
    assert with_carol.without_key == (carol.fingerprint,)

    # The labels target: every known drone the relay lists with the labels.
    by_labels = resolve(me, labels=[LABEL])
    assert by_labels.drones == alone.drones and by_labels.pilots == both.pilots

    # Revoked on the box: no longer a recipient.
    revoke(box, tmp_path / "carol.pub")
    assert resolve(me, box.name).without_key == ()


def test_a_pilot_whose_key_the_relay_lacks_publishes_it_on_the_next_need(
        me: Pilot, box: Box, db: sqlite3.Connection) -> None:
    """A pilot that logged in before the key existed (or whose key the relay lost)."""
    mine = public_of(me).fingerprint
    db.execute("DELETE FROM pilot_x25519 WHERE fingerprint = ?", (mine,))
    assert resolve(me, box.name).pilots[0] == me_as_recipient(me)
    row = db.execute("SELECT x25519_public_key FROM pilot_x25519 WHERE fingerprint = ?",
                     (mine,)).fetchone()
    assert row is not None and row[0] == x25519_text(me_as_recipient(me).x25519)


# ----- the stolen relay ------------------------------------------------------------------


def test_a_relay_that_swaps_a_pilots_x25519_key_is_refused(
        me: Pilot, bob: Pilot, box: Box, db: sqlite3.Connection) -> None:
    authorize(box, f"{bob.key}.pub")
    bob_fp = public_of(bob).fingerprint
    saved = dict(db.execute("SELECT * FROM pilot_x25519 WHERE fingerprint = ?",
                            (bob_fp,)).fetchone())
    thief = X25519Key.generate().public
    attacker = KeyFileSigner(PrivateKey.generate_ed25519())
    try:
        for signature in (saved["x25519_signature"],  # bob's certificate of his own key
                          certify_pilot_x25519(attacker, thief)):  # the thief's own
            db.execute("UPDATE pilot_x25519 SET x25519_public_key = ?, x25519_signature = ?"
                       " WHERE fingerprint = ?", (x25519_text(thief), signature, bob_fp))
            text = refusal(me, box.name)
            assert f"pilot {bob_fp} is not certified by that pilot's key" in text
    finally:
        db.execute("UPDATE pilot_x25519 SET x25519_public_key = ?, x25519_signature = ?"
                   " WHERE fingerprint = ?",
                   (saved["x25519_public_key"], saved["x25519_signature"], bob_fp))
    assert me_as_recipient(bob) in resolve(me, box.name).pilots


def test_a_relay_that_edits_the_pilots_list_is_refused(
        me: Pilot, box: Box, db: sqlite3.Connection) -> None:
    saved = dict(db.execute("SELECT * FROM drone_pilots WHERE drone = ?",
                            (box.name,)).fetchone())
    # The thief adds a pilot key of its own, with a published X25519 key it holds.
    thief = KeyFileSigner(PrivateKey.generate_ed25519())
    thief_x = X25519Key.generate().public
    db.execute("INSERT OR REPLACE INTO pilot_x25519 VALUES (?, ?, ?, 0)",
               (thief.fingerprint, x25519_text(thief_x), certify_pilot_x25519(thief, thief_x)))
    old = parse_pilots_list(saved["list"])
    longer = make_pilots_list(box.name, old.version + 1, [*old.pilots, thief.public_key])
    drone_impostor = KeyFileSigner(PrivateKey.generate_ed25519())
    try:
        for signature in (saved["signature"], sign_pilots_list(drone_impostor, longer)):
            db.execute("UPDATE drone_pilots SET list = ?, signature = ?, version = ?"
                       " WHERE drone = ?",
                       (longer.text(), signature, longer.version, box.name))
            text = refusal(me, box.name)
            assert f"its pilots list is not signed by its key {box.key.fingerprint}" in text
    finally:
        db.execute("UPDATE drone_pilots SET list = ?, signature = ?, version = ? WHERE drone = ?",
                   (saved["list"], saved["signature"], saved["version"], box.name))
    assert Recipient(thief.fingerprint, thief_x) not in resolve(me, box.name).pilots


def test_a_relay_that_replays_an_older_pilots_list_is_refused(
        me: Pilot, bob: Pilot, box: Box, db: sqlite3.Connection) -> None:
    """The list from before a revoke would make pilots encrypt for the revoked pilot."""
    authorize(box, f"{bob.key}.pub")
    with_bob = dict(db.execute("SELECT * FROM drone_pilots WHERE drone = ?",
                               (box.name,)).fetchone())
    revoke(box, f"{bob.key}.pub")
    current = resolve(me, box.name)  # this pilot sees the list without bob
    assert me_as_recipient(bob) not in current.pilots
    saved = dict(db.execute("SELECT * FROM drone_pilots WHERE drone = ?",
                            (box.name,)).fetchone())
    try:
        db.execute("UPDATE drone_pilots SET list = ?, signature = ?, version = ? WHERE drone = ?",
                   (with_bob["list"], with_bob["signature"], with_bob["version"], box.name))
        text = refusal(me, box.name)
        assert f"version {with_bob['version']}, older than version {saved['version']}" in text
    finally:
        db.execute("UPDATE drone_pilots SET list = ?, signature = ?, version = ? WHERE drone = ?",
                   (saved["list"], saved["signature"], saved["version"], box.name))
    assert resolve(me, box.name).pilots == current.pilots


@pytest.mark.parametrize("swap", ["x25519", "ed25519"])
def test_a_relay_that_reports_other_drone_keys_is_refused_loudly(
        me: Pilot, box: Box, db: sqlite3.Connection, swap: str) -> None:
    saved = dict(db.execute("SELECT * FROM drones WHERE name = ?", (box.name,)).fetchone())
    attacker = PrivateKey.generate_ed25519().public_key
    evil_x = X25519Key.generate().public
    try:
        if swap == "x25519":
            db.execute("UPDATE drones SET x25519_public_key = ? WHERE name = ?",
                       (x25519_text(evil_x), box.name))
            shown = f"ed25519 {box.key.fingerprint}, x25519 {x25519_fingerprint(evil_x)}"
        else:
            db.execute("UPDATE drones SET public_key = ?, fingerprint = ? WHERE name = ?",
                       (attacker.openssh(), attacker.fingerprint, box.name))
            shown = f"ed25519 {attacker.fingerprint}, x25519 {x25519_fingerprint(box.x25519)}"
        text = refusal(me, box.name)
        assert f"the relay reports {shown}, but known_drones has ed25519 " \
               f"{box.key.fingerprint}, x25519 {x25519_fingerprint(box.x25519)}" in text
        with pytest.raises(RecipientsRefused):
            resolve(me, labels=[LABEL])
    finally:
        db.execute("UPDATE drones SET public_key = ?, fingerprint = ?, x25519_public_key = ?"
                   " WHERE name = ?", (saved["public_key"], saved["fingerprint"],
                                       saved["x25519_public_key"], box.name))
    assert resolve(me, box.name).drones == (Recipient(box.key.fingerprint, box.x25519),)


def test_a_drone_not_in_known_drones_is_refused_and_left_out_of_a_labels_target(
        bob: Pilot, box: Box) -> None:
    """bob never enrolled nor trusted the box: the relay's word is not enough."""
    text = refusal(bob, box.name)
    assert f"not in known_drones (the relay reports ed25519 {box.key.fingerprint})" in text
    by_labels = resolve(bob, labels=[LABEL])
    assert by_labels.drones == () and by_labels.unknown == (box.name,)


def test_the_lists_version_only_grows_across_a_restart_and_a_clock_gone_back(
        me: Pilot, box: Box) -> None:
    """Pilots refuse a list older than one they saw: a drone restarted with its clock behind
    the last list it signed must still sign newer ones (DIR/pilots_list_version)."""
    resolve(me, box.name)  # this pilot has seen the current list
    box.drone.stop()
    ahead = listed_version(box) + 10**9  # the last list signed ~12 days "later"
    (box.data / "pilots_list_version").write_text(f"{ahead}\n")
    box.drone.start()
    wait_until(lambda: listed_version(box) > ahead, timeout=30,
               message="a list signed after the restart")
    assert resolve(me, box.name).drones == (Recipient(box.key.fingerprint, box.x25519),)
    assert "published the pilots list" in box.drone.log_text()
