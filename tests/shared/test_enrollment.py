"""shared.enrollment: the one-string join token survives copy and paste, and damage is named.

Version 2 carries the pilot keys and the binding key; version 1 (the relay's half, as
``POST /v1/workers`` answers it) still reads, as a token with neither.
"""

from __future__ import annotations

import base64
import json

import pytest
from dragoon.shared.enrollment import PREFIX, PREFIX_V1, JoinToken, new_binding_key, new_secret
from dragoon.shared.errors import TokenFormatError
from dragoon.shared.keys import PrivateKey

PILOT = PrivateKey.generate_ed25519("alice@laptop").public_key.openssh()
TOKEN = JoinToken(relay="https://relay.example:8443", drone="gpu-1", secret=new_secret(),
                  relay_key="SHA256:" + "A" * 43, pilots=(PILOT,),
                  binding_key=new_binding_key())
HALF = JoinToken(relay=TOKEN.relay, drone=TOKEN.drone, secret=TOKEN.secret,
                 relay_key=TOKEN.relay_key)


BASE = {"relay": "r", "drone": "d", "secret": "s", "relay_key": "k", "pilots": []}


def _encode(payload: object) -> str:
    raw = json.dumps(payload).encode()
    return PREFIX + base64.urlsafe_b64encode(raw).decode().rstrip("=")


def test_join_token_round_trips() -> None:
    assert JoinToken.decode(TOKEN.encode()) == TOKEN


def test_join_token_is_one_shell_safe_word() -> None:
    text = TOKEN.encode()
    assert text.startswith("dragoon-join-v2.")
    assert set(text[len(PREFIX):]) <= set(
        "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_")


def test_join_token_survives_surrounding_whitespace() -> None:
    assert JoinToken.decode(f"  {TOKEN.encode()}\n") == TOKEN


def test_join_token_with_non_ascii_drone_name_round_trips() -> None:
    token = JoinToken(relay="http://127.0.0.1:8787", drone="labo-é", secret="s", relay_key="k")
    assert JoinToken.decode(token.encode()) == token


def test_join_token_encoding_is_canonical() -> None:
    # Same fields, same string: keys sorted, no spaces, no padding.
    payload = base64.urlsafe_b64decode(TOKEN.encode()[len(PREFIX):] + "==")
    assert TOKEN.binding_key is not None
    assert payload == json.dumps(
        {"binding_key": base64.urlsafe_b64encode(TOKEN.binding_key).decode().rstrip("="),
         "drone": TOKEN.drone, "pilots": [PILOT], "relay": TOKEN.relay,
         "relay_key": TOKEN.relay_key, "secret": TOKEN.secret}, separators=(",", ":")).encode()


def test_the_relay_half_is_v1_and_reads_as_a_token_without_pilots_or_binding() -> None:
    text = TOKEN.relay_half()
    assert text.startswith(PREFIX_V1)
    assert JoinToken.decode(text) == HALF
    payload = base64.urlsafe_b64decode(text[len(PREFIX_V1):] + "==")
    assert payload == json.dumps(
        {"drone": TOKEN.drone, "relay": TOKEN.relay, "relay_key": TOKEN.relay_key,
         "secret": TOKEN.secret}, separators=(",", ":")).encode()


def test_a_token_without_binding_key_round_trips_without_one() -> None:
    admin = JoinToken(relay="r", drone="d", secret="s", relay_key="k", pilots=(PILOT,))
    assert JoinToken.decode(admin.encode()) == admin
    assert "binding_key" not in base64.urlsafe_b64decode(admin.encode()[len(PREFIX):] + "==")\
        .decode()


def test_the_binding_key_is_never_in_the_repr() -> None:
    assert TOKEN.binding_key is not None
    assert repr(TOKEN.binding_key) not in repr(TOKEN)


def test_secrets_are_fresh_and_long() -> None:
    assert new_secret() != new_secret()
    assert len(new_secret()) >= 43


@pytest.mark.parametrize(("text", "reason"), [
    ("", "not a dragoon join token"),
    ("dragoon-join-v3.abc", "not a dragoon join token"),
    ("https://relay.example", "not a dragoon join token"),
    (PREFIX, "damaged"),
    (PREFIX + "!!!!", "damaged"),
    (PREFIX + "é", "damaged"),
    (PREFIX + base64.urlsafe_b64encode(b"\xff\xfe").decode(), "damaged"),
    (_encode(["a", "list"]), "lacks one of"),
    (_encode({"relay": "r", "drone": "d", "secret": "s"}), "lacks one of"),
    (_encode({"relay": "r", "drone": "d", "secret": 5, "relay_key": "k"}), "lacks one of"),
    (_encode({**BASE, "pilots": "ssh-ed25519 AAAA"}), "pilots is not a list"),
    (_encode({**BASE, "pilots": [f"no-pty {PILOT}"]}), "options before the key"),
    (_encode({**BASE, "pilots": ["ssh-ed25519 !!!"]}), "pilot key 1: key body is not valid"),
    (_encode({**BASE, "binding_key": "AAAA"}), "binding_key is not 32 bytes"),
    (_encode({**BASE, "binding_key": 7}), "binding_key is not 32 bytes"),
    (_encode({**BASE, "binding_key": "!" * 43}), "binding_key is not 32 bytes"),
], ids=["empty", "other-version", "url", "no-body", "garbage", "non-ascii", "not-utf8", "list",
        "missing-field", "wrong-type", "pilots-string", "pilot-options", "pilot-base64",
        "short-binding", "binding-number", "binding-garbage"])
def test_damaged_join_token_is_a_token_format_error(text: str, reason: str) -> None:
    with pytest.raises(TokenFormatError, match=reason) as caught:
        JoinToken.decode(text)
    assert caught.value.code == "bad_token"


def test_oversized_join_token_is_refused_before_parsing() -> None:
    bomb = PREFIX + base64.urlsafe_b64encode(b"[" * 5000 + b"]" * 5000).decode()
    assert len(bomb) > 12000
    with pytest.raises(TokenFormatError, match="join token is too long"):
        JoinToken.decode(bomb)


def test_deeply_nested_join_token_is_a_token_error_not_a_recursion_error() -> None:
    nested = PREFIX + base64.urlsafe_b64encode(b"[" * 1400 + b"]" * 1400).decode()
    assert len(nested) <= 4096
    with pytest.raises(TokenFormatError):
        JoinToken.decode(nested)


def test_truncated_join_token_is_refused() -> None:
    text = TOKEN.encode()
    for cut in range(len(PREFIX), len(text) - 1, 7):
        with pytest.raises(TokenFormatError):
            JoinToken.decode(text[:cut])
