"""Keys from the ssh-agent, a relay behind TLS, and colour only on a terminal."""

from __future__ import annotations

import os
import pty
import select
import time
from pathlib import Path

from tests.cli.conftest import Pilot, make_pilot
from tests.support.agent import running_ssh_agent
from tests.support.relay import RelayProcess, fresh_totp
from tests.support.tls import self_signed_certificate


def test_login_signs_with_the_agents_key_when_no_key_is_named(fresh_pilot: Pilot) -> None:
    with running_ssh_agent() as agent:
        agent.add(fresh_pilot.key)
        fresh_pilot.key.rename(fresh_pilot.key.with_suffix(".moved"))  # only the agent has it
        fresh_pilot.extra_env["SSH_AUTH_SOCK"] = str(agent.socket_path)
        fresh_pilot.ok("login", "--relay", fresh_pilot.relay.url,
                       "--totp", fresh_totp(fresh_pilot.totp_secret))
        assert isinstance(fresh_pilot.json("drones"), list)
    # The agent is gone: the session's key cannot sign any more, and the line says why.
    done = fresh_pilot.cli("drones")
    assert done.returncode == 7
    assert done.stderr.startswith("dragoon: key: ") and "ssh-agent" in done.stderr


def test_tls_relay_needs_its_certificate_trusted(tmp_path: Path) -> None:
    cert, key = self_signed_certificate(tmp_path)
    with RelayProcess(tmp_path / "relay",
                      extra_args=["--tls-cert", str(cert), "--tls-key", str(key)]) as relay:
        assert relay.url.startswith("https://")
        pilot = make_pilot(relay, tmp_path, "tls-pilot")
        untrusted = pilot.cli("login", "--relay", relay.url, "--key", str(pilot.key),
                              "--totp", "123456")
        assert untrusted.returncode == 6
        assert untrusted.stderr.startswith("dragoon: TLS failure")
        assert "CERTIFICATE_VERIFY_FAILED" in untrusted.stderr
        pilot.extra_env["DRAGOON_CA_CERT"] = str(cert)
        pilot.login()
        assert pilot.json("drones") == []


def _run_in_pty(pilot: Pilot, *args: str) -> bytes:
    """``dragoon ARGS`` with a terminal as stdout; everything it wrote."""
    pid, fd = pty.fork()
    if pid == 0:
        argv = pilot.argv(*args)
        os.execve(argv[0], argv, {**pilot.env, "TERM": "xterm-256color",  # noqa: S606
                                  "COLUMNS": "160"})
    output = b""
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        ready, _, _ = select.select([fd], [], [], 0.1)
        if ready:
            try:
                data = os.read(fd, 65536)
            except OSError:
                break
            if not data:
                break
            output += data
    os.close(fd)
    os.waitpid(pid, 0)
    return output


def test_tables_have_colour_on_a_terminal_and_none_when_piped(pilot: Pilot,
                                                               drone: str) -> None:
    pilot.ok("run", drone, "--", "true")
    on_terminal = _run_in_pty(pilot, "tasks", "--limit", "3")
    assert b"\x1b[" in on_terminal and b"succeeded" in on_terminal
    piped = pilot.ok("tasks", "--limit", "3")
    assert "\x1b[" not in piped and "succeeded" in piped


def test_artifact_download_on_a_terminal_draws_a_progress_bar(pilot: Pilot, drone: str,
                                                              tmp_path: Path) -> None:
    pilot.ok("run", drone, "--artifact", "big.bin", "--",
             "head -c 3000000 /dev/urandom > big.bin")
    task_id = pilot.json("tasks", "--limit", "1")[0]["id"]
    target = tmp_path / "big.bin"
    shown = _run_in_pty(pilot, "artifact", task_id, "big.bin", "-o", str(target))
    assert target.stat().st_size == 3000000
    assert b"big.bin" in shown and b"MB" in shown  # rich's DownloadColumn: "x/3.0 MB"
    assert b"saved " in shown
