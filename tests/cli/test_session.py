"""Login, logout, settings resolution and the errors a pilot meets before any task runs."""

from __future__ import annotations

import json
import os
import pty
import select
import socket
import stat
import time
from pathlib import Path

from dragoon.cockpit.cli.drones import DRONE_JSON_FIELDS
from dragoon.shared.enrollment import JoinToken

from tests.cli.conftest import Pilot
from tests.support.relay import RelayProcess, fresh_totp, new_signer


def session_file(pilot: Pilot) -> Path:
    return pilot.home / "state" / "dragoon" / "session.json"


def assert_one_line(stderr: str, *fragments: str) -> None:
    lines = stderr.strip().splitlines()
    assert len(lines) == 1, stderr
    assert lines[0].startswith("dragoon: "), stderr
    assert "Traceback" not in stderr
    for fragment in fragments:
        assert fragment in lines[0], stderr


def test_login_keeps_the_session_in_a_0600_file_and_other_verbs_use_it(
        fresh_pilot: Pilot) -> None:
    fresh_pilot.login()
    path = session_file(fresh_pilot)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    stored = json.loads(path.read_text())
    assert stored["relay"] == fresh_pilot.relay.url
    assert stored["token"] not in fresh_pilot.cli("drones").stderr
    # No --relay, no --key: both come from the session.
    assert isinstance(fresh_pilot.json("drones"), list)


def test_login_asks_for_the_totp_code_without_echo(fresh_pilot: Pilot) -> None:
    code = fresh_totp(fresh_pilot.totp_secret)
    pid, fd = pty.fork()
    if pid == 0:  # the child: dragoon with the pty as its controlling terminal
        argv = fresh_pilot.argv("login", "--relay", fresh_pilot.relay.url, "--key",
                                str(fresh_pilot.key))
        os.execve(argv[0], argv, fresh_pilot.env)  # noqa: S606 - argv, no shell
    output = b""
    deadline = time.monotonic() + 30
    sent = False
    status = None
    while time.monotonic() < deadline:
        ready, _, _ = select.select([fd], [], [], 0.1)
        if ready:
            try:
                data = os.read(fd, 4096)
            except OSError:
                data = b""
            output += data
            if not data:
                break
        if not sent and b"TOTP code:" in output:
            os.write(fd, code.encode() + b"\n")
            sent = True
        done_pid, status = os.waitpid(pid, os.WNOHANG)
        if done_pid:
            break
    else:
        os.kill(pid, 9)
    if status is None or not os.WIFEXITED(status):
        _, status = os.waitpid(pid, 0)
    os.close(fd)
    assert sent, output
    assert os.WEXITSTATUS(status) == 0, output
    assert code.encode() not in output, "the TOTP code was echoed"
    assert session_file(fresh_pilot).exists()


def test_wrong_totp_is_one_line_and_exit_3(fresh_pilot: Pilot) -> None:
    done = fresh_pilot.cli("login", "--relay", fresh_pilot.relay.url, "--key",
                           str(fresh_pilot.key), "--totp", "000000")
    assert done.returncode == 3
    assert_one_line(done.stderr, "wrong TOTP")
    assert not session_file(fresh_pilot).exists()


def test_key_the_relay_does_not_know_is_refused_with_exit_7(fresh_pilot: Pilot,
                                                             tmp_path: Path) -> None:
    stranger = tmp_path / "stranger"
    new_signer(stranger)
    done = fresh_pilot.cli("login", "--relay", fresh_pilot.relay.url, "--key", str(stranger),
                           "--totp", "123456")
    assert done.returncode == 7
    assert_one_line(done.stderr, "does not accept this key")


def test_missing_key_file_is_one_line_and_exit_7(fresh_pilot: Pilot) -> None:
    done = fresh_pilot.cli("login", "--relay", fresh_pilot.relay.url, "--key",
                           str(fresh_pilot.home / "nope"), "--totp", "123456")
    assert done.returncode == 7
    assert_one_line(done.stderr, "nope", "no such key file")


def test_unreachable_relay_is_one_line_and_exit_5(fresh_pilot: Pilot) -> None:
    with socket.socket() as sock:  # a port that was free a moment ago: nothing listens
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    done = fresh_pilot.cli("login", "--relay", f"http://127.0.0.1:{port}", "--key",
                           str(fresh_pilot.key), "--totp", "123456")
    assert done.returncode == 5
    assert_one_line(done.stderr, "unreachable", str(port))


def test_tls_failure_is_one_line_and_exit_6(fresh_pilot: Pilot) -> None:
    https_url = fresh_pilot.relay.url.replace("http://", "https://")
    done = fresh_pilot.cli("login", "--relay", https_url, "--key", str(fresh_pilot.key),
                           "--totp", "123456")
    assert done.returncode == 6
    assert_one_line(done.stderr, "TLS")


def test_not_logged_in_says_to_run_login_with_exit_3(fresh_pilot: Pilot) -> None:
    done = fresh_pilot.cli("drones")
    assert done.returncode == 3
    assert_one_line(done.stderr, "dragoon login")


def test_expired_session_says_to_run_login_with_exit_3(fresh_pilot: Pilot) -> None:
    fresh_pilot.login()
    path = session_file(fresh_pilot)
    stored = json.loads(path.read_text())
    path.write_text(json.dumps({**stored, "expires_at": time.time() - 5}))
    done = fresh_pilot.cli("tasks")
    assert done.returncode == 3
    assert_one_line(done.stderr, "expired", "dragoon login")


def test_session_revoked_on_the_relay_says_to_run_login(fresh_pilot: Pilot) -> None:
    fresh_pilot.login()
    path = session_file(fresh_pilot)
    saved = path.read_text()
    fresh_pilot.ok("logout")
    assert not path.exists()
    path.write_text(saved)  # a stale copy of the revoked token
    done = fresh_pilot.cli("drones")
    assert done.returncode == 3
    assert_one_line(done.stderr, "dragoon login")


def test_relay_and_key_come_from_the_config_file_and_env_beats_it(
        fresh_pilot: Pilot, tmp_path: Path) -> None:
    config = fresh_pilot.home / "config" / "dragoon" / "config.toml"
    config.parent.mkdir(parents=True, exist_ok=True)  # known_drones may be there already
    config.write_text(f'relay = "{fresh_pilot.relay.url}"\nkey = "{fresh_pilot.key}"\n')
    fresh_pilot.ok("login", "--totp", fresh_totp(fresh_pilot.totp_secret))
    assert isinstance(fresh_pilot.json("drones"), list)
    # DRAGOON_RELAY wins over the file: pointing it elsewhere means no session there.
    fresh_pilot.extra_env["DRAGOON_RELAY"] = "http://127.0.0.1:9"
    done = fresh_pilot.cli("drones")
    assert done.returncode == 3
    assert_one_line(done.stderr, "not logged in to http://127.0.0.1:9")
    # DRAGOON_CONFIG names another file, which wins over the XDG one.
    del fresh_pilot.extra_env["DRAGOON_RELAY"]
    other = tmp_path / "other.toml"
    other.write_text('relay = "not a url"\n')
    fresh_pilot.extra_env["DRAGOON_CONFIG"] = str(other)
    done = fresh_pilot.cli("drones")
    assert done.returncode == 2
    assert_one_line(done.stderr, "not a url")


def test_logout_revokes_the_token(fresh_pilot: Pilot) -> None:
    fresh_pilot.login()
    token = json.loads(session_file(fresh_pilot).read_text())["token"]
    done = fresh_pilot.cli("logout")
    assert done.returncode == 0
    from tests.support.relay import PilotSession

    with PilotSession(fresh_pilot.relay.url, new_signer(), token=token) as client:
        assert client.get("/v1/workers").status_code == 401


def test_enroll_prints_a_join_token_alone_on_stdout(pilot: Pilot, relay: RelayProcess) -> None:
    out = pilot.ok("enroll", "gpu-new", "--labels", "gpu,a100")
    token = JoinToken.decode(out.strip())
    assert out.count("\n") == 1
    assert token.drone == "gpu-new"
    assert token.relay == relay.url


def test_malformed_flag_values_are_usage_errors_with_exit_2(pilot: Pilot) -> None:
    for args in (["submit", "d", "--timeout", "3x", "--", "true"],
                 ["submit", "d", "--env", "NOEQUALS", "--", "true"],
                 ["submit", "--labels", "a,,b", "--", "true"],
                 ["cancel", "t-aaaaaaaaaa", "--grace", "-1s"],
                 ["tasks", "--state", "sleeping"],
                 ["submit", "d"]):
        done = pilot.cli(*args)
        assert done.returncode == 2, (args, done.stderr)
        assert_one_line(done.stderr, f"dragoon: {args[0]}: ", "--help")
    nameless = pilot.cli("fetch", "some-drone", "/")
    assert nameless.returncode == 2
    assert_one_line(nameless.stderr, "pass -o FILE")


def test_values_the_relay_would_refuse_are_usage_errors_with_its_reason(pilot: Pilot) -> None:
    """Refused before any request, with the words of shared/spec.py (the relay's 422 text)."""
    for args, reason in (
        (["submit", "d", "--timeout", "0", "--", "true"],
         "Invalid value for '--timeout': must be more than zero"),
        (["submit", "d", "--env", "1X=2", "--", "true"],
         "Invalid value for '--env': '1X' is not a variable name"),
        (["submit", "d", "--grace", "2h", "--", "true"],
         "Invalid value for '--grace': must be at most 1h"),
        (["submit", "d", "--artifact", "../up", "--", "true"],
         "artifacts: '../up' holds '..'; patterns stay inside the work dir"),
        (["submit", "d", "--name", "", "--", "true"], "name: is empty"),
        (["submit", "gpu 1", "--", "true"], "drone: 'gpu 1' is not a name"),
        (["enroll", "gpu/3"], "Invalid value for 'NAME': 'gpu/3' is not a name"),
        (["enroll", "gpu-3", "--ttl", "31d"], "Invalid value for '--ttl': must be at most 30d"),
    ):
        done = pilot.cli(*args)
        assert done.returncode == 2, (args, done.stderr)
        assert_one_line(done.stderr, f"dragoon: {args[0]}: ", reason)


def test_submit_takes_a_timeout_of_hours_and_minutes_and_spaced_labels(pilot: Pilot,
                                                                       drone: str) -> None:
    task_id = pilot.ok("submit", "--labels", "cli, test", "--timeout", "1h30m", "--grace", "0",
                       "--", "true").strip()
    task = pilot.json("task", task_id)
    assert task["target"] == {"labels": ["cli", "test"]}
    assert (task["spec"]["timeout"], task["spec"]["grace"]) == (5400, 0)


def test_drones_listing_is_plain_when_piped(pilot: Pilot) -> None:
    out = pilot.ok("drones")
    assert out.splitlines()[0].split() == ["NAME", "STATE", "LABELS", "LOAD", "TASKS", "SEEN"]
    assert "\x1b[" not in out


def test_drain_stops_new_work_and_undo_resumes_it(pilot: Pilot, drone: str) -> None:
    try:
        assert pilot.ok("drain", drone).strip().startswith(f"{drone}: draining")
        listed = {d["name"]: d for d in pilot.json("drones")}
        assert listed[drone]["draining"] is True
        assert set(DRONE_JSON_FIELDS) <= listed[drone].keys()  # docs/cli.md keeps these
    finally:
        undone = json.loads(pilot.ok("drain", drone, "--undo", "--json"))
    assert undone["draining"] is False


def test_drain_of_an_unknown_drone_is_one_line_with_exit_4(pilot: Pilot) -> None:
    done = pilot.cli("drain", "no-such-drone")
    assert done.returncode == 4
    assert_one_line(done.stderr, "no-such-drone")
