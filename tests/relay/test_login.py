"""Login per PROTOCOL.md: challenge, TOTP once, drift, lock-out (audited), session expiry."""

from __future__ import annotations

import time
from pathlib import Path

import httpx
import pyotp
import pytest
from dragoon.shared.canonical import login_string
from dragoon.shared.constants import NS_LOGIN
from dragoon.shared.sshsig import sign_b64

from tests.support.relay import PilotSession, RelayProcess, new_signer, wait_until


@pytest.fixture(scope="module")
def login_relay(tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    root = tmp_path_factory.mktemp("login")
    config = {"sweep_interval": 0.2, "lockout_failures": 3, "session_ttl": 3}
    with RelayProcess(root / "data", config=config) as process:
        yield process


def _operator(relay: RelayProcess, name: str) -> tuple[PilotSession, str]:
    key = relay.data_dir.parent / f"{name}-key" / "id_ed25519"
    signer = new_signer(key)
    secret = relay.add_operator(name, Path(f"{key}.pub"))
    return PilotSession(relay.url, signer), secret


def _code(secret: str, steps_ahead: int = 0) -> str:
    return pyotp.TOTP(secret).at(time.time() + 30 * steps_ahead)


def test_unknown_fingerprint_gets_a_challenge_like_a_known_one(login_relay: RelayProcess) -> None:
    session, _secret = _operator(login_relay, "known")
    known = httpx.post(f"{login_relay.url}/v1/auth/challenge",
                       json={"fingerprint": session.signer.fingerprint})
    unknown = httpx.post(f"{login_relay.url}/v1/auth/challenge",
                         json={"fingerprint": new_signer().fingerprint})
    assert known.status_code == unknown.status_code == 200
    assert set(known.json()) == set(unknown.json()) == {"challenge", "expires_at"}
    assert len(unknown.json()["challenge"]) == 43


def test_login_gives_a_session_that_signs_requests(login_relay: RelayProcess) -> None:
    session, secret = _operator(login_relay, "dora")
    answer = session.login(totp=_code(secret))
    assert answer.status_code == 200
    assert answer.json()["pilot"] == "dora"
    assert session.get("/v1/workers").status_code == 200


def test_totp_code_is_accepted_once(login_relay: RelayProcess) -> None:
    session, secret = _operator(login_relay, "erin")
    code = _code(secret)
    assert session.login(totp=code).status_code == 200
    replay = session.login(totp=code)
    assert (replay.status_code, replay.json()["error"]) == (401, "bad_totp")
    assert "already used" in replay.json()["detail"]


def test_one_step_of_drift_is_accepted_and_two_are_not(login_relay: RelayProcess) -> None:
    session, secret = _operator(login_relay, "fay")
    assert session.login(totp=_code(secret, 3)).status_code == 401
    assert session.login(totp=_code(secret, 1)).status_code == 200


def test_unknown_key_cannot_log_in(login_relay: RelayProcess) -> None:
    stranger = PilotSession(login_relay.url, new_signer())
    answer = stranger.login(totp="123456")
    assert (answer.status_code, answer.json()["error"]) == (401, "bad_login")


def test_challenge_is_single_use(login_relay: RelayProcess) -> None:
    session, secret = _operator(login_relay, "gus")
    fingerprint = session.signer.fingerprint
    challenge = httpx.post(f"{login_relay.url}/v1/auth/challenge",
                           json={"fingerprint": fingerprint}).json()["challenge"]
    body = {"fingerprint": fingerprint, "challenge": challenge, "totp": _code(secret),
            "signature": sign_b64(session.signer, NS_LOGIN, login_string(challenge, fingerprint))}
    assert httpx.post(f"{login_relay.url}/v1/auth/login", json=body).status_code == 200
    again = httpx.post(f"{login_relay.url}/v1/auth/login", json=body)
    assert (again.status_code, again.json()["error"]) == (401, "bad_challenge")


def test_repeated_failures_lock_the_pilot_out_and_are_audited(login_relay: RelayProcess) -> None:
    session, secret = _operator(login_relay, "hal")
    wrong = "000000" if _code(secret) != "000000" else "111111"
    for _ in range(3):
        assert session.login(totp=wrong).json()["error"] == "bad_totp"
    locked = session.login(totp=_code(secret))
    assert (locked.status_code, locked.json()["error"]) == (429, "locked_out")
    auditor, auditor_secret = _operator(login_relay, "ivy")
    auditor.login(totp=_code(auditor_secret))
    actions = [(e["action"], e["target"]) for e in
               auditor.get("/v1/audit", params={"limit": 50}).json()["events"]]
    assert ("lockout", "hal") in actions
    assert actions.count(("login_failed", "hal")) == 3


def test_session_expires_after_its_ttl(login_relay: RelayProcess) -> None:
    session, secret = _operator(login_relay, "jo")
    expires_at = session.login(totp=_code(secret)).json()["expires_at"]
    wait_until(lambda: time.time() > expires_at + 0.1, timeout=5, message="session expiry")
    answer = session.get("/v1/workers")
    assert (answer.status_code, answer.json()["error"]) == (401, "bad_session")
