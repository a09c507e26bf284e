"""shared.enrollment: the one-string join token survives copy and paste, and damage is named."""

from __future__ import annotations

import base64
import json

import pytest
from dragoon.shared.enrollment import PREFIX, JoinToken, new_secret
from dragoon.shared.errors import TokenFormatError

TOKEN = JoinToken(relay="https://relay.example:8443", drone="gpu-1", secret=new_secret(),
                  relay_key="SHA256:" + "A" * 43)


def _encode(payload: object) -> str:
    raw = json.dumps(payload).encode()
    return PREFIX + base64.urlsafe_b64encode(raw).decode().rstrip("=")


def test_join_token_round_trips() -> None:
    assert JoinToken.decode(TOKEN.encode()) == TOKEN


def test_join_token_is_one_shell_safe_word() -> None:
    text = TOKEN.encode()
    assert text.startswith("dragoon-join-v1.")
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
    assert payload == json.dumps(
        {"drone": TOKEN.drone, "relay": TOKEN.relay, "relay_key": TOKEN.relay_key,
         "secret": TOKEN.secret}, separators=(",", ":")).encode()


def test_secrets_are_fresh_and_long() -> None:
    assert new_secret() != new_secret()
    assert len(new_secret()) >= 43


@pytest.mark.parametrize(("text", "reason"), [
    ("", "not a dragoon join token"),
    ("dragoon-join-v2.abc", "not a dragoon join token"),
    ("https://relay.example", "not a dragoon join token"),
    (PREFIX, "damaged"),
    (PREFIX + "!!!!", "damaged"),
    (PREFIX + "é", "damaged"),
    (PREFIX + base64.urlsafe_b64encode(b"\xff\xfe").decode(), "damaged"),
    (_encode(["a", "list"]), "lacks one of"),
    (_encode({"relay": "r", "drone": "d", "secret": "s"}), "lacks one of"),
    (_encode({"relay": "r", "drone": "d", "secret": 5, "relay_key": "k"}), "lacks one of"),
], ids=["empty", "other-version", "url", "no-body", "garbage", "non-ascii", "not-utf8", "list",
        "missing-field", "wrong-type"])
def test_damaged_join_token_is_a_token_format_error(text: str, reason: str) -> None:
    with pytest.raises(TokenFormatError, match=reason) as caught:
        JoinToken.decode(text)
    assert caught.value.code == "bad_token"


def test_oversized_join_token_is_refused_before_parsing() -> None:
    bomb = PREFIX + base64.urlsafe_b64encode(b"[" * 5000 + b"]" * 5000).decode()
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
