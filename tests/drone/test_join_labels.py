"""A drone's labels come from its own --labels and the pilot-made token, never from the
relay's join answer (docs/security.md, "Trust roots on the ends"): a relay stolen before the
join can't add a label that would let a pilot's labels order reach this drone."""

from __future__ import annotations

from dragoon.drone.join import _joined_labels
from dragoon.shared.enrollment import JoinToken

from tests.support.relay import new_signer


def test_the_token_carries_the_pilots_labels_and_the_relays_are_ignored(tmp_path) -> None:
    key = new_signer(tmp_path / "id").public_key.openssh()
    made = JoinToken(relay="https://relay.example", drone="box-1", secret="s" * 20,
                     relay_key="SHA256:" + "A" * 43, pilots=(key,), labels=("cpu",))
    token = JoinToken.decode(made.encode())
    assert token.labels == ("cpu",)
    relay_says = ["cpu", "gpu"]  # a stolen relay adds gpu in its join answer
    labels = _joined_labels(["linux"], relay_says if token.labels is None
                            else list(token.labels))
    assert labels == ["linux", "cpu"]


def test_a_v1_token_has_no_labels_and_falls_back_to_the_answer() -> None:
    token = JoinToken.decode(JoinToken(relay="https://r", drone="d", secret="s" * 20,
                                       relay_key="SHA256:" + "A" * 43).relay_half())
    assert token.labels is None


def test_a_token_with_a_bad_label_is_refused() -> None:
    import base64
    import json

    import pytest
    from dragoon.shared.enrollment import PREFIX, TokenFormatError

    body = {"relay": "https://r", "drone": "d", "secret": "s" * 20,
            "relay_key": "SHA256:" + "A" * 43, "pilots": [], "labels": ["bad label"]}
    text = PREFIX + base64.urlsafe_b64encode(json.dumps(body).encode()).decode().rstrip("=")
    with pytest.raises(TokenFormatError, match="label"):
        JoinToken.decode(text)
