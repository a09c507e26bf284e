"""Unauthenticated routes under a flood: challenge, login and drone init are rate-limited per
client address and in total (429 + Retry-After), and the challenge table stays bounded.

Linux routes all of 127.0.0.0/8 to loopback, so each test speaks from addresses of its own
(127.0.x.y) and plays as many peers as it needs.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support.relay import PilotSession, RelayProcess, fresh_totp, relay_db, wait_until

FINGERPRINT = "SHA256:" + "A" * 43
CHALLENGE = "/v1/auth/challenge"


def client_from(relay: RelayProcess, address: str) -> httpx.Client:
    return httpx.Client(base_url=relay.url, timeout=10,
                        transport=httpx.HTTPTransport(local_address=address))


def challenges(client: httpx.Client, count: int, **kwargs: Any) -> list[httpx.Response]:
    return [client.post(CHALLENGE, json={"fingerprint": FINGERPRINT}, **kwargs)
            for _ in range(count)]


def challenge_rows(relay: RelayProcess) -> int:
    with relay_db(relay.data_dir) as conn:
        return int(conn.execute("SELECT COUNT(*) FROM challenges").fetchone()[0])


@pytest.fixture(scope="module")
def limited(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RelayProcess]:
    """Five a burst per address, then one every five seconds; 127.0.0.1 alone is a proxy."""
    config = {"open_rate_per_peer": 0.2, "open_burst_per_peer": 5, "open_rate_total": 1000,
              "open_burst_total": 1000, "trusted_proxies": ["127.0.0.1"]}
    with RelayProcess(tmp_path_factory.mktemp("limited") / "relay", config=config) as relay:
        yield relay


def test_a_challenge_burst_from_one_peer_gets_429_after_the_limit(limited: RelayProcess) -> None:
    with client_from(limited, "127.0.1.2") as flooder, client_from(limited, "127.0.1.3") as other:
        answers = challenges(flooder, 8)
        assert [a.status_code for a in answers] == [200] * 5 + [429] * 3
        refused = answers[-1]
        assert refused.json()["error"] == "rate_limited"
        assert int(refused.headers["retry-after"]) >= 1
        # Another address has its own budget.
        assert challenges(other, 1)[0].status_code == 200


def test_a_spoofed_forwarded_for_does_not_buy_a_new_budget(limited: RelayProcess) -> None:
    with client_from(limited, "127.0.1.4") as flooder:
        answers = [flooder.post(CHALLENGE, json={"fingerprint": FINGERPRINT},
                                headers={"X-Forwarded-For": f"198.51.100.{i}"})
                   for i in range(8)]
    assert [a.status_code for a in answers] == [200] * 5 + [429] * 3


def test_behind_a_trusted_proxy_each_forwarded_client_has_its_own_budget(
    limited: RelayProcess,
) -> None:
    with client_from(limited, "127.0.0.1") as proxy:
        first = challenges(proxy, 7, headers={"X-Forwarded-For": "203.0.113.10"})
        second = challenges(proxy, 1, headers={"X-Forwarded-For": "203.0.113.11"})
    assert [a.status_code for a in first] == [200] * 5 + [429] * 2
    assert second[0].status_code == 200


def test_login_and_drone_init_are_limited_too(limited: RelayProcess) -> None:
    with client_from(limited, "127.0.1.5") as flooder:
        logins = [flooder.post("/v1/auth/login", json={
            "fingerprint": FINGERPRINT, "challenge": "x" * 43, "signature": "AA==", "totp": "0",
        }) for _ in range(7)]
        inits = [flooder.post("/v1/worker/init", json={
            "name": "d", "secret": "s", "public_key": "ssh-ed25519 AAAA", "labels": [],
        }) for _ in range(7)]
    assert [a.status_code for a in logins][-2:] == [429, 429]
    assert all(a.status_code != 429 for a in logins[:5])
    assert [a.status_code for a in inits][-2:] == [429, 429]
    assert all(a.status_code != 429 for a in inits[:5])


def test_the_429_comes_before_the_body_is_read(limited: RelayProcess) -> None:
    """Over budget, a huge declared body is not waited for: the answer is at once."""
    with client_from(limited, "127.0.1.6") as flooder:
        challenges(flooder, 5)
        answer = flooder.post(CHALLENGE, content=b"{" + b" " * 100_000,
                              headers={"content-type": "application/json"})
    assert answer.status_code == 429


def test_the_total_bucket_limits_all_peers_together(tmp_path: Path) -> None:
    config = {"open_rate_per_peer": 100, "open_burst_per_peer": 100, "open_rate_total": 0.1,
              "open_burst_total": 10, "trusted_proxies": []}
    with RelayProcess(tmp_path / "relay", config=config) as relay:
        statuses = []
        for i in range(15):
            with client_from(relay, f"127.0.2.{i + 1}") as peer:
                statuses.append(challenges(peer, 1)[0].status_code)
    assert statuses == [200] * 10 + [429] * 5


@pytest.fixture(scope="module")
def bounded(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RelayProcess]:
    config = {"max_challenges": 20, "open_rate_per_peer": 1, "open_burst_per_peer": 30,
              "open_rate_total": 1000, "open_burst_total": 1000, "trusted_proxies": [],
              "sweep_interval": 0.2}
    with RelayProcess(tmp_path_factory.mktemp("bounded") / "relay", config=config) as relay:
        yield relay


def test_the_challenge_table_never_exceeds_its_bound(bounded: RelayProcess) -> None:
    most = 0
    for i in range(4):
        with client_from(bounded, f"127.0.3.{i + 1}") as peer:
            for answer in challenges(peer, 25):
                assert answer.status_code == 200
                most = max(most, challenge_rows(bounded))
    assert 0 < most <= 20


def test_a_legit_login_works_after_a_flood(bounded: RelayProcess) -> None:
    alice = bounded.pilot("alice")  # logged in once, before the flood
    bob = bounded.pilot("bob")
    for i in range(3):  # the table is full of strangers' challenges, their budgets spent
        with client_from(bounded, f"127.0.4.{i + 1}") as peer:
            assert challenges(peer, 35)[-1].status_code == 429
    assert challenge_rows(bounded) == 20
    # From a fresh address at once.
    fresh = PilotSession(bounded.url, alice.signer)
    fresh.http = client_from(bounded, "127.0.4.9")
    fresh.login(alice.totp_secret)  # type: ignore[attr-defined]
    assert fresh.get("/v1/workers").status_code == 200
    fresh.close()
    # From a flooder's own address, once its budget has refilled.
    flooder = PilotSession(bounded.url, bob.signer)
    flooder.http = client_from(bounded, "127.0.4.1")
    code = fresh_totp(bob.totp_secret)  # type: ignore[attr-defined]

    def logged_in() -> bool:
        try:
            return flooder.login(totp=code).status_code == 200
        except httpx.HTTPStatusError as exc:
            assert exc.response.status_code == 429, exc.response.text
            return False

    wait_until(logged_in, timeout=15, interval=0.5, message="the flooder's budget refilled")
    assert flooder.get("/v1/workers").status_code == 200
    flooder.close()


def test_expired_challenges_leave_the_table(tmp_path: Path) -> None:
    config = {"challenge_ttl": 1, "sweep_interval": 0.2}
    with RelayProcess(tmp_path / "relay", config=config) as relay:
        with client_from(relay, "127.0.5.1") as peer:
            assert all(a.status_code == 200 for a in challenges(peer, 5))
        assert challenge_rows(relay) == 5
        wait_until(lambda: challenge_rows(relay) == 0, timeout=10,
                   message="expired challenges were swept")
