"""Task output from the attacker's side: a relay that edits the records it stores.

A real relay and drone run a task; then its stored stdout (``logs/<task>/stdout`` in the
relay's data dir, the sealed records of shared/e2e.py) is edited on disk, as a relay's
operator could: a record cut out, two swapped, one repeated, a byte flipped, the final
record dropped, a forged one appended. ``dragoon logs`` must fail in one line with exit 9
(``dragoon run``: 255), show what came before the edit and nothing of it or after it.
And the relay's files never hold the task's plaintext.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import pytest
from dragoon.shared import e2e

from tests.cli.conftest import Pilot
from tests.support.relay import RelayProcess, wait_until

SECRET = "s3cret-marker"
# Three bursts a second apart: three records at least (the drone seals what is new each
# time it looks), the last one final.
THREE_BURSTS = (f"echo {SECRET}-one; sleep 0.6; echo {SECRET}-two; sleep 0.6; "
                f"echo {SECRET}-three")
TAMPERED = 9


def records(stored: bytes) -> list[bytes]:
    """The stored stream cut at its records' clear headers."""
    out, at = [], 0
    while at < len(stored):
        size = e2e.parse_header(stored[at:at + e2e.HEADER_BYTES]).record_size
        out.append(stored[at:at + size])
        at += size
    return out


def finished_task(pilot: Pilot, drone: str, command: str = THREE_BURSTS) -> str:
    task_id = pilot.ok("submit", drone, "--", command).strip()
    wait_until(lambda: pilot.json("task", task_id)["state"] == "succeeded", timeout=30,
               interval=0.2, message="task succeeded")
    return task_id


def stored_path(relay: RelayProcess, task_id: str, stream: str = "stdout") -> Path:
    return relay.data_dir / "logs" / task_id / stream


def forged(task_id: str, after: bytes, text: bytes) -> bytes:
    """A record that stands where the next one would, sealed under a key the relay made up."""
    _used, at, _final = e2e.walk_headers(after)
    return e2e.RecordWriter(e2e.new_task_key(), task_id=task_id, kind="out", name="stdout",
                            at=at).seal(text, final=True)


def cut_one(parts: list[bytes]) -> list[bytes]:
    return [parts[0], *parts[2:]]


def swap(parts: list[bytes]) -> list[bytes]:
    return [parts[1], parts[0], *parts[2:]]


def repeat(parts: list[bytes]) -> list[bytes]:
    return [parts[0], parts[0], *parts[1:]]


def flip(parts: list[bytes]) -> list[bytes]:
    second = bytearray(parts[1])
    second[-5] ^= 0x40  # in the ciphertext: the tag no longer matches
    return [parts[0], bytes(second), *parts[2:]]


def drop_final(parts: list[bytes]) -> list[bytes]:
    return parts[:-1]


def drop_all(parts: list[bytes]) -> list[bytes]:
    return []  # a succeeded task always has its final record: none at all is a cut too


@pytest.mark.parametrize("edit", [cut_one, swap, repeat, flip, drop_final, drop_all],
                         ids=["cut", "swap", "repeat", "flip", "drop-final", "drop-all"])
def test_logs_of_an_edited_stream_fail_in_one_line_and_show_nothing_past_it(
        pilot: Pilot, drone: str, relay: RelayProcess,
        edit: Callable[[list[bytes]], list[bytes]]) -> None:
    task_id = finished_task(pilot, drone)
    whole = pilot.ok("logs", task_id)
    assert whole == f"{SECRET}-one\n{SECRET}-two\n{SECRET}-three\n"
    path = stored_path(relay, task_id)
    parts = records(path.read_bytes())
    assert len(parts) >= 3, "the task's output came in fewer records than the test needs"
    path.write_bytes(b"".join(edit(parts)))
    for args in (("logs", task_id), ("logs", "-f", task_id),
                 ("logs", "--stream", "stdout", task_id)):
        done = pilot.cli(*args)
        assert done.returncode == TAMPERED, (args, done.returncode, done.stderr)
        lines = done.stderr.strip().splitlines()
        assert len(lines) == 1 and "altered" in lines[0] and task_id in lines[0], lines
        shown = done.stdout
        assert whole.startswith(shown)  # what opened before the edit, and nothing else
        if edit is not drop_final:
            assert f"{SECRET}-three" not in shown  # nothing after the bad record
        if edit is drop_all:
            assert shown == ""


def test_a_forged_record_after_the_final_one_is_refused_and_never_shown(
        pilot: Pilot, drone: str, relay: RelayProcess) -> None:
    task_id = finished_task(pilot, drone, f"echo {SECRET}")
    path = stored_path(relay, task_id)
    stored = path.read_bytes()
    path.write_bytes(stored + forged(task_id, stored, b"rm -rf / # forged\n"))
    done = pilot.cli("logs", task_id)
    assert done.returncode == TAMPERED, done.stderr
    assert done.stdout == f"{SECRET}\n"  # what the drone sealed, and not one forged byte
    assert "forged" not in done.stdout and len(done.stderr.strip().splitlines()) == 1


def test_a_forged_record_in_place_of_a_real_one_is_refused(
        pilot: Pilot, drone: str, relay: RelayProcess) -> None:
    task_id = finished_task(pilot, drone)
    path = stored_path(relay, task_id)
    parts = records(path.read_bytes())
    path.write_bytes(parts[0] + forged(task_id, parts[0], b"forged\n"))
    done = pilot.cli("logs", task_id)
    assert done.returncode == TAMPERED, done.stderr
    assert done.stdout == f"{SECRET}-one\n" and "does not open" in done.stderr


def test_the_relay_never_holds_the_plaintext(pilot: Pilot, drone: str,
                                             relay: RelayProcess) -> None:
    task_id = finished_task(pilot, drone, f"echo {SECRET}-out; echo {SECRET}-err >&2")
    folder = relay.data_dir / "logs" / task_id
    held = {name: (folder / name).read_bytes() for name in os.listdir(folder)}
    assert {"stdout", "stderr", "order"} <= held.keys()
    for name, data in held.items():
        assert SECRET.encode() not in data, name
        assert b"dragoon-order" not in data, name  # the order's header is sealed as well
    done = pilot.cli("logs", task_id)
    assert done.returncode == 0, done.stderr
    assert done.stdout == f"{SECRET}-out\n" and done.stderr == f"{SECRET}-err\n"


def test_run_stops_at_a_record_the_relay_forged_mid_run(
        pilot: Pilot, drone: str, relay: RelayProcess, tmp_path: Path) -> None:
    """The relay puts its own record where the task's next one goes, while `run` follows."""
    gate = tmp_path / "gate"
    process = pilot.popen("run", drone, "--", f"echo {SECRET}-first; "
                          f"while [ ! -e {gate} ]; do sleep 0.05; done; echo {SECRET}-second")
    assert process.stdout is not None and process.stderr is not None
    assert process.stdout.readline() == f"{SECRET}-first\n".encode()
    task_id = pilot.json("tasks", "--limit", "1")[0]["id"]
    path = stored_path(relay, task_id)
    stored = path.read_bytes()
    assert records(stored), "the first line's record is stored"
    with path.open("ab") as out:  # the drone's next record then lands as a 'resend'
        out.write(forged(task_id, stored, b"forged\n"))
    gate.touch()
    assert process.wait(30) == 255
    rest = process.stdout.read()
    error = process.stderr.read().decode()
    assert b"forged" not in rest and SECRET.encode() not in rest
    assert "altered" in error and len(error.strip().splitlines()) == 1, error


def test_output_cut_at_the_relays_cap_is_said_by_the_pilot(
        pilot: Pilot, drone: str, relay: RelayProcess) -> None:
    """The relay's cap leaves a record cut short; it says so out of band, the pilot says it."""
    task_id = finished_task(pilot, drone, f"echo {SECRET}")
    path = stored_path(relay, task_id)
    stored = path.read_bytes()
    parts = records(stored)
    path.write_bytes(stored[:len(stored) - 3])  # as a cap inside the last record leaves it
    (path.parent / "truncated").touch()
    done = pilot.cli("logs", task_id)
    assert done.returncode == 0, done.stderr
    # The records before the cut open; the cut one does not (the final one, here, or the
    # only one).
    assert done.stdout == (f"{SECRET}\n" if len(parts) > 1 else "")
    assert done.stderr.strip() == f"[dragoon: output cut at the relay's cap of {1 << 30} bytes]"
