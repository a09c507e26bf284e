"""The doors to a session and a key: Ctrl-C and stdin at the TOTP prompt, logging in again after
expiry, an ssh-agent that does not hold the key, keys in the wrong form or mode.

Real parts: the relay, `dragoon` subprocesses (on a pty where a terminal matters), and
OpenSSH's own ssh-agent; FakeAgent stands in only for an agent that refuses.
"""

from __future__ import annotations

import json
import os
import pty
import select
import subprocess
import time
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519
from dragoon.shared.keys import PrivateKey, load_private_key_file

from tests.cli.conftest import Pilot, make_pilot
from tests.cli.test_session import assert_one_line, session_file
from tests.support.agent import FakeAgent, running_ssh_agent
from tests.support.relay import REPO, RelayProcess, fresh_totp, new_signer
from tests.support.tls import self_signed_certificate


def no_terminal(pilot: Pilot, *args: str, stdin: str | None = None,
                env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """``dragoon ARGS`` as a script or a service runs it: no controlling terminal at all, and
    stdin a pipe (``stdin`` text) or /dev/null."""
    return subprocess.run(pilot.argv(*args), input=stdin,
                          stdin=subprocess.DEVNULL if stdin is None else None,
                          capture_output=True, text=True, timeout=60, env=env or pilot.env,
                          cwd=pilot.home, start_new_session=True, check=False)


def on_terminal(pilot: Pilot, args: list[str], *, when: bytes, send: bytes) -> tuple[int, bytes]:
    """``dragoon ARGS`` on a pty; once ``when`` shows, type ``send``. Exit status and output."""
    pid, fd = pty.fork()
    if pid == 0:
        argv = pilot.argv(*args)
        os.execve(argv[0], argv, pilot.env)  # noqa: S606 - argv, no shell
    output, sent, status = b"", False, None
    reaped = False
    deadline = time.monotonic() + 60
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
        if not sent and when in output:
            os.write(fd, send)
            sent = True
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            reaped = True
            break
    else:
        os.kill(pid, 9)
    if not reaped:
        _, status = os.waitpid(pid, 0)
    try:
        while select.select([fd], [], [], 0.2)[0]:
            data = os.read(fd, 4096)
            if not data:
                break
            output += data
    except OSError:
        pass
    os.close(fd)
    assert sent, output
    return os.waitstatus_to_exitcode(status), output


# ----- the TOTP prompt ------------------------------------------------------------------------


def test_ctrl_c_at_the_totp_prompt_is_one_line_and_exit_130(fresh_pilot: Pilot) -> None:
    code, output = on_terminal(fresh_pilot, ["login", "--relay", fresh_pilot.relay.url,
                                             "--key", str(fresh_pilot.key)],
                               when=b"TOTP code:", send=b"\x03")
    assert code == 130, output
    text = output.decode(errors="replace")
    assert "Traceback" not in text and "Aborted" not in text, text
    after_prompt = text.split("TOTP code:", 1)[1].strip().splitlines()
    assert after_prompt == ["dragoon: interrupted"], text
    assert not session_file(fresh_pilot).exists()


def test_ctrl_d_at_the_totp_prompt_is_one_line_and_exit_2(fresh_pilot: Pilot) -> None:
    code, output = on_terminal(fresh_pilot, ["login", "--relay", fresh_pilot.relay.url,
                                             "--key", str(fresh_pilot.key)],
                               when=b"TOTP code:", send=b"\x04")
    assert code == 2, output
    text = output.decode(errors="replace")
    assert text.split("TOTP code:", 1)[1].strip().splitlines() == [
        "dragoon: no TOTP code given"], text


def test_the_totp_code_is_read_from_stdin_that_is_not_a_terminal(fresh_pilot: Pilot) -> None:
    done = no_terminal(fresh_pilot, "login", "--relay", fresh_pilot.relay.url, "--key",
                       str(fresh_pilot.key), stdin=fresh_totp(fresh_pilot.totp_secret) + "\n")
    assert done.returncode == 0, done.stderr
    assert "Warning" not in done.stderr and "TOTP code:" not in done.stderr, done.stderr
    assert done.stderr.startswith("logged in to ")
    assert isinstance(fresh_pilot.json("drones"), list)


def test_empty_stdin_instead_of_a_totp_code_is_one_line_and_exit_2(fresh_pilot: Pilot) -> None:
    for given in ("", "\n"):
        done = no_terminal(fresh_pilot, "login", "--relay", fresh_pilot.relay.url, "--key",
                           str(fresh_pilot.key), stdin=given)
        assert done.returncode == 2, done.stderr
        assert_one_line(done.stderr, "no TOTP code", "--totp")
    closed = no_terminal(fresh_pilot, "login", "--relay", fresh_pilot.relay.url, "--key",
                         str(fresh_pilot.key))  # /dev/null
    assert closed.returncode == 2
    assert_one_line(closed.stderr, "no TOTP code")


# ----- logging in again -----------------------------------------------------------------------


def test_plain_login_after_the_session_expired_reuses_its_relay_and_key(
        fresh_pilot: Pilot) -> None:
    plain = no_terminal(fresh_pilot, "login", "--totp", "123456")
    assert plain.returncode == 2  # never logged in: nothing to reuse
    assert_one_line(plain.stderr, "no relay URL", "--relay")
    moved = fresh_pilot.key.with_name("work_key")  # not the default key: it must be remembered
    fresh_pilot.key.rename(moved)
    Path(f"{fresh_pilot.key}.pub").rename(f"{moved}.pub")
    fresh_pilot.ok("login", "--relay", fresh_pilot.relay.url, "--key", str(moved),
                   "--totp", fresh_totp(fresh_pilot.totp_secret))
    path = session_file(fresh_pilot)
    stored = json.loads(path.read_text())
    path.write_text(json.dumps({**stored, "expires_at": time.time() - 5}))
    assert fresh_pilot.cli("drones").returncode == 3
    again = no_terminal(fresh_pilot, "login", stdin=fresh_totp(fresh_pilot.totp_secret) + "\n")
    assert again.returncode == 0, again.stderr
    assert again.stderr.startswith(f"logged in to {fresh_pilot.relay.url} ")
    renewed = json.loads(path.read_text())
    assert (renewed["relay"], renewed["key"]) == (fresh_pilot.relay.url, str(moved))
    assert renewed["token"] != stored["token"] and renewed["expires_at"] > time.time()
    assert isinstance(fresh_pilot.json("drones"), list)


def test_login_replaces_a_session_file_it_cannot_read(fresh_pilot: Pilot) -> None:
    path = session_file(fresh_pilot)
    path.parent.mkdir(parents=True)
    path.write_text("{ not json")
    assert fresh_pilot.cli("drones").returncode == 2  # the other verbs say it is unreadable
    fresh_pilot.login()
    assert isinstance(fresh_pilot.json("drones"), list)
    path.write_text("{ not json")
    done = fresh_pilot.cli("logout")
    assert (done.returncode, done.stderr.strip()) == (
        0, "logged out (the session file was unreadable)")
    assert not path.exists()


def test_the_ca_file_of_a_login_serves_the_other_verbs_and_the_next_login(
        tmp_path: Path) -> None:
    cert, key = self_signed_certificate(tmp_path)
    with RelayProcess(tmp_path / "relay",
                      extra_args=["--tls-cert", str(cert), "--tls-key", str(key)]) as relay:
        pilot = make_pilot(relay, tmp_path, "tls-erin")
        pilot.ok("login", "--relay", relay.url, "--key", str(pilot.key), "--ca-cert", str(cert),
                 "--totp", fresh_totp(pilot.totp_secret))
        assert pilot.json("drones") == []  # no --ca-cert, no DRAGOON_CA_CERT: the session's
        path = session_file(pilot)
        path.write_text(json.dumps({**json.loads(path.read_text()),
                                    "expires_at": time.time() - 5}))
        again = no_terminal(pilot, "login", stdin=fresh_totp(pilot.totp_secret) + "\n")
        assert again.returncode == 0, again.stderr
        assert json.loads(path.read_text())["ca_cert"] == str(cert)
        assert pilot.json("drones") == []


# ----- the ssh-agent and the key file ---------------------------------------------------------


def test_an_agent_holding_another_key_falls_back_to_the_key_file(fresh_pilot: Pilot,
                                                                 tmp_path: Path) -> None:
    other = tmp_path / "other_key"
    new_signer(other)
    wanted = load_private_key_file(fresh_pilot.key).public_key.fingerprint
    with running_ssh_agent() as agent:
        agent.add(other)  # the agent runs, and holds a key, just not this pilot's
        fresh_pilot.extra_env["SSH_AUTH_SOCK"] = str(agent.socket_path)
        # No --key: ~/.ssh/id_ed25519, from its file since the agent lacks it.
        fresh_pilot.ok("login", "--relay", fresh_pilot.relay.url,
                       "--totp", fresh_totp(fresh_pilot.totp_secret))
        assert json.loads(session_file(fresh_pilot).read_text())["fingerprint"] == wanted
        assert isinstance(fresh_pilot.json("drones"), list)
        # --key KEY.pub: the agent first, then the private half beside it.
        fresh_pilot.ok("login", "--relay", fresh_pilot.relay.url, "--key",
                       f"{fresh_pilot.key}.pub", "--totp", fresh_totp(fresh_pilot.totp_secret))
        assert isinstance(fresh_pilot.json("drones"), list)


def test_a_session_made_through_the_agent_goes_on_with_the_same_key_file_when_it_leaves(
        fresh_pilot: Pilot) -> None:
    with running_ssh_agent() as agent:
        agent.add(fresh_pilot.key)
        fresh_pilot.extra_env["SSH_AUTH_SOCK"] = str(agent.socket_path)
        fresh_pilot.ok("login", "--relay", fresh_pilot.relay.url,
                       "--totp", fresh_totp(fresh_pilot.totp_secret))
        assert json.loads(session_file(fresh_pilot).read_text())["key"] is None  # the agent's
    # The agent is gone; ~/.ssh/id_ed25519 is the very key the session is bound to.
    assert isinstance(fresh_pilot.json("drones"), list)


def test_an_agent_that_refuses_falls_back_to_the_key_file(fresh_pilot: Pilot) -> None:
    with FakeAgent() as agent:  # answers every request with SSH_AGENT_FAILURE
        fresh_pilot.extra_env["SSH_AUTH_SOCK"] = str(agent.socket_path)
        fresh_pilot.ok("login", "--relay", fresh_pilot.relay.url, "--key", str(fresh_pilot.key),
                       "--totp", fresh_totp(fresh_pilot.totp_secret))
        assert agent.requests, "the agent was not asked first"
        assert isinstance(fresh_pilot.json("drones"), list)
    # A socket nobody listens on any more (a stale SSH_AUTH_SOCK) is no reason to fail either.
    assert isinstance(fresh_pilot.json("drones"), list)


def encrypted_key_pilot(relay: RelayProcess, root: Path) -> tuple[Pilot, PrivateKey]:
    """A pilot whose key file is passphrase-protected, with no .pub beside it (the OpenSSH
    container tells its public half)."""
    raw = ed25519.Ed25519PrivateKey.generate()
    key = PrivateKey.from_crypto(raw, "enc")
    home = root / "carol"
    encrypted = home / ".ssh" / "id_work"
    encrypted.parent.mkdir(parents=True)
    encrypted.write_bytes(raw.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH,
        serialization.BestAvailableEncryption(b"correct horse")))
    encrypted.chmod(0o600)
    pub = root / "carol.pub"
    pub.write_text(key.public_key.openssh() + "\n")
    pilot = Pilot(home=home, key=encrypted, relay=relay,
                  totp_secret=relay.add_operator("carol" + root.name[-6:], pub))
    return pilot, key


def test_an_encrypted_key_goes_through_the_agent_and_without_one_says_to_add_it(
        relay: RelayProcess, tmp_path: Path) -> None:
    pilot, key = encrypted_key_pilot(relay, tmp_path)
    encrypted = pilot.key
    # No agent, no terminal: one line that says what to do, and the TOTP on stdin left alone.
    done = no_terminal(pilot, "login", "--relay", relay.url, "--key", str(encrypted),
                       stdin="123456\n")
    assert done.returncode == 7, done.stderr
    assert_one_line(done.stderr, "passphrase-protected", f"ssh-add {encrypted}")
    assert "Warning" not in done.stderr
    plain = tmp_path / "agent-copy"
    key.save(plain)
    with running_ssh_agent() as agent:
        agent.add(plain)
        pilot.extra_env["SSH_AUTH_SOCK"] = str(agent.socket_path)
        ok = no_terminal(pilot, "login", "--relay", relay.url, "--key", str(encrypted),
                         stdin=fresh_totp(pilot.totp_secret) + "\n")
        assert ok.returncode == 0, ok.stderr
        assert isinstance(pilot.json("drones"), list)


def test_ctrl_c_at_the_passphrase_prompt_is_one_line_and_exit_130(relay: RelayProcess,
                                                                  tmp_path: Path) -> None:
    pilot, _ = encrypted_key_pilot(relay, tmp_path)
    code, output = on_terminal(pilot, ["login", "--relay", relay.url, "--key", str(pilot.key)],
                               when=b"Passphrase for", send=b"\x03")
    assert code == 130, output
    text = output.decode(errors="replace")
    assert "Traceback" not in text and "TOTP code" not in text, text
    assert text.split("Passphrase for", 1)[1].strip().splitlines()[1:] == [
        "dragoon: interrupted"], text


def test_logout_forgets_the_session_even_when_the_relay_cannot_be_told(
        fresh_pilot: Pilot) -> None:
    fresh_pilot.login()
    fresh_pilot.key.rename(fresh_pilot.key.with_name("elsewhere"))  # the key cannot sign now
    done = fresh_pilot.cli("logout")
    assert done.returncode == 7
    assert_one_line(done.stderr, "logged out here, but the relay was not told", "no such key")
    assert not session_file(fresh_pilot).exists()
    again = fresh_pilot.cli("logout")
    assert (again.returncode, again.stderr.strip()) == (0, "not logged in")


def test_logout_of_an_expired_session_forgets_it_quietly(fresh_pilot: Pilot) -> None:
    fresh_pilot.login()
    path = session_file(fresh_pilot)
    path.write_text(json.dumps({**json.loads(path.read_text()), "expires_at": time.time() - 5}))
    done = fresh_pilot.cli("logout")
    assert (done.returncode, done.stderr.strip()) == (
        0, "logged out (the session had already expired)")
    assert not path.exists()


def test_a_key_file_others_can_read_is_refused_saying_chmod(fresh_pilot: Pilot) -> None:
    fresh_pilot.key.chmod(0o644)
    done = fresh_pilot.cli("login", "--relay", fresh_pilot.relay.url, "--key",
                           str(fresh_pilot.key), "--totp", "123456")
    assert done.returncode == 7
    assert_one_line(done.stderr, "0644", f"chmod 600 {fresh_pilot.key}")


def test_the_cockpit_with_a_key_it_cannot_use_is_one_line_and_exit_7(fresh_pilot: Pilot) -> None:
    fresh_pilot.login()
    fresh_pilot.key.unlink()
    done = no_terminal(fresh_pilot, "cockpit")
    assert done.returncode == 7, done.stderr
    assert_one_line(done.stderr, "key: ", "no such key file")


# ----- the relay host ---------------------------------------------------------------------------


def test_add_operator_given_a_private_key_asks_for_the_pub_and_echoes_none_of_it(
        relay: RelayProcess, tmp_path: Path) -> None:
    private = tmp_path / "id_ed25519"
    new_signer(private)
    secret_lines = [line for line in private.read_text().splitlines() if "-----" not in line]
    done = subprocess.run(
        [*Pilot(tmp_path, private, relay, "").argv("relay", "add-operator"), "--data",
         str(relay.data_dir), "--name", "dave", "--key", str(private), "--no-qr"],
        capture_output=True, text=True, timeout=60, cwd=REPO, check=False)
    assert done.returncode != 0
    assert done.stderr.strip().splitlines() == [
        f"dragoon relay: {private}: this is a private key; give its public half ({private}.pub)"]
    for line in secret_lines:
        assert line not in done.stdout + done.stderr
