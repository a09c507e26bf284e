"""The disk scan (issue 13): after a whole session, nothing the pilot or the task said is on
the relay's disk or in its log.

A relay of its own, a real drone, a pilot using ``dragoon`` as on any day: a task whose
command, environment, output, stdin, artifact (name and content), inbox message and a
fetched file (path and content) each carry a distinct marker; ``run``, ``logs``,
``artifact``, ``inbox`` and ``fetch`` all go through, so the markers went through the relay
every way they can. Then every file under the relay's data dir (its database, the WAL, log
files, blobs, stdin spools) and everything it wrote to its log is read as bytes: no marker
may appear, in clear, in base64, or in hex, whatever the alignment. The pilot, who holds the
keys, sees them all.
"""

from __future__ import annotations

import base64
import json
import secrets
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.cli.conftest import Pilot, make_pilot
from tests.drone.conftest import DroneProcess
from tests.support.relay import RelayProcess, wait_until

BOX = "scan-box"


def marker(what: str) -> str:
    return f"MARK{what}{secrets.token_hex(6)}"


MARKS = {what: marker(what) for what in (
    "COMMAND", "ENV", "STDOUT", "STDERR", "STDIN", "ARTNAME", "ARTBODY", "MESSAGE",
    "FETCHNAME", "FETCHBODY", "CWD")}


def forms(text: str) -> list[bytes]:
    """The marker as bytes, and as base64 at each of the three alignments, and as hex."""
    raw = text.encode()
    found = [raw, raw.hex().encode()]
    for shift in range(3):
        encoded = base64.b64encode(b"\0" * shift + raw)[4 if shift else 0:]
        found.append(encoded[:len(encoded) - 4])  # the middle, free of padding and edges
    return [f for f in found if len(f) >= 12]


@pytest.fixture(scope="module")
def session(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[RelayProcess, Pilot,
                                                                         Path]]:
    root = tmp_path_factory.mktemp("disk-scan")
    with RelayProcess(root / "relay", config={"sweep_interval": 0.2}) as relay:
        pilot = make_pilot(relay, root, "scanner")
        pilot.login()
        token = pilot.ok("enroll", BOX).strip()
        drone = DroneProcess(root / "drone")
        drone.join(token, slots=2)
        drone.configure(poll_wait=1.0)
        drone.start()
        try:
            wait_until(lambda: any(d["name"] == BOX and d["state"] == "online"
                                   for d in pilot.json("drones")),
                       timeout=60, interval=0.2, message="drone online")
            yield relay, pilot, root
        finally:
            drone.stop()


def test_no_marker_reaches_the_relays_disk_or_log(session: tuple[RelayProcess, Pilot, Path],
                                                  tmp_path: Path) -> None:
    relay, pilot, root = session
    m = MARKS
    work = root / "drone" / "work" / m["CWD"]  # under the drone's fetch root
    work.mkdir(parents=True)
    command = (f"echo {m['COMMAND']} > /dev/null; echo $SECRET_TOKEN; echo {m['STDOUT']}; "
               f"echo {m['STDERR']} >&2; cat; mkdir -p out; echo {m['ARTBODY']} > "
               f"out/{m['ARTNAME']}.txt; echo {m['FETCHBODY']} > {m['FETCHNAME']}.txt; "
               f"echo {m['MESSAGE']} >> \"$DRAGOON_INBOX\"; pwd")
    done = subprocess.run(
        pilot.argv("run", "--env", f"SECRET_TOKEN={m['ENV']}", "--cwd", str(work),
                   "--artifact", "out/*", BOX, "--", command),
        input=f"{m['STDIN']}\n".encode(), capture_output=True, env=pilot.env, timeout=120,
        check=False)
    assert done.returncode == 0, done.stderr.decode()
    out = done.stdout.decode()
    for what in ("ENV", "STDOUT", "STDIN", "CWD"):
        assert m[what] in out, (what, out)
    assert m["STDERR"] in done.stderr.decode()

    task = pilot.json("tasks", "--limit", "1")[0]
    assert pilot.json("task", task["id"])["spec"]["command"] == command  # the pilot reads it
    assert m["STDOUT"] in pilot.ok("logs", task["id"])
    pilot.ok("artifact", task["id"], f"out/{m['ARTNAME']}.txt", "-o", str(tmp_path / "a"))
    assert (tmp_path / "a").read_text() == f"{m['ARTBODY']}\n"
    wait_until(lambda: any(m["MESSAGE"] in json.dumps(x) for x in pilot.json("inbox",
                                                                             "--no-ack")),
               timeout=30, interval=0.2, message="the message")
    pilot.ok("fetch", BOX, str(work / f"{m['FETCHNAME']}.txt"), "-o", str(tmp_path / "f"))
    assert (tmp_path / "f").read_text() == f"{m['FETCHBODY']}\n"

    relay.stop()  # everything the relay holds is on disk now (WAL checkpointed at close)
    leaks: list[str] = []
    files = [p for p in relay.data_dir.rglob("*") if p.is_file()]
    assert any(p.name.endswith(".db") for p in files)
    blobs = [(str(p), p.read_bytes()) for p in files]
    blobs.append(("the relay's log", relay.stderr_text().encode()))
    for what, text in MARKS.items():
        for name, data in blobs:
            if any(form in data for form in forms(text)):
                leaks.append(f"{what} in {name}")
    assert leaks == [], "\n".join(leaks)
    relay.start()
