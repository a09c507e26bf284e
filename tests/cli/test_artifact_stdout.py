"""``dragoon artifact TASK PATH -o -`` (and ``fetch -o -``): the file's bytes on stdout, exactly.

Binary bytes that a text layer would mangle (NUL, CR LF, invalid UTF-8), and
nothing else on stdout; a download that fails its SHA-256 check puts nothing
on stdout at all. Against the session's real relay and drone.
"""

from __future__ import annotations

import hashlib
import subprocess
from pathlib import Path

from tests.cli.conftest import Pilot
from tests.cli.test_files import stored_artifact
from tests.support.relay import RelayProcess

# Bytes no text path survives, then 300 kB of noise: several download chunks.
MAKE_BINARY = ("mkdir -p out && { printf '\\000\\r\\n\\377\\376bin\\000'; "
               "head -c 300000 /dev/urandom; } > out/data.bin && sha256sum out/data.bin")


def run_binary_task(pilot: Pilot, drone: str) -> tuple[str, str]:
    done = pilot.cli("run", drone, "--artifact", "out/*", "--", MAKE_BINARY)
    assert done.returncode == 0, done.stderr
    task_id = pilot.json("tasks", "--drone", drone, "--limit", "1")[0]["id"]
    return task_id, done.stdout.split()[0]


def raw(pilot: Pilot, *args: str) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(pilot.argv(*args), capture_output=True, env=pilot.env, cwd=pilot.home,
                          timeout=60, check=False)


def test_artifact_to_stdout_is_the_file_byte_for_byte(pilot: Pilot, drone: str,
                                                      tmp_path: Path) -> None:
    task_id, digest = run_binary_task(pilot, drone)
    done = raw(pilot, "artifact", task_id, "out/data.bin", "-o", "-")
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith(b"\x00\r\n\xff\xfebin\x00")
    assert len(done.stdout) == 9 + 300000
    assert hashlib.sha256(done.stdout).hexdigest() == digest
    assert list(pilot.home.glob("data.bin*")) == [] and not Path("-").exists()
    saved = tmp_path / "data.bin"
    pilot.ok("artifact", task_id, "out/data.bin", "-o", str(saved))
    assert saved.read_bytes() == done.stdout


def test_fetch_to_stdout_is_the_file_byte_for_byte(pilot: Pilot, drone: str) -> None:
    done = pilot.cli("run", drone, "--", "printf 'a\\000b\\r\\n' > f.bin && pwd")
    assert done.returncode == 0, done.stderr
    fetched = raw(pilot, "fetch", drone, f"{done.stdout.strip()}/f.bin", "-o", "-")
    assert fetched.returncode == 0, fetched.stderr
    assert fetched.stdout == b"a\x00b\r\n"


def test_a_corrupt_download_puts_nothing_on_stdout(pilot: Pilot, drone: str,
                                                  relay: RelayProcess) -> None:
    task_id, _digest = run_binary_task(pilot, drone)
    stored = stored_artifact(relay, task_id)
    stored.write_bytes(b"x" * stored.stat().st_size)  # the relay's copy rots on disk
    done = raw(pilot, "artifact", task_id, "out/data.bin", "-o", "-")
    assert done.returncode == 8
    assert done.stdout == b""
    lines = done.stderr.decode().strip().splitlines()
    assert len(lines) == 1 and "corrupt or altered" in lines[0]


def test_an_unknown_artifact_to_stdout_is_exit_4_and_no_bytes(pilot: Pilot, drone: str) -> None:
    task_id, _ = run_binary_task(pilot, drone)
    done = raw(pilot, "artifact", task_id, "out/none.bin", "-o", "-")
    assert done.returncode == 4
    assert done.stdout == b""


def test_stdout_on_a_terminal_is_refused_before_any_request(pilot: Pilot, drone: str) -> None:
    import os

    task_id, _ = run_binary_task(pilot, drone)
    master, slave = os.openpty()
    try:
        done = subprocess.run(pilot.argv("artifact", task_id, "out/data.bin", "-o", "-"),
                              stdout=slave, stderr=subprocess.PIPE, env=pilot.env,
                              cwd=pilot.home, timeout=60, check=False)
        os.set_blocking(master, False)
        try:
            shown = os.read(master, 1 << 20)
        except BlockingIOError:
            shown = b""
    finally:
        os.close(slave)
        os.close(master)
    assert done.returncode == 2
    assert shown == b""  # not one byte of the file reached the terminal
    lines = done.stderr.decode().strip().splitlines()
    assert len(lines) == 1 and "stdout is a terminal" in lines[0]
